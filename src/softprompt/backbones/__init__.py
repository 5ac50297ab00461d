"""Backbones: how a prompt ``[n, d]`` joins a model's input (``join``), the facts about a
backbone a method or a saved prompt needs, and loading a model from whatever the user names
(``load``)."""

from .join import (
    DECODER_ONLY,
    ENCODER_DECODER,
    IGNORE_INDEX,
    KINDS,
    RowPrompts,
    UnsupportedModelError,
    as_rows,
    backbone_info,
    backbone_name,
    backbone_record,
    bos_token_id,
    join_for,
    sink_ids,
)
from .load import ModelLoadError, backbone_facts, backbone_kind, default_model_available, load_backbone

__all__ = [
    "DECODER_ONLY",
    "ENCODER_DECODER",
    "IGNORE_INDEX",
    "KINDS",
    "ModelLoadError",
    "RowPrompts",
    "UnsupportedModelError",
    "as_rows",
    "backbone_facts",
    "backbone_info",
    "backbone_kind",
    "backbone_name",
    "backbone_record",
    "bos_token_id",
    "default_model_available",
    "join_for",
    "load_backbone",
    "sink_ids",
]
