"""``SoftPromptModel``: a frozen backbone plus one prompt method.

The wrapper knows nothing about any particular method: it asks the method for the prompt
``[n, d]`` (and lets it adjust the text embeddings, a no-op for all but DePT) and hands
both to the join chosen for the backbone's architecture (``backbones/join.py``).
``PromptedModel`` is what it shares with ``PromptBank`` (many prompts, one per row).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from . import io
from .backbones import as_rows, backbone_info, backbone_record, join_for, sink_ids
from .prompts import PromptConfig, PromptMethod, build_method, config_from_dict, make_config


class PromptedModel(nn.Module):
    """What a frozen backbone with prompts runs, whichever prompt each row takes: the forward
    pass, scores, choice scores and generation. A subclass says which prompt each row gets and
    what the text embeddings are (``_inputs``); it knows no method by name.

    Attributes:
        backbone: the frozen transformers model.
        join: how a prompt joins the input (``join.kind`` is "encoder-decoder" or "decoder-only").
    """

    backbone: nn.Module

    def _inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt: Any):
        """``(prompt [n, d] or RowPrompts, text embeddings [B, T, d])`` for a batch."""
        raise NotImplementedError

    @staticmethod
    def _mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return torch.ones_like(input_ids) if attention_mask is None else attention_mask

    def _ahead(self, module: PromptMethod, rows: torch.Tensor) -> torch.Tensor:
        """``rows [n, d]`` of ``module``'s prompt -> what the text is read after, ``[s + n, d]``:
        the frozen tokens its config puts ahead of the prompt (``sink``, embedded by the
        backbone as text is), then the prompt. ``s = 0`` for ``sink="none"``."""
        ids = sink_ids(self.backbone, self.join.kind, module.config.sink)
        if not ids:
            return rows
        with torch.no_grad():
            ahead = self.backbone.get_input_embeddings()(torch.tensor(ids, device=rows.device))  # [s, d]
        return torch.cat([ahead.to(rows.dtype), rows])

    def clear_prompt_cache(self) -> None:
        """Forget the prompts' kept keys and values (they are checked before every reuse, so
        this only frees memory)."""
        self.join.clear_cache()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_logits: bool = True,
        choice_tokens: torch.Tensor | None = None,
        choice_rows: torch.Tensor | None = None,
        choice_labels: torch.Tensor | None = None,
        prompt: Any = None,
        **kwargs: Any,
    ):
        """Args:
            input_ids: ``[B, T]`` text tokens (no room for the prompt needed).
            attention_mask: ``[B, T]``, left or right padded; default all ones.
            labels: decoder-only: ``[B, T]`` aligned with ``input_ids`` as in transformers
                (``IGNORE_INDEX`` = ignored); encoder-decoder: the decoder targets ``[B, L]``.
            return_logits: False skips the full logits (the loss is then computed from the
                labeled positions only, much faster for decoder-only training).
            choice_tokens, choice_rows: score choices instead (see ``choice_scores``): the
                output's ``logits`` are the choice scores ``[E, C]`` and, with
                ``choice_labels [E]`` (the right choice), ``loss`` is the cross-entropy over the
                choices, the class objective.
            prompt: ``PromptBank`` only: the prompt's name for each row (or one for all).
        Returns:
            a transformers ``ModelOutput`` with ``loss`` and ``logits`` (text positions only).
        """
        mask = self._mask(input_ids, attention_mask)
        if choice_tokens is not None or choice_rows is not None:
            scores = self.choice_scores(input_ids, mask, labels, choice_tokens, choice_rows, prompt=prompt)
            loss = F.cross_entropy(scores, choice_labels) if choice_labels is not None else None
            return ModelOutput(loss=loss, logits=scores)
        prompts, embeds = self._inputs(input_ids, mask, prompt)
        return self.join.forward(prompts, embeds, mask, labels=labels, return_logits=return_logits, **kwargs)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor, prompt: Any = None, **kwargs) -> torch.Tensor:
        """Sum of the log-probabilities of each row's labeled tokens, ``[B]`` (rank evaluation)."""
        mask = self._mask(input_ids, attention_mask)
        prompts, embeds = self._inputs(input_ids, mask, prompt)
        return self.join.score(prompts, embeds, mask, labels, **kwargs)

    def choice_scores(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor,
        choice_tokens: torch.Tensor | None = None,
        choice_rows: torch.Tensor | None = None,
        prompt: Any = None,
    ) -> torch.Tensor:
        """Log-likelihood of every choice of every example, ``[E, C]`` (-inf where an example
        has fewer than C choices): what rank evaluation compares and the class objective trains.

        Args:
            choice_tokens: ``[E, C]`` token ids, when each choice is one token: row ``e`` of the
                batch has one labeled position, the first target token, and choice ``c`` is
                scored by the log-probability of token ``choice_tokens[e, c]`` there (one
                forward per example, not one per choice). -1 marks no choice.
            choice_rows: ``[E, C]`` batch rows, otherwise: each choice is a row of the batch
                and its score is the sum over that row's labeled tokens. -1 marks no choice.
            prompt: ``PromptBank`` only: the prompt's name for each batch row.
        """
        mask = self._mask(input_ids, attention_mask)
        prompts, embeds = self._inputs(input_ids, mask, prompt)
        if choice_tokens is not None:
            logits, _, rows = self.join.labeled_logits(prompts, embeds, mask, labels)  # [E, V]
            if rows.numel() != input_ids.shape[0] or not torch.equal(rows, torch.arange(len(rows), device=rows.device)):
                raise ValueError("choice_tokens needs exactly one labeled position per row")
            scores = torch.log_softmax(logits, dim=-1).gather(1, choice_tokens.clamp(min=0))
            return scores.masked_fill(choice_tokens < 0, float("-inf"))
        if choice_rows is None:
            raise ValueError("give choice_tokens or choice_rows")
        row_scores = self.join.score(prompts, embeds, mask, labels)  # [R]
        return row_scores[choice_rows.clamp(min=0)].masked_fill(choice_rows < 0, float("-inf"))

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, prompt: Any = None, **kwargs: Any) -> torch.Tensor:
        """``backbone.generate`` with the prompt; returns the generated tokens only, ``[B, new]``."""
        mask = self._mask(input_ids, attention_mask)
        prompts, embeds = self._inputs(input_ids, mask, prompt)
        return self.join.generate(prompts, embeds, mask, **kwargs)


