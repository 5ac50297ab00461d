"""The one place that lists the prompt methods.

Adding a method: write ``prompts/<name>.py`` with a ``PromptConfig`` subclass (``method =
"<name>"``) and a ``PromptMethod`` subclass, then add one line below.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .base import BackboneInfo, ConfigError, PromptConfig, PromptMethod
from .dept import DePTConfig, DePTPrompt
from .dpt import DPTConfig, DPTPrompt
from .rank_probe import RankProbeConfig, RankProbePrompt
from .residual import ResidualConfig, ResidualPrompt
from .ulpt import ULPTConfig, ULPTPrompt
from .vanilla import VanillaConfig, VanillaPrompt

REGISTRY: dict[str, tuple[type[PromptConfig], type[PromptMethod]]] = {
    "prompt": (VanillaConfig, VanillaPrompt),
    "residual": (ResidualConfig, ResidualPrompt),
    "dpt": (DPTConfig, DPTPrompt),
    "ulpt": (ULPTConfig, ULPTPrompt),
    "dept": (DePTConfig, DePTPrompt),
    "rank_probe": (RankProbeConfig, RankProbePrompt),
}

METHODS: tuple[str, ...] = tuple(REGISTRY)


def methods() -> tuple[str, ...]:
    """The registered methods, read live (a test may register a method for its duration)."""
    return tuple(REGISTRY)


def _entry(method: str) -> tuple[type[PromptConfig], type[PromptMethod]]:
    try:
        return REGISTRY[method]
    except KeyError:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(REGISTRY)}") from None


def make_config(method: str, **options: Any) -> PromptConfig:
    """Build and validate the config of ``method`` from keyword options.

    Options set to ``None`` are left at their defaults, so a CLI can pass every flag.
    """
    config_cls, _ = _entry(method)
    return config_cls.from_dict({k: v for k, v in options.items() if v is not None})


def config_from_dict(method: str, data: dict[str, Any]) -> PromptConfig:
    config_cls, _ = _entry(method)
    return config_cls.from_dict(data)


def build_method(config: PromptConfig, info: BackboneInfo, seed: int = 0) -> PromptMethod:
    """Instantiate the module for ``config``; ``seed`` fixes its random initialization (and
    what the config takes from the run's seed, ``PromptConfig.with_run_seed``, and from the
    backbone, ``PromptConfig.with_backbone``)."""
    _, module_cls = _entry(config.method)
    config = config.with_run_seed(seed).with_backbone(info)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return module_cls(config, info, generator)


def method_options() -> dict[str, dict[str, Any]]:
    """Every method config field by name: ``{"rank": {"type": int, "metavar": "R", "help":
    {"ulpt": "...", "dept": "..."}}}`` (help per method that has the field). The CLI builds its
    method options from this, so a new method needs no CLI edit."""
    import typing

    table: dict[str, dict[str, Any]] = {}
    for method, (config_cls, _) in REGISTRY.items():
        hints = typing.get_type_hints(config_cls)
        for f in dataclasses.fields(config_cls):
            entry = table.setdefault(f.name, {"type": hints.get(f.name), "metavar": f.metadata.get("metavar"), "help": {}})
            entry["help"][method] = f.metadata.get("help", f.name)
    return table


def method_fields(method: str) -> tuple[str, ...]:
    """The config fields of ``method`` (its options)."""
    config_cls, _ = _entry(method)
    return tuple(f.name for f in dataclasses.fields(config_cls))


def recipe_for(method: str, kind: str) -> dict[str, Any]:
    """The method's own recipe for a backbone kind (``PromptConfig.recipes``): run settings
    (``lr``, ``objective``...) and method options (``init``...) measured to work there.
    ``kind`` ``"base"``: what changes on a base (pretrained only) decoder-only model."""
    config_cls, _ = _entry(method)
    return dict(getattr(config_cls, "recipes", {}).get(kind, {}))


def init_without_text(method: str) -> str:
    """The init a text start falls back to where the task gives no text (no label words: a
    generation task), the method's own (``PromptConfig.init_without_text``)."""
    config_cls, _ = _entry(method)
    return config_cls.init_without_text
