"""The decoder-only join (Llama, SmolLM2, GPT-2, Qwen, ...): the prompt is prepended to the input.

In a causal model the prompt's keys and values do not depend on the text, so by default they
are computed **once per batch** (a batch-1 forward over the prompt) and shared by every row
through the KV cache (kept across calls in inference: ``prefix_cache``); the output head is
applied only where labels are. The text's attention over the prompt's cached keys runs through
``attention.grouped_attention`` (the same numbers as transformers' sdpa, without repeating
grouped key/value heads on the CPU). When the prompt's keys cannot be kept (a training step),
the prompt and the text rows run as one packed sequence instead (``attention.packed_attention``):
the same numbers, one matrix product per layer where there were two.

The naive path (concatenate per row, ``layout.prepend_rows``) is kept for gradient checkpointing
(whose recomputation cannot replay a cache), for generation without a cache, and as the
reference: the first use checks the shared path against it on a small probe.

Many prompts in one batch (``RowPrompts``): each distinct prompt's keys and values are computed
once and gathered per row, shorter prompts padded to the longest and the padding masked, so
every row gives what it gives alone.
"""

from __future__ import annotations

import inspect
import logging
from contextlib import nullcontext
from typing import Hashable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from .attention import Layout, Unpackable, can_pack, grouped_attention, packed_attention
from .base import Join
from .facts import DECODER_ONLY, IGNORE_INDEX, checkpointing
from .layout import RowPrompts, as_rows, positions_from_mask, prepend_rows
from .prefix_cache import KeptPrefix, may_keep, parameters_key, rows_cache


