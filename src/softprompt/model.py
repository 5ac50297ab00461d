"""Prompted models: one frozen backbone with 0…n named prompts (``PromptedModel``).

* ``SoftPromptModel`` is its one-prompt case: what ``attach``, ``load`` and ``import_peft``
  return, what training trains.
* ``PromptBank`` (``bank.py``) is its many-prompt case: every call names each row's prompt.
* With no prompt it is the backbone on the text alone (the zero-shot baseline,
  ``evaluate.NoPrompt``), run by the same code.

The class knows no method by name: it asks each prompt module for its ``[n, d]`` (and to adjust
its rows' text embeddings, a no-op for all but DePT) and hands both to the join chosen for the
backbone's architecture (``softprompt.backbones``).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from . import io
from .backbones import RowPrompts, backbone_info, backbone_record, input_device, join_for, sink_ids
from .exports import peft_sink
from .prompt_files import resolve_prompt_dir
from .prompts import PromptConfig, PromptMethod, build_method, config_from_dict, make_config

RowNames = str | Sequence[str] | None  # ``prompt=``: a name per row, one name for all, or none


class PromptedModel(nn.Module):
    """A frozen backbone with named prompts, none, one or many: row ``b`` of a batch is read
    after the prompt it names (``prompt=``), or after the model's only prompt, or alone.

    Attributes:
        backbone: the transformers model; frozen once a prompt is put on it (only prompts
            train). Holding no prompt, the model leaves its ``requires_grad`` as it finds it.
        join: how a prompt joins the input (``join.kind`` is "encoder-decoder" or "decoder-only").
        prompts: ``nn.ModuleDict`` name -> ``PromptMethod``, each on the backbone's device.

    In inference (no gradient, eval mode) a decoder's prompt keys and values are kept under the
    prompt's name and reused by later batches and calls until its values change
    (``softprompt.backbones``).
    """

    def __init__(self, backbone: nn.Module, prompts: Mapping[str, PromptMethod] | None = None):
        super().__init__()
        self.join = join_for(backbone)  # fails early, naming the class, for unsupported models
        self.backbone = backbone
        self.prompts = nn.ModuleDict()
        self._frozen: dict[str, torch.Tensor] | None = None  # name -> [n, d] while frozen_prompt() holds them
        for name, module in (prompts or {}).items():
            self._put(name, module)

    # -- the prompts -----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self.prompts.keys())

    @property
    def device(self) -> torch.device:
        """Where the backbone reads its input embeddings (its first layer, also when accelerate
        dispatched it over devices): every prompt is kept there."""
        return input_device(self.backbone)

    def _put(self, name: str, module: PromptMethod) -> None:
        """Hold ``module`` as the prompt ``name`` (replacing any of that name): checked against
        the backbone, moved to its device, and the backbone frozen."""
        if not isinstance(name, str) or not name or "." in name:  # ModuleDict keys are attribute paths
            raise ValueError(f"prompt {name!r}: give a non-empty name without dots")
        embed_dim = self.backbone.get_input_embeddings().weight.shape[1]
        if module.embed_dim != embed_dim:
            raise ValueError(f"prompt {name!r} has embedding size {module.embed_dim}; this backbone has {embed_dim}")
        try:
            sink_ids(self.backbone, self.join.kind, module.config.sink)  # a sink this backbone cannot have
        except ValueError as err:
            raise ValueError(f"prompt {name!r}: {err}") from None
        self.backbone.requires_grad_(False)
        self.prompts[name] = module.to(self.device)

    def _check(self, name: str) -> str:
        if name not in self.prompts:
            raise KeyError(f"no prompt named {name!r} in the bank (it has {', '.join(self.names) or 'none'})")
        return name

    # -- what each row reads ---------------------------------------------------------------

    @contextmanager
    def frozen_prompt(self) -> Iterator[None]:
        """Evaluate with every prompt ``[n, d]`` computed once: inside, every call reuses it (and,
        decoder-only, its kept keys and values). Nothing can train inside (no gradients reach
        the prompts, nor their methods' text adjustments); leaving the block forgets them."""
        with torch.no_grad():
            self._frozen = {name: self._materialize(module).detach() for name, module in self.prompts.items()}
        try:
            yield
        finally:
            self._frozen = None

    def _row_names(self, prompt: RowNames, batch_size: int) -> list[str]:
        """Each row's prompt name, ``B`` names; ``[]`` when the model holds no prompt."""
        if prompt is None:
            if len(self.prompts) > 1:
                raise ValueError(f"give prompt= (a name per row, or one for all); the bank has {', '.join(self.names)}")
            return self.names * batch_size  # the only prompt for every row, or none
        names = [prompt] * batch_size if isinstance(prompt, str) else list(prompt)
        if len(names) != batch_size:
            raise ValueError(f"prompt= gives {len(names)} names for {batch_size} rows")
        for name in dict.fromkeys(names):
            self._check(name)
        return names

    def _which(self, prompt: RowNames, input_ids: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        """The batch's distinct prompt names (first-seen order) and each row's index among them,
        ``which [B]`` (zeros when the model holds no prompt)."""
        names = self._row_names(prompt, input_ids.shape[0])
        distinct = list(dict.fromkeys(names))
        index = {name: i for i, name in enumerate(distinct)}
        which = [index[name] for name in names] if names else [0] * input_ids.shape[0]
        return distinct, torch.tensor(which, dtype=torch.long, device=input_ids.device)

    def _materialize(self, module: PromptMethod) -> torch.Tensor:
        """A prompt's rows ``[n, d]`` in float32, its parameters' precision, whatever the backbone's
        dtype or an autocast around the call: a reparameterization (ULPT's ``Z P̃``, DPT's ``A B``,
        the residual MLP) is a few thousand multiply-adds, and in bf16 it would round the prompt
        before the backbone sees it. ``_inputs`` casts it once, where it meets the text."""
        with torch.autocast(device_type=self.device.type, enabled=False):
            return module()

    def _ahead(self, name: str) -> torch.Tensor:
        """The prompt ``name`` as the text reads it, ``[s + n, d]`` float32: the frozen tokens its
        config puts ahead of it (``sink``, embedded by the backbone as text is), then its rows
        ``[n, d]`` (the frozen ones inside ``frozen_prompt``). ``s = 0`` for ``sink="none"``."""
        module = self.prompts[name]
        frozen = (self._frozen or {}).get(name)
        rows = frozen if frozen is not None else self._materialize(module)
        ids = sink_ids(self.backbone, self.join.kind, module.config.sink)
        if not ids:
            return rows
        with torch.no_grad():
            ahead = self.backbone.get_input_embeddings()(torch.tensor(ids, device=rows.device))  # [s, d]
        return torch.cat([ahead.to(rows.dtype), rows])

    def _embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, distinct: list[str], which: torch.Tensor) -> torch.Tensor:
        """The text's embeddings ``[B, T, d]``, each row's adjusted by its own prompt's method
        (``which [B]``: each row's index into ``distinct``)."""
        embeds = self.backbone.get_input_embeddings()(input_ids)  # [B, T, d]
        # Inside frozen_prompt no gradient reaches a prompt, its text adjustment (DePT's update) included.
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._frozen is None):
            if len(distinct) == 1:  # one prompt for every row (training): the whole batch, no gather
                return self.prompts[distinct[0]].adjust_input_embeds(embeds, attention_mask)
            for i, name in enumerate(distinct):
                rows = (which == i).nonzero().squeeze(1)
                own = embeds[rows]
                adjusted = self.prompts[name].adjust_input_embeds(own, attention_mask[rows])
                if adjusted is not own:  # a method that changes the text's embeddings (DePT)
                    embeds = embeds.index_copy(0, rows, adjusted)
        return embeds

    def _text_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt: RowNames = None) -> torch.Tensor:
        """The text's embeddings ``[B, T, d]`` as the join receives them (``prompt=`` as in ``forward``)."""
        return self._embeds(input_ids, attention_mask, *self._which(prompt, input_ids))

    def _inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt: RowNames = None):
        """``(RowPrompts, text embeddings [B, T, d])`` for a batch: each distinct prompt
        ``[n_p, d]`` once, kept under its name, and which row reads which. With no prompt, an
        empty one ``[0, d]`` for every row: the join then runs the text alone.

        Where the prompt meets the text, and the one place it is cast: from float32 to the text
        embeddings' dtype (the backbone's; a no-op for a float32 backbone). The gradient flows back
        through the cast to the float32 parameters."""
        distinct, which = self._which(prompt, input_ids)
        embeds = self._embeds(input_ids, attention_mask, distinct, which)
        if not distinct:
            check_positions(self.backbone, 0, input_ids.shape[1])
            return RowPrompts([torch.zeros(0, embeds.shape[-1], device=embeds.device, dtype=embeds.dtype)], which), embeds
        ahead = [self._ahead(name).to(embeds.dtype) for name in distinct]
        check_positions(self.backbone, max(p.shape[0] for p in ahead), input_ids.shape[1])
        return RowPrompts(ahead, which, distinct), embeds

    def clear_prompt_cache(self) -> None:
        """Forget the prompts' kept keys and values (they are checked before every reuse, so
        this only frees memory)."""
        self.join.clear_cache()

    # -- running ---------------------------------------------------------------------------

    @staticmethod
    def _mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return torch.ones_like(input_ids) if attention_mask is None else attention_mask

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_logits: bool = True,
        choice_tokens: torch.Tensor | None = None,
        choice_rows: torch.Tensor | None = None,
        choice_labels: torch.Tensor | None = None,
        prompt: RowNames = None,
        **kwargs: Any,
    ):
        """Args:
            input_ids: ``[B, T]`` text tokens (no room for the prompt needed).
            attention_mask: ``[B, T]``, left or right padded; default all ones.
            labels: decoder-only: ``[B, T]`` aligned with ``input_ids`` as in transformers
                (``IGNORE_INDEX`` = ignored); encoder-decoder: the decoder targets ``[B, L]``.
            return_logits: False skips the full logits: the head then runs only at the labeled
                positions, on every path of either kind (``backbones.head``). True computes it
                at every text position, logged once (INFO) as every full-logits path is.
            choice_tokens, choice_rows: score choices instead (see ``choice_scores``): the
                output's ``logits`` are the choice scores ``[E, C]`` and, with
                ``choice_labels [E]`` (the right choice), ``loss`` is the cross-entropy over the
                choices, the class objective.
            prompt: the prompt's name for each row, or one name for all; a model holding one
                prompt or none needs none (``SoftPromptModel`` takes none).
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

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor, prompt: RowNames = None, **kwargs) -> torch.Tensor:
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
        prompt: RowNames = None,
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
            prompt: the prompt's name for each batch row (as in ``forward``).
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
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, prompt: RowNames = None, **kwargs: Any) -> torch.Tensor:
        """``backbone.generate`` with the prompt; returns the generated tokens only, ``[B, new]``."""
        mask = self._mask(input_ids, attention_mask)
        prompts, embeds = self._inputs(input_ids, mask, prompt)
        return self.join.generate(prompts, embeds, mask, **kwargs)


class SoftPromptModel(PromptedModel):
    """A frozen Hugging Face model with one trainable soft prompt: a ``PromptedModel`` holding
    the prompt ``NAME``, the only trainable part.

    Attributes:
        backbone: the frozen transformers model.
        prompt: the ``PromptMethod`` module.
        join: how the prompt joins the input (``join.kind`` is "encoder-decoder" or "decoder-only").
    """

    NAME = "prompt"  # its prompt's name in ``prompts`` (and the slot its keys and values are kept under)

    def __init__(self, backbone: nn.Module, prompt: PromptMethod, usage: dict[str, Any] | None = None):
        super().__init__(backbone, {self.NAME: prompt})
        # how the prompt is read (template, label words...: usage.py): set by training, kept by
        # load, written by save, so a prompt folder carries it wherever it is copied
        self.usage = usage

    # -- what the prompt is ----------------------------------------------------------------

    @property
    def prompt(self) -> PromptMethod:
        return self.prompts[self.NAME]

    @property
    def config(self) -> PromptConfig:
        return self.prompt.config

    @property
    def method(self) -> str:
        return self.prompt.config.method

    def prompt_embeddings(self) -> torch.Tensor:
        """The materialized prompt, ``[n, d]``, float32 (``_materialize``: the forward pass
        computes it the same way and casts it to the backbone's dtype where it meets the text)."""
        return self._materialize(self.prompt)

    def num_trainable(self) -> int:
        """Exact count of trainable parameters (the backbone has none)."""
        return self.prompt.num_trainable()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.prompt.trainable_named_parameters().values())

    def diagnostics(self) -> dict[str, float]:
        return self.prompt.diagnostics()

    def _row_names(self, prompt: RowNames, batch_size: int) -> list[str]:
        if prompt is not None:
            raise TypeError("a SoftPromptModel has one prompt; softprompt.PromptBank takes a prompt per row")
        return super()._row_names(None, batch_size)

    # -- saving ---------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write ``prompt.safetensors`` and ``prompt_config.json`` to the directory ``path``, atomically."""
        return io.save_prompt(self.prompt, backbone_record(self.backbone), path, usage=self.usage)

    def save_pretrained(self, path: str | Path) -> Path:  # the transformers spelling
        return self.save(path)

    @classmethod
    def from_pretrained(cls, backbone: nn.Module, path: str | Path) -> "SoftPromptModel":
        """``softprompt.load`` in the transformers spelling."""
        return load(backbone, path)


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
    try:
        sink = len(sink_ids(backbone, join_for(backbone).kind, config.sink))
    except ValueError:
        sink = 0  # a sink this backbone cannot have: the prompt's checks name it below
    check_positions(backbone, config.length + sink, 1)  # before a prompt that cannot fit is built
    return SoftPromptModel(backbone, build_method(config, backbone_info(backbone, tokenizer), seed=seed))


