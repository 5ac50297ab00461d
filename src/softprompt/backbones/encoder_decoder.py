"""The encoder-decoder join (T5, Flan-T5, BART): the prompt is prepended to the encoder's input
embeddings and the attention mask is extended; the decoder runs unchanged.

A prompt per row (``RowPrompts``): each row's encoder input is its own prompt and text, the
spare columns masked at the end, so real tokens keep their columns (BART's encoder uses
absolute positions).
"""

from __future__ import annotations

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
        ``[B, L, V]``."""
        combined, mask = self._encoder_inputs(prompt, embeds, attention_mask)
        out = self.backbone(inputs_embeds=combined, attention_mask=mask, labels=labels, **kwargs)
        if not return_logits:
            out.logits = None
        return out

    def labeled_logits(self, prompt, embeds, attention_mask, labels, **kwargs):
        out = self.forward(prompt, embeds, attention_mask, labels=labels, **kwargs)
        rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
        return out.logits[rows, cols].float(), labels[rows, cols], rows

    def generate(self, prompt, embeds, attention_mask, **kwargs):
        combined, mask = self._encoder_inputs(prompt, embeds, attention_mask)
        return self.backbone.generate(inputs_embeds=combined, attention_mask=mask, **kwargs)