class SoftPromptModel(PromptedModel):
    """A frozen Hugging Face model with a trainable soft prompt.

    Attributes:
        backbone: the frozen transformers model.
        prompt: the ``PromptMethod`` module (the only trainable part).
        join: how the prompt joins the input (``join.kind`` is "encoder-decoder" or "decoder-only").

    In inference (no gradient, eval mode) a decoder's prompt keys and values are kept and reused
    by later batches and calls until the prompt's values change (``backbones.join``).
    """

    SLOT = "prompt"  # the name its keys and values are kept under

    def __init__(self, backbone: nn.Module, prompt: PromptMethod):
        super().__init__()
        self.join = join_for(backbone)  # fails early, naming the class, for unsupported models
        sink_ids(backbone, self.join.kind, prompt.config.sink)  # and for a sink this backbone cannot have
        backbone.requires_grad_(False)
        self.backbone = backbone
        self.prompt = prompt
        self._frozen: torch.Tensor | None = None  # the prompt while frozen_prompt() holds it

    # -- what the prompt is ----------------------------------------------------------------

    @property
    def config(self) -> PromptConfig:
        return self.prompt.config

    @property
    def method(self) -> str:
        return self.prompt.config.method

    def prompt_embeddings(self) -> torch.Tensor:
        """The materialized prompt, ``[n, d]``, computed in the prompt's own precision (float32).

        Under mixed-precision autocast the reparameterizations (ULPT's ``Z P̃``, DPT's ``A B``, the
        residual MLP) would otherwise run in bf16/fp16 and round the prompt before the backbone
        sees it; they are a few thousand multiply-adds, so full precision costs nothing. The join
        casts the result to the backbone's dtype where it meets the text embeddings."""
        device_type = next(self.prompt.parameters(), torch.empty(0)).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self.prompt()

    def num_trainable(self) -> int:
        """Exact count of trainable parameters (the backbone has none)."""
        return self.prompt.num_trainable()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.prompt.trainable_named_parameters().values())

    def diagnostics(self) -> dict[str, float]:
        return self.prompt.diagnostics()

    # -- running ---------------------------------------------------------------------------

    def _prompt(self) -> torch.Tensor:  # [n, d]
        return self._frozen if self._frozen is not None else self.prompt()

    @contextmanager
    def frozen_prompt(self) -> Iterator[None]:
        """Evaluate with the prompt ``[n, d]`` computed once: inside, every call reuses it (and,
        decoder-only, its kept keys and values). Nothing can train inside (no gradients reach
        the prompt); leaving the block forgets it."""
        with torch.no_grad():
            self._frozen = self.prompt().detach()
        try:
            yield
        finally:
            self._frozen = None

    def _text_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embeds = self.backbone.get_input_embeddings()(input_ids)
        return self.prompt.adjust_input_embeds(embeds, attention_mask)

    def _inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt: Any = None):
        if prompt is not None:
            raise TypeError("a SoftPromptModel has one prompt; softprompt.PromptBank takes a prompt per row")
        rows = as_rows(self._ahead(self.prompt, self._prompt()), input_ids.shape[0], slot=self.SLOT)
        return rows, self._text_embeds(input_ids, attention_mask)

    # -- saving ---------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``prompt.safetensors`` and ``prompt_config.json`` to the directory ``path``, atomically."""
        return io.save_prompt(self.prompt, backbone_record(self.backbone), path)

    def save_pretrained(self, path: str | Path) -> Path:  # the transformers spelling
        return self.save(path)

    @classmethod
    def from_pretrained(cls, backbone: nn.Module, path: str | Path) -> "SoftPromptModel":
        """``softprompt.load`` in the transformers spelling."""
        return load(backbone, path)


