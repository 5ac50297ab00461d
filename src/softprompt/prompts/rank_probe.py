"""The DPT paper's rank analysis (its Section 2): ``P = U · ReLU(diag σ) · V``.

``U [n, n]``, ``σ [n]`` and ``V [n, d]`` are trained; ``σ`` starts positive. Entries of
``σ`` that training pushes below zero switch their direction off, so the count of
positive entries over training (the paper's Figure 3) traces an upper bound of the
prompt's rank.

Init: ``σ = 1``; ``U`` orthogonal (from a QR decomposition of a Gaussian draw), so at step 0
the prompt is a rotation of ``V``; ``V`` copies random vocabulary embeddings, so the prompt
starts on the scale of real tokens. ``init="text"``: ``V`` copies the embeddings of
``init_text`` and ``U`` is the identity (orthogonal too), so the prompt starts as vanilla
prompt tuning's text init does, as the text itself.

``lr_mix``: the peak learning rate of ``U`` and ``σ`` (default: the run's). Adam moves each
entry of ``U`` by about the learning rate a step, so each prompt row by that much of every row
of ``V``: where the embeddings are large (Gemma multiplies them by √d), an lr that suits ``V``
remixes the whole prompt within a few steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import BackboneInfo, ParamGroup, PromptConfig, PromptMethod, _choice, _positive_float, option, token_init

INITS = ("vocab", "text")


@dataclass
class RankProbeConfig(PromptConfig):
    """Attributes:
    length: ``n``; also the number of singular directions probed.
    init: ``vocab`` (default) or ``text`` (the module docstring).
    init_text: the text for ``init="text"``.
    lr_mix: the peak learning rate of ``U`` and ``σ``; None: the run's.
    """

    method = "rank_probe"
    # A base model (Gemma 3 270M, SST-2, 100 steps, sweeps/gemma3-lr.yaml): lr 0.03 on the held-out
    # rows 88.5; 0.01 stays at chance (52.5) and 0.1 collapses (49.0). At 150 steps (benchmarks/
    # accuracy.py) the vocab init collapsed on seed 0 (dev 59.6, below zero-shot's 64.2: the loss
    # rose from its first steps) where init="text" reached 89.7; see docs/decoder-only.md.
    recipes = {"base": {"lr": 0.03, "init": "text"}}
    init: str = option("vocab", "how V and U start: vocab (random token embeddings, U a random rotation) or text (init_text's embeddings, U the identity)", "INIT")
    init_text: str | None = option(None, "the text whose token embeddings start V (init=text)", "TEXT")
    lr_mix: float | None = option(None, "peak learning rate of U and σ (default: the run's)", "LR")

    def validate(self) -> None:
        super().validate()
        _choice(self, "init", INITS)
        if self.lr_mix is not None:
            _positive_float(self, "lr_mix")

    def num_parameters(self, embed_dim: int) -> int:
        n = self.length
        return n * n + n + n * embed_dim


class RankProbePrompt(PromptMethod):
    def __init__(self, config: RankProbeConfig, info: BackboneInfo, generator: torch.Generator):
        super().__init__(config, info)
        n = config.length
        if config.init == "text":
            self.u = nn.Parameter(torch.eye(n))
        else:
            q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator))
            self.u = nn.Parameter(q.contiguous())
        self.sigma = nn.Parameter(torch.ones(n))
        self.v = nn.Parameter(token_init(config.init, n, info, generator, config.init_text))

    def forward(self) -> torch.Tensor:  # [n, n] * [n] @ [n, d] -> [n, d]
        return (self.u * torch.relu(self.sigma)) @ self.v

    def param_groups(self) -> list[ParamGroup]:
        if self.config.lr_mix is None:
            return super().param_groups()
        return [ParamGroup("prompt", [self.v]), ParamGroup("mix", [self.u, self.sigma], self.config.lr_mix)]

    def positive_count(self) -> int:
        """How many entries of σ are positive: the probe's estimate of the prompt's rank."""
        return int((self.sigma.detach() > 0).sum())

    diagnostic_labels = {"positive_sigma": "positive σ entries (rank bound)"}

    def diagnostics(self) -> dict[str, float]:
        return {"positive_sigma": float(self.positive_count())}
