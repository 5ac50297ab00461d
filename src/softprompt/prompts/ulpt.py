"""Ultra-Low-dimensional Prompt Tuning (ULPT; Wu, Hao and Mou, 2025).

Each prompt token lives in ``r`` dimensions (r=2 works). A random, frozen ``P̃ [r, d]``
projects it up, and a learnable scale ``s [d]`` and shift ``β [d]`` align the result with
the model's embedding space: ``E = (Z · P̃) ⊙ s + β``, ``n·r + 2·d`` parameters.

``P̃`` is drawn from the run's seed, as the authors' code does (``set_seed`` before the model is
built), so a multi-seed spread includes the projection; ``projection_seed`` fixes it instead.
It is never saved: the seed it came from is stored and it is rebuilt with a CPU ``torch.Generator``
(the same numbers on every machine and device), and a SHA-256 of its bytes is stored
beside the prompt so that a library or PyTorch change that would alter it is caught on load.

Init ``paper``, the authors' and kept exact: ``z ~ N(0, 1)``, ``P̃`` xavier (variance
``2/(r+d)``), ``s = 1``, ``β = 0``, one learning rate for all three. The initial prompt's entries
then have standard deviation ``q = sqrt(r · 2/(r+d))`` whatever the model, to compare with the
token embeddings' std ``σ`` (``BackboneInfo.embed_std``): r = 2 gives 0.083 on
SmolLM2-135M-Instruct (d = 576), whose token embeddings have std 0.122 over the first 5,000 ids.

Init ``scaled`` (the decoder-only recipe) is the same prompt in the units of the backbone's
embeddings. Adam moves every parameter by about its learning rate per step, whatever its
gradient; with the paper's parameters one step of ``z`` moves a prompt entry by about ``lr · q``,
one of ``β`` by ``lr`` and one of ``s`` by ``lr · q``, so on SmolLM2 the shift, shared by all
tokens, outruns the per-token coordinates 12×, and how much depends on the backbone's scale.
``scaled`` starts ``s`` at ``c = σ / q`` (the first prompt has the embeddings' std) and trains
``s`` at ``lr · c`` and ``β`` at ``lr · σ`` (their own optimizer groups): every step of any of
the three then moves the prompt by about ``lr · σ``. This is exactly Adam on ``s = c · ŝ``,
``β = σ · β̂`` at one learning rate; the saved tensors stay the paper's ``z, s, β``, and ``σ`` is
stored in the config so that a loaded prompt trains on at the same rates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import BackboneInfo, ParamGroup, PromptConfig, PromptMethod, _choice, _positive_float, _positive_int, option, required_embed_std


@dataclass
class ULPTConfig(PromptConfig):
    """Attributes:
    length: ``n``.
    rank: ``r``, the dimension each prompt token is optimized in.
    projection: ``xavier`` (default; uniform with bound sqrt(6/(r+d)), the authors' code) or
        ``normal`` (the paper's Gaussian, with the same variance 2/(r+d)).
    projection_seed: the integer ``P̃`` is regenerated from; None (default): the run's seed,
        resolved when the module is built and stored with the prompt.
    init: ``paper`` (default, the authors') or ``scaled`` (in the embeddings' units, see the
        module docstring; needs ``BackboneInfo.embed_std``).
    embed_std: ``σ`` for ``init="scaled"``; None: measured on the backbone when the module is
        built, then stored with the prompt.
    lr_align: the peak learning rate of the scale ``s`` and shift ``β`` (one group of their
        own); None: the run's (``paper``) or ``lr · c`` and ``lr · σ`` (``scaled``).
    """

    method = "ulpt"
    # Decoder-only (SmolLM2-135M, SST-2 dev, 150 steps of 16, three seeds; benchmarks/README.md):
    # the paper's init at one lr 0.1 gave 84.2 ± 2.8, the shift dominating (module docstring);
    # `scaled` at lr 0.1 gave 84.9 ± 1.1 and 86.4 ± 0.2 in two runs, the demo's 100 steps 86.1
    # (85.4 before) and CB 71.4 (55.4 before, one seed), with rates that follow the backbone's scale.
    # sink=bos (BOS read before the prompt, CPU, paired by seed): 85.0 -> 87.4 and 83.4 -> 85.0,
    # and under bf16 autocast the first rows' gradient no longer points the wrong way.
    # A base model (Gemma 3 270M, SST-2, 100 steps, sweeps/gemma3-lr.yaml): lr 0.3 scored best on
    # the held-out rows (90.5; 0.1: 87.0, 0.03: 86.5), dev 88.1.
    recipes = {"decoder-only": {"lr": 0.1, "init": "scaled", "sink": "bos"}, "base": {"lr": 0.3}}
    rank: int = option(2, "dimension r each prompt token is optimized in", "R")
    projection: str = option("xavier", "the frozen random projection: xavier (authors' code) or normal", "KIND")
    projection_seed: int | None = option(None, "seed the projection is drawn from (default: the run's seed, as the authors' code)", "S")
    init: str = option("paper", "paper (the authors': s = 1, shift 0, one lr) or scaled (in the token embeddings' units: the first prompt at their std, s and shift at lr·c and lr·std)", "KIND")
    embed_std: float | None = option(None, "the token embeddings' std that init=scaled works in (default: measured on the backbone, stored with the prompt)", "S")
    lr_align: float | None = option(None, "peak learning rate of the scale and shift (default: the run's, or with init=scaled lr·c and lr·std)", "LR")

    def validate(self) -> None:
        super().validate()
        _positive_int(self, "rank")
        _choice(self, "projection", ("xavier", "normal"))
        _choice(self, "init", ("paper", "scaled"))
        for name in ("embed_std", "lr_align"):
            if getattr(self, name) is not None:
                _positive_float(self, name)
        seed = self.projection_seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"ulpt: projection_seed must be a non-negative integer, got {seed!r}")

    def with_run_seed(self, seed: int) -> "ULPTConfig":
        # The authors draw P̃ after set_seed(run seed); the concrete seed is stored with the prompt.
        return self if self.projection_seed is not None else dataclasses.replace(self, projection_seed=int(seed))

    def with_backbone(self, info: BackboneInfo) -> "ULPTConfig":
        if self.init != "scaled" or self.embed_std is not None:
            return self
        std = required_embed_std(info, "ulpt: init='scaled'", "give embed_std, use init='paper'")
        return dataclasses.replace(self, embed_std=float(std))

    def unit_scale(self, embed_dim: int) -> float:
        """``c = σ / q``: the initial ``s`` under ``init="scaled"`` (1 under ``paper``)."""
        if self.init != "scaled":
            return 1.0
        return self.embed_std / math.sqrt(self.rank * 2.0 / (self.rank + embed_dim))

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
        self.scale = nn.Parameter(torch.full((d,), config.unit_scale(d)))
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
        config = self.config
        if config.lr_align is not None:
            return [ParamGroup("prompt", [self.z]), ParamGroup("align", [self.scale, self.shift], config.lr_align)]
        if config.init == "scaled":  # Adam on s = c·ŝ and β = σ·β̂ at the run's lr (module docstring)
            return [ParamGroup("prompt", [self.z]),
                    ParamGroup("scale", [self.scale], lr_factor=config.unit_scale(self.embed_dim)),
                    ParamGroup("shift", [self.shift], lr_factor=config.embed_std)]
        return super().param_groups()  # one group, the authors' (and every checkpoint's before lr_align)

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
