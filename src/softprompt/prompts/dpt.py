"""Decomposed Prompt Tuning (DPT; Xiao et al., 2023): a low-rank prompt ``P = A · B``.

``A`` is ``[n, b]`` and ``B`` is ``[b, d]`` with bottleneck ``b`` (10 in the paper), so the
prompt costs ``n·b + b·d`` parameters instead of ``n·d`` (T5-Large, n=100: 11,240 vs 102,400).

Init: ``uniform`` (default) draws both factors from U(-0.5, 0.5), as the authors' released
code does; it is the setting their reported numbers come from. ``normal`` (the paper's text
says Gaussian) draws from N(0, 1/12), the same variance, so the two differ only in shape.
Both are T5-scaled: the entries of ``A · B`` have standard deviation ``sqrt(b)/12`` (0.26 at
b = 10) whatever the model, about twice a real token's on SmolLM2-135M-Instruct (0.136 over
its whole table, 0.122 over the first 5,000 ids).

``scaled`` draws both from U(-c, c) with c chosen so that the entries of ``A · B`` have the
standard deviation ``s`` of the backbone's token embeddings (``BackboneInfo.embed_std``): an
entry sums ``b`` independent products of two U(-c, c) draws, each of variance ``(c²/3)²``, so
its variance is ``b · (c²/3)²`` and ``c = sqrt(3 · s / sqrt(b))`` (SmolLM2, s = 0.122, b = 10:
c = 0.34).

``text`` starts ``A · B`` as the best rank-``b`` approximation of ``init_text``'s token
embeddings (the SVD's top ``b`` directions; exactly the text where it has at most ``b``
distinct directions), as vanilla prompt tuning's text init starts the prompt as the text. The
singular values are split so that both factors' entries have the same root mean square: Adam
moves every entry by about the learning rate, so a small factor would remix the prompt
fastest. Directions the text lacks (``b`` above its rank) start with a zero column of ``A``
and a random row of ``B`` on the other rows' scale, so they still learn (both zero would get
no gradient) and the product starts exactly at the approximation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .base import BackboneInfo, PromptConfig, PromptMethod, _choice, _positive_int, option, required_embed_std, token_init

UNIFORM_RANGE = 0.5
INITS = ("uniform", "normal", "scaled", "text")


@dataclass
class DPTConfig(PromptConfig):
    """Attributes:
    length: ``n``.
    bottleneck: ``b``, the inner dimension of ``A · B`` and so the prompt's maximum rank.
    init: ``uniform`` (authors' code, default), ``normal``, ``scaled`` (to the token
        embeddings' standard deviation; needs ``BackboneInfo.embed_std``) or ``text``.
    init_text: the text for ``init="text"``.
    """

    method = "dpt"
    # Decoder-only (SmolLM2-135M, SST-2 dev, 150 steps, lr 0.03): scaled 87.8% against the
    # authors' U(-0.5, 0.5) 85.9%, whose prompt starts at about twice a token's scale there.
    # A base model (Gemma 3 270M, SST-2): with the scaled init the lr search (100 steps, seed 0,
    # sweeps/gemma3-lr.yaml) chose 0.1 on the held-out rows (88.0; 0.03: 84.5; 0.3 diverged), but
    # at 150 steps seed 2 collapsed from its first steps at 0.1 and at 0.05 (dev 50.9, 65.1). One
    # Adam step moves A·B about 2.6x as far (relative to its size) as a plain prompt at the same lr,
    # so: the text start, at vanilla's 0.03: held-out 89.5 / 91.5 / 90.5 on seeds 0-2 (docs/decoder-only.md).
    recipes = {"decoder-only": {"init": "scaled"}, "base": {"lr": 0.03, "init": "text"}}
    init_without_text = "scaled"  # the decoder-only recipe's init
    bottleneck: int = option(10, "inner dimension b of A·B (the prompt's maximum rank)", "B")
    init: str = option("uniform", "how A and B start: uniform (authors' code), normal, scaled (to the token embeddings' std), or text (A·B the best rank-b approximation of init_text's embeddings)", "INIT")
    init_text: str | None = option(None, "the text whose token embeddings A·B starts near (init=text)", "TEXT")

    def validate(self) -> None:
        super().validate()
        _positive_int(self, "bottleneck")
        _choice(self, "init", INITS)

    def num_parameters(self, embed_dim: int) -> int:
        return self.length * self.bottleneck + self.bottleneck * embed_dim


class DPTPrompt(PromptMethod):
    def __init__(self, config: DPTConfig, info: BackboneInfo, generator: torch.Generator):
        super().__init__(config, info)
        n, b, d = config.length, config.bottleneck, info.embed_dim
        if info.skip_init:  # the saved values are copied in next
            self.a, self.b = nn.Parameter(torch.zeros(n, b)), nn.Parameter(torch.zeros(b, d))
            return
        if config.init == "text":
            a, b_ = text_factors(token_init("text", n, info, generator, config.init_text), b, generator)
            self.a, self.b = nn.Parameter(a), nn.Parameter(b_)  # [n, b], [b, d]
            return
        bound = UNIFORM_RANGE
        if config.init == "scaled":
            bound = scaled_bound(required_embed_std(info, "dpt: init='scaled'", "use init='uniform' or 'normal'"), b)
        self.a = nn.Parameter(_draw((n, b), config.init, generator, bound))  # [n, b]
        self.b = nn.Parameter(_draw((b, d), config.init, generator, bound))  # [b, d]

    def forward(self) -> torch.Tensor:  # [n, b] @ [b, d] -> [n, d]
        return self.a @ self.b


def scaled_bound(embed_std: float, bottleneck: int) -> float:
    """``c`` such that ``A · B`` with ``A, B ~ U(-c, c)`` has entries of standard deviation
    ``embed_std``: ``sqrt(3 · s / sqrt(b))`` (see the module docstring)."""
    return math.sqrt(3 * embed_std / math.sqrt(bottleneck))


def text_factors(text: torch.Tensor, bottleneck: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``A [n, b]`` and ``B [b, d]`` whose product is the best rank-``b`` approximation of
    ``text [n, d]``, both factors' entries at one root mean square (the module docstring)."""
    u, s, vh = torch.linalg.svd(text.double(), full_matrices=False)  # [n, k], [k], [k, d]
    # Directions whose singular value is round-off of a zero (repeated text rows) count as missing.
    kept = int((s > s[0] * max(text.shape) * torch.finfo(text.dtype).eps).sum()) if s.numel() and s[0] > 0 else 0
    kept = min(kept, bottleneck)
    root = s[:kept].sqrt()
    a, b = u[:, :kept] * root, root[:, None] * vh[:kept]  # [n, kept], [kept, d]
    if kept:
        balance = (b.pow(2).mean() / a.pow(2).mean()).pow(0.25)  # rms(a·x) = rms(b / x)
        a, b = a * balance, b / balance
    n, d = text.shape
    spare = bottleneck - kept
    rows = torch.randn(spare, d, generator=generator, dtype=torch.float64)
    scale = b.pow(2).mean().sqrt() if kept else torch.tensor(1.0 / math.sqrt(d), dtype=torch.float64)
    rows = rows / rows.pow(2).mean().sqrt().clamp_min(1e-30) * scale if spare else rows
    a = torch.cat([a, torch.zeros(n, spare, dtype=torch.float64)], dim=1)
    return a.float().contiguous(), torch.cat([b, rows]).float().contiguous()


def _draw(shape: tuple[int, int], init: str, generator: torch.Generator, bound: float = UNIFORM_RANGE) -> torch.Tensor:
    if init in ("uniform", "scaled"):
        return torch.empty(shape).uniform_(-bound, bound, generator=generator)
    # Same variance as U(-0.5, 0.5): (2 · 0.5)² / 12.
    return torch.randn(shape, generator=generator) * (1 / 12) ** 0.5
