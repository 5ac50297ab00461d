"""Attention for the text run on top of a prompt's cached keys and values.

On the shared-prefix path (``join.DecoderOnlyJoin``) the text's queries start ``N`` columns
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
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch.nn.functional as F
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward
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


def _configs(config) -> Iterator[Any]:
    """``config`` and its sub-configs (a multimodal model's text and vision parts), depth first;
    nothing for None."""
    if config is None:
        return
    yield config
    for key in getattr(config, "sub_configs", None) or {}:
        yield from _configs(getattr(config, key, None))


@contextmanager
def grouped_attention(backbone: nn.Module):
    """Within the block, the configs of ``backbone`` (and sub-configs) whose attention is ``sdpa``
    run ``grouped_sdpa`` (the same numbers); any other implementation (eager, flash, flex) is left
    as it is. The stored field is set directly: transformers' setter would also overwrite every
    sub-config (a vision tower's ``eager`` would come back as ``sdpa``)."""
    configs = _configs(getattr(backbone, "config", None))
    swapped = [c for c in configs if getattr(c, "_attn_implementation_internal", None) == "sdpa"]
    for c in swapped:
        c._attn_implementation_internal = NAME
    try:
        yield
    finally:
        for c in swapped:
            c._attn_implementation_internal = "sdpa"
