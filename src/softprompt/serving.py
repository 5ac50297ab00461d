"""A saved prompt as input embeddings, for engines that take them (vLLM, transformers' ``generate``).

softprompt reads a row as ``[sink tokens, prompt, text]``: the tokens a prompt trained with
``sink="bos"`` is read after (``[]`` otherwise), the prompt ``[n, d]`` right before the row's
first token, then the text tokenized as training tokenized it (the tokenizer's own prefix, e.g.
Llama's BOS, then the text without any suffix). Every token is embedded by the backbone's
embedding *module* (``softprompt.backbones.backbone_info(...).embed``: what the first layer
sees, Gemma's √d included), the one rule the join uses. This module builds exactly those rows:

    prompt = read_prompt("runs/sst2/prompt")                 # or an exported .safetensors
    embed = embedder(backbone)                                # ids [k] -> [k, d]
    rows = prompt_inputs(prompt, embed, token_ids(tokenizer, texts))   # each [s + n + T, d]
    embeds, mask = left_padded(rows)                          # [B, L, d], [B, L] for generate

It imports no training code (no datasets, optuna or peft): ``softprompt serve`` runs it in an
environment that has vLLM and little else.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .backbones import DECODER_ONLY, IGNORE_INDEX, backbone_info
from .batching import encode_pairs
from .io import CONFIG_NAME, export_embeds, read_embeds

Embed = Callable[[torch.Tensor], torch.Tensor]
"""The backbone's embedding module as a function, ``ids [k] long -> [k, d] float32``."""


@dataclass(frozen=True)
class ServedPrompt:
    """A prompt ready to be served.

    Attributes:
        embeds: ``[n, d]`` float32, the materialized prompt.
        sink_token_ids: the tokens read before the prompt (``[]``, or ``[BOS]`` for ``sink="bos"``).
        metadata: what ``export_embeds`` records: the backbone's ``name``, ``kind``,
            ``embed_dim``, ``vocab_size``, the ``method``, ``length`` (all strings).
    """

    embeds: torch.Tensor
    sink_token_ids: list[int]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def length(self) -> int:
        """Positions the prompt takes in a row: sink tokens and prompt, ``s + n``."""
        return len(self.sink_token_ids) + self.embeds.shape[0]


def read_prompt(path: str | Path) -> ServedPrompt:
    """The prompt of a prompt folder (``model.save``, ``softprompt train``'s OUTPUT/prompt) or of a
    ``.safetensors`` file ``softprompt export --to embeds`` wrote; a method that also changes the
    text's embeddings (DePT) is refused with one line (``PromptFileError``)."""
    path = Path(path)
    if path.is_dir():
        # One exporter decides what a served prompt is (the DePT refusal, the sink tokens):
        # export_embeds, through a private temporary file.
        with tempfile.TemporaryDirectory() as tmp:
            prompt, metadata = read_embeds(export_embeds(path, Path(tmp) / "prompt.safetensors"))
    elif path.is_file():
        prompt, metadata = read_embeds(path)
    else:
        raise FileNotFoundError(f"{path}: no prompt folder (with {CONFIG_NAME}) or exported .safetensors file")
    return ServedPrompt(prompt, [int(i) for i in json.loads(metadata["sink_token_ids"])], dict(metadata))


def embedder(backbone: Any) -> Embed:
    """``backbone``'s embedding module as an ``Embed`` (the join's rule: Gemma's √d included)."""
    return backbone_info(backbone).embed


def backbone_mismatch(prompt: ServedPrompt, record: dict[str, Any]) -> str | None:
    """Why ``prompt`` cannot run on the backbone ``record`` describes (``backbones.backbone_record``:
    ``name``, ``kind``, ``embed_dim``, ``vocab_size``), or None. Names are compared by their last
    path component, so a model moved to another folder, or a hub name and its local copy, still match."""
    meta = prompt.metadata
    if record.get("kind") != DECODER_ONLY:
        return f"input embeddings are served for decoder-only models; this one is {record.get('kind')}"
    if meta.get("kind") and meta["kind"] != DECODER_ONLY:
        return f"the prompt was trained on an {meta['kind']} model"
    for key in ("embed_dim", "vocab_size"):
        if str(meta.get(key)) != str(record.get(key)):
            return f"the prompt was trained on a backbone with {key} {meta.get(key)}, the model has {record.get(key)}"

    def short(name: Any) -> str:
        return Path(str(name or "").rstrip("/\\")).name.lower()

    if short(meta.get("name")) and short(record.get("name")) and short(meta.get("name")) != short(record.get("name")):
        return f"the prompt was trained on {meta.get('name')}, the model is {record.get('name')}"
    return None


def token_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Each text's tokens as softprompt reads an input of a decoder-only model (training's
    ``batching.encode_pairs``, no target): the tokenizer's prefix (Llama's BOS; nothing for
    SmolLM2 or GPT-2), then the text without special tokens. Never truncated."""
    encoded = encode_pairs(list(texts), [""] * len(texts), tokenizer, DECODER_ONLY, max_length=1 << 62)
    return [e.input_ids[e.labels == IGNORE_INDEX].tolist() for e in encoded]  # the input, not the empty target's EOS


@torch.no_grad()
def prompt_input(prompt: ServedPrompt | None, embed: Embed, ids: Sequence[int]) -> torch.Tensor:
    """One request's input embeddings ``[s + n + T, d]`` float32: the sink tokens', the prompt,
    then the ``T`` text tokens ``ids`` (``prompt=None``: the text alone, ``[T, d]``)."""
    text = embed(torch.tensor(list(ids), dtype=torch.long)).float()  # [T, d]
    if prompt is None:
        return text
    ahead = embed(torch.tensor(prompt.sink_token_ids, dtype=torch.long)).float()  # [s, d]
    return torch.cat([ahead, prompt.embeds.float(), text])


def prompt_inputs(prompt: ServedPrompt | None, embed: Embed, rows: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """``prompt_input`` for each row of token ids: a list of ``[s + n + T_b, d]``."""
    return [prompt_input(prompt, embed, ids) for ids in rows]


def left_padded(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``[L_b, d]`` as one left-padded batch for transformers' ``generate``: ``(embeds
    [B, L, d], attention_mask [B, L])``, each row ``[pads, sink, prompt, text]`` (zeros under
    the mask): greedy ``generate(inputs_embeds=..., attention_mask=...)`` then gives softprompt's tokens."""
    L, d = max(r.shape[0] for r in rows), rows[0].shape[1]
    embeds = rows[0].new_zeros(len(rows), L, d)
    mask = torch.zeros(len(rows), L, dtype=torch.long)
    for b, row in enumerate(rows):
        embeds[b, L - row.shape[0]:] = row
        mask[b, L - row.shape[0]:] = 1
    return embeds, mask


def generate_inputs(prompt: ServedPrompt | None, backbone: Any, tokenizer: Any, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The README recipe in one call: ``(inputs_embeds [B, L, d], attention_mask [B, L])`` of
    ``texts`` with ``prompt``, left-padded, in the backbone's dtype, for ``backbone.generate``."""
    embeds, mask = left_padded(prompt_inputs(prompt, embedder(backbone), token_ids(tokenizer, texts)))
    return embeds.to(backbone.get_input_embeddings().weight.dtype), mask
