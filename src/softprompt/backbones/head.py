"""The output head, run only where it is read.

The head maps a position's final hidden state to the whole vocabulary: with 262,144 tokens (Gemma
3 270M) it holds 63% of the parameters, and at every position it costs about three times the
rest of the forward. A loss, rank scoring and the class objective read it only where a label is,
so only there does it run:

* the decoder-only shared path applies it itself, to the labeled positions' hidden states;
* a path that runs the whole model (the naive decoder-only layout, an encoder-decoder's decoder)
  goes through ``OutputHead.only``: a forward pre-hook hands the head just those rows of its
  input, and the model's own code after the head (softcapping, a bias) runs on them unchanged;
* generation leaves it to transformers, which asks for the last position only (``logits_to_keep=1``).

Where the head runs at every position anyway (the caller asked for the logits, or a model applies
its head in a way the hook cannot reach) ``OutputHead.full`` logs one line, once per reason.
"""

from __future__ import annotations

import inspect
import logging
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

log = logging.getLogger("softprompt")


class OutputHead:
    """A backbone's output head (``get_output_embeddings()``), and the one log line each reason
    to run it at every position gets."""

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone
        self.module = backbone.get_output_embeddings()
        self.model = type(backbone).__name__
        self._said: set[str] = set()

    def full(self, reason: str, level: int = logging.WARNING) -> None:
        """Log, once per ``reason``, that the head runs at every position."""
        if reason not in self._said:
            self._said.add(reason)
            log.log(level, "softprompt: %s computes its output head at every position: %s", self.model, reason)

    def generating(self, decoder_only: bool, use_cache: bool) -> None:
        """Before ``backbone.generate``: transformers computes the last position's logits only
        where the model's forward takes ``logits_to_keep``. Where it takes none, log once what
        runs instead: a decoder-only model's first step over the whole input; without the
        cache, every position at every step (an encoder-decoder's decoder too; with the cache
        its steps are one position each anyway)."""
        if "logits_to_keep" in inspect.signature(self.backbone.forward).parameters:
            return
        if not use_cache:
            self.full("generation without the cache, and the model's forward takes no logits_to_keep: every step, every position")
        elif decoder_only:
            self.full("generation's first step: the model's forward takes no logits_to_keep")

    @contextmanager
    def only(self, rows: torch.Tensor, cols: torch.Tensor, width: int) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
        """Inside, the head computes only positions ``(rows[i], cols[i])`` (``[N]`` each) of an
        input ``[B, width, d]``: the model's logits come out ``[N, V]`` in that order.

        Yields ``pick(logits)``: the logits at those positions ``[N, V]``; from a model whose
        head never saw such an input (it applies it another way), its full logits
        ``[B, width, V]`` gathered there, which is logged once."""
        applied = []

        def select(module: nn.Module, args: tuple) -> tuple | None:
            hidden = args[0]
            if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3 or hidden.shape[1] != width:
                return None
            applied.append(rows.numel())
            return (hidden[rows.to(hidden.device), cols.to(hidden.device)], *args[1:])  # [N, d]

        def pick(logits: torch.Tensor) -> torch.Tensor:
            if applied and logits.dim() == 2:
                return logits
            self.full("the head is not applied through get_output_embeddings() to [batch, positions, hidden]")
            return logits[rows.to(logits.device), cols.to(logits.device)]

        handle = self.module.register_forward_pre_hook(select) if self.module is not None else None
        try:
            yield pick
        finally:
            if handle is not None:
                handle.remove()