def max_positions(backbone: nn.Module) -> int | None:
    """How many positions the backbone's config gives (learned position tables end there);
    None where it states none (T5's relative positions)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(backbone.config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_positions(backbone: nn.Module, prompt: int, text: int) -> None:
    """Refuse a prompt of ``prompt`` positions (sink included) before ``text`` tokens that
    the backbone's positions cannot hold: past them a learned position table fails with an
    IndexError deep in the model, and rotary ones read positions never trained."""
    limit = max_positions(backbone)
    if limit is not None and prompt + text > limit:
        raise ValueError(f"a prompt of {prompt} positions and {text} text token(s) exceed the {limit} positions of "
                         f"{type(backbone).__name__}; lower --length (at most {limit - text}) or --max-length (at most {max(limit - prompt, 0)})")


def load(backbone: nn.Module, path: str | Path) -> SoftPromptModel:
    """Attach the prompt saved in directory ``path`` to ``backbone`` (frozen). ``path`` may be a
    Hub repository id (``user/repo``): it is fetched through ``huggingface_hub`` (its cache;
    ``HF_HUB_OFFLINE`` respected)."""
    module, record = io.load_prompt_module(path, backbone_info(backbone))
    return SoftPromptModel(backbone, module, usage=record.get("usage"))


def import_peft(backbone: nn.Module, adapter_dir: str | Path) -> SoftPromptModel:
    """Load a PEFT prompt-tuning adapter as a vanilla ``prompt`` method on ``backbone``. An
    adapter ``export_peft`` wrote from a ``sink="bos"`` prompt, whose row 0 is still exactly
    this backbone's BOS embedding, comes back as that prompt: ``n`` rows, ``sink="bos"``. Row 0
    changed (the adapter trained on in PEFT, where every row is trainable) imports as all ``n + 1``
    rows, ``sink="none"``: the same input rows, so the same outputs."""
    adapter_dir = resolve_prompt_dir(adapter_dir)  # a Hub id too
    table = io.read_peft_prompt(adapter_dir)  # [n, d]
    info = backbone_info(backbone)
    if table.shape[1] != info.embed_dim:
        raise io.PromptFileError(
            f"{Path(adapter_dir) / io.PEFT_WEIGHTS_NAME}: prompt has embedding size {table.shape[1]}; this backbone has {info.embed_dim}"
        )
    sink = "none"
    if peft_sink(adapter_dir) == "bos" and table.shape[0] > 1:
        with torch.no_grad():
            ids = sink_ids(backbone, join_for(backbone).kind, "bos")
            bos = backbone.get_input_embeddings()(torch.tensor(ids, device=backbone.get_input_embeddings().weight.device)).float().cpu()  # [1, d]
        if torch.equal(bos, table[:1]):
            sink, table = "bos", table[1:]
    info.skip_init = True
    # A PEFT prompt-tuning adapter is vanilla prompt tuning: its prompt is a free matrix.
    module = build_method(config_from_dict("prompt", {"length": table.shape[0], "sink": sink}), info)
    module.set_prompt(table)
    return SoftPromptModel(backbone, module)