class DecoderOnlyJoin(Join):
    kind = DECODER_ONLY

    def __init__(self, backbone: nn.Module):
        super().__init__(backbone)
        self.body = backbone.base_model
        self.head = backbone.get_output_embeddings()
        self.takes_positions = _accepts(backbone.forward, "position_ids")
        config = backbone.config
        # What the model's own forward does to the head's output, redone on the shared path:
        self.softcap = getattr(config, "final_logit_softcapping", None)  # Gemma 2/3: tanh capping
        self.logit_scale = getattr(config, "logit_scale", None)  # Cohere: logits * scale
        self.logits_scaling = getattr(config, "logits_scaling", None)  # Granite: logits / scaling
        # A sliding window counts cache slots, and the shared layout puts the prompt before the
        # pads ([prompt, pads, text]): past the window the two layouts would see different keys.
        self.window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
        # The shared prefix needs the body (without head) to take a KV cache and embeddings.
        # transformers 5.2x renamed the cache argument ``past_key_values`` to ``cache``.
        self.cache_arg = next((a for a in ("cache", "past_key_values") if _accepts(self.body.forward, a)), None)
        self.can_share = (
            self.body is not backbone
            and self.cache_arg is not None
            and _accepts(self.body.forward, "inputs_embeds")
        )
        self.verified: bool | None = None  # the shared path checked against the naive one (first use)
        self.packs: bool | None = None  # and the packed layout (set with ``verified``)
        self._kept: dict[Hashable, KeptPrefix] = {}  # slot -> the prompt's keys and values (inference)
        self.prefix_runs = 0  # how many times a prompt's keys and values were computed (tests, benchmarks)

    def clear_cache(self) -> None:
        self._kept.clear()

    # -- shared prefix -------------------------------------------------------------------

    def use_shared(self, prompt, length: int = 0) -> bool:
        """Whether the once-per-batch prompt path computes exactly what the naive layout does for
        a prompt ``[n, d]`` (or ``RowPrompts``) and ``length`` text positions; otherwise the
        naive path runs.

        Besides the known cases (gradient checkpointing, a sliding window the sequence exceeds),
        the first call checks the shared path against the naive one on a small probe and keeps
        the verdict, so an architecture with a quirk of its own falls back instead of giving
        silently different numbers.
        """
        if not self.can_share or checkpointing(self.backbone):
            return False
        rows = prompt if isinstance(prompt, RowPrompts) else None
        width = rows.width if rows is not None else prompt.shape[0]
        if self.window is not None and width + length > self.window:
            return False
        if self.verified is None:
            self.verified, self.packs = self._probe(rows.prompts[0] if rows is not None else prompt)
        return self.verified

    @torch.no_grad()
    def _probe(self, prompt: torch.Tensor) -> tuple[bool, bool]:
        """Whether the shared path's logits, and the packed layout's, agree with the naive ones on
        two rows of four tokens, one left-padded, behind a two-token prompt (eval mode, so no
        dropout; float32 to 1e-4, half precision to 2e-2)."""
        table = self.backbone.get_input_embeddings()
        ids = torch.arange(4, 12, device=prompt.device).remainder(table.weight.shape[0]).view(2, 4)
        embeds = table(ids)
        mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]], device=prompt.device)
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        probe = prompt.detach()[:2] if prompt.shape[0] else table(ids[0, :2])
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            naive = self.labeled_logits(probe, embeds, mask, labels, shared=False)[0]
            tol = 1e-4 if embeds.dtype == torch.float32 else 2e-2

            def agree(got: torch.Tensor) -> bool:
                return bool(torch.allclose(got, naive, rtol=tol, atol=tol * max(1.0, float(naive.abs().max()))))

            shared = agree(self._labeled_logits(probe, embeds, mask, labels, packed=False)[0])
            try:
                packed = shared and self.takes_positions and can_pack(self.backbone) and agree(self._labeled_logits(probe, embeds, mask, labels, packed=True)[0])
            except Unpackable:  # the model asks attention for something the packed layout does not do
                packed = False
        finally:
            self.backbone.train(was_training)
        return shared, packed

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden)
        if self.logit_scale is not None:
            logits = logits * self.logit_scale
        if self.logits_scaling is not None:
            logits = logits / self.logits_scaling
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def _shared_hidden(self, prompt, embeds, attention_mask, packed: bool | None = None):
        """Run each distinct prompt once (batch 1, or take its kept keys and values), then the
        text of every row on top of its own prompt's cache; or, for one prompt whose keys cannot
        be kept (``packed``, by default when the probe allowed it), both in one packed sequence.

        Returns ``(prompt_last [P, d] or None, which [B], hidden [B, T, d])``: the final hidden
        state of each prompt's last token (it predicts the first text token of the rows that
        take it), each row's prompt, and the final hidden state of every text position.
        """
        B, T, _ = embeds.shape
        rows = as_rows(prompt, B)
        extra = {}
        if rows.width == 0:  # no prompt (zero-shot): the text alone; no row's first token has a predictor
            if self.takes_positions:
                extra["position_ids"] = positions_from_mask(attention_mask)
            out = self.body(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False, **extra)
            return None, rows.which, out.last_hidden_state
        slots = rows.slots or [None] * len(rows.prompts)
        if packed is None:
            packed = bool(self.packs) and len(rows.prompts) == 1 and not may_keep(self.backbone, rows.prompts[0], slots[0])
        if packed:
            last, hidden = self._packed_hidden(rows.prompts[0], embeds, attention_mask)
            return last, rows.which, hidden
        prefixes = [self._prefix(p, embeds.dtype, slot) for p, slot in zip(rows.prompts, slots)]
        cache = rows_cache([getattr(prefix, self.cache_arg) for prefix in prefixes], rows.which)
        N, n = rows.width, rows.lengths.unsqueeze(1)  # the longest prompt; each row's [B, 1]
        prompt_mask = (torch.arange(N, device=embeds.device).unsqueeze(0) < n).to(attention_mask.dtype)  # [B, N]
        mask = torch.cat([prompt_mask, attention_mask], dim=1)  # [B, N+T]
        if self.takes_positions:
            extra["position_ids"] = positions_from_mask(attention_mask, offset=n)
        extra[self.cache_arg] = cache
        with grouped_attention(self.backbone):  # the masked text-on-prompt attention, without repeated heads
            out = self.body(inputs_embeds=embeds, attention_mask=mask, use_cache=True, **extra)
        last = torch.stack([prefix.last_hidden_state[0, -1] for prefix in prefixes])  # [P, d]
        return last, rows.which, out.last_hidden_state

    def _packed_hidden(self, prompt: torch.Tensor, embeds: torch.Tensor, attention_mask: torch.Tensor):
        """The prompt ``[n, d]`` and the text rows ``embeds [B, T, d]`` as one sequence
        ``[1, n + B·T]`` through the body. Returns ``(prompt_last [1, d], hidden [B, T, d])``."""
        (B, T, d), n = embeds.shape, prompt.shape[0]
        real = attention_mask.bool()
        causal = torch.ones(T, T, dtype=torch.bool, device=embeds.device).tril()
        mask = torch.cat([real.new_ones(B, T, n), causal & real.unsqueeze(1)], dim=2).unsqueeze(1)  # [B, 1, T, n+T]
        positions = torch.cat([torch.arange(n, device=embeds.device), positions_from_mask(attention_mask, offset=n).flatten()])
        packed = torch.cat([prompt.to(embeds.dtype), embeds.reshape(B * T, d)]).unsqueeze(0)  # [1, n+B·T, d]
        with packed_attention(self.backbone, Layout(n, B, T, mask)):
            hidden = self.body(inputs_embeds=packed, position_ids=positions.unsqueeze(0), use_cache=False).last_hidden_state[0]
        self.prefix_runs += 1
        return hidden[n - 1 : n], hidden[n:].view(B, T, d)

    def _prefix(self, prompt: torch.Tensor, dtype: torch.dtype, slot: Hashable | None = None):
        """The body's output over the prompt alone (batch 1, with its KV cache).

        With a ``slot``, in inference (the prompt needs no gradient, the backbone is in eval
        mode), the output is kept and reused while the prompt's values and the backbone's
        parameters are unchanged (``prefix_cache``).
        """
        keep = may_keep(self.backbone, prompt, slot)
        if keep:
            kept = self._kept.get(slot)
            key = (parameters_key(self.backbone), dtype)
            if kept is not None and kept.still_valid(prompt, key):
                return kept.prefix
        extra = {"position_ids": torch.arange(prompt.shape[0], device=prompt.device).unsqueeze(0)} if self.takes_positions else {}
        prefix = self.body(inputs_embeds=prompt.to(dtype).unsqueeze(0), use_cache=True, **extra)
        self.prefix_runs += 1
        if keep and not prefix.last_hidden_state.requires_grad:  # never keep a graph
            self._kept[slot] = KeptPrefix(prompt.detach().clone(), key, prefix)
        return prefix

    def _labeled_logits(self, prompt, embeds, attention_mask, labels, packed: bool | None = None):
        """Logits only where a label is, ``([N, V] float32, targets [N], rows [N])``.

        A label at text position ``t`` is predicted from the previous real token, or from
        the prompt's last token when ``t`` is the row's first real token.
        """
        prompt_last, which, hidden = self._shared_hidden(prompt, embeds, attention_mask, packed)
        rows, cols, prev, from_text = _predictors(labels, attention_mask)
        if prompt_last is None:  # no prompt: a row's first token is predicted by nothing (as in the naive layout)
            rows, cols, prev = rows[from_text], cols[from_text], prev[from_text]
            return self._logits(hidden[rows, prev]).float(), labels[rows, cols], rows
        h = torch.where(from_text.unsqueeze(-1), hidden[rows, prev], prompt_last[which[rows]])
        return self._logits(h).float(), labels[rows, cols], rows

    # -- naive concatenation -------------------------------------------------------------

    def _naive_run(self, prompt, embeds, attention_mask, labels=None, compute_loss=True, **kwargs):
        """Run the backbone on ``[spare, pads, prompt, text]`` rows.

        Returns ``(out, full_labels [B, N+T] or None, text_index [B, T])``; transformers
        computes the loss when ``compute_loss`` and labels are given. Labels given without
        ``compute_loss``, the head runs only at the N positions that predict a label
        (``_naive_predictors``): ``out.logits`` is ``[N, V]``.
        """
        combined, mask, text_index = prepend_rows(as_rows(prompt, embeds.shape[0]), embeds, attention_mask)
        full_labels = None
        if labels is not None:
            full_labels = labels.new_full(mask.shape, IGNORE_INDEX).scatter(1, text_index, labels)
        if self.takes_positions:
            kwargs["position_ids"] = positions_from_mask(mask)
        at_labels = full_labels is not None and not compute_loss
        with self.output_head.only(*_naive_predictors(full_labels), mask.shape[1]) if at_labels else nullcontext() as pick:
            out = self.backbone(
                inputs_embeds=combined, attention_mask=mask, labels=full_labels if compute_loss else None, use_cache=False, **kwargs
            )
        if at_labels:
            out.logits = pick(out.logits)
        return out, full_labels, text_index

    def _naive(self, prompt, embeds, attention_mask, labels=None, **kwargs):
        out, _, text_index = self._naive_run(prompt, embeds, attention_mask, labels, **kwargs)
        index = text_index.unsqueeze(-1).expand(-1, -1, out.logits.shape[-1])
        return out.loss, torch.gather(out.logits, 1, index)

    # -- public --------------------------------------------------------------------------

    def forward(self, prompt, embeds, attention_mask, labels=None, return_logits=True, shared=None, **kwargs):
        """Args: prompt ``[n, d]`` (or ``RowPrompts``), embeds ``[B, T, d]``, attention_mask
        ``[B, T]``, labels ``[B, T]`` aligned with the input ids (as in transformers; -100 =
        ignored). Returns ``CausalLMOutputWithPast`` with ``logits [B, T, V]`` for the text
        positions (or ``None`` when ``return_logits`` is False: the head then runs only where
        a label is, on either path) and the mean token loss."""
        shared = self.use_shared(prompt, embeds.shape[1]) if shared is None else shared
        if not return_logits:
            loss = None
            if labels is not None:
                selected, targets, _ = self.labeled_logits(prompt, embeds, attention_mask, labels, shared=shared, **kwargs)
                loss = F.cross_entropy(selected, targets)
            return CausalLMOutputWithPast(loss=loss, logits=None)
        self.output_head.full("the caller asked for the logits (return_logits=True)", logging.INFO)
        width = prompt.width if isinstance(prompt, RowPrompts) else prompt.shape[0]
        if not shared or width == 0:  # full logits without a prompt: the plain model
            loss, logits = self._naive(prompt, embeds, attention_mask, labels, **kwargs)
            return CausalLMOutputWithPast(loss=loss, logits=logits)
        prompt_last, which, hidden = self._shared_hidden(prompt, embeds, attention_mask)
        logits, loss = self._logits(hidden), None
        if labels is not None:
            first = self._logits(prompt_last)[which].unsqueeze(1)  # [B, 1, V]
            loss = _shifted_loss(torch.cat([first, logits], dim=1), labels, attention_mask)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def labeled_logits(self, prompt, embeds, attention_mask, labels, shared=None, **kwargs):
        shared = self.use_shared(prompt, embeds.shape[1]) if shared is None else shared
        if shared:
            return self._labeled_logits(prompt, embeds, attention_mask, labels)
        out, full_labels, _ = self._naive_run(prompt, embeds, attention_mask, labels, compute_loss=False, **kwargs)  # logits [N, V]
        rows, cols = _naive_predictors(full_labels)
        return out.logits.float(), full_labels[rows, cols + 1], rows

    def generate(self, prompt, embeds, attention_mask, **kwargs):
        """Greedy or sampled generation; returns only the new tokens ``[B, new]``.

        With the KV cache on (the default), generation starts from the prompts' keys and values
        (computed once, or kept from earlier calls) and the rows are ``[prompt, spare, pads,
        text]``: only the text is run through the model before the first new token. Without it
        (``use_cache=False``), under a sliding window, or where the shared path is not exact,
        each row is ``[spare, pads, prompt, text]`` run whole. Either way the head runs at the
        last position only, where the model's forward takes transformers' ``logits_to_keep``."""
        self.output_head.generating(decoder_only=True, use_cache=kwargs.get("use_cache", True))
        rows = as_rows(prompt, embeds.shape[0])
        cached = kwargs.get("use_cache", True) and rows.width > 0 and self.window is None and self.use_shared(rows, embeds.shape[1])
        if not cached:
            combined, mask, _ = prepend_rows(rows, embeds, attention_mask)
            return self.backbone.generate(inputs_embeds=combined, attention_mask=mask, **kwargs)
        B, N = embeds.shape[0], rows.width
        slots = rows.slots or [None] * len(rows.prompts)
        prefixes = [self._prefix(p, embeds.dtype, slot) for p, slot in zip(rows.prompts, slots)]
        kwargs[self.cache_arg] = rows_cache([getattr(prefix, self.cache_arg) for prefix in prefixes], rows.which)
        prompt_mask = (torch.arange(N, device=embeds.device).unsqueeze(0) < rows.lengths.unsqueeze(1)).to(attention_mask.dtype)
        # The first N columns are in the cache: generate runs only the columns after it, so their
        # embeddings are never read (zeros stand in); the mask gives the positions (real tokens counted).
        combined = torch.cat([embeds.new_zeros(B, N, embeds.shape[-1]), embeds], dim=1)  # [B, N+T, d]
        mask = torch.cat([prompt_mask, attention_mask], dim=1)
        with grouped_attention(self.backbone):
            return self.backbone.generate(inputs_embeds=combined, attention_mask=mask, **kwargs)


