"""Attention for the text run on top of a prompt's cached keys and values.

On the shared-prefix path (``decoder_only.DecoderOnlyJoin``) the text's queries start ``N`` columns
into the keys, so the attention needs an explicit mask. With a mask, transformers' ``sdpa``
repeats every key/value head for its group of query heads (``repeat_kv``: a copy per layer in
forward, a sum in backward), because CUDA's fused kernels take grouped heads only without a
mask. torch's CPU kernel takes both at once: on SmolLM2-135M (9 query heads, 3 key/value heads,
B=8, 48 text tokens behind 100 prompt tokens) one layer's attention forward and backward costs
about a third less (``benchmarks/step_floor.py --profile`` shows the repeat's ``copy_``/``sum``
and the larger kernel).

``grouped_attention(backbone)`` switches a model whose attention is ``sdpa`` to
``grouped_sdpa`` for the duration of a call. ``grouped_sdpa`` computes exactly what ``sdpa``
computes and hands every case it does not handle (another device, no mask, no grouped heads,
a position bias, logit soft-capping, attention sinks, any unknown keyword) to transformers'
own function unchanged.

``packed_attention(backbone, layout)`` is for a training step: the prompt's ``n`` rows and
every text row run through the body as **one** sequence ``[1, n + B·T]``, so each linear layer
is one matrix product over all of them (a separate batch-1 pass over 100 prompt rows runs its
products about 12 % slower and launches every op twice). Only attention knows the layout:
``packed_sdpa`` gives the prompt causal attention over itself and each text row attention over
the prompt and its own earlier real tokens, the numbers of ``[prompt, text]`` rows.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

NAME = "softprompt_grouped_sdpa"
"""The attention implementation's name in transformers' registries."""

# Keywords a model passes that do not change what sdpa computes (the mask already carries a
# sliding window; positions were applied to the queries and keys before attention).
_HARMLESS = {"sliding_window", "position_ids", "cache_position", "output_attentions", "use_cache", "is_causal"}


def grouped_sdpa(module: nn.Module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' attention signature: ``query [B, H, Tq, hd]``, ``key``/``value [B, Hkv, Tk, hd]``,
    ``attention_mask [B, 1, Tq, Tk]`` (bool, True = attend) or ``None``.
    Returns ``(output [B, Tq, H, hd], None)``."""
    groups = getattr(module, "num_key_value_groups", 1)
    plain = (
        query.device.type != "cpu"
        or groups == 1
        or attention_mask is None
        or query.shape[2] == 1  # one query: transformers packs the heads instead, as cheap
        or any(v is not None for k, v in kwargs.items() if k not in _HARMLESS)
        or kwargs.get("output_attentions")
    )
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


ALL_ATTENTION_FUNCTIONS.register(NAME, grouped_sdpa)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # the same masks sdpa gets

PACKED = "softprompt_packed_sdpa"
"""The packed layout's attention implementation, in transformers' registries."""


class Layout(NamedTuple):
    """Where the rows sit in a packed sequence ``[1, n + B·T]``: the prompt's ``n`` rows, then
    ``B`` text rows of ``T`` columns each."""

    n: int
    rows: int  # B
    length: int  # T
    mask: torch.Tensor  # [B, 1, T, n+T] bool, True = attend: every prompt key, the row's own earlier real tokens


class Unpackable(RuntimeError):
    """The model asked packed attention for something it does not compute (a keyword such as
    soft-capping or a position bias, another sequence shape): the join falls back."""


_active = threading.local()  # .layout: the Layout of the packed call running on this thread

GQA_DEVICES = ("cpu",)
"""Devices whose sdpa kernel takes grouped key/value heads together with a mask (elsewhere the
fused kernels take them only without one, so ``packed_sdpa`` repeats the heads as transformers does)."""


