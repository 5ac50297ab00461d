"""How the prompt joins the input: the shared decoder prefix equals the naive concatenation,
padding never separates prompt and text, generation works, other models get a clear error."""

from __future__ import annotations

import pytest
import torch

import softprompt
from softprompt.backbones import enable_checkpointing
from softprompt.backbones.join import UnsupportedModelError, prepend
from conftest import batch_for, tiny_gpt2, tiny_llama, tiny_t5

DECODERS = {"llama": tiny_llama, "gpt2": tiny_gpt2}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def loss_and_grads(model, ids, mask, labels, shared):
    model.zero_grad()
    embeds = model._text_embeds(ids, mask)
    out = model.join.forward(model.prompt(), embeds, mask, labels=labels, return_logits=False, shared=shared)
    out.loss.backward()
    return out.loss.detach(), [p.grad.clone() for p in model.trainable_parameters()]


@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("arch", sorted(DECODERS))
@pytest.mark.parametrize("method", softprompt.METHODS)
def test_shared_prefix_equals_naive_concatenation(method, arch, padding):
    model = softprompt.attach(DECODERS[arch](), method=method, length=5, seed=2)
    ids, mask, labels = batch_for(model.backbone, batch=4, length=9, padding=padding)
    naive_loss, naive_grads = loss_and_grads(model, ids, mask, labels, shared=False)
    fast_loss, fast_grads = loss_and_grads(model, ids, mask, labels, shared=True)
    assert rel(fast_loss, naive_loss) <= 1e-4
    for fast, naive in zip(fast_grads, naive_grads):
        assert rel(fast, naive) <= 1e-4


@pytest.mark.parametrize("padding", ["right", "left"])
def test_first_text_token_is_predicted_from_the_prompt(padding):
    """Only the first real token is labeled: its loss comes from the prompt's last position."""
    model = softprompt.attach(tiny_llama(), method="prompt", length=3)
    ids, mask, _ = batch_for(model.backbone, batch=3, length=6, padding=padding)
    first = (mask.cumsum(-1) == 1) & (mask == 1)
    labels = ids.masked_fill(~first, -100)
    naive_loss, naive_grads = loss_and_grads(model, ids, mask, labels, shared=False)
    fast_loss, fast_grads = loss_and_grads(model, ids, mask, labels, shared=True)
    assert rel(fast_loss, naive_loss) <= 1e-4
    assert rel(fast_grads[0], naive_grads[0]) <= 1e-4
    # the naive reference by hand: logits at the last prompt row predict the first token
    with torch.no_grad():
        prompt = model.prompt_embeddings()
        losses = []
        for row in range(ids.shape[0]):
            real = ids[row][mask[row].bool()]
            embeds = torch.cat([prompt, model.backbone.get_input_embeddings()(real)])[None]
            logits = model.backbone(inputs_embeds=embeds).logits[0]
            losses.append(torch.nn.functional.cross_entropy(logits[2:3], real[:1]))
        assert rel(fast_loss, torch.stack(losses).mean()) <= 1e-4


@pytest.mark.parametrize("arch", sorted(DECODERS))
def test_left_and_right_padding_agree(arch):
    model = softprompt.attach(DECODERS[arch](), method="ulpt", length=4)
    ids_r, mask_r, labels_r = batch_for(model.backbone, batch=3, length=8, padding="right")
    # the same rows, left padded
    ids_l, mask_l, labels_l = ids_r.clone(), mask_r.clone(), labels_r.clone()
    for row in range(3):
        n = int(mask_r[row].sum())
        for t in (ids_l, mask_l, labels_l):
            src = {id(ids_l): ids_r, id(mask_l): mask_r, id(labels_l): labels_r}[id(t)]
            t[row] = torch.roll(src[row], 8 - n)
    with torch.no_grad():
        right = model(ids_r, mask_r, labels_r)
        left = model(ids_l, mask_l, labels_l)
    assert rel(left.loss, right.loss) <= 1e-5
    for row in range(3):
        n = int(mask_r[row].sum())
        assert torch.allclose(right.logits[row, :n], left.logits[row, 8 - n :], atol=1e-5)


def test_no_pad_between_prompt_and_text():
    prompt = torch.full((2, 1), 7.0)
    embeds = torch.arange(5.0).reshape(1, 5, 1).repeat(2, 1, 1)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    combined, full_mask, index = prepend(prompt, embeds, mask)
    assert combined[0, :, 0].tolist() == [0, 1, 7, 7, 2, 3, 4]  # pads, prompt, text
    assert full_mask[0].tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert combined[1, :, 0].tolist() == [7, 7, 0, 1, 2, 3, 4]  # prompt, text, pads
    assert full_mask[1].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert index.tolist() == [[0, 1, 4, 5, 6], [2, 3, 4, 5, 6]]


