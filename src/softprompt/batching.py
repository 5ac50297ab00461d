"""From `Example`s to tensors, for both kinds of backbone.

Tokenization happens once, up front (`encode_examples`, `encode_choices`); a training batch
is then a `collate` of ready tensors (one `pad_sequence` call per field), so the hot path does
no per-example Python work beyond picking rows.

Layouts (``kind`` is ``SoftPromptModel.join.kind``):

* decoder-only: ``[BOS?] input_text | separator + target_text | EOS``; labels are -100
  except on the target tokens and the EOS (aligned with ``input_ids`` as in transformers;
  the model shifts internally). The target's tokens are those the tokenizer gives the target
  *in context* (``tok(input + sep + target)`` minus ``tok(input)``), as lm-evaluation-harness
  does, so a BPE target keeps its leading-space token (``Ġpositive``) and a SentencePiece one
  gets no stray ``▁``.
* encoder-decoder: ``input_ids`` = the tokenizer's encoding of ``input_text`` (with its EOS),
  ``labels`` = the encoding of ``target_text`` (with EOS).

Inputs longer than ``max_length`` lose tokens from the *left* of the input text (the end of
a template, next to the answer, matters most); the count is reported once, never fatal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from .backbones.join import DECODER_ONLY, IGNORE_INDEX, KINDS

log = logging.getLogger("softprompt")


@dataclass(frozen=True)
class Encoded:
    """One tokenized example.

    input_ids: ``[T]`` int64.
    labels: decoder-only: ``[T]`` aligned with ``input_ids`` (-100 off the target);
        encoder-decoder: ``[L]`` decoder targets.
    truncated: True when tokens were cut to fit ``max_length``.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    truncated: bool = False

    def __len__(self) -> int:
        # The cost of a row: what the model runs over (both sides for encoder-decoder).
        if self.labels.shape[0] == self.input_ids.shape[0]:
            return int(self.input_ids.shape[0])
        return int(self.input_ids.shape[0] + self.labels.shape[0])


def special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer adds around a text: ``(prefix, suffix)`` ids.

    E.g. Llama: ``([bos], [])``; T5: ``([], [eos])``; GPT-2 and SmolLM2: ``([], [])``.
    Found by encoding a probe with and without special tokens, so any tokenizer works.
    """
    plain = tokenizer("a b", add_special_tokens=False)["input_ids"]
    full = tokenizer("a b")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    return [], []


def eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no EOS token; softprompt needs one to end targets")
    return int(tokenizer.eos_token_id)


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, or its EOS id when it has none (GPT-2, many Llamas)."""
    return int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else eos_id(tokenizer)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")


def _target_ids(tokenizer: Any, inputs: list[str], targets: list[str], separator: str) -> list[list[int]]:
    """The target's tokens in context (see the module docstring), one list per row."""
    context = tokenizer(inputs, add_special_tokens=False)["input_ids"]
    whole = tokenizer([i + separator + t for i, t in zip(inputs, targets)], add_special_tokens=False)["input_ids"]
    alone = None
    out = []
    for row, (ctx, full) in enumerate(zip(context, whole)):
        if full[: len(ctx)] == ctx:
            out.append(list(full[len(ctx) :]))
        else:  # a merge across the boundary: fall back to the target on its own
            if alone is None:
                alone = tokenizer([separator + t for t in targets], add_special_tokens=False)["input_ids"]
            out.append(list(alone[row]))
    return out


def encode_pairs(
    inputs: Sequence[str],
    targets: Sequence[str],
    tokenizer: Any,
    kind: str,
    max_length: int,
    separator: str = " ",
    add_eos: bool = True,
) -> list[Encoded]:
    """Tokenize ``(input, target)`` text pairs; see the module docstring for the layouts.

    Args:
        add_eos: end the target with EOS (training; rank scoring may leave it off).
    """
    _check_kind(kind)
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    inputs, targets = list(inputs), list(targets)
    prefix, suffix = special_affixes(tokenizer)
    eos = [eos_id(tokenizer)] if add_eos else []
    encoded = []
    if kind == DECODER_ONLY:
        contexts = tokenizer(inputs, add_special_tokens=False)["input_ids"]
        answers = _target_ids(tokenizer, inputs, targets, separator)
        for ctx, answer in zip(contexts, answers):
            answer = answer + eos
            room = max_length - len(prefix) - len(answer)
            truncated = len(ctx) > max(room, 0)
            if truncated:
                ctx = ctx[len(ctx) - max(room, 0) :]  # cut from the left
                answer = answer[: max_length - len(prefix)]  # a target longer than everything
            ids = prefix + list(ctx) + answer
            labels = [IGNORE_INDEX] * (len(prefix) + len(ctx)) + answer
            encoded.append(Encoded(torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long), truncated))
    else:
        contexts = tokenizer(inputs, add_special_tokens=False)["input_ids"]
        answers = tokenizer(targets, add_special_tokens=False)["input_ids"]
        # T5's tokenizer adds EOS as its suffix; use it, or the EOS id if the tokenizer adds none.
        end = suffix if suffix else [eos_id(tokenizer)]
        for ctx, answer in zip(contexts, answers):
            room = max_length - len(prefix) - len(end)
            truncated = len(ctx) > room or len(answer) + len(eos) > max_length
            ctx = ctx[max(len(ctx) - room, 0) :]
            labels = (list(answer) + eos)[:max_length]
            encoded.append(Encoded(torch.tensor(prefix + list(ctx) + end, dtype=torch.long), torch.tensor(labels, dtype=torch.long), truncated))
    return encoded


