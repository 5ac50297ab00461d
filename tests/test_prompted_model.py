"""One prompted-model class, three cases: holding no prompt (``NoPrompt``) it is the bare
backbone, bit for bit; a bank holding one prompt is that prompt's ``SoftPromptModel``, bit for
bit; and ``frozen_prompt`` behaves the same whichever number of prompts the model holds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import softprompt
from softprompt.evaluate import NoPrompt
from softprompt.model import PromptedModel
from conftest import batch_for, tiny_gpt2, tiny_llama, tiny_t5
from helpers import perturbed

DECODERS = {"llama": tiny_llama, "gpt2": tiny_gpt2}
BACKBONES = {**DECODERS, "t5": tiny_t5}


def bare_logits(backbone, ids, mask):
    """The backbone's own forward, ``[B, T, V]``; position ids count real tokens only (as the
    backbone's ``generate`` counts them), so left padding has the positions right padding has."""
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return backbone(input_ids=ids, attention_mask=mask, position_ids=positions).logits


def row_sums(logits, labels):
    """Sum of each row's labeled tokens' log-probabilities from full decoder logits, ``[B]``."""
    rows, cols = (labels[:, 1:] != -100).nonzero(as_tuple=True)  # column j predicts j + 1
    token = -F.cross_entropy(logits[rows, cols].float(), labels[rows, cols + 1], reduction="none")
    return torch.zeros(labels.shape[0]).index_add(0, rows, token)


# -- zero prompts: the bare backbone --------------------------------------------------------------


def test_no_prompt_is_the_class_holding_none():
    backbone = tiny_llama()
    model = NoPrompt(backbone)
    assert type(model) is PromptedModel and model.names == [] and len(model.prompts) == 0
    assert all(p.requires_grad for p in backbone.parameters())  # nothing trains on it, so nothing is frozen
    softprompt.attach(backbone, "prompt", length=2)
    assert not any(p.requires_grad for p in backbone.parameters())
    NoPrompt(backbone)
    assert not any(p.requires_grad for p in backbone.parameters())  # and it leaves a frozen one frozen


@pytest.mark.parametrize("padding", ["right", "left", "none"])
@pytest.mark.parametrize("arch", sorted(DECODERS))
def test_no_prompt_decoder_equals_the_bare_backbone_exactly(arch, padding):
    backbone = DECODERS[arch]().eval()
    ids, mask, labels = batch_for(backbone, batch=3, length=6, seed=1, padding="right" if padding == "none" else padding)
    if padding == "none":
        mask, labels = torch.ones_like(mask), ids.clone()
    # A row's first real token is never scored: nothing of the row's own precedes it. (Labeled,
    # the shared path drops it while the naive path, without a prompt, reads a left pad's logits.)
    labels = labels.masked_fill(mask.long().cumsum(-1) == 1, -100)
    model = NoPrompt(backbone).eval()
    real = mask.bool()  # pads' logits are no one's
    with torch.no_grad():
        bare = bare_logits(backbone, ids, mask)
        for path in ({"shared": True}, {"shared": False}):
            assert torch.equal(model(ids, mask, **path).logits[real], bare[real]), path
            assert torch.equal(model.score(ids, mask, labels, **path), row_sums(bare, labels)), path
        # one scored position per row: choice_scores against the bare log-softmax there
        last = mask.sum(1) - 1
        one = torch.full_like(labels, -100).scatter(1, last[:, None], ids.gather(1, last[:, None]))
        choices = torch.tensor([[3, 5, 7]] * 3)
        want = torch.log_softmax(bare[torch.arange(3), last - 1].float(), -1).gather(1, choices)
        assert torch.equal(model.choice_scores(ids, mask, one, choice_tokens=choices), want)


def test_no_prompt_encoder_decoder_equals_the_bare_backbone_exactly():
    backbone = tiny_t5().eval()
    ids, mask, labels = batch_for(backbone, batch=3, length=6, seed=1)
    model = NoPrompt(backbone).eval()
    with torch.no_grad():
        bare = backbone(input_ids=ids, attention_mask=mask, labels=labels)
        out = model(ids, mask, labels=labels)
        assert torch.equal(out.logits, bare.logits) and torch.equal(out.loss, bare.loss)
        kw = dict(max_new_tokens=4, do_sample=False)
        assert torch.equal(model.generate(ids, mask, **kw), backbone.generate(input_ids=ids, attention_mask=mask, **kw))


def test_no_prompt_generates_what_the_bare_backbone_generates():
    backbone = tiny_llama().eval()
    ids, mask, _ = batch_for(backbone, batch=3, length=6, seed=2, padding="left")
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    want = backbone.generate(input_ids=ids, attention_mask=mask, **kw)[:, ids.shape[1]:]
    assert torch.equal(NoPrompt(backbone).generate(ids, mask, **kw), want)


# -- one prompt: a bank of one is the SoftPromptModel ---------------------------------------------