def test_full_logits_match_between_paths():
    model = softprompt.attach(tiny_llama(), method="dpt", length=4)
    ids, mask, labels = batch_for(model.backbone, padding="left")
    with torch.no_grad():
        fast = model.join.forward(model.prompt(), model._text_embeds(ids, mask), mask, labels=labels, shared=True)
        naive = model.join.forward(model.prompt(), model._text_embeds(ids, mask), mask, labels=labels, shared=False)
    keep = mask.bool()
    assert torch.allclose(fast.logits[keep], naive.logits[keep], atol=1e-5)
    assert rel(fast.loss, naive.loss) <= 1e-5


@pytest.mark.parametrize("arch", sorted(DECODERS))
def test_score_is_sum_of_label_logprobs(arch):
    model = softprompt.attach(DECODERS[arch](), method="prompt", length=3)
    ids, mask, _ = batch_for(model.backbone, batch=3, length=6, padding="left")
    labels = ids.clone()
    labels[:, :4] = -100
    with torch.no_grad():
        fast = model.score(ids, mask, labels)
        naive = model.join.score(model.prompt(), model._text_embeds(ids, mask), mask, labels, shared=False)
        out = model(ids, mask)
        logp = torch.log_softmax(out.logits, -1)
        manual = torch.stack([logp[b, 3, ids[b, 4]] + logp[b, 4, ids[b, 5]] for b in range(3)])
    assert torch.allclose(fast, naive, atol=1e-5)
    assert torch.allclose(fast, manual, atol=1e-5)


@pytest.mark.parametrize("arch", sorted(DECODERS))
def test_generate_with_and_without_cache(arch):
    model = softprompt.attach(DECODERS[arch](), method="ulpt", length=4)
    ids, mask, _ = batch_for(model.backbone, batch=3, length=6, padding="left")
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    cached = model.generate(ids, mask, use_cache=True, **kw)
    uncached = model.generate(ids, mask, use_cache=False, **kw)
    assert cached.shape == (3, 5)
    assert torch.equal(cached, uncached)
    # greedy generation = argmax of the forward pass, token by token
    seq, m = ids, mask
    for step in range(5):
        with torch.no_grad():
            nxt = model(seq, m).logits[:, -1].argmax(-1)
        assert torch.equal(nxt, cached[:, step])
        seq = torch.cat([seq, nxt[:, None]], 1)
        m = torch.cat([m, torch.ones_like(nxt[:, None])], 1)


def test_t5_prompt_joins_the_encoder():
    backbone = tiny_t5()
    model = softprompt.attach(backbone, method="dpt", length=4)
    ids, mask, labels = batch_for(backbone)
    with torch.no_grad():
        out = model(ids, mask, labels=labels)
        embeds = torch.cat([model.prompt_embeddings().expand(3, -1, -1), backbone.get_input_embeddings()(ids)], 1)
        full = torch.cat([torch.ones(3, 4, dtype=torch.long), mask], 1)
        ref = backbone(inputs_embeds=embeds, attention_mask=full, labels=labels)
    assert torch.allclose(out.logits, ref.logits, atol=1e-6)
    assert torch.allclose(out.loss, ref.loss, atol=1e-6)
    generated = model.generate(ids, mask, max_new_tokens=4, do_sample=False)
    assert generated.shape[0] == 3
    assert torch.equal(generated, model.generate(ids, mask, max_new_tokens=4, do_sample=False, use_cache=False))


def test_unsupported_model_names_the_class():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(UnsupportedModelError, match="BertModel"):
        softprompt.attach(bert, method="prompt", length=2)


def test_gradient_checkpointing_uses_the_naive_path():
    model = softprompt.attach(tiny_llama(), method="prompt", length=3)
    enable_checkpointing(model.backbone)
    model.backbone.train()
    assert not model.join.use_shared(model.prompt_embeddings())
    ids, mask, labels = batch_for(model.backbone)
    out = model(ids, mask, labels, return_logits=False)
    out.loss.backward()
    assert model.prompt.embedding.grad is not None


def test_qwen2_shared_prefix_equals_naive():
    from conftest import tiny_qwen2

    model = softprompt.attach(tiny_qwen2(), method="dpt", length=5)
    ids, mask, labels = batch_for(model.backbone, batch=3, length=8, padding="left")
    naive_loss, naive_grads = loss_and_grads(model, ids, mask, labels, shared=False)
    fast_loss, fast_grads = loss_and_grads(model, ids, mask, labels, shared=True)
    assert rel(fast_loss, naive_loss) <= 1e-4
    assert all(rel(f, n) <= 1e-4 for f, n in zip(fast_grads, naive_grads))


def test_bart_trains_and_generates():
    from conftest import tiny_bart

    model = softprompt.attach(tiny_bart(), method="ulpt", length=3)
    ids, mask, labels = batch_for(model.backbone)
    out = model(ids, mask, labels=labels)
    out.loss.backward()
    assert model.prompt.z.grad.abs().sum() > 0
    assert model.generate(ids, mask, max_new_tokens=3, do_sample=False).shape[0] == 3