def encode_examples(
    examples: Sequence[Any],
    tokenizer: Any,
    kind: str,
    max_length: int,
    separator: str = " ",
    report: bool = True,
) -> list[Encoded]:
    """Tokenize ``examples`` (each with ``input_text`` and ``target_text``) for training.

    Returns one `Encoded` per example, in order. Truncations are logged once (a warning).
    """
    encoded = encode_pairs([e.input_text for e in examples], [e.target_text for e in examples], tokenizer, kind, max_length, separator)
    if report:
        report_truncated(encoded, max_length)
    return encoded


def report_truncated(encoded: Sequence[Encoded], max_length: int) -> int:
    """Log, once, how many rows were cut to ``max_length``; returns that count."""
    count = sum(e.truncated for e in encoded)
    if count:
        log.warning("%d of %d examples longer than max_length=%d were truncated from the left of the input", count, len(encoded), max_length)
    return count


@dataclass(frozen=True)
class ChoiceRows:
    """Rank-mode rows: one `Encoded` per (example, choice), labels only on the choice.

    rows: the encoded rows, example-major (all choices of example 0, then of example 1, ...).
    example: ``[R]`` the example index of each row.
    choice: ``[R]`` the choice index of each row within its example.
    """

    rows: list[Encoded]
    example: torch.Tensor
    choice: torch.Tensor


def encode_choices(
    examples: Sequence[Any],
    tokenizer: Any,
    kind: str,
    max_length: int,
    separator: str = " ",
    default_choices: Sequence[str] | None = None,
    add_eos: bool = False,
) -> ChoiceRows:
    """Tokenize every example × each of its choices (``Example.choices``, else
    ``default_choices``) so ``model.score`` returns each choice's log-likelihood."""
    inputs, targets, owner, index = [], [], [], []
    for i, example in enumerate(examples):
        choices = example.choices if example.choices else default_choices
        if not choices:
            raise ValueError(f"example {i} has no choices; rank-mode evaluation needs Example.choices (use generate mode)")
        for j, choice in enumerate(choices):
            inputs.append(example.input_text)
            targets.append(choice)
            owner.append(i)
            index.append(j)
    rows = encode_pairs(inputs, targets, tokenizer, kind, max_length, separator, add_eos=add_eos)
    return ChoiceRows(rows, torch.tensor(owner, dtype=torch.long), torch.tensor(index, dtype=torch.long))


def collate(encoded: Sequence[Encoded], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad a batch to its longest row.

    Returns ``input_ids [B, T]``, ``attention_mask [B, T]`` and ``labels`` (``[B, T]`` for
    decoder-only, ``[B, L]`` for encoder-decoder), labels padded with -100.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
    ids = [e.input_ids for e in encoded]
    labels = [e.labels for e in encoded]
    ones = [torch.ones_like(i) for i in ids]
    return {
        "input_ids": pad_sequence(ids, batch_first=True, padding_value=pad_id, padding_side=padding_side),
        "attention_mask": pad_sequence(ones, batch_first=True, padding_value=0, padding_side=padding_side),
        "labels": pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX, padding_side=padding_side),
    }


def length_grouped_order(lengths: Sequence[int], batch_size: int, seed: int, chunk_batches: int = 50) -> list[int]:
    """A shuffled order of ``range(len(lengths))`` in which each run of ``batch_size``
    indices has similar lengths (less padding). Deterministic given ``seed``.

    Shuffle, cut into chunks of ``chunk_batches * batch_size``, sort each chunk by length
    (longest first), cut into batches, then shuffle the batches so lengths do not trend
    over the epoch. Every batch but the last is full.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    n = len(lengths)
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n, generator=g)
    length = torch.as_tensor(list(lengths), dtype=torch.long)
    chunk = batch_size * chunk_batches
    grouped = []
    for start in range(0, n, chunk):
        part = order[start : start + chunk]
        # stable sort: ties keep their shuffled order, so the result depends on the seed only
        part = part[torch.sort(length[part], descending=True, stable=True).indices]
        grouped.append(part)
    flat = torch.cat(grouped) if grouped else order
    batches = list(torch.split(flat, batch_size))
    last = batches.pop() if batches and len(batches[-1]) < batch_size else None  # keep the short one last
    perm = torch.randperm(len(batches), generator=g).tolist()
    batches = [batches[i] for i in perm] + ([last] if last is not None else [])
    return torch.cat(batches).tolist() if batches else []
