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
row gives alone with its own prompt. The bank knows no method by name: it asks each prompt
module for its ``[n, d]`` and to adjust its own rows' text embeddings (DePT's update).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from . import io
from .backbones import RowPrompts, backbone_info, join_for, sink_ids
from .model import PromptedModel, SoftPromptModel
from .prompts import PromptMethod


class PromptBank(PromptedModel):
    """A frozen backbone with named prompts; every call takes ``prompt=``, a name per row (or
    one name for every row).

    Attributes:
        backbone: the frozen transformers model.
        prompts: ``nn.ModuleDict`` name -> ``PromptMethod``.
        join: how a prompt joins the input.
        records: name -> the saved prompt's ``prompt_config.json`` (for prompts loaded from a directory).
    """

    def __init__(self, backbone: nn.Module, prompts: Mapping[str, Any] | None = None):
        """Args:
            backbone: a transformers encoder-decoder or causal LM (frozen here).
            prompts: name -> a prompt directory, a ``SoftPromptModel`` or a ``PromptMethod``.
        """
        super().__init__()
        self.join = join_for(backbone)
        backbone.requires_grad_(False)
        self.backbone = backbone
        self.prompts = nn.ModuleDict()
        self.records: dict[str, dict[str, Any]] = {}
        self._frozen: dict[str, torch.Tensor] | None = None
        for name, source in (prompts or {}).items():
            self.add(name, source)

    # -- the prompts ---------------------------------------------------------------------

    def add(self, name: str, source: Any) -> None:
        """Add (or replace) the prompt ``name``: a prompt directory, a ``SoftPromptModel`` (its
        prompt module is shared, not copied) or a ``PromptMethod``."""
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"prompt name {name!r}: give a non-empty name without dots")
        if isinstance(source, SoftPromptModel):
            module = source.prompt
        elif isinstance(source, PromptMethod):
            module = source
        elif isinstance(source, (str, Path)):
            module, record = io.load_prompt_module(source, backbone_info(self.backbone))
            kind = record["backbone"].get("kind")
            if kind is not None and kind != self.join.kind:
                raise io.PromptFileError(f"{source}: the prompt was trained on a {kind} model; this backbone is {self.join.kind}")
            self.records[name] = record
        else:
            raise TypeError(f"prompt {name!r}: expected a prompt directory, a SoftPromptModel or a PromptMethod, got {type(source).__name__}")
        if module.embed_dim != self.backbone.get_input_embeddings().weight.shape[1]:
            raise ValueError(f"prompt {name!r} has embedding size {module.embed_dim}; this backbone has "
                             f"{self.backbone.get_input_embeddings().weight.shape[1]}")
        try:
            sink_ids(self.backbone, self.join.kind, module.config.sink)
        except ValueError as err:
            raise ValueError(f"prompt {name!r}: {err}") from None
        self.prompts[name] = module.to(self.backbone.get_input_embeddings().weight.device)

    @property
    def names(self) -> list[str]:
        return list(self.prompts.keys())

    def __contains__(self, name: str) -> bool:
        return name in self.prompts

    def __len__(self) -> int:
        return len(self.prompts)

    def model(self, name: str) -> SoftPromptModel:
        """The prompt ``name`` alone on the same backbone (its module shared): a ``SoftPromptModel``."""
        return SoftPromptModel(self.backbone, self.prompts[self._check(name)])

    def _check(self, name: str) -> str:
        if name not in self.prompts:
            raise KeyError(f"no prompt named {name!r} in the bank (it has {', '.join(self.names) or 'none'})")
        return name

    # -- running -------------------------------------------------------------------------

    @contextmanager
    def frozen_prompt(self) -> Iterator[None]:
        """Inside, every prompt ``[n, d]`` is computed once and reused (as ``SoftPromptModel.frozen_prompt``)."""
        with torch.no_grad():
            self._frozen = {name: module().detach() for name, module in self.prompts.items()}
        try:
            yield
        finally:
            self._frozen = None

    def _row_names(self, prompt: str | Sequence[str] | None, batch_size: int) -> list[str]:
        if prompt is None:
            if len(self.prompts) != 1:
                raise ValueError(f"give prompt= (a name per row, or one for all); the bank has {', '.join(self.names) or 'no prompts'}")
            return self.names * batch_size
        names = [prompt] * batch_size if isinstance(prompt, str) else list(prompt)
        if len(names) != batch_size:
            raise ValueError(f"prompt= gives {len(names)} names for {batch_size} rows")
        for name in dict.fromkeys(names):
            self._check(name)
        return names

    def _inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt: Any = None):
        """Each distinct prompt of the batch ``[n_p, d]`` once, which row takes which, and the
        text embeddings ``[B, T, d]``, each row's adjusted by its own prompt."""
        names = self._row_names(prompt, input_ids.shape[0])
        distinct = list(dict.fromkeys(names))  # first-seen order
        index = {name: i for i, name in enumerate(distinct)}
        which = torch.tensor([index[name] for name in names], dtype=torch.long, device=input_ids.device)  # [B]
        tensors = [self._ahead(self.prompts[name], self._frozen[name] if self._frozen is not None else self.prompts[name]())
                   for name in distinct]
        embeds = self.backbone.get_input_embeddings()(input_ids)  # [B, T, d]
        for i, name in enumerate(distinct):
            rows = (which == i).nonzero().squeeze(1)
            own = embeds[rows]
            adjusted = self.prompts[name].adjust_input_embeds(own, attention_mask[rows])
            if adjusted is not own:  # a method that changes the text's embeddings (DePT)
                embeds = embeds.index_copy(0, rows, adjusted)
        return RowPrompts(tensors, which, distinct), embeds
