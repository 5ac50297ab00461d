"""``SoftPromptModel``: a frozen backbone plus one prompt method.

The wrapper knows nothing about any particular method: it asks the method for the prompt
``[n, d]`` (and lets it adjust the text embeddings, a no-op for all but DePT) and hands
both to the join chosen for the backbone's architecture (``backbones.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import io
from .backbones import backbone_info, backbone_record, join_for
from .prompts import PromptConfig, PromptMethod, build_method, config_from_dict, make_config


class SoftPromptModel(nn.Module):
    """A frozen Hugging Face model with a trainable soft prompt.

    Attributes:
        backbone: the frozen transformers model.
        prompt: the ``PromptMethod`` module (the only trainable part).
        join: how the prompt joins the input (``join.kind`` is "encoder-decoder" or "decoder-only").
    """

    def __init__(self, backbone: nn.Module, prompt: PromptMethod):
        super().__init__()
        self.join = join_for(backbone)  # fails early, naming the class, for unsupported models
        backbone.requires_grad_(False)
        self.backbone = backbone
        self.prompt = prompt

    # -- what the prompt is ----------------------------------------------------------------

    @property
    def config(self) -> PromptConfig:
        return self.prompt.config

    @property
    def method(self) -> str:
        return self.prompt.config.method

    def prompt_embeddings(self) -> torch.Tensor:
        """The materialized prompt, ``[n, d]``."""
        return self.prompt()

    def num_trainable(self) -> int:
        """Exact count of trainable parameters (the backbone has none)."""
        return self.prompt.num_trainable()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.prompt.trainable_named_parameters().values())

    def diagnostics(self) -> dict[str, float]:
        return self.prompt.diagnostics()

    # -- running ---------------------------------------------------------------------------

    def _text_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embeds = self.backbone.get_input_embeddings()(input_ids)
        return self.prompt.adjust_input_embeds(embeds, attention_mask)

    @staticmethod
    def _mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return torch.ones_like(input_ids) if attention_mask is None else attention_mask

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_logits: bool = True,
        **kwargs: Any,
    ):
        """Args:
            input_ids: ``[B, T]`` text tokens (no room for the prompt needed).
            attention_mask: ``[B, T]``, left or right padded; default all ones.
            labels: decoder-only: ``[B, T]`` aligned with ``input_ids`` as in transformers
                (``IGNORE_INDEX`` = ignored); encoder-decoder: the decoder targets ``[B, L]``.
            return_logits: False skips the full logits (the loss is then computed from the
                labeled positions only, much faster for decoder-only training).
        Returns:
            a transformers ``ModelOutput`` with ``loss`` and ``logits`` (text positions only).
        """
        mask = self._mask(input_ids, attention_mask)
        embeds = self._text_embeds(input_ids, mask)
        return self.join.forward(self.prompt(), embeds, mask, labels=labels, return_logits=return_logits, **kwargs)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor, **kwargs) -> torch.Tensor:
        """Sum of the log-probabilities of each row's labeled tokens, ``[B]`` (rank evaluation)."""
        mask = self._mask(input_ids, attention_mask)
        embeds = self._text_embeds(input_ids, mask)
        return self.join.score(self.prompt(), embeds, mask, labels, **kwargs)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """``backbone.generate`` with the prompt; returns the generated tokens only, ``[B, new]``."""
        mask = self._mask(input_ids, attention_mask)
        embeds = self._text_embeds(input_ids, mask)
        return self.join.generate(self.prompt(), embeds, mask, **kwargs)

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
