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

from .backbones import join_for
from .prompts import BackboneInfo, PromptConfig, PromptMethod, build_method, make_config


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
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.prompt.parameters() if p.requires_grad]

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
                (-100 = ignored); encoder-decoder: the decoder targets ``[B, L]``.
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

    # -- saving ----------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``prompt.safetensors`` and ``prompt_config.json`` to the directory ``path``, atomically."""
        from .io import save_prompt

        return save_prompt(self, path)

    def save_pretrained(self, path: str | Path) -> Path:  # the transformers spelling
        return self.save(path)

    @classmethod
    def from_pretrained(cls, backbone: nn.Module, path: str | Path) -> "SoftPromptModel":
        """``softprompt.load`` in the transformers spelling."""
        from .io import load

        return load(backbone, path)

    def print_trainable_parameters(self) -> None:
        total = sum(p.numel() for p in self.parameters())
        trainable = self.num_trainable()
        print(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}")


def backbone_info(backbone: nn.Module, tokenizer: Any = None) -> BackboneInfo:
    table = backbone.get_input_embeddings().weight
    return BackboneInfo(embed_dim=table.shape[1], vocab_size=table.shape[0], embeddings=table.detach(), tokenizer=tokenizer)


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
    prompt = build_method(config, backbone_info(backbone, tokenizer), seed=seed)
    table = backbone.get_input_embeddings().weight
    return SoftPromptModel(backbone, prompt.to(table.device))