def _wrap(backbone: nn.Module, prompt: PromptMethod) -> SoftPromptModel:
    """The prompt on the backbone's device, attached."""
    return SoftPromptModel(backbone, prompt.to(backbone.get_input_embeddings().weight.device))


def attach(
    backbone: nn.Module,
    method: str = "ulpt",
    *,
    tokenizer: Any = None,
    seed: int = 0,
    config: PromptConfig | None = None,
    **options: Any,
) -> SoftPromptModel:
    """Freeze ``backbone`` and attach a new prompt.

    Args:
        backbone: a transformers encoder-decoder or causal LM.
        method: one of ``softprompt.METHODS``.
        tokenizer: needed only for ``init="text"``.
        seed: fixes the prompt's random initialization.
        config: a ready config (then ``method`` and ``options`` are ignored).
        **options: the method's config fields, e.g. ``length=100, rank=2``.
    """
    config = config if config is not None else make_config(method, **options)
    return _wrap(backbone, build_method(config, backbone_info(backbone, tokenizer), seed=seed))


def load(backbone: nn.Module, path: str | Path) -> SoftPromptModel:
    """Attach the prompt saved in directory ``path`` to ``backbone`` (frozen)."""
    module, _ = io.load_prompt_module(path, backbone_info(backbone))
    return _wrap(backbone, module)


def import_peft(backbone: nn.Module, adapter_dir: str | Path) -> SoftPromptModel:
    """Load a PEFT prompt-tuning adapter as a vanilla ``prompt`` method on ``backbone``."""
    table = io.read_peft_prompt(adapter_dir)  # [n, d]
    info = backbone_info(backbone)
    if table.shape[1] != info.embed_dim:
        raise io.PromptFileError(
            f"{Path(adapter_dir) / io.PEFT_WEIGHTS_NAME}: prompt has embedding size {table.shape[1]}; this backbone has {info.embed_dim}"
        )
    info.skip_init = True
    # A PEFT prompt-tuning adapter is vanilla prompt tuning: its prompt is a free matrix.
    module = build_method(config_from_dict("prompt", {"length": table.shape[0]}), info)
    module.set_prompt(table)
    return _wrap(backbone, module)
