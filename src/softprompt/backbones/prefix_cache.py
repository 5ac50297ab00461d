"""The prefix cache: a decoder's prompt keys and values, kept for reuse and laid out per row.

In inference (no gradients to the prompt, backbone in eval mode) a decoder's prompt keys and
values are kept per *slot* (the single prompt of a model, or a bank's name) and reused by later
batches and calls while the prompt's values and the backbone's parameters (their tensors and
version counters) are unchanged: an optimizer step, a ``load``, any in-place change makes the
next call recompute them. The decoder-only join owns the kept entries (``DecoderOnlyJoin._kept``,
slot -> ``KeptPrefix``); this module says when one may be kept and when it is still valid.

``rows_cache`` turns the batch-1 caches of ``P`` distinct prompts into one cache for ``B`` rows.
"""

from __future__ import annotations

import copy
from typing import Any, Hashable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class KeptPrefix(NamedTuple):
    """A prompt's keys and values kept for reuse: valid while the prompt's values equal
    ``prompt`` and the backbone's parameters are still ``backbone`` (tensors, versions)."""

    prompt: torch.Tensor  # [n, d], a private copy of the values the prefix was computed from
    backbone: tuple  # parameters_key(backbone) and the dtype the prefix was computed in
    prefix: Any  # the body's output over the prompt (batch 1, with its KV cache)

    def still_valid(self, prompt: torch.Tensor, backbone: tuple) -> bool:
        """Whether this entry was computed from ``prompt [n, d]``'s values on the backbone
        ``backbone`` (its ``parameters_key`` and dtype). The check compares the values
        themselves, so no path that changes a prompt (an optimizer step, ``load``, an edit
        through ``.data``) can meet a stale entry."""
        return (
            self.backbone == backbone and self.prompt.shape == prompt.shape
            and self.prompt.device == prompt.device and torch.equal(self.prompt, prompt)
        )


def may_keep(backbone: nn.Module, prompt: torch.Tensor, slot: Hashable | None) -> bool:
    """Whether the prompt's keys and values may be kept for later calls: inference (no
    gradient to the prompt, the backbone in eval mode) of a prompt with a slot."""
    needs_grad = prompt.requires_grad and torch.is_grad_enabled()
    return slot is not None and not needs_grad and not backbone.training


def parameters_key(backbone: nn.Module) -> tuple:
    """The backbone's parameters as they are now: each tensor's storage and version counter
    (an in-place change, a load or a move changes one)."""
    return tuple((p.data_ptr(), p._version) for p in backbone.parameters())


def rows_cache(caches: list, which: torch.Tensor):
    """A KV cache for ``B = len(which)`` rows from ``P`` batch-1 caches (one per prompt): row
    ``b`` holds cache ``which[b]``, zero-padded at the end to the longest. A new cache object:
    the given ones (perhaps kept for reuse) are never changed. One prompt is expanded, not copied."""
    B = which.shape[0]
    base = caches[0]
    layers = getattr(base, "layers", None)
    if not (layers and all(hasattr(layer, "keys") for c in caches for layer in c.layers)):
        if len(caches) > 1:
            raise NotImplementedError(f"{type(base).__name__}: a prompt per row needs a cache with per-layer keys and values")
        cache = copy.deepcopy(base)  # other cache layouts: let transformers repeat it
        cache.batch_repeat_interleave(B)
        return cache
    cache = copy.copy(base)
    cache.layers = [copy.copy(layer) for layer in layers]
    N = max(c.layers[0].keys.shape[-2] for c in caches)
    for i, layer in enumerate(cache.layers):
        if len(caches) == 1:
            layer.keys = layer.keys.expand(B, *layer.keys.shape[1:])
            layer.values = layer.values.expand(B, *layer.values.shape[1:])
        else:  # [P, H, N, hd] -> [B, H, N, hd]
            keys = torch.cat([F.pad(c.layers[i].keys, (0, 0, 0, N - c.layers[i].keys.shape[-2])) for c in caches])
            values = torch.cat([F.pad(c.layers[i].values, (0, 0, 0, N - c.layers[i].values.shape[-2])) for c in caches])
            layer.keys, layer.values = keys[which], values[which]
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = N
    return cache

