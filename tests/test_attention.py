"""The attention functions of the shared-prefix path compute what transformers' sdpa does: the
grouped-head one (the text over a prompt's cached keys) and the packed one (prompt and text rows
as one sequence, a training step)."""

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


def _step(model, ids, mask, labels):
    model.zero_grad()
    loss = model(ids, mask, labels, return_logits=False).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.trainable_parameters()]


@pytest.mark.parametrize("layout", ["packed", "prefix"])
@pytest.mark.parametrize("padding", ["left", "right"])
def test_training_step_runs_its_attention_and_matches_naive(layout, padding, monkeypatch):
    """A training step's loss and prompt gradient on each shared layout (the packed sequence, or
    the prompt's cache with grouped heads) equal the naive concatenation (transformers' own sdpa
    over [prompt, text] rows) on a model with 4 query and 2 key/value heads, and the layout's own
    attention function is what ran."""
    backbone = tiny_llama()
    model = softprompt.attach(backbone, method="prompt", length=5, seed=0)
    ids, mask, labels = batch_for(backbone, batch=4, length=9, padding=padding)
    assert model.join.use_shared(model.prompt_embeddings().detach()) and model.join.packs  # the probe, before counting
    model.join.packs = layout == "packed"
    used = {attention.NAME: 0, attention.PACKED: 0}
    for name, real in ((attention.NAME, attention.grouped_sdpa), (attention.PACKED, attention.packed_sdpa)):
        monkeypatch.setitem(attention.ALL_ATTENTION_FUNCTIONS, name,
                            lambda *a, _real=real, _name=name, **k: used.__setitem__(_name, used[_name] + 1) or _real(*a, **k))
    ours = _step(model, ids, mask, labels)
    ran = attention.PACKED if layout == "packed" else attention.NAME
    assert used[ran] == backbone.config.num_hidden_layers and sum(used.values()) == used[ran]
    monkeypatch.setattr(model.join, "use_shared", lambda *a, **k: False)
    naive = _step(model, ids, mask, labels)
    assert backbone.config._attn_implementation == "sdpa"  # switched back after the call
    assert abs(float(ours[0] - naive[0])) < 1e-5
    assert (ours[1][0] - naive[1][0]).abs().max() < 1e-5


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("repeat", [False, True])
def test_packed_sdpa_equals_sdpa_over_each_row(groups, repeat, monkeypatch):
    """One packed sequence [prompt, row 0, row 1, row 2] gives, for the prompt, causal attention
    over itself, and for each text row what transformers' sdpa gives the row [prompt, text] with
    its padding masked; with grouped heads taken by the kernel or repeated (other devices)."""
    if repeat:
        monkeypatch.setattr(attention, "GQA_DEVICES", ())
    torch.manual_seed(0)
    n, B, T, Hkv, hd = 3, 3, 4, 2, 8
    H, L = Hkv * groups, n + B * T
    q, k, v = torch.randn(1, H, L, hd), torch.randn(1, Hkv, L, hd), torch.randn(1, Hkv, L, hd)
    real = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    mask = torch.cat([torch.ones(B, T, n, dtype=torch.bool), causal & real.unsqueeze(1)], dim=2).unsqueeze(1)
    module = _Module(groups)
    with attention.packed_attention(torch.nn.Module(), attention.Layout(n, B, T, mask)):
        out, _ = attention.packed_sdpa(module, q, k, v, None, scaling=hd**-0.5)
    assert out.shape == (1, L, H, hd)
    full = torch.ones(n, n, dtype=torch.bool).tril().expand(1, 1, n, n)
    first, _ = sdpa_attention.sdpa_attention_forward(module, q[:, :, :n], k[:, :, :n], v[:, :, :n], full, scaling=hd**-0.5)
    assert (out[:, :n] - first).abs().max() < 1e-6
    for b in range(B):
        cols = list(range(n)) + list(range(n + b * T, n + (b + 1) * T))
        row, _ = sdpa_attention.sdpa_attention_forward(
            module, q[:, :, n + b * T : n + (b + 1) * T], k[:, :, cols], v[:, :, cols], mask[b : b + 1], scaling=hd**-0.5
        )
        assert (out[:, n + b * T : n + (b + 1) * T] - row).abs().max() < 1e-6


def test_packed_sdpa_refuses_what_it_does_not_compute():
    q, k, v = torch.randn(1, 4, 7, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    layout = attention.Layout(3, 2, 2, torch.ones(2, 1, 2, 5, dtype=torch.bool))
    with pytest.raises(attention.Unpackable, match="layout"):  # called outside packed_attention
        attention.packed_sdpa(_Module(2), q, k, v, None)
    with attention.packed_attention(torch.nn.Module(), layout):
        with pytest.raises(attention.Unpackable, match="softcap"):
            attention.packed_sdpa(_Module(2), q, k, v, None, softcap=30.0)
        with pytest.raises(attention.Unpackable, match="layout"):  # a sequence of another length
            attention.packed_sdpa(_Module(2), q[:, :, :6], k[:, :, :6], v[:, :, :6], None)
    assert getattr(attention._active, "layout", None) is None


@pytest.mark.parametrize("broken", ["refuses", "differs"])
def test_a_model_the_packed_layout_does_not_fit_keeps_the_cached_prompt(broken, monkeypatch):
    """The first use's probe checks the packed layout too: a model whose attention asks for
    something packed_sdpa refuses, or whose packed numbers differ, trains on the cached prompt."""
    def refuses(*a, **k):
        raise attention.Unpackable("softcap")

    def differs(*a, **k):
        out, none = attention.packed_sdpa(*a, **k)
        return out * 1.5, none

    monkeypatch.setitem(attention.ALL_ATTENTION_FUNCTIONS, attention.PACKED, refuses if broken == "refuses" else differs)
    backbone = tiny_llama()
    model = softprompt.attach(backbone, method="prompt", length=5, seed=0)
    ids, mask, labels = batch_for(backbone, batch=3, length=6, padding="left")
    assert model.join.use_shared(model.prompt_embeddings().detach())
    assert model.join.packs is False
    ours = _step(model, ids, mask, labels)
    monkeypatch.setattr(model.join, "use_shared", lambda *a, **k: False)
    naive = _step(model, ids, mask, labels)
    assert abs(float(ours[0] - naive[0])) < 1e-5


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