@pytest.mark.parametrize("arch", sorted(BACKBONES))
@pytest.mark.parametrize("method", softprompt.METHODS)
def test_a_bank_of_one_equals_the_soft_prompt_model_exactly(method, arch):
    backbone = BACKBONES[arch]()
    model = perturbed(softprompt.attach(backbone, method, length=4, seed=1), 1).eval()
    other = perturbed(softprompt.attach(backbone, "prompt", length=3, seed=2), 2)
    one = softprompt.PromptBank(backbone, {"only": model}).eval()
    two = softprompt.PromptBank(backbone, {"other": other, "only": model}).eval()  # every row names one of two
    ids, mask, labels = batch_for(backbone, batch=3, length=6, seed=3, padding="left")
    decoder = not backbone.config.is_encoder_decoder
    banks = [(one, {}), (one, {"prompt": "only"}), (two, {"prompt": ["only"] * 3})]
    with torch.no_grad():
        want_logits = model(ids, mask, labels=None if decoder else labels).logits
        want_scores = model.score(ids, mask, labels)
        for bank, name in banks:
            assert torch.equal(bank(ids, mask, labels=None if decoder else labels, **name).logits, want_logits)
            assert torch.equal(bank.score(ids, mask, labels, **name), want_scores)
        if decoder:
            kw = dict(max_new_tokens=3, do_sample=False, pad_token_id=0)
            want = model.generate(ids, mask, **kw)
            for bank, name in banks:
                assert torch.equal(bank.generate(ids, mask, **name, **kw), want)
    # training: the same loss and the same gradients (the module is shared, so one at a time)
    model.train(), one.train()

    def loss_and_grads(wrapper):
        model.prompt.zero_grad()
        torch.manual_seed(0)  # the same dropout (GPT-2, T5) in both
        loss = wrapper(ids, mask, labels=labels, return_logits=False).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.trainable_parameters()]

    want_loss, want_grads = loss_and_grads(model)
    loss, grads = loss_and_grads(one)
    assert torch.equal(loss, want_loss) and all(torch.equal(g, w) for g, w in zip(grads, want_grads))


def test_one_prompt_needs_no_name_and_a_soft_prompt_model_takes_none():
    backbone = tiny_llama()
    model = softprompt.attach(backbone, "prompt", length=2)
    bank = softprompt.PromptBank(backbone, {"x": model})
    assert model.names == [softprompt.SoftPromptModel.NAME] and bank.names == ["x"]
    ids, mask, labels = batch_for(backbone, batch=2, length=4)
    with pytest.raises(TypeError, match="PromptBank"):
        model.score(ids, mask, labels, prompt="prompt")
    with pytest.raises(KeyError, match="no prompt named 'y'.*it has none"):
        NoPrompt(backbone).score(ids, mask, labels, prompt="y")


# -- frozen_prompt: the same in every case ---------------------------------------------------------


def holding(count: int):
    """A model holding ``count`` prompts (0: NoPrompt, 1: a SoftPromptModel, 2: a bank) and the
    ``prompt=`` its calls take."""
    backbone = tiny_llama()
    if count == 0:
        return NoPrompt(backbone), {}
    model = perturbed(softprompt.attach(backbone, "dept", length=3, seed=1), 1)  # DePT: it adjusts the text too
    if count == 1:
        return model, {}
    other = perturbed(softprompt.attach(backbone, "dpt", length=2, bottleneck=2, seed=2), 2)
    return softprompt.PromptBank(backbone, {"a": model, "b": other}), {"prompt": ["a", "b", "a"]}


@pytest.mark.parametrize("count", [0, 1, 2])
def test_frozen_prompt_is_the_same_in_every_case(count):
    model, name = holding(count)
    model.eval()
    runs = []
    for module in model.prompts.values():
        module.register_forward_hook(lambda *_: runs.append(1))
    ids, mask, labels = batch_for(model.backbone, batch=3, length=6, seed=4, padding="left")
    with torch.no_grad():
        want = model.score(ids, mask, labels, **name)
    runs.clear()
    with model.frozen_prompt():
        assert len(runs) == count  # every prompt computed once, on entering
        with torch.no_grad():
            assert torch.equal(model.score(ids, mask, labels, **name), want)
            assert torch.equal(model.score(ids, mask, labels, **name), want)  # from kept keys and values
        loss = model(ids, mask, labels=labels, return_logits=False, **name).loss  # gradients enabled here
        if loss.requires_grad:
            loss.backward()
        assert len(runs) == count  # and never again inside
    assert all(p.grad is None for p in model.prompts.parameters())  # nothing trains inside
    with torch.no_grad():
        model.score(ids, mask, labels, **name)
    assert len(runs) == 2 * count  # outside, computed again
    with pytest.raises(RuntimeError, match="inside"):
        with model.frozen_prompt():
            raise RuntimeError("inside")
    runs.clear()
    with torch.no_grad():
        model.score(ids, mask, labels, **name)
    assert len(runs) == count  # an error inside forgets the frozen prompts too
