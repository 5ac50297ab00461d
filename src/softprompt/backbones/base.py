"""The interface every join implements: how a prompt joins a model's input."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .head import OutputHead


class Join:
    """How a prompt joins the input. Every method takes ``prompt``: one ``[n, d]`` for all
    rows, or ``RowPrompts`` (a prompt per row)."""

    kind: str = ""

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone
        self.output_head = OutputHead(backbone)  # run only where labels are (``head``)

    def forward(self, prompt, embeds, attention_mask, labels=None, return_logits=True, **kwargs):
        raise NotImplementedError

    def labeled_logits(self, prompt, embeds, attention_mask, labels, **kwargs):
        """Logits only where a label is: ``(logits [N, V] float32, targets [N], rows [N])``
        over the N labeled positions of ``labels``, in row-major order."""
        raise NotImplementedError

    def score(self, prompt, embeds, attention_mask, labels, **kwargs) -> torch.Tensor:
        """Sum of log-probabilities of the labeled tokens of each row, ``[B]``."""
        logits, targets, rows = self.labeled_logits(prompt, embeds, attention_mask, labels, **kwargs)
        token = -F.cross_entropy(logits, targets, reduction="none")
        return torch.zeros(labels.shape[0], device=token.device, dtype=token.dtype).index_add(0, rows, token)

    def generate(self, prompt, embeds, attention_mask, **kwargs):
        raise NotImplementedError

    def clear_cache(self) -> None:
        """Forget every prompt's kept keys and values (a no-op where nothing is kept)."""

