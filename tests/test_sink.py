"""``sink="bos"``: a decoder reads the backbone's BOS token, frozen, before the prompt. Checked
against the naive computation (the backbone run on ``[BOS, prompt, text]`` embeddings), on both
decoder paths, both paddings, every method; saved with the prompt; one-line errors where a
backbone cannot have it; the prompt bank mixing prompts with and without it."""

from __future__ import annotations

import pytest
import torch

import softprompt
from conftest import batch_for, tiny_gpt2, tiny_llama, tiny_t5

TOL = 1e-5


def naive_logits(model, ids, mask, sink: bool):
    """The backbone on ``[BOS?, prompt, text]`` embeddings, left pads moved ahead of everything:
    logits at the text positions ``[B, T, V]``."""
    backbone = model.backbone
    table = backbone.get_input_embeddings()
    prompt = model.prompt_embeddings()  # [n, d]
    if sink:
        prompt = torch.cat([table(torch.tensor([backbone.config.bos_token_id])), prompt])
    rows = []
    for row in range(ids.shape[0]):
        keep = mask[row].bool()
        text = table(ids[row][keep])
        embeds = torch.cat([prompt, model.prompt.adjust_input_embeds(text[None], torch.ones(1, text.shape[0], dtype=torch.long))[0]])
        out = backbone(inputs_embeds=embeds[None]).logits[0, prompt.shape[0]:]  # [t, V]
        full = torch.zeros(ids.shape[1], out.shape[-1])
        full[keep] = out
        rows.append(full)
    return torch.stack(rows)


@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("method", softprompt.METHODS)
def test_sink_equals_the_naive_layout(method, padding):
    backbone = tiny_llama()
    model = softprompt.attach(backbone, method, length=4, seed=1, sink="bos").eval()
    ids, mask, labels = batch_for(backbone, batch=3, length=7, seed=2, padding=padding)
    with torch.no_grad():
        want = naive_logits(model, ids, mask, sink=True)
        without = naive_logits(model, ids, mask, sink=False)
        for shared in (True, False):
            got = model(ids, mask, shared=shared).logits
            assert (got - want)[mask.bool()].abs().max().item() <= TOL, shared
        # the token is really there: the same prompt without it gives other logits
        assert (without - want)[mask.bool()].abs().max().item() > 1e-3


def test_sink_gradient_reaches_the_prompt_only():
    backbone = tiny_llama()
    model = softprompt.attach(backbone, "ulpt", length=4, rank=2, seed=1, sink="bos")
    ids, mask, labels = batch_for(backbone, batch=2, length=6, seed=3)
    model(ids, mask, labels=labels).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.trainable_parameters())
    assert backbone.get_input_embeddings().weight.grad is None
    assert model.num_trainable() == 4 * 2 + 2 * 32  # the sink token adds no parameter


def test_sink_is_saved_with_the_prompt(tmp_path):
    backbone = tiny_llama()
    model = softprompt.attach(backbone, "dpt", length=4, bottleneck=2, seed=1, sink="bos").eval()
    model.save(tmp_path / "p")
    loaded = softprompt.load(backbone, tmp_path / "p").eval()
    assert loaded.config.sink == "bos"
    ids, mask, _ = batch_for(backbone, batch=2, length=5, seed=4)
    with torch.no_grad():
        assert torch.equal(model(ids, mask).logits, loaded(ids, mask).logits)


def test_sink_on_a_backbone_that_cannot_have_one():
    with pytest.raises(ValueError, match="decoder-only"):
        softprompt.attach(tiny_t5(), "prompt", length=3, sink="bos")
    gpt2 = tiny_gpt2()
    gpt2.config.bos_token_id = None
    gpt2.generation_config.bos_token_id = None
    with pytest.raises(ValueError, match="no bos_token_id"):
        softprompt.attach(gpt2, "prompt", length=3, sink="bos")
    with pytest.raises(ValueError, match="sink must be one of none, bos"):
        softprompt.attach(tiny_llama(), "prompt", length=3, sink="eos")


def test_bank_mixes_prompts_with_and_without_a_sink():
    backbone = tiny_llama()
    bank = softprompt.PromptBank(backbone, {
        "s": softprompt.attach(backbone, "ulpt", length=3, seed=1, sink="bos"),
        "n": softprompt.attach(backbone, "prompt", length=5, seed=2),
    }).eval()
    names = ["s", "n", "s"]
    ids, mask, _ = batch_for(backbone, batch=3, length=6, seed=5, padding="left")
    with torch.no_grad():
        got = bank(ids, mask, prompt=names).logits
        for row, name in enumerate(names):
            keep = mask[row].bool()
            want = bank.model(name).eval()(ids[row][keep][None]).logits[0]
            assert (got[row][keep] - want).abs().max().item() <= TOL
