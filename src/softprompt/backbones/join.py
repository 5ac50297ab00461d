"""How a prompt ``[n, d]`` joins a model's input.

Two kinds of backbone, chosen by the model's config, never by the prompt method:

* encoder-decoder (T5, Flan-T5, BART): the prompt is prepended to the encoder's input
  embeddings and the attention mask is extended.
* decoder-only (Llama, SmolLM2, GPT-2, Qwen, ...): the prompt is prepended to the input.
  In a causal model the prompt's keys and values do not depend on the text, so by default
  they are computed **once per batch** (a batch-1 forward over the prompt) and shared by
  every row through the KV cache; the output head is applied only where labels are.
  The naive path (concatenate per row) is kept for gradient checkpointing (whose
  recomputation cannot replay a cache), for generation, and as the reference in tests.
  The text's attention over the prompt's cached keys runs through ``attention.grouped_attention``
  (the same numbers as transformers' sdpa, without repeating grouped key/value heads on the CPU).
  When the prompt's keys cannot be kept (a training step), the prompt and the text rows run as
  one packed sequence instead (``attention.packed_attention``): the same numbers, one matrix
  product per layer where there were two.

Padding: whatever side the tokenizer pads on, a row is laid out as
``[pads, prompt, text]`` (left padding) or ``[prompt, text, pads]`` (right padding): a pad
never sits between the prompt and the text (a known PEFT bug with left padding), and
position ids count only real tokens, so both layouts give the same numbers.

Many prompts in one batch (``RowPrompts``, what ``PromptBank`` passes): row ``b`` is joined
with its own prompt. Decoder-only: each distinct prompt's keys and values are computed once
and gathered per row, shorter prompts padded to the longest and the padding masked, so every
row gives what it gives alone. Encoder-decoder: each row's encoder input is its own prompt
and text, the spare columns masked at the end.

Prompt cache: in inference (no gradients to the prompt, backbone in eval mode) a decoder's
prompt keys and values are kept per *slot* (the single prompt of a model, or a bank's name)
and reused by later batches and calls while the prompt's values and the backbone's
parameters (their tensors and version counters) are unchanged: an optimizer step, a ``load``,
any in-place change makes the next call recompute them.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Hashable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..prompts import BackboneInfo
from .attention import Layout, Unpackable, can_pack, grouped_attention, packed_attention

IGNORE_INDEX = -100
"""Label value of positions that are not scored (transformers' convention)."""
DECODER_ONLY = "decoder-only"
ENCODER_DECODER = "encoder-decoder"
KINDS = (DECODER_ONLY, ENCODER_DECODER)


class UnsupportedModelError(TypeError):
    pass


# ---------------------------------------------------------------------------------------
# Facts about a backbone: what a method is built from, and what a saved prompt records.


def backbone_info(backbone: nn.Module, tokenizer: Any = None) -> BackboneInfo:
    """What a prompt method may know about ``backbone`` when it is built.

    ``embed`` calls the embedding module, not the table: Gemma's module multiplies the table by
    √d. ``BackboneInfo`` derives ``embed_std`` from it (the first 5,000 ids, never the whole table).
    """
    module = backbone.get_input_embeddings()
    table = module.weight

    @torch.no_grad()
    def embed(ids: torch.Tensor) -> torch.Tensor:  # [k] -> [k, d] float32 on the CPU, what the first layer sees
        return module(ids.to(table.device)).detach().float().cpu()

    return BackboneInfo(embed_dim=table.shape[1], vocab_size=table.shape[0], embeddings=table.detach(), tokenizer=tokenizer, embed=embed)


def bos_token_id(backbone: nn.Module) -> int | None:
    """The id of the BOS token the model was trained with (its config's, else its generation
    config's), or None."""
    for config in (getattr(backbone, "config", None), getattr(backbone, "generation_config", None)):
        value = getattr(config, "bos_token_id", None)
        if isinstance(value, list):  # some configs list several; the first is the one tokenizers add
            value = value[0] if value else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def sink_ids(backbone: nn.Module, kind: str, sink: str) -> list[int]:
    """The token ids a prompt with ``PromptConfig.sink == sink`` is read after on ``backbone``
    (of ``kind``, its join's): ``[]`` for ``none``, ``[BOS]`` for ``bos``; a one-line error
    where the backbone cannot have one."""
    if sink == "none":
        return []
    if kind != DECODER_ONLY:
        raise ValueError(f"sink={sink!r} is for decoder-only models; this backbone ({type(backbone).__name__}) is {kind}")
    bos = bos_token_id(backbone)
    if bos is None:
        raise ValueError(f"sink='bos': this backbone ({type(backbone).__name__}) names no bos_token_id in its config; use sink='none'")
    return [bos]


def backbone_name(backbone: nn.Module) -> str | None:
    return getattr(backbone, "name_or_path", None) or getattr(getattr(backbone, "config", None), "_name_or_path", None) or None


def backbone_record(backbone: nn.Module) -> dict[str, Any]:
    """The backbone as ``prompt_config.json`` records it: name, class, kind and sizes."""
    table = backbone.get_input_embeddings().weight
    return {
        "name": backbone_name(backbone),
        "class": type(backbone).__name__,
        "model_type": getattr(backbone.config, "model_type", None),
        "kind": join_for(backbone).kind,
        "embed_dim": int(table.shape[1]),
        "vocab_size": int(table.shape[0]),
        "bos_token_id": bos_token_id(backbone),  # what a prompt with sink="bos" is read after
    }


def join_for(backbone: nn.Module) -> "Join":
    """The join for ``backbone``'s architecture, or a one-line error naming its class."""
    config = getattr(backbone, "config", None)
    name = type(backbone).__name__
    has_head = callable(getattr(backbone, "get_output_embeddings", None)) and backbone.get_output_embeddings() is not None
    if config is None or not callable(getattr(backbone, "get_input_embeddings", None)):
        raise UnsupportedModelError(f"{name} is not a Hugging Face transformers model; softprompt needs one")
    if getattr(config, "is_encoder_decoder", False) and has_head:
        return EncoderDecoderJoin(backbone)
    if has_head and hasattr(backbone, "generate") and _is_causal_lm(backbone):
        return DecoderOnlyJoin(backbone)
    raise UnsupportedModelError(
        f"{name} is not supported: softprompt needs an encoder-decoder model with an LM head "
        "(e.g. T5ForConditionalGeneration) or a decoder-only causal LM (e.g. LlamaForCausalLM, GPT2LMHeadModel)"
    )


def _is_causal_lm(backbone: nn.Module) -> bool:
    name = type(backbone).__name__
    return name.endswith("ForCausalLM") or name.endswith("LMHeadModel") or bool(getattr(backbone.config, "is_decoder", False))


# ---------------------------------------------------------------------------------------
# Layout shared by both joins.


def leading_pads(attention_mask: torch.Tensor) -> torch.Tensor:
    """Number of masked positions before each row's first real token, ``[B]``."""
    return (attention_mask.long().cumsum(-1) == 0).sum(-1)


class RowPrompts(NamedTuple):
    """A prompt per row: row ``b`` is joined with ``prompts[which[b]]``.

    Attributes:
        prompts: ``P`` tensors ``[n_p, d]`` (lengths may differ).
        which: ``[B]`` long, each row's prompt.
        slots: a name per prompt under which the decoder keeps its keys and values for reuse
            (``None``: computed for this call only).
    """

    prompts: list[torch.Tensor]
    which: torch.Tensor
    slots: list[Hashable] | None = None

    @property
    def lengths(self) -> torch.Tensor:  # [B] each row's prompt length
        n = torch.tensor([p.shape[0] for p in self.prompts], device=self.which.device)
        return n[self.which]

    @property
    def width(self) -> int:  # N, the longest prompt
        return max(p.shape[0] for p in self.prompts)

    def padded(self, dtype: torch.dtype) -> torch.Tensor:
        """Each row's prompt, zero-padded at the end to ``N`` rows: ``[B, N, d]``."""
        N, B = self.width, self.which.shape[0]
        if len(self.prompts) == 1:
            return self.prompts[0].to(dtype).unsqueeze(0).expand(B, N, -1)
        table = torch.stack([F.pad(p.to(dtype), (0, 0, 0, N - p.shape[0])) for p in self.prompts])  # [P, N, d]
        return table[self.which]


def as_rows(prompt: "torch.Tensor | RowPrompts", batch_size: int, slot: Hashable | None = None) -> RowPrompts:
    """One prompt ``[n, d]`` for every row, or the ``RowPrompts`` given."""
    if isinstance(prompt, RowPrompts):
        return prompt
    which = torch.zeros(batch_size, dtype=torch.long, device=prompt.device)
    return RowPrompts([prompt], which, None if slot is None else [slot])


def prepend(prompt: torch.Tensor, embeds: torch.Tensor, attention_mask: torch.Tensor):
    """Insert the prompt right before each row's first real token.

    Args:
        prompt: ``[n, d]``.
        embeds: ``[B, T, d]`` text embeddings.
        attention_mask: ``[B, T]``.
    Returns:
        ``(combined [B, n+T, d], mask [B, n+T], text_index [B, T])`` where
        ``text_index[b, t]`` is the column of text position ``t`` in ``combined``.
    """
    return prepend_rows(as_rows(prompt, embeds.shape[0]), embeds, attention_mask)


def prepend_rows(rows: RowPrompts, embeds: torch.Tensor, attention_mask: torch.Tensor, spare: str = "start"):
    """Insert each row's own prompt right before its first real token.

    Rows whose prompt is shorter than the longest (``N``) get ``N - n_b`` masked spare columns,
    at the ``start`` of the row (the text still ends where it ends: generation continues it) or
    at the ``end`` (real tokens keep their columns: absolute positions, as BART's encoder uses).

    Args:
        rows: the prompts and which row takes which.
        embeds: ``[B, T, d]`` text embeddings.
        attention_mask: ``[B, T]``.
    Returns:
        ``(combined [B, N+T, d], mask [B, N+T], text_index [B, T])``.
    """
    B, T, d = embeds.shape
    N = rows.width
    n = rows.lengths.unsqueeze(1)  # [B, 1]
    lead = leading_pads(attention_mask).unsqueeze(1)  # [B, 1]
    k = torch.arange(N + T, device=embeds.device).unsqueeze(0)  # [1, N+T]
    shift = (N - n) if spare == "start" else torch.zeros_like(n)  # spare columns before the row
    j = k - shift  # column in the row's own layout [pads, prompt, text, pads] of width n+T
    # Source column in cat([text, prompt]): pads keep their place, then the prompt, then the text.
    source = torch.where(j < lead, j, torch.where(j < lead + n, T + j - lead, j - n))
    is_spare = (j < 0) | (j >= n + T)
    source = source.clamp(0, T + N - 1).masked_fill(is_spare, T)  # spare columns: any value, masked
    pool = torch.cat([embeds, rows.padded(embeds.dtype)], dim=1)  # [B, T+N, d]
    combined = torch.gather(pool, 1, source.unsqueeze(-1).expand(-1, -1, d))
    mask_pool = torch.cat([attention_mask, attention_mask.new_ones(B, N)], dim=1)
    mask = torch.gather(mask_pool, 1, source).masked_fill(is_spare, 0)
    t = torch.arange(T, device=embeds.device).unsqueeze(0)
    text_index = torch.where(t < lead, t, t + n) + shift  # [B, T]
    return combined, mask, text_index


def positions_from_mask(mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Position ids that count real tokens only (as ``generate`` computes them), ``[B, T]``."""
    position = mask.long().cumsum(-1) - 1 + offset
    return position.masked_fill(mask == 0, 1)


def _accepts(fn, name: str) -> bool:
    parameters = inspect.signature(fn).parameters
    return name in parameters


# ---------------------------------------------------------------------------------------


class Join:
    """How a prompt joins the input. Every method takes ``prompt``: one ``[n, d]`` for all
    rows, or ``RowPrompts`` (a prompt per row)."""

    kind: str = ""

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone

    def forward(self, prompt, embeds, attention_mask, labels=None, return_logits=True, **kwargs):
        raise NotImplementedError

    def labeled_logits(self, prompt, embeds, attention_mask, labels, **kwargs):
        """Logits only where a label is: ``(logits [N, V] float32, targets [N], rows [N])``
        over the N labeled positions of ``labels``, in row-major order."""
        raise NotImplementedError

    def score(self, prompt, embeds, attention_mask, labels, **kwargs) -> torch.Tensor:
        """Sum of log-probabilities of the labeled tokens of each row, ``[B]``."""
        logits, targets, rows = self.labeled_logits(prompt, embeds, attention_mask, labels, **kwargs)
        token = -F.cross_entropy(logits, targets, reduction="none")
        return torch.zeros(labels.shape[0], device=token.device, dtype=token.dtype).index_add(0, rows, token)

    def generate(self, prompt, embeds, attention_mask, **kwargs):
        raise NotImplementedError

    def clear_cache(self) -> None:
        """Forget every prompt's kept keys and values (a no-op where nothing is kept)."""


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


class _Kept(NamedTuple):
    """A prompt's keys and values kept for reuse: valid while the prompt's values equal
    ``prompt`` and the backbone's parameters are still ``backbone`` (tensors, versions)."""

    prompt: torch.Tensor  # [n, d], a private copy of the values the prefix was computed from
    backbone: tuple
    prefix: Any  # the body's output over the prompt (batch 1, with its KV cache)


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
        self._kept: dict[Hashable, _Kept] = {}  # slot -> the prompt's keys and values (inference)
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
        # transformers 5 renamed the flag; read whichever this version has without a warning.
        flag = "is_activation_checkpointing" if hasattr(type(self.backbone), "is_activation_checkpointing") else "is_gradient_checkpointing"
        checkpointing = getattr(self.backbone, flag, False) and self.backbone.training
        if not self.can_share or checkpointing:
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
            packed = bool(self.packs) and len(rows.prompts) == 1 and not self._keeps(rows.prompts[0], slots[0])
        if packed:
            last, hidden = self._packed_hidden(rows.prompts[0], embeds, attention_mask)
            return last, rows.which, hidden
        prefixes = [self._prefix(p, embeds.dtype, slot) for p, slot in zip(rows.prompts, slots)]
        cache = _rows_cache([getattr(prefix, self.cache_arg) for prefix in prefixes], rows.which)
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

    def _keeps(self, prompt: torch.Tensor, slot: Hashable | None) -> bool:
        """Whether the prompt's keys and values may be kept for later calls: inference (no
        gradient to the prompt, the backbone in eval mode) of a prompt with a slot."""
        needs_grad = prompt.requires_grad and torch.is_grad_enabled()
        return slot is not None and not needs_grad and not self.backbone.training

    def _backbone_key(self) -> tuple:
        """The backbone's parameters as they are now: each tensor's storage and version counter
        (an in-place change, a load or a move changes one)."""
        return tuple((p.data_ptr(), p._version) for p in self.backbone.parameters())

    def _prefix(self, prompt: torch.Tensor, dtype: torch.dtype, slot: Hashable | None = None):
        """The body's output over the prompt alone (batch 1, with its KV cache).

        With a ``slot``, in inference (the prompt needs no gradient, the backbone is in eval
        mode), the output is kept and reused while the prompt's values and the backbone's
        parameters are unchanged; the check compares the values themselves, so no path that
        changes a prompt (an optimizer step, ``load``, an edit through ``.data``) can meet a
        stale cache.
        """
        keep = self._keeps(prompt, slot)
        if keep:
            kept = self._kept.get(slot)
            key = (self._backbone_key(), dtype)
            if (
                kept is not None and kept.backbone == key and kept.prompt.shape == prompt.shape
                and kept.prompt.device == prompt.device and torch.equal(kept.prompt, prompt)
            ):
                return kept.prefix
        extra = {"position_ids": torch.arange(prompt.shape[0], device=prompt.device).unsqueeze(0)} if self.takes_positions else {}
        prefix = self.body(inputs_embeds=prompt.to(dtype).unsqueeze(0), use_cache=True, **extra)
        self.prefix_runs += 1
        if keep and not prefix.last_hidden_state.requires_grad:  # never keep a graph
            self._kept[slot] = _Kept(prompt.detach().clone(), key, prefix)
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
        computes the loss when ``compute_loss`` and labels are given.
        """
        combined, mask, text_index = prepend_rows(as_rows(prompt, embeds.shape[0]), embeds, attention_mask)
        full_labels = None
        if labels is not None:
            full_labels = labels.new_full(mask.shape, IGNORE_INDEX).scatter(1, text_index, labels)
        if self.takes_positions:
            kwargs["position_ids"] = positions_from_mask(mask)
        out = self.backbone(
            inputs_embeds=combined, attention_mask=mask, labels=full_labels if compute_loss else None, use_cache=False, **kwargs
        )
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
        positions (or ``None`` when ``return_logits`` is False) and the mean token loss."""
        shared = self.use_shared(prompt, embeds.shape[1]) if shared is None else shared
        width = prompt.width if isinstance(prompt, RowPrompts) else prompt.shape[0]
        if not shared or (width == 0 and return_logits):  # full logits without a prompt: the plain model
            loss, logits = self._naive(prompt, embeds, attention_mask, labels, **kwargs)
            return CausalLMOutputWithPast(loss=loss, logits=logits if return_logits else None)
        loss = logits = None
        if labels is not None and not return_logits:
            selected, targets, _ = self._labeled_logits(prompt, embeds, attention_mask, labels)
            loss = F.cross_entropy(selected, targets)
        else:
            prompt_last, which, hidden = self._shared_hidden(prompt, embeds, attention_mask)
            logits = self._logits(hidden)
            if labels is not None:
                first = self._logits(prompt_last)[which].unsqueeze(1)  # [B, 1, V]
                loss = _shifted_loss(torch.cat([first, logits], dim=1), labels, attention_mask)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def labeled_logits(self, prompt, embeds, attention_mask, labels, shared=None, **kwargs):
        shared = self.use_shared(prompt, embeds.shape[1]) if shared is None else shared
        if shared:
            return self._labeled_logits(prompt, embeds, attention_mask, labels)
        out, full_labels, _ = self._naive_run(prompt, embeds, attention_mask, labels, compute_loss=False, **kwargs)
        rows, cols = (full_labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)  # column j predicts j + 1
        return out.logits[rows, cols].float(), full_labels[rows, cols + 1], rows

    def generate(self, prompt, embeds, attention_mask, **kwargs):
        """Greedy or sampled generation; returns only the new tokens ``[B, new]``.

        With the KV cache on (the default), generation starts from the prompts' keys and values
        (computed once, or kept from earlier calls) and the rows are ``[prompt, spare, pads,
        text]``: only the text is run through the model before the first new token. Without it
        (``use_cache=False``), under a sliding window, or where the shared path is not exact,
        each row is ``[spare, pads, prompt, text]`` run whole."""
        rows = as_rows(prompt, embeds.shape[0])
        cached = kwargs.get("use_cache", True) and rows.width > 0 and self.window is None and self.use_shared(rows, embeds.shape[1])
        if not cached:
            combined, mask, _ = prepend_rows(rows, embeds, attention_mask)
            return self.backbone.generate(inputs_embeds=combined, attention_mask=mask, **kwargs)
        B, N = embeds.shape[0], rows.width
        slots = rows.slots or [None] * len(rows.prompts)
        prefixes = [self._prefix(p, embeds.dtype, slot) for p, slot in zip(rows.prompts, slots)]
        kwargs[self.cache_arg] = _rows_cache([getattr(prefix, self.cache_arg) for prefix in prefixes], rows.which)
        prompt_mask = (torch.arange(N, device=embeds.device).unsqueeze(0) < rows.lengths.unsqueeze(1)).to(attention_mask.dtype)
        # The first N columns are in the cache: generate runs only the columns after it, so their
        # embeddings are never read (zeros stand in); the mask gives the positions (real tokens counted).
        combined = torch.cat([embeds.new_zeros(B, N, embeds.shape[-1]), embeds], dim=1)  # [B, N+T, d]
        mask = torch.cat([prompt_mask, attention_mask], dim=1)
        with grouped_attention(self.backbone):
            return self.backbone.generate(inputs_embeds=combined, attention_mask=mask, **kwargs)


def _rows_cache(caches: list, which: torch.Tensor):
    """A KV cache for ``B = len(which)`` rows from ``P`` batch-1 caches (one per prompt): row
    ``b`` holds cache ``which[b]``, zero-padded at the end to the longest. A new cache object:
    the given ones (perhaps kept for reuse) are never changed. One prompt is expanded, not copied."""
    B = which.shape[0]
    base = caches[0]
    layers = getattr(base, "layers", None)
    if not (layers and all(hasattr(layer, "keys") for c in caches for layer in c.layers)):
        if len(caches) > 1:
            raise NotImplementedError(f"{type(base).__name__}: a prompt per row needs a cache with per-layer keys and values")
        cache = copy.deepcopy(base)  # other cache layouts: let transformers repeat it
        cache.batch_repeat_interleave(B)
        return cache
    cache = copy.copy(base)
    cache.layers = [copy.copy(layer) for layer in layers]
    N = max(c.layers[0].keys.shape[-2] for c in caches)
    for i, layer in enumerate(cache.layers):
        if len(caches) == 1:
            layer.keys = layer.keys.expand(B, *layer.keys.shape[1:])
            layer.values = layer.values.expand(B, *layer.values.shape[1:])
        else:  # [P, H, N, hd] -> [B, H, N, hd]
            keys = torch.cat([F.pad(c.layers[i].keys, (0, 0, 0, N - c.layers[i].keys.shape[-2])) for c in caches])
            values = torch.cat([F.pad(c.layers[i].values, (0, 0, 0, N - c.layers[i].values.shape[-2])) for c in caches])
            layer.keys, layer.values = keys[which], values[which]
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = N
    return cache


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
