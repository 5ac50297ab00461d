"""Which join a backbone takes: ``join_for(backbone)``.

The kind is the config's (``facts.kind_of``, the rule ``load.backbone_facts`` also applies
before loading), so a task template chosen before the load and the join chosen after it
always agree. Whether the model can be joined at all is a separate question, answered here:
it must be a transformers model with an LM head, and a decoder-only one must be a causal LM
that generates.
"""

from __future__ import annotations

from torch import nn

from .base import Join
from .decoder_only import DecoderOnlyJoin
from .encoder_decoder import EncoderDecoderJoin
from .facts import ENCODER_DECODER, UnsupportedModelError, kind_of
from .layout import prepend

# ``prepend`` was defined here before the package was split by subject; kept importable from here.
__all__ = ["Join", "UnsupportedModelError", "join_for", "prepend"]


def join_for(backbone: nn.Module) -> Join:
    """The join for ``backbone``'s kind, or a one-line error naming its class."""
    config = getattr(backbone, "config", None)
    name = type(backbone).__name__
    if config is None or not callable(getattr(backbone, "get_input_embeddings", None)):
        raise UnsupportedModelError(f"{name} is not a Hugging Face transformers model; softprompt needs one")
    kind = kind_of(config)
    if not _joinable(backbone, kind):
        raise UnsupportedModelError(
            f"{name} is not supported: softprompt needs an encoder-decoder model with an LM head "
            "(e.g. T5ForConditionalGeneration) or a decoder-only causal LM (e.g. LlamaForCausalLM, GPT2LMHeadModel)"
        )
    return EncoderDecoderJoin(backbone) if kind == ENCODER_DECODER else DecoderOnlyJoin(backbone)


def _joinable(backbone: nn.Module, kind: str) -> bool:
    """Whether ``backbone`` (of ``kind``) can take a prompt: it has an LM head, and where it is
    decoder-only it is a causal LM that generates. Not a second rule for the kind: a config
    that is not encoder-decoder also belongs to models that read both ways (``BertForMaskedLM``,
    ``BertGenerationDecoder`` without ``is_decoder``), which a prompt before the text cannot steer
    as a causal LM; those are refused, never joined as another kind."""
    has_head = callable(getattr(backbone, "get_output_embeddings", None)) and backbone.get_output_embeddings() is not None
    if kind == ENCODER_DECODER:
        return has_head
    return has_head and hasattr(backbone, "generate") and _is_causal_lm(backbone)


def _is_causal_lm(backbone: nn.Module) -> bool:
    name = type(backbone).__name__
    return name.endswith("ForCausalLM") or name.endswith("LMHeadModel") or bool(getattr(backbone.config, "is_decoder", False))
