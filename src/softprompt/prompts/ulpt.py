"""Ultra-Low-dimensional Prompt Tuning (ULPT; Wu, Hao and Mou, 2025).

Each prompt token lives in ``r`` dimensions (r=2 works). A random, frozen ``P̃ [r, d]``
projects it up, and a learnable scale ``s [d]`` and shift ``β [d]`` align the result with
the model's embedding space: ``E = (Z · P̃) ⊙ s + β``, ``n·r + 2·d`` parameters.

``P̃`` is drawn from the run's seed, as the authors' code does (``set_seed`` before the model is
built), so a multi-seed spread includes the projection; ``projection_seed`` fixes it instead.
It is never saved: the seed it came from is stored and it is rebuilt with a CPU ``torch.Generator``
(the same numbers on every machine and device), and a SHA-256 of its bytes is stored
beside the prompt so that a library or PyTorch change that would alter it is caught on load.

Init, the authors' and kept exact: ``z ~ N(0, 1)``, ``P̃`` xavier (variance ``2/(r+d)``),
``s = 1``, ``β = 0``. The initial prompt's entries then have standard deviation
``sqrt(r · 2/(r+d))`` whatever the model, to compare with the token embeddings' std
(``BackboneInfo.embed_std``): r = 2 gives 0.083 on SmolLM2-135M-Instruct (d = 576), whose token
embeddings have std 0.122 over the first 5,000 ids (0.136 over the whole table).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import BackboneInfo, ParamGroup, PromptConfig, PromptMethod, _choice, _positive_float, _positive_int, option


@dataclass
class ULPTConfig(PromptConfig):
    """Attributes:
    length: ``n``.
    rank: ``r``, the dimension each prompt token is optimized in.
    projection: ``xavier`` (default; uniform with bound sqrt(6/(r+d)), the authors' code) or
        ``normal`` (the paper's Gaussian, with the same variance 2/(r+d)).
    projection_seed: the integer ``P̃`` is regenerated from; None (default): the run's seed,
        resolved when the module is built and stored with the prompt.
    lr_align: the peak learning rate of the scale ``s`` and shift ``β`` (a second optimizer
        group); None: the run's learning rate, as the authors train all three.
    """

    method = "ulpt"
    # Decoder-only: 1,192 parameters move slowly at the shared lr 0.03 (SST-2 dev after 100
    # steps: 83.9%); lr 0.1 reaches 85.4% there (benchmarks/README.md). Adam moves every parameter
    # by about lr per step: z's step moves a prompt entry by about lr·0.08, β's by lr itself, so β
    # (shared by all tokens) dominates. lr_align 0.01 for s and β measured better at 150 steps
    # (SST-2, three seeds: 85.7 ± 0.7 against 84.2 ± 2.8) but worse at the demo's 100 steps
    # (82.3 against 85.4, seed 0), so it is an option and not yet the recipe.
    recipes = {"decoder-only": {"lr": 0.1}}
    rank: int = option(2, "dimension r each prompt token is optimized in", "R")
    projection: str = option("xavier", "the frozen random projection: xavier (authors' code) or normal", "KIND")
    projection_seed: int | None = option(None, "seed the projection is drawn from (default: the run's seed, as the authors' code)", "S")
    lr_align: float | None = option(None, "peak learning rate of the scale and shift (default: the run's)", "LR")

    def validate(self) -> None:
        super().validate()
        _positive_int(self, "rank")
        _choice(self, "projection", ("xavier", "normal"))
        if self.lr_align is not None:
            _positive_float(self, "lr_align")
        seed = self.projection_seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"ulpt: projection_seed must be a non-negative integer, got {seed!r}")

    def with_run_seed(self, seed: int) -> "ULPTConfig":
        # The authors draw P̃ after set_seed(run seed); the concrete seed is stored with the prompt.
        return self if self.projection_seed is not None else dataclasses.replace(self, projection_seed=int(seed))

    def num_parameters(self, embed_dim: int) -> int:
        return self.length * self.rank + 2 * embed_dim


def make_projection(rank: int, embed_dim: int, kind: str, seed: int) -> torch.Tensor:
    """The frozen up-projection ``P̃ [r, d]``, float32, a pure function of its arguments."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if kind == "xavier":
        bound = math.sqrt(6.0 / (rank + embed_dim))
        return torch.empty(rank, embed_dim).uniform_(-bound, bound, generator=generator)
    return torch.randn(rank, embed_dim, generator=generator) * math.sqrt(2.0 / (rank + embed_dim))


def projection_checksum(projection: torch.Tensor) -> str:
    return hashlib.sha256(projection.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()


class ULPTPrompt(PromptMethod):
    def __init__(self, config: ULPTConfig, info: BackboneInfo, generator: torch.Generator):
        super().__init__(config, info)
        d = info.embed_dim
        self.z = nn.Parameter(torch.randn(config.length, config.rank, generator=generator))
        self.scale = nn.Parameter(torch.ones(d))
        self.shift = nn.Parameter(torch.zeros(d))
        # Not persistent: rebuilt from the seed, so checkpoints hold only the trainable tensors.
        self.register_buffer(
            "projection",
            make_projection(config.rank, d, config.projection, config.projection_seed),
            persistent=False,
        )

    def forward(self) -> torch.Tensor:  # [n, r] @ [r, d] -> [n, d]
        return (self.z @ self.projection) * self.scale + self.shift

    def param_groups(self) -> list[ParamGroup]:
        if self.config.lr_align is None:  # one group, as before lr_align existed: old checkpoints resume
            return super().param_groups()
        return [ParamGroup("prompt", [self.z]), ParamGroup("align", [self.scale, self.shift], self.config.lr_align)]

    def metadata(self) -> dict[str, Any]:
        return {
            "projection_seed": self.config.projection_seed,
            "projection_sha256": projection_checksum(self.projection),
        }

    def check_metadata(self, metadata: dict[str, Any]) -> None:
        stored = metadata.get("projection_sha256")
        if stored is None:
            raise ValueError("ulpt: prompt_config.json has no projection_sha256")
        actual = projection_checksum(self.projection)
        if stored != actual:
            raise ValueError(
                f"ulpt: the projection regenerated from seed {self.config.projection_seed} has checksum "
                f"{actual[:12]}…, the saved prompt expects {stored[:12]}…; it was trained with a different projection"
            )
