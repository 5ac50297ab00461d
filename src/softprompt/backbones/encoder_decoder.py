"""The encoder-decoder join (T5, Flan-T5, BART): the prompt is prepended to the encoder's input
embeddings and the attention mask is extended; the decoder runs unchanged.

A prompt per row (``RowPrompts``): each row's encoder input is its own prompt and text, the
spare columns masked at the end, so real tokens keep their columns (BART's encoder uses
absolute positions).

The head runs only where a decoder target is (``labeled_logits``; for the loss alone, too):
targets padded to the batch's longest would otherwise each cost a whole vocabulary's logits.
"""

from __future__ import annotations

import logging

import torch.nn.functional as F
from transformers.modeling_outputs import Seq2SeqLMOutput

from .base import Join
from .facts import ENCODER_DECODER, IGNORE_INDEX
from .layout import as_rows, prepend_rows


class EncoderDecoderJoin(Join):
    kind = ENCODER_DECODER

    def _encoder_inputs(self, prompt, embeds, attention_mask):
        # spare columns at the end: real tokens keep their columns (BART's absolute positions)
        combined, mask, _ = prepend_rows(as_rows(prompt, embeds.shape[0]), embeds, attention_mask, spare="end")
        return combined, mask

    def forward(self, prompt, embeds, attention_mask, labels=None, return_logits=True, **kwargs):
        """Args: prompt ``[n, d]`` (or ``RowPrompts``), embeds ``[B, T, d]``, attention_mask
        ``[B, T]``, labels ``[B, L]`` (decoder targets). Returns ``Seq2SeqLMOutput`` with logits
        ``[B, L, V]`` (``None`` when ``return_logits`` is False: the head then runs only where
        a target is)."""
        if not return_logits:
            loss = None
            if labels is not None:
                logits, targets, _ = self.labeled_logits(prompt, embeds, attention_mask, labels, **kwargs)
                loss = F.cross_entropy(logits, targets)
            return Seq2SeqLMOutput(loss=loss, logits=None)
        self.output_head.full("the caller asked for the logits (return_logits=True)", logging.INFO)
        combined, mask = self._encoder_inputs(prompt, embeds, attention_mask)
        return self.backbone(inputs_embeds=combined, attention_mask=mask, labels=labels, **kwargs)

    def labeled_logits(self, prompt, embeds, attention_mask, labels, **kwargs):
        """The decoder reads the targets shifted right, as the model makes them from labels
        (``prepare_decoder_input_ids_from_labels``); the head runs only at the targets."""
        combined, mask = self._encoder_inputs(prompt, embeds, attention_mask)
        rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
        shift = getattr(self.backbone, "prepare_decoder_input_ids_from_labels", None)
        if shift is None:  # only the model knows its decoder's inputs: it gets the labels and computes every position
            self.output_head.full("the model has no prepare_decoder_input_ids_from_labels")
            out = self.backbone(inputs_embeds=combined, attention_mask=mask, labels=labels, **kwargs)
            return out.logits[rows, cols].float(), labels[rows, cols], rows
        kwargs.setdefault("decoder_input_ids", shift(labels=labels))
        kwargs.setdefault("use_cache", False)  # as the model sets it when given labels
        with self.output_head.only(rows, cols, labels.shape[1]) as pick:
            out = self.backbone(inputs_embeds=combined, attention_mask=mask, **kwargs)
        return pick(out.logits).float(), labels[rows, cols], rows

    def generate(self, prompt, embeds, attention_mask, **kwargs):
        self.output_head.generating(decoder_only=False, use_cache=kwargs.get("use_cache", True))
        combined, mask = self._encoder_inputs(prompt, embeds, attention_mask)
        return self.backbone.generate(inputs_embeds=combined, attention_mask=mask, **kwargs)