def _accepts(fn, name: str) -> bool:
    parameters = inspect.signature(fn).parameters
    return name in parameters


def _naive_predictors(full_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, cols)``, ``[N]`` each: the positions of the naive rows ``full_labels [B, N+T]``
    that predict a label (column j predicts j + 1), row-major."""
    return (full_labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)


def _predictors(labels: torch.Tensor, attention_mask: torch.Tensor):
    """Which position predicts each label of ``labels [B, T]``.

    Returns ``(rows, cols, prev, from_text)``, each ``[N]`` over the N labeled positions: a
    label at text column ``t`` is predicted from column ``prev = t - 1`` when that is a real
    token (``from_text``), otherwise (a row's first real token) from the prompt's last token.
    """
    rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
    prev = (cols - 1).clamp(min=0)
    from_text = (cols > 0) & attention_mask[rows, prev].bool()
    return rows, cols, prev, from_text


def _shifted_loss(logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy where ``logits [B, T+1, V]`` has, at column 0, the prompt's last
    position; column ``t+1`` is text position ``t``. Label ``t`` is predicted from the
    previous real token (column ``t``) or, for a row's first real token, column 0."""
    rows, cols, _, from_text = _predictors(labels, attention_mask)
    source = torch.where(from_text, cols, torch.zeros_like(cols))
    return F.cross_entropy(logits[rows, source].float(), labels[rows, cols])
