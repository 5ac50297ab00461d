"""The DPT paper's rank analysis (its Section 2): ``P = U · ReLU(diag σ) · V``.

``U [n, n]``, ``σ [n]`` and ``V [n, d]`` are trained; ``σ`` starts positive. Entries of
``σ`` that training pushes below zero switch their direction off, so the count of
positive entries over training (the paper's Figure 3) traces an upper bound of the
prompt's rank.

Init: ``σ = 1``; ``U`` orthogonal (from a QR decomposition of a Gaussian draw), so at step 0
the prompt is a rotation of ``V``; ``V`` copies random vocabulary embeddings, so the prompt
starts on the scale of real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import BackboneInfo, PromptConfig, PromptMethod, token_init


@dataclass
class RankProbeConfig(PromptConfig):
    """Attributes:
    length: ``n``; also the number of singular directions probed.
    """

    method = "rank_probe"
    # A base model (Gemma 3 270M, SST-2, 100 steps, sweeps/gemma3-lr.yaml): lr 0.03 on the held-out
    # rows 88.5; 0.01 stays at chance (52.5) and 0.1 collapses (49.0).
    recipes = {"base": {"lr": 0.03}}

    def num_parameters(self, embed_dim: int) -> int:
        n = self.length
        return n * n + n + n * embed_dim


class RankProbePrompt(PromptMethod):
    def __init__(self, config: RankProbeConfig, info: BackboneInfo, generator: torch.Generator):
        super().__init__(config, info)
        n = config.length
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator))
        self.u = nn.Parameter(q.contiguous())
        self.sigma = nn.Parameter(torch.ones(n))
        self.v = nn.Parameter(token_init("vocab", n, info, generator))

    def forward(self) -> torch.Tensor:  # [n, n] * [n] @ [n, d] -> [n, d]
        return (self.u * torch.relu(self.sigma)) @ self.v

    def positive_count(self) -> int:
        """How many entries of σ are positive: the probe's estimate of the prompt's rank."""
        return int((self.sigma.detach() > 0).sum())

    diagnostic_labels = {"positive_sigma": "positive σ entries (rank bound)"}

    def diagnostics(self) -> dict[str, float]:
        return {"positive_sigma": float(self.positive_count())}
