"""Residual Prompt Tuning (Razdaibiedina et al., 2023).

``P = E + LayerNorm(W2 · ReLU(W1 · E + c1) + c2)``: one MLP with bottleneck ``m`` shared
by all prompt tokens, plus a skip connection. The DPT paper's baseline uses n=100, m=400.

The LayerNorm's gain starts at 1 (``norm_init="paper"``, the authors' code), so the MLP branch
adds a vector of standard deviation 1 to every prompt row. That is small beside T5's token
embeddings but about 8 times a real token on SmolLM2-135M-Instruct (standard deviation 0.122):
there the first prompt is mostly the branch's noise and the skip connection's ``E`` hardly
counts. ``norm_init="scaled"`` starts the gain at the token embeddings' standard deviation
(``BackboneInfo.embed_std``), so the branch adds a vector on a real token's scale. Measured on
SmolLM2 (SST-2, three seeds, the CPU, lr 1e-2): scaled 86.5 ± 1.9, paper 86.9 ± 1.0, a tie, so
the decoder-only recipe keeps the paper's gain (benchmarks/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import (
    TOKEN_INITS, BackboneInfo, PromptConfig, PromptMethod, _choice, _positive_int, option, required_embed_std, token_init,
)


@dataclass
class ResidualConfig(PromptConfig):
    """Attributes:
    length: ``n``.
    bottleneck: ``m``, the MLP's hidden size (400 in the paper; more did not help there).
    init, init_text: how ``E`` starts, as for vanilla prompt tuning.
    norm_init: ``paper`` (the LayerNorm's gain starts at 1) or ``scaled`` (at the token
        embeddings' standard deviation; needs ``BackboneInfo.embed_std``).
    """

    method = "residual"
    # Decoder-only (SmolLM2, SST-2, 150 steps of 16): lr 0.03, the shared default, gave 82.1% dev
    # (held-out 84.5%); 1e-2 85.7% (87.5%); 0.0178 87.2% (87.0%). The MLP moves the whole prompt
    # at once, so it wants a smaller step than a plain prompt; 1e-2 was best on the held-out rows.
    # A base model (Gemma 3 270M, SST-2, 100 steps, sweeps/gemma3-lr.yaml): lr 0.1 on the held-out
    # rows 89.5 (0.03 and 0.01: 88.5).
    recipes = {"decoder-only": {"lr": 1e-2}, "base": {"lr": 0.1}}
    bottleneck: int = option(400, "width m of the reparameterizing MLP", "M")
    init: str = option("vocab", "how the prompt starts: vocab, text, normal, vocab_all (the whole vocabulary) or text_special (with the tokenizer's special tokens)", "INIT")
    init_text: str | None = option(None, "the text whose token embeddings start the prompt (init=text)", "TEXT")
    norm_init: str = option("paper", "the LayerNorm's starting gain: paper (1) or scaled (the token embeddings' std)", "INIT")

    def validate(self) -> None:
        super().validate()
        _positive_int(self, "bottleneck")
        _choice(self, "init", TOKEN_INITS)
        _choice(self, "norm_init", ("paper", "scaled"))

    def num_parameters(self, embed_dim: int) -> int:
        d, m = embed_dim, self.bottleneck
        # E, W1 and W2, c1, c2, LayerNorm weight and bias
        return self.length * d + 2 * d * m + m + d + 2 * d


class ResidualPrompt(PromptMethod):
    def __init__(self, config: ResidualConfig, info: BackboneInfo, generator: torch.Generator):
        super().__init__(config, info)
        d, m = info.embed_dim, config.bottleneck
        self.embedding = nn.Parameter(token_init(config.init, config.length, info, generator, config.init_text))
        self.down = nn.Linear(d, m)
        self.up = nn.Linear(m, d)
        self.norm = nn.LayerNorm(d)
        # nn.Linear draws from the global RNG; re-draw from ours so a seed reproduces the init.
        for layer in (self.down, self.up):
            bound = layer.in_features ** -0.5
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
        if config.norm_init == "scaled" and not info.skip_init:
            std = required_embed_std(info, "residual: norm_init='scaled'", "use norm_init='paper'")
            with torch.no_grad():
                self.norm.weight.fill_(std)

    def forward(self) -> torch.Tensor:  # [n, d]
        e = self.embedding
        return e + self.norm(self.up(torch.relu(self.down(e))))
