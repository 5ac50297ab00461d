"""What every prompt method shares: the config base class, the module base class, and
the context a method is built in (the backbone's embedding table and sizes).

A method's module only *produces* the prompt, an unbatched ``[n, d]`` tensor; how that
tensor joins a model's input is decided in ``softprompt.backbones``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, NamedTuple

import torch
from torch import nn

INIT_VOCAB_POOL = 5000
"""Vocabulary init draws from the first 5,000 token ids, as Lester et al. (2021) draw from
the 5,000 most frequent tokens: SentencePiece and BPE vocabularies are roughly ordered
by frequency, so low ids are common words rather than rare byte pieces."""


SINKS = ("none", "bos")
"""What may precede a prompt (``PromptConfig.sink``)."""


class ConfigError(ValueError):
    """A config field has an invalid value. The message names the field."""


def option(default: Any, help: str, metavar: str | None = None) -> Any:
    """A config field with its help text: the CLI builds its options from these, so a new
    method's fields reach ``softprompt train`` and ``softprompt params`` with no CLI edit."""
    return field(default=default, metadata={"help": help, "metavar": metavar})


@dataclass
class PromptConfig:
    """Fields every method has. Subclasses add their own and extend ``validate``.

    Attributes:
        length: number of prompt tokens ``n`` (for DePT, the prompt part ``m``).
        sink: what a decoder reads before the prompt: ``none`` (the papers' and PEFT's layout,
            the prompt first) or ``bos`` (the backbone's BOS token, frozen and not counted in
            ``n``). A decoder turns its first position into an attention sink; there a prompt
            row's gradient is the largest of all rows, and under bf16 autocast it points the
            wrong way for ULPT (benchmarks/README.md). With ``bos`` the sink is a real token.
    """

    method: ClassVar[str] = ""
    recipes: ClassVar[dict[str, dict[str, Any]]] = {}
    """Overrides of run settings and method options per backbone kind, e.g.
    ``{'decoder-only': {'lr': 0.03, 'init': 'scaled'}}``; the values are filled in from
    measured sweeps. A subclass assigns a new dict, never mutates this one."""
    init_without_text: ClassVar[str] = "vocab"
    """For a method with ``init_text``: the init a recipe's ``init="text"`` becomes where the task
    has no label words to make the text of (a generation task)."""
    length: int = option(100, "prompt length n (number of prompt tokens)", "N")
    sink: str = option("none", "decoder-only: none (the prompt first, as the papers and PEFT) or bos (the model's BOS token, frozen, ahead of the prompt: the attention sink falls on a real token, not on the first prompt row)", "KIND")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _positive_int(self, "length")
        _choice(self, "sink", SINKS)

    def with_run_seed(self, seed: int) -> "PromptConfig":
        """This config with whatever it takes from the run's seed made concrete (ULPT's
        projection seed), so the saved config rebuilds the same module. Default: unchanged."""
        return self

    def with_backbone(self, info: "BackboneInfo") -> "PromptConfig":
        """This config with whatever it measures on the backbone made concrete (ULPT's
        ``embed_std`` under ``init="scaled"``), so a loaded prompt trains on as it was trained
        without measuring the backbone again. Default: unchanged."""
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PromptConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{cls.method}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**data)

    def num_parameters(self, embed_dim: int) -> int:
        """The exact trainable-parameter count for an embedding size ``d`` (the papers' formula)."""
        raise NotImplementedError


@dataclass
class BackboneInfo:
    """What a method may know about the backbone when it is built.

    Attributes:
        embed_dim: ``d``, the input embedding size.
        vocab_size: rows of the input embedding table.
        embeddings: the input embedding table ``[V, d]``, read only. Given alone, it stands in
            for ``embed`` (a plain row lookup).
        tokenizer: optional, needed only for ``init="text"``.
        skip_init: build zero tensors of the right shapes (for loading saved values).
        embed: the backbone's embedding module as a function ``ids [k] -> [k, d]`` (float32, on
            the CPU, detached): what the model really feeds its first layer, which is not always
            the table (Gemma multiplies it by √d in the module). Every init reads this.
        embed_std: standard deviation of ``embed``'s output over the first
            ``min(INIT_VOCAB_POOL, V)`` token ids, the scale of a real token; computed from
            ``embed`` when not given, None when unknown (no ``embed``, or ``skip_init``).
    """

    embed_dim: int
    vocab_size: int
    embeddings: torch.Tensor | None = None
    tokenizer: Any = None
    skip_init: bool = False
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None
    embed_std: float | None = None

    def __post_init__(self) -> None:
        if self.embed is None and self.embeddings is not None:
            self.embed = _row_lookup(self.embeddings)
        if self.embed_std is None and self.embed is not None and not self.skip_init:
            self.embed_std = output_std(self.embed, self.vocab_size)


