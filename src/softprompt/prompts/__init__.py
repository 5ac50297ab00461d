"""Prompt methods: one file each, listed in ``registry.py``."""

from .base import BackboneInfo, ConfigError, ParamGroup, PromptConfig, PromptMethod
from .registry import (
    METHODS,
    REGISTRY,
    build_method,
    config_from_dict,
    init_without_text,
    make_config,
    method_fields,
    method_options,
    methods,
    recipe_for,
)

__all__ = [
    "METHODS",
    "REGISTRY",
    "BackboneInfo",
    "ConfigError",
    "ParamGroup",
    "PromptConfig",
    "PromptMethod",
    "build_method",
    "config_from_dict",
    "init_without_text",
    "make_config",
    "method_fields",
    "method_options",
    "methods",
    "recipe_for",
]
