"""Facts about a backbone: its kind, what a prompt method is built from, and what a saved
prompt records. The bottom of ``backbones``: it imports nothing else from it.

A backbone's kind is decided here, once, from its transformers config (``kind_of``): before
loading (``load.backbone_facts`` peeks the config to pick a run's task template) and after
(``join.join_for`` picks the join by the same answer), so a template and the batches it
encodes never disagree about the kind.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from ..prompts import BackboneInfo

IGNORE_INDEX = -100
"""Label value of positions that are not scored (transformers' convention)."""
DECODER_ONLY = "decoder-only"
ENCODER_DECODER = "encoder-decoder"
KINDS = (DECODER_ONLY, ENCODER_DECODER)


class UnsupportedModelError(TypeError):
    pass


def kind_of(config: Any) -> str:
    """The kind of a backbone with this transformers config: ``"encoder-decoder"`` where the
    config says ``is_encoder_decoder`` (T5, BART: the prompt joins the encoder's input), else
    ``"decoder-only"``. The one rule: the loader picks its auto class by it (``load``), the
    run picks its template by it before loading, ``join_for`` picks the join by it after."""
    return ENCODER_DECODER if getattr(config, "is_encoder_decoder", False) else DECODER_ONLY


class Facts(NamedTuple):
    """What a run's settings depend on about its backbone (``settings.for_backbone``): known
    before loading (``load.backbone_facts``) or from the loaded model (``facts_of``)."""

    kind: str  # "decoder-only" or "encoder-decoder" (kind_of)
    bos: bool  # the model names a BOS token (what a recipe's sink="bos" needs)
    base: bool  # a base model, not an instruction-tuned one (is_base_model)


def facts_of(backbone: nn.Module, tokenizer: Any) -> Facts:
    """``Facts`` of a loaded backbone and its tokenizer, by the same rules as before loading."""
    kind = kind_of(backbone.config)
    return Facts(kind, bos_token_id(backbone) is not None, is_base_model(kind, getattr(tokenizer, "chat_template", True)))


def is_base_model(kind: str, chat_template: Any) -> bool:
    """Whether a backbone is a base (pretrained only) model rather than an instruction-tuned
    one: a decoder-only model whose tokenizer has no chat template. The one rule: read from the
    tokenizer's files before loading (``load.backbone_facts``) and from the tokenizer after; a
    base model gets the ``base`` template style and the methods' recipes for base models
    (``settings.kind_layers``)."""
    return kind == DECODER_ONLY and not chat_template


def backbone_info(backbone: nn.Module, tokenizer: Any = None) -> BackboneInfo:
    """What a prompt method may know about ``backbone`` when it is built.

    ``embed`` calls the embedding module, not the table: Gemma's module multiplies the table by
    √d. ``BackboneInfo`` derives ``embed_std`` from it (the first 5,000 ids, never the whole table).
    """
    module = backbone.get_input_embeddings()
    table = module.weight

    @torch.no_grad()
    def embed(ids: torch.Tensor) -> torch.Tensor:  # [k] -> [k, d] float32 on the CPU, what the first layer sees
        return module(ids.to(table.device)).detach().float().cpu()

    return BackboneInfo(embed_dim=table.shape[1], vocab_size=table.shape[0], embeddings=table.detach(), tokenizer=tokenizer, embed=embed)


def bos_token_id(backbone: nn.Module) -> int | None:
    """The id of the BOS token the model was trained with (its config's, else its generation
    config's), or None."""
    for config in (getattr(backbone, "config", None), getattr(backbone, "generation_config", None)):
        value = getattr(config, "bos_token_id", None)
        if isinstance(value, list):  # some configs list several; the first is the one tokenizers add
            value = value[0] if value else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def sink_ids(backbone: nn.Module, kind: str, sink: str) -> list[int]:
    """The token ids a prompt with ``PromptConfig.sink == sink`` is read after on ``backbone``
    (of ``kind``, its join's): ``[]`` for ``none``, ``[BOS]`` for ``bos``; a one-line error
    where the backbone cannot have one."""
    if sink == "none":
        return []
    if kind != DECODER_ONLY:
        raise ValueError(f"sink={sink!r} is for decoder-only models; this backbone ({type(backbone).__name__}) is {kind}")
    bos = bos_token_id(backbone)
    if bos is None:
        raise ValueError(f"sink='bos': this backbone ({type(backbone).__name__}) names no bos_token_id in its config; use sink='none'")
    return [bos]


def checkpointing(backbone: nn.Module) -> bool:
    """Whether the backbone recomputes activations in its backward (and is training)."""
    # transformers 5 renamed the flag and warns on the old name: read whichever this version has
    new = hasattr(type(backbone), "is_activation_checkpointing")
    return bool(getattr(backbone, "is_activation_checkpointing" if new else "is_gradient_checkpointing", False)) and backbone.training


def enable_checkpointing(backbone: nn.Module) -> None:
    """Turn on activation checkpointing, non-reentrant (torch's recommended kind; it does not need
    the inputs to require grad). torch restores the RNG state for each recompute, so dropout draws
    what the first forward drew and a run computes the same with it as without."""
    new = hasattr(backbone, "activation_checkpointing_enable")  # the old name warns since transformers 5
    (backbone.activation_checkpointing_enable if new else backbone.gradient_checkpointing_enable)({"use_reentrant": False})


def backbone_name(backbone: nn.Module) -> str | None:
    return getattr(backbone, "name_or_path", None) or getattr(getattr(backbone, "config", None), "_name_or_path", None) or None


def backbone_record(backbone: nn.Module) -> dict[str, Any]:
    """The backbone as ``prompt_config.json`` records it: name, class, kind and sizes."""
    table = backbone.get_input_embeddings().weight
    return {
        "name": backbone_name(backbone),
        "class": type(backbone).__name__,
        "model_type": getattr(backbone.config, "model_type", None),
        "kind": kind_of(backbone.config),
        "embed_dim": int(table.shape[1]),
        "vocab_size": int(table.shape[0]),
        "bos_token_id": bos_token_id(backbone),  # what a prompt with sink="bos" is read after
    }
