"""Prompt methods: one file each, listed in ``registry.py``."""

from .base import BackboneInfo, ConfigError, PromptConfig, PromptMethod
from .registry import METHODS, REGISTRY, build_method, config_from_dict, make_config

__all__ = [
    "METHODS",
    "REGISTRY",
    "BackboneInfo",
    "ConfigError",
    "PromptConfig",
    "PromptMethod",
    "build_method",
    "config_from_dict",
    "make_config",
]