def packed_sdpa(module: nn.Module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' attention signature over a packed sequence: ``query [1, H, n+B·T, hd]``,
    ``key``/``value [1, Hkv, n+B·T, hd]``; ``attention_mask`` is ignored (the layout carries
    the mask). Returns ``(output [1, n+B·T, H, hd], None)``."""
    layout = getattr(_active, "layout", None)
    unknown = sorted(k for k, v in kwargs.items() if v is not None and k not in _HARMLESS)
    if layout is None or unknown or kwargs.get("output_attentions") or query.shape[0] != 1 or query.shape[2] != layout.n + layout.rows * layout.length:
        raise Unpackable(f"packed attention cannot compute this call ({', '.join(unknown) or 'layout'})")
    n, B, T = layout.n, layout.rows, layout.length
    H, hd = query.shape[1], query.shape[-1]
    gqa = query.device.type in GQA_DEVICES and key.shape[1] != H

    def heads(x):  # key/value [1, Hkv, L, hd] in the form the kernel takes
        return x if gqa else repeat_kv(x, H // x.shape[1])

    def text(x):  # [1, h, n+B·T, hd] -> [B, h, T, hd] (a view)
        return x[0, :, n:].unflatten(1, (B, T)).transpose(0, 1)

    key, value = heads(key), heads(value)
    first = F.scaled_dot_product_attention(  # the prompt: causal over itself
        query[:, :, :n], key[:, :, :n], value[:, :, :n], is_causal=True, dropout_p=dropout, scale=scaling, enable_gqa=gqa
    )
    keys = torch.cat([key[:, :, :n].expand(B, -1, -1, -1), text(key)], dim=2)  # [B, h, n+T, hd]
    values = torch.cat([value[:, :, :n].expand(B, -1, -1, -1), text(value)], dim=2)
    rest = F.scaled_dot_product_attention(
        text(query), keys, values, attn_mask=layout.mask, dropout_p=dropout, scale=scaling, enable_gqa=gqa
    )  # [B, H, T, hd]
    out = torch.cat([first.transpose(1, 2), rest.transpose(1, 2).reshape(1, B * T, H, hd)], dim=1)
    return out, None


def _no_mask(*args, **kwargs) -> None:
    return None  # the packed layout's mask is its own; an [n+B·T]² one would only cost memory


ALL_ATTENTION_FUNCTIONS.register(PACKED, packed_sdpa)
ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED, _no_mask)


def _configs(config) -> Iterator[Any]:
    """``config`` and its sub-configs (a multimodal model's text and vision parts), depth first;
    nothing for None."""
    if config is None:
        return
    yield config
    for key in getattr(config, "sub_configs", None) or {}:
        yield from _configs(getattr(config, key, None))


@contextmanager
def _switched(backbone: nn.Module, name: str):
    """Within the block, the configs of ``backbone`` (and sub-configs) whose attention is ``sdpa``
    run ``name``; any other implementation (eager, flash, flex) is left as it is. The stored
    field is set directly: transformers' setter would also overwrite every sub-config (a vision
    tower's ``eager`` would come back as ``sdpa``)."""
    configs = _configs(getattr(backbone, "config", None))
    swapped = [c for c in configs if getattr(c, "_attn_implementation_internal", None) == "sdpa"]
    for c in swapped:
        c._attn_implementation_internal = name
    try:
        yield
    finally:
        for c in swapped:
            c._attn_implementation_internal = "sdpa"


def grouped_attention(backbone: nn.Module):
    """``sdpa`` attention runs ``grouped_sdpa`` (the same numbers) within the block."""
    return _switched(backbone, NAME)


def can_pack(backbone: nn.Module) -> bool:
    """Whether the model's attention is ``sdpa``, the one ``packed_attention`` replaces."""
    return getattr(getattr(backbone, "config", None), "_attn_implementation", None) == "sdpa"


@contextmanager
def packed_attention(backbone: nn.Module, layout: Layout):
    """``sdpa`` attention runs ``packed_sdpa`` over ``layout`` within the block (this thread)."""
    _active.layout = layout
    try:
        with _switched(backbone, PACKED):
            yield
    finally:
        _active.layout = None
