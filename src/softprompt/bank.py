"""``PromptBank``: many saved prompts on one frozen backbone, a prompt per row of a batch.

```python
bank = softprompt.PromptBank(backbone, {"sst2": "runs/sst2/prompt", "rte": "runs/rte/prompt"})
out = bank(input_ids, attention_mask, prompt=["sst2", "rte", "sst2"])   # one name per row
bank.generate(input_ids, attention_mask, prompt="rte", max_new_tokens=8)  # one name for all rows
```

Prompts may be of any methods and lengths. Decoder-only: each distinct prompt of a batch has
its keys and values computed once (and kept for later batches while its values are unchanged)
and every row attends to its own prompt's, shorter prompts padded and masked; encoder-decoder:
each row's encoder input is its own prompt and text. Either way a row's output is what that
row gives alone with its own prompt. Running a batch is ``PromptedModel``'s (``model.py``); the
bank adds what names its prompts: where each comes from, and a prompt alone as a
``SoftPromptModel``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from torch import nn

from . import io
from .backbones import backbone_info
from .model import PromptedModel, SoftPromptModel
from .prompts import PromptMethod


class PromptBank(PromptedModel):
    """A frozen backbone with named prompts; every call takes ``prompt=``, a name per row (or
    one name for every row; none needed while the bank holds one prompt).

    Attributes:
        backbone: the frozen transformers model.
        prompts: ``nn.ModuleDict`` name -> ``PromptMethod``.
        join: how a prompt joins the input.
        records: name -> the saved prompt's ``prompt_config.json`` (for prompts loaded from a directory).
    """

    def __init__(self, backbone: nn.Module, prompts: Mapping[str, Any] | None = None):
        """Args:
            backbone: a transformers encoder-decoder or causal LM (frozen once a prompt is added).
            prompts: name -> a prompt directory, a ``SoftPromptModel`` or a ``PromptMethod``.
        """
        super().__init__(backbone)
        self.records: dict[str, dict[str, Any]] = {}
        for name, source in (prompts or {}).items():
            self.add(name, source)

    def add(self, name: str, source: Any) -> None:
        """Add (or replace) the prompt ``name``: a prompt directory, a ``SoftPromptModel`` (its
        prompt module is shared, not copied) or a ``PromptMethod``."""
        record = None
        if isinstance(source, SoftPromptModel):
            module = source.prompt
        elif isinstance(source, PromptMethod):
            module = source
        elif isinstance(source, (str, Path)):
            module, record = io.load_prompt_module(source, backbone_info(self.backbone))
            kind = record["backbone"].get("kind")
            if kind is not None and kind != self.join.kind:
                raise io.PromptFileError(f"{source}: the prompt was trained on a {kind} model; this backbone is {self.join.kind}")
        else:
            raise TypeError(f"prompt {name!r}: expected a prompt directory, a SoftPromptModel or a PromptMethod, got {type(source).__name__}")
        self._put(name, module)
        self.records.pop(name, None)  # a replaced prompt's record is no longer its
        if record is not None:
            self.records[name] = record

    def __contains__(self, name: str) -> bool:
        return name in self.prompts

    def __len__(self) -> int:
        return len(self.prompts)

    def model(self, name: str) -> SoftPromptModel:
        """The prompt ``name`` alone on the same backbone (its module shared): a ``SoftPromptModel``."""
        return SoftPromptModel(self.backbone, self.prompts[self._check(name)])
