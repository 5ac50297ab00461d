"""A softprompt prompt in lm-evaluation-harness (``lm-eval==0.4.13``): the model class
``softprompt``, registered with lm-eval's model registry when this module is imported.

    python -m softprompt.harness --model softprompt --model_args pretrained=MODEL,prompt=PROMPT_DIR --tasks T
    # or, in Python:  import softprompt.harness; lm_eval.simple_evaluate(model="softprompt", model_args=...)

It is lm-eval's own ``HFLM`` (tokenization, request ordering, batching, ``loglikelihood``,
``loglikelihood_rolling``, ``generate_until`` and their post-processing are lm-eval's) with the
two model calls replaced by softprompt's: ``_model_call`` runs ``PromptedModel.forward``, whose
prompt keys and values are computed once and kept across batches (the prompt cache), and
``_model_generate`` runs ``PromptedModel.generate`` from that cache. ``MODEL`` is what
``load_backbone`` takes (a directory, a hub name, a .gguf, nothing for the embedded SmolLM2);
``PROMPT_DIR`` a prompt folder or Hub id; no ``prompt``: the backbone alone.

The same prompt exported with ``softprompt export --to peft`` and run as ``--model hf
--model_args pretrained=MODEL,peft=ADAPTER`` gives the same log-likelihoods (tests/test_harness.py).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils_hf import stop_sequences_criteria

from .backbones import load_backbone
from .model import PromptedModel, load


@register_model("softprompt")
class SoftPromptLM(HFLM):
    """lm-eval's ``HFLM`` reading every row after a softprompt prompt."""

    def __init__(self, pretrained: str | None = None, prompt: str | None = None, **kwargs: Any) -> None:
        backbone, tokenizer = load_backbone(pretrained)
        kwargs.setdefault("device", str(backbone.device))
        super().__init__(pretrained=backbone, tokenizer=tokenizer, backend="causal", **kwargs)
        # eval mode and no gradient: the prompt's keys and values are kept between calls
        self.prompted = (load(backbone, prompt) if prompt else PromptedModel(backbone)).eval()
        self.prompt_positions = max((self.prompted._ahead(name).shape[0] for name in self.prompted.names), default=0)

    @property
    def max_length(self) -> int:
        """The text's room: the backbone's positions less the prompt's (sink included)."""
        return super().max_length - self.prompt_positions

    def _model_call(self, inps: torch.Tensor, attn_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, T, V]`` of the text positions of ``inps [B, T]`` (right-padded: pads come
        after every real token, so all ones is the mask, as HFLM runs the backbone)."""
        with torch.no_grad():
            return self.prompted(inps).logits

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs: Any) -> torch.Tensor:
        """``[B, T + new]``: the left-padded ``context [B, T]`` then its new tokens, as HFLM's
        caller expects; greedy unless the task asks to sample (lm-eval's default)."""
        kwargs = dict(generation_kwargs)
        mask = kwargs.pop("attention_mask", None)
        if not kwargs.setdefault("do_sample", kwargs.get("temperature", 0.0) > 0.0):
            kwargs.pop("temperature", None)
        # softprompt generates from embeddings: the ids transformers sees are the new ones only
        stopping = stop_sequences_criteria(self.tokenizer, stop, 0, context.shape[0])
        new = self.prompted.generate(context, mask, max_new_tokens=max_length - context.shape[1], stopping_criteria=stopping,
                                     pad_token_id=self.tokenizer.pad_token_id, **kwargs)
        return torch.cat([context, new], dim=1)


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line, with ``--model softprompt`` registered."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]
    cli_evaluate()


if __name__ == "__main__":
    main()
