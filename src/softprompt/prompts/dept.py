"""DePT (Shi and Lipani, 2024): a shorter prompt plus a low-rank update of the input embeddings.

The prompt has ``m`` tokens (``length``). The text's own token embeddings get
``(α/√r) · A · B`` added position by position, ``A [L, r]`` (Kaiming-uniform) and
``B [r, d]`` (zeros, so training starts from the plain model), ``L`` the maximum input
length. Parameters: ``m·d + L·r + r·d`` (m=60, r=30, L=256, d=768: 76,800, as many as a
100-token vanilla prompt).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .base import TOKEN_INITS, BackboneInfo, ParamGroup, PromptConfig, PromptMethod, _choice, _positive_float, _positive_int, option, token_init


@dataclass
class DePTConfig(PromptConfig):
    """Attributes:
    length: ``m``, the prompt tokens (DePT's 60 with r=30 and L=256 on T5-Base).
    rank: ``r`` of the embedding update.
    max_length: ``L``, the text positions the update covers (longer inputs: later
        positions get no update).
    alpha: the update's scale numerator; the update is multiplied by ``alpha / sqrt(rank)``.
    init, init_text: how the prompt part starts, as for vanilla prompt tuning.
    lr_update: the embedding update's own peak learning rate (a second optimizer group, as
        DePT trains it; the authors' grid is {5e-4, 5e-3, 0.3} beside prompt lr {0.3, 0.4});
        None: the run's learning rate. Both follow the run's schedule.
    """

    method = "dept"
    length: int = option(60, "prompt tokens m", "M")
    rank: int = option(30, "rank r of the embedding update", "R")
    max_length: int = option(256, "text positions L the embedding update covers", "L")
    alpha: float = option(8.0, "scale of the update: alpha/sqrt(rank)", "A")
    init: str = option("vocab", "how the prompt starts: vocab, text, normal, vocab_all (the whole vocabulary) or text_special (with the tokenizer's special tokens)", "INIT")
    init_text: str | None = option(None, "the text whose token embeddings start the prompt (init=text)", "TEXT")
    lr_update: float | None = option(None, "peak learning rate of the embedding update (default: the run's)", "LR")
    # Decoder-only (SmolLM2-135M, SST-2): at the shared lr 0.03 the update swamps the text's own
    # embeddings and the run collapses to one class (51.3% dev); a small update rate keeps it.
    # A base model (Gemma 3 270M, SST-2, 100 steps, sweeps/gemma3-lr.yaml): 0.1 and 0.3 tie on the
    # held-out rows (89.0); a tie keeps the lr nearest the kind's 0.03, so 0.1.
    recipes = {"decoder-only": {"lr_update": 1e-3}, "base": {"lr": 0.1}}

    def validate(self) -> None:
        super().validate()
        if self.lr_update is not None:
            _positive_float(self, "lr_update")
        _positive_int(self, "rank")
        _positive_int(self, "max_length")
        _positive_float(self, "alpha")
        _choice(self, "init", TOKEN_INITS)

    def num_parameters(self, embed_dim: int) -> int:
        return self.length * embed_dim + self.max_length * self.rank + self.rank * embed_dim


class DePTPrompt(PromptMethod):
    def __init__(self, config: DePTConfig, info: BackboneInfo, generator: torch.Generator):
        super().__init__(config, info)
        self.embedding = nn.Parameter(token_init(config.init, config.length, info, generator, config.init_text))
        # Kaiming-uniform with a=sqrt(5), as nn.Linear and LoRA initialize their A.
        bound = 1.0 / math.sqrt(config.rank)
        self.lora_a = nn.Parameter(torch.empty(config.max_length, config.rank).uniform_(-bound, bound, generator=generator))
        self.lora_b = nn.Parameter(torch.zeros(config.rank, info.embed_dim))
        self.scaling = config.alpha / math.sqrt(config.rank)

    def forward(self) -> torch.Tensor:  # [m, d]
        return self.embedding

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("prompt", [self.embedding]), ParamGroup("update", [self.lora_a, self.lora_b], self.config.lr_update)]

    def adjust_input_embeds(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Add the update by each token's position among the *real* tokens of its row, so
        left and right padding give the same result.

        Args:
            embeds: ``[B, T, d]``; attention_mask: ``[B, T]``.
        Returns:
            ``[B, T, d]``.
        """
        L = self.config.max_length
        update = (self.lora_a @ self.lora_b) * self.scaling  # [L, d]
        position = attention_mask.long().cumsum(-1) - 1  # [B, T]; pads before the text get -1
        covered = (position >= 0) & (position < L) & attention_mask.bool()
        rows = update[position.clamp(0, L - 1)]  # [B, T, d]
        return embeds + rows.to(embeds.dtype) * covered.unsqueeze(-1).to(embeds.dtype)
