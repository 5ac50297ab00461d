"""Decomposed Prompt Tuning (DPT; Xiao et al., 2023): a low-rank prompt ``P = A · B``.

``A`` is ``[n, b]`` and ``B`` is ``[b, d]`` with bottleneck ``b`` (10 in the paper), so the
prompt costs ``n·b + b·d`` parameters instead of ``n·d`` (T5-Large, n=100: 11,240 vs 102,400).

Init: ``uniform`` (default) draws both factors from U(-0.5, 0.5), as the authors' released
code does; it is the setting their reported numbers come from. ``normal`` (the paper's text
says Gaussian) draws from N(0, 1/12), the same variance, so the two differ only in shape.
``scaled`` draws both from U(-c, c) with c chosen so that the entries of ``A · B`` have the
standard deviation ``s`` of the backbone's token embeddings: an entry sums ``b`` products of two
U(-c, c) draws, variance ``b · (c²/3)²``, so ``c = sqrt(3 · s / sqrt(b))``. On SmolLM2 (s = 0.136,
b = 10) U(-0.5, 0.5) starts the prompt at about twice a real token's scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .base import BackboneInfo, PromptConfig, PromptMethod, _choice, _positive_int, option

UNIFORM_RANGE = 0.5


@dataclass
class DPTConfig(PromptConfig):
    """Attributes:
    length: ``n``.
    bottleneck: ``b``, the inner dimension of ``A · B`` and so the prompt's maximum rank.
    init: ``uniform`` (authors' code, default) or ``normal``.
    """

    method = "dpt"
    bottleneck: int = option(10, "inner dimension b of A·B (the prompt's maximum rank)", "B")
    init: str = option("uniform", "how A and B start: uniform (authors' code), normal, or scaled (to the token embeddings' std)", "INIT")

    def validate(self) -> None:
        super().validate()
        _positive_int(self, "bottleneck")
        _choice(self, "init", ("uniform", "normal", "scaled"))

    def num_parameters(self, embed_dim: int) -> int:
        return self.length * self.bottleneck + self.bottleneck * embed_dim


class DPTPrompt(PromptMethod):
    def __init__(self, config: DPTConfig, info: BackboneInfo, generator: torch.Generator):
        super().__init__(config, info)
        n, b, d = config.length, config.bottleneck, info.embed_dim
        bound = UNIFORM_RANGE
        if config.init == "scaled" and not info.skip_init:
            bound = math.sqrt(3 * info.embedding_std() / math.sqrt(b))
        self.a = nn.Parameter(_draw((n, b), config.init, generator, bound))
        self.b = nn.Parameter(_draw((b, d), config.init, generator, bound))

    def forward(self) -> torch.Tensor:  # [n, b] @ [b, d] -> [n, d]
        return self.a @ self.b


def _draw(shape: tuple[int, int], init: str, generator: torch.Generator, bound: float = UNIFORM_RANGE) -> torch.Tensor:
    if init in ("uniform", "scaled"):
        return torch.empty(shape).uniform_(-bound, bound, generator=generator)
    # Same variance as U(-0.5, 0.5): (2 · 0.5)² / 12.
    return torch.randn(shape, generator=generator) * (1 / 12) ** 0.5
