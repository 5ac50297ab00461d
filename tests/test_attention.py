"""The grouped-head attention of the shared-prefix path computes what transformers' sdpa does."""

from __future__ import annotations

import pytest
import torch
from transformers.integrations import sdpa_attention

import softprompt
from softprompt.backbones import attention

from conftest import batch_for, tiny_llama


class _Module(torch.nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("masked", [True, False])
def test_grouped_sdpa_equals_transformers_sdpa(groups, masked):
    torch.manual_seed(0)
    B, Hkv, Tq, Tk, hd = 2, 2, 5, 9, 8
    q = torch.randn(B, Hkv * groups, Tq, hd)
    k, v = torch.randn(B, Hkv, Tk, hd), torch.randn(B, Hkv, Tk, hd)
    mask = None
    if masked:  # queries start 4 columns in; row 1 has a pad at column 4
        mask = (torch.arange(Tk)[None, :] <= torch.arange(Tq)[:, None] + 4).expand(B, 1, Tq, Tk).clone()
        mask[1, :, :, 4] = False
    module = _Module(groups)
    ours, _ = attention.grouped_sdpa(module, q, k, v, mask, scaling=hd**-0.5)
    theirs, _ = sdpa_attention.sdpa_attention_forward(module, q, k, v, mask, scaling=hd**-0.5)
    assert ours.shape == theirs.shape == (B, Tq, Hkv * groups, hd)
    assert (ours - theirs).abs().max() < 1e-6


def test_unknown_keywords_go_to_transformers(monkeypatch):
    calls = []
    real = attention.sdpa_attention_forward
    monkeypatch.setattr(attention, "sdpa_attention_forward", lambda *a, **k: calls.append(k) or real(*a, **k))
    q, k, v = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    mask = torch.ones(1, 1, 3, 5, dtype=torch.bool)
    attention.grouped_sdpa(_Module(2), q, k, v, mask)  # handled here
    assert calls == []
    with pytest.raises(ValueError, match="softcap"):  # transformers' own refusal, not a silent different result
        attention.grouped_sdpa(_Module(2), q, k, v, mask, softcap=30.0)
    attention.grouped_sdpa(_Module(2), q, k, v, mask, position_bias=torch.zeros(1, 4, 3, 5))
    assert len(calls) == 2


@pytest.mark.parametrize("padding", ["left", "right"])
def test_training_step_uses_grouped_heads_and_matches_naive(padding, monkeypatch):
    """Loss and prompt gradient of the shared path (grouped heads) equal the naive concatenation
    (transformers' own sdpa over [prompt, text] rows) on a model with 4 query and 2 key/value heads."""
    used = []
    real = attention.grouped_sdpa
    attention.ALL_ATTENTION_FUNCTIONS.register(attention.NAME, lambda *a, **k: used.append(1) or real(*a, **k))
    try:
        backbone = tiny_llama()
        model = softprompt.attach(backbone, method="prompt", length=5, seed=0)
        ids, mask, labels = batch_for(backbone, batch=4, length=9, padding=padding)
        grads = {}
        for shared in (True, False):
            model.zero_grad()
            embeds = backbone.get_input_embeddings()(ids)
            out = model.join.forward(model.prompt_embeddings(), embeds, mask, labels, shared=shared)
            out.loss.backward()
            grads[shared] = (out.loss.detach(), next(p for p in model.trainable_parameters()).grad.clone())
    finally:
        attention.ALL_ATTENTION_FUNCTIONS.register(attention.NAME, real)
    assert used, "the shared path did not run the grouped attention"
    assert backbone.config._attn_implementation == "sdpa"  # switched back after the call
    assert abs(float(grads[True][0] - grads[False][0])) < 1e-5
    assert (grads[True][1] - grads[False][1]).abs().max() < 1e-5


def test_switch_is_undone_when_the_forward_fails():
    backbone = tiny_llama()
    with pytest.raises(RuntimeError, match="boom"):
        with attention.grouped_attention(backbone):
            assert backbone.config._attn_implementation == attention.NAME
            raise RuntimeError("boom")
    assert backbone.config._attn_implementation == "sdpa"


def test_other_attention_implementations_are_left_alone():
    backbone = tiny_llama()
    backbone.config._attn_implementation = "eager"
    with attention.grouped_attention(backbone):
        assert backbone.config._attn_implementation == "eager"


def test_sub_configs_keep_their_own_implementations():
    """A multimodal config: only the parts on sdpa are switched, and each gets its own back
    (transformers' setter would write one value into every sub-config)."""
    from transformers import LlavaConfig

    class Holder(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config

    config = LlavaConfig()
    config.text_config._attn_implementation_internal = "sdpa"
    config.vision_config._attn_implementation_internal = "eager"
    config._attn_implementation_internal = "sdpa"
    with attention.grouped_attention(Holder(config)):
        assert config.text_config._attn_implementation_internal == attention.NAME
        assert config.vision_config._attn_implementation_internal == "eager"
    assert (config._attn_implementation_internal, config.text_config._attn_implementation_internal,
            config.vision_config._attn_implementation_internal) == ("sdpa", "sdpa", "eager")
