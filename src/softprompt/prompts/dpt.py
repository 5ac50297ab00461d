"""Decomposed Prompt Tuning (DPT; Xiao et al., 2023): a low-rank prompt ``P = A · B``.

``A`` is ``[n, b]`` and ``B`` is ``[b, d]`` with bottleneck ``b`` (10 in the paper), so the
prompt costs ``n·b + b·d`` parameters instead of ``n·d`` (T5-Large, n=100: 11,240 vs 102,400).

Init: ``uniform`` (default) draws both factors from U(-0.5, 0.5), as the authors' released
code does; it is the setting their reported numbers come from. ``normal`` (the paper's text
says Gaussian) draws from N(0, 1/12), the same variance, so the two differ only in shape.
"""

from __future__ import annotations

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
    init: str = option("uniform", "how A and B start: uniform (authors' code) or normal", "INIT")

    def validate(self) -> None:
        super().validate()
        _positive_int(self, "bottleneck")
        _choice(self, "init", ("uniform", "normal"))

    def num_parameters(self, embed_dim: int) -> int:
        return self.length * self.bottleneck + self.bottleneck * embed_dim


class DPTPrompt(PromptMethod):
    def __init__(self, config: DPTConfig, info: BackboneInfo, generator: torch.Generator):
        super().__init__(config, info)
        n, b, d = config.length, config.bottleneck, info.embed_dim
        self.a = nn.Parameter(_draw((n, b), config.init, generator))
        self.b = nn.Parameter(_draw((b, d), config.init, generator))

    def forward(self) -> torch.Tensor:  # [n, b] @ [b, d] -> [n, d]
        return self.a @ self.b


def _draw(shape: tuple[int, int], init: str, generator: torch.Generator) -> torch.Tensor:
    if init == "uniform":
        return torch.empty(shape).uniform_(-UNIFORM_RANGE, UNIFORM_RANGE, generator=generator)
    # Same variance as U(-0.5, 0.5): (2 · 0.5)² / 12.
    return torch.randn(shape, generator=generator) * (1 / 12) ** 0.5