def _row_lookup(table: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def embed(ids: torch.Tensor) -> torch.Tensor:  # [k] -> [k, d]
        return table[ids.to(table.device)].detach().float().cpu()

    return embed


def output_std(embed: Callable[[torch.Tensor], torch.Tensor], vocab_size: int) -> float:
    """Standard deviation of ``embed``'s entries over the first ``min(INIT_VOCAB_POOL, V)`` ids:
    the ids the vocab init draws from, and never the whole table (Llama-3's is 2 GB)."""
    return float(embed(torch.arange(min(INIT_VOCAB_POOL, vocab_size))).std())


class ParamGroup(NamedTuple):
    """Parameters trained together. ``lr``: this group's peak learning rate, or None for the
    run's times ``lr_factor``; every group follows the same schedule (warmup, decay) scaled to
    its own peak."""

    name: str
    params: list[nn.Parameter]
    lr: float | None = None
    lr_factor: float = 1.0

    def peak(self, run_lr: float) -> float:
        return self.lr if self.lr is not None else run_lr * self.lr_factor


class PromptMethod(nn.Module):
    """Base class of a prompt method.

    ``forward()`` returns the materialized prompt ``[n, d]`` in float32. Trainable tensors
    are ``nn.Parameter``s; anything rebuilt from the config (ULPT's projection) is a
    non-persistent buffer, so only the trainable tensors are saved.
    """

    config: PromptConfig

    def __init__(self, config: PromptConfig, info: BackboneInfo):
        super().__init__()
        self.config = config
        self.embed_dim = info.embed_dim

    def forward(self) -> torch.Tensor:  # [n, d]
        raise NotImplementedError

    def adjust_input_embeds(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Change the text's own embeddings. Identity except for methods such as DePT.

        Args:
            embeds: ``[B, T, d]`` token embeddings of the text.
            attention_mask: ``[B, T]``, 1 for real tokens (left or right padding).
        Returns:
            ``[B, T, d]``.
        """
        return embeds

    # Axis labels of the diagnostics, for the plots drawn from the training log.
    diagnostic_labels: ClassVar[dict[str, str]] = {}

    def diagnostics(self) -> dict[str, float]:
        """Numbers worth logging during training (e.g. the rank probe's positive count);
        each gets its own plot, labelled by ``diagnostic_labels``."""
        return {}

    def metadata(self) -> dict[str, Any]:
        """Extra facts stored in ``prompt_config.json`` and checked by ``check_metadata`` on load."""
        return {}

    def check_metadata(self, metadata: dict[str, Any]) -> None:
        """Raise ``ValueError`` if ``metadata`` (from a saved prompt) does not match this module."""

    # -- the one rule for "trainable": a parameter of the method that requires grad ----------

    def trainable_named_parameters(self) -> dict[str, nn.Parameter]:
        """Every trainable tensor by name: what is optimized, saved, checkpointed and counted."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_named_parameters().values())

    def param_groups(self) -> list[ParamGroup]:
        """The optimizer's groups. One group at the run's learning rate, unless a method
        trains parts at different rates (DePT's embedding update); the loop knows none by name."""
        return [ParamGroup("prompt", list(self.trainable_named_parameters().values()))]

    def set_prompt(self, prompt: torch.Tensor) -> None:
        """Make the materialized prompt equal ``prompt [n, d]``. Only methods whose prompt is
        a free matrix can (PEFT import builds a vanilla prompt this way)."""
        raise NotImplementedError(f"{self.config.method}: the prompt cannot be set directly")


# ---------------------------------------------------------------------------------------
# Validation helpers: every message names the field, so a bad config file is easy to fix.


MAX_SIZE = 100_000
"""The largest size (prompt length, rank, bottleneck...) a config takes. Real prompts are a few
hundred tokens at most; far larger values are typos that would otherwise surface as an
allocation failure or a TypeError deep in torch (``--length 2000000000``, ``--length 10**20``)."""


def _positive_int(config: Any, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        shown = value if not isinstance(value, int) or abs(value) < 10**12 else f"{value:.3g}"
        raise ConfigError(f"{config.method}: {name} must be a positive integer at most {MAX_SIZE:,}, got {shown!r}")


def _choice(config: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ConfigError(f"{config.method}: {name} must be one of {', '.join(choices)}; got {value!r}")


def _positive_float(config: Any, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{config.method}: {name} must be a positive number, got {value!r}")


# ---------------------------------------------------------------------------------------
# Initialization shared by the methods that start from token embeddings.

TOKEN_INITS = ("vocab", "text", "normal", "vocab_all", "text_special")


def required_embed_std(info: BackboneInfo, what: str, instead: str) -> float:
    """``info.embed_std`` for an init scaled to the token embeddings (``what`` needs it), or a
    one-line ConfigError that says what to do ``instead``."""
    if info.embed_std is None:
        raise ConfigError(
            f"{what} needs the standard deviation of the backbone's token embeddings "
            f"(BackboneInfo.embed_std), which is unknown here; {instead}, or build the prompt on a "
            "backbone (softprompt.attach)"
        )
    return info.embed_std


def token_init(
    init: str, length: int, info: BackboneInfo, generator: torch.Generator, text: str | None = None
) -> torch.Tensor:
    """Initial prompt rows ``[n, d]`` (float32) for vanilla and residual prompt tuning.

    Every init starts from what the embedding module returns (``info.embed``), not the raw
    table: Gemma's module multiplies the table by √d.
    ``vocab``: embeddings of token ids drawn uniformly from the first ``INIT_VOCAB_POOL`` ids.
    ``vocab_all``: the same from every row of the table (Residual PT's prompt_tuner2.py:321-325,
    ``np.random.randint(N)`` over the encoder's N embedding rows).
    ``text``: embeddings of ``text``'s tokens, repeated or cut to ``n``.
    ``text_special``: the same with the tokenizer's special tokens (T5's ``</s>``), as DePT's
    ``tokenizer(init_text)`` (peft/tuners/prompt_tuning_lora.py:146-154).
    ``normal``: N(0, s²) with ``s = info.embed_std``, so the prompt starts on the scale of real
    tokens (T5's embeddings are ~100x larger than Llama's).
    """
    if info.skip_init:
        return torch.zeros(length, info.embed_dim)
    if init in ("vocab", "vocab_all"):
        pool = info.vocab_size if init == "vocab_all" else min(INIT_VOCAB_POOL, info.vocab_size)
        ids = torch.randint(0, pool, (length,), generator=generator)
        return _embed(info, ids)
    if init in ("text", "text_special"):
        if not text:
            raise ConfigError("init='text' needs init_text (the text whose embeddings start the prompt)")
        if info.tokenizer is None:
            raise ConfigError("init='text' needs a tokenizer: pass tokenizer= to softprompt.attach")
        ids = info.tokenizer(text, add_special_tokens=init == "text_special")["input_ids"]
        if not ids:
            raise ConfigError(f"init_text {text!r} has no tokens")
        ids = torch.tensor((ids * (length // len(ids) + 1))[:length])
        return _embed(info, ids)
    if init == "normal":
        std = required_embed_std(info, "init='normal'", "use init='vocab' or 'text'")
        return torch.randn(length, info.embed_dim, generator=generator) * std
    raise ConfigError(f"init must be one of {', '.join(TOKEN_INITS)}; got {init!r}")


def _embed(info: BackboneInfo, ids: torch.Tensor) -> torch.Tensor:  # [k] -> [k, d], a fresh tensor
    if info.embed is None:
        raise ConfigError("this init needs the backbone's token embeddings (BackboneInfo.embed or embeddings)")
    return info.embed(ids).detach().float().cpu().clone()
