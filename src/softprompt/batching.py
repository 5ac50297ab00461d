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

Inputs longer than ``max_length`` lose tokens from the *right*, as all four papers' code cuts
(Hugging Face ``truncation=True``), but only from the part of the input that may give way
(``Example.cut``: the passage a task names, else everything before the template's closing
text): the question before a passage, the closing cue (``\nAnswer:``), the special tokens
and the target are never cut; a ``max_length`` too short to hold them (and one token of the
text) is refused with the length needed. ``truncation_side="left"`` cuts the start of that part
instead. The count of cut rows is reported once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from .backbones.facts import DECODER_ONLY, IGNORE_INDEX, KINDS

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


TRUNCATION_SIDES = ("right", "left")


def _fit(tokenizer: Any, text: str, ids: list[int], room: int, cut: tuple[int, int] | None, side: str,
         reserved: int, example: int) -> list[int]:
    """``ids`` (the tokens of ``text``) cut to ``room`` tokens, taken only from the characters
    ``cut`` = ``(start, end)`` of ``text`` (all of it when None), at that part's ``side``.

    The three parts are tokenized on their own only for rows that must be cut, so a row that
    fits keeps the tokenization of its whole text. What lies outside ``cut`` (the template's
    question and closing cue) always stays: when it, one token of the text, the special tokens
    and the target (``reserved`` of the ``max_length``) cannot fit, a one-line error gives the
    length needed (``example``: the row, for the message). Without a ``cut`` the whole input
    may give way, at ``side`` of the whole."""
    whole = cut is None or not 0 <= cut[0] <= cut[1] <= len(text)
    if whole:
        cut = (0, len(text))
    head, part, tail = (tokenizer(t, add_special_tokens=False)["input_ids"] if t else []
                        for t in (text[: cut[0]], text[cut[0] : cut[1]], text[cut[1] :]))
    need = len(head) + len(tail) + bool(part)
    if not whole and need > room:
        kept = " and ".join(repr(t) for t in (text[: cut[0]], text[cut[1] :]) if t)
        raise ValueError(f"--max-length {reserved + room} needs at least {reserved + need} tokens for example {example + 1}: "
                         f"the template's text that is never cut ({kept}), one token of the text, the special tokens and the target")
    room = max(room, 0)
    excess = len(head) + len(part) + len(tail) - room  # piecewise tokens may differ by a few
    keep = max(len(part) - excess, 0)
    part = part[:keep] if side == "right" else part[len(part) - keep :]
    ids = list(head) + list(part) + list(tail)
    if len(ids) > room:
        ids = ids[:room] if side == "right" else ids[len(ids) - room :]
    return ids


def encode_pairs(
    inputs: Sequence[str],
    targets: Sequence[str],
    tokenizer: Any,
    kind: str,
    max_length: int,
    separator: str = " ",
    add_eos: bool = True,
    cuts: Sequence[tuple[int, int] | None] | None = None,
    truncation_side: str = "right",
    owners: Sequence[int] | None = None,
) -> list[Encoded]:
    """Tokenize ``(input, target)`` text pairs; see the module docstring for the layouts.

    Args:
        add_eos: end the target with EOS (training; rank scoring may leave it off).
        cuts: per input, the characters ``(start, end)`` that may lose tokens when the input is
            too long (``Example.cut``); None: the whole input.
        truncation_side: ``right`` (the authors') or ``left``: which end of that part is cut.
        owners: per pair, the example it comes from (errors name it); default: the pair's index.
    """
    _check_kind(kind)
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    if truncation_side not in TRUNCATION_SIDES:
        raise ValueError(f"truncation_side must be right or left, got {truncation_side!r}")
    inputs, targets = list(inputs), list(targets)
    cuts = list(cuts) if cuts is not None else [None] * len(inputs)
    owners = list(owners) if owners is not None else list(range(len(inputs)))
    prefix, suffix = special_affixes(tokenizer)
    eos = [eos_id(tokenizer)] if add_eos else []
    encoded = []
    if kind == DECODER_ONLY:
        contexts = tokenizer(inputs, add_special_tokens=False)["input_ids"]
        answers = _target_ids(tokenizer, inputs, targets, separator)
        for text, cut, ctx, answer, owner in zip(inputs, cuts, contexts, answers, owners):
            answer = answer + eos
            room = max_length - len(prefix) - len(answer)
            truncated = len(ctx) > max(room, 0)
            if truncated:
                if room == 0:  # the target fits but nothing of the input would (a longer target is cut below)
                    raise ValueError(f"max_length {max_length} leaves no room for the input (the target and special tokens take all of it); raise --max-length")
                ctx = _fit(tokenizer, text, ctx, room, cut, truncation_side, max_length - room, owner)
                answer = answer[: max_length - len(prefix)]  # a target longer than everything
            ids = prefix + list(ctx) + answer
            labels = [IGNORE_INDEX] * (len(prefix) + len(ctx)) + answer
            encoded.append(Encoded(torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long), truncated))
    else:
        contexts = tokenizer(inputs, add_special_tokens=False)["input_ids"]
        answers = tokenizer(targets, add_special_tokens=False)["input_ids"]
        # T5's tokenizer adds EOS as its suffix; use it, or the EOS id if the tokenizer adds none.
        end = suffix if suffix else [eos_id(tokenizer)]
        for text, cut, ctx, answer, owner in zip(inputs, cuts, contexts, answers, owners):
            room = max_length - len(prefix) - len(end)
            truncated = len(ctx) > room or len(answer) + len(eos) > max_length
            if ctx and room <= 0:  # nothing of the input would be left
                raise ValueError(f"max_length {max_length} leaves no room for the input (special tokens need {max_length - room}); raise --max-length")
            if len(ctx) > room:  # the input's EOS (`end`) stays: the encoder must see where the input ends
                ctx = _fit(tokenizer, text, ctx, room, cut, truncation_side, max_length - room, owner)
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
    truncation_side: str = "right",
) -> list[Encoded]:
    """Tokenize ``examples`` (each with ``input_text`` and ``target_text``) for training.

    Returns one `Encoded` per example, in order. Truncations are logged once (a warning).
    """
    encoded = encode_pairs([e.input_text for e in examples], [e.target_text for e in examples], tokenizer, kind, max_length,
                           separator, cuts=[_cut(e) for e in examples], truncation_side=truncation_side)
    if report:
        report_truncated(encoded, max_length)
    return encoded


def _cut(example: Any) -> tuple[int, int] | None:
    return getattr(example, "cut", None)


def report_truncated(encoded: Sequence[Encoded], max_length: int) -> int:
    """Log, once, how many rows were cut to ``max_length``; returns that count."""
    count = sum(e.truncated for e in encoded)
    if count:
        log.warning("%d of %d examples longer than max_length=%d were truncated (the part of the input that gives way)", count, len(encoded), max_length)
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
    truncation_side: str = "right",
) -> ChoiceRows:
    """Tokenize every example × each of its choices (``Example.choices``, else
    ``default_choices``) so ``model.score`` returns each choice's log-likelihood."""
    inputs, targets, owner, index, cuts = [], [], [], [], []
    for i, example in enumerate(examples):
        choices = example.choices if example.choices else default_choices
        if not choices:
            raise ValueError(f"example {i} has no choices; rank-mode evaluation needs Example.choices (use generate mode)")
        for j, choice in enumerate(choices):
            inputs.append(example.input_text)
            targets.append(choice)
            owner.append(i)
            index.append(j)
            cuts.append(_cut(example))
    rows = encode_pairs(inputs, targets, tokenizer, kind, max_length, separator, add_eos=add_eos, cuts=cuts,
                        truncation_side=truncation_side, owners=owner)
    return ChoiceRows(rows, torch.tensor(owner, dtype=torch.long), torch.tensor(index, dtype=torch.long))


@dataclass(frozen=True)
class ChoiceSet:
    """Examples with all their choices, tokenized so the model can score every choice: what
    rank evaluation compares and what the class objective trains on.

    When every choice is a single token in context (label words such as ``positive``), an
    example needs one row: its input plus the first choice's token, labeled at that one
    position; the model's distribution there scores every choice (``tokens``). Otherwise each
    (example, choice) pair is a row and a choice's score sums its row's labeled tokens.

    rows: the rows. groups: the rows of each example, in choice order (single-token: one).
    tokens: single-token mode only, each example's choice token ids, in choice order.
    """

    rows: list[Encoded]
    groups: list[list[int]]
    tokens: list[list[int]] | None

    @property
    def single_token(self) -> bool:
        return self.tokens is not None

    def lengths(self) -> list[int]:
        """The cost of each example: the lengths of the rows it runs, summed."""
        if self.tokens is not None:
            return [len(self.rows[group[0]]) for group in self.groups]
        return [sum(len(self.rows[r]) for r in group) for group in self.groups]

    def batch(self, examples: Sequence[int], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
        """``collate`` of the rows of ``examples`` plus ``choice_tokens`` or ``choice_rows``
        ``[E, C]`` (-1 where an example has fewer choices), as ``SoftPromptModel.choice_scores`` takes them."""
        width = max(len(self.tokens[e] if self.tokens is not None else self.groups[e]) for e in examples)
        if self.tokens is not None:
            batch = collate([self.rows[self.groups[e][0]] for e in examples], pad_id, padding_side)
            table = [self.tokens[e] + [-1] * (width - len(self.tokens[e])) for e in examples]
            batch["choice_tokens"] = torch.tensor(table, dtype=torch.long)
            return batch
        rows, table = [], []
        for e in examples:
            table.append(list(range(len(rows), len(rows) + len(self.groups[e]))) + [-1] * (width - len(self.groups[e])))
            rows.extend(self.groups[e])
        batch = collate([self.rows[r] for r in rows], pad_id, padding_side)
        batch["choice_rows"] = torch.tensor(table, dtype=torch.long)
        return batch


def encode_choice_set(
    examples: Sequence[Any],
    tokenizer: Any,
    kind: str,
    max_length: int,
    separator: str = " ",
    default_choices: Sequence[str] | None = None,
    truncation_side: str = "right",
) -> ChoiceSet:
    """Tokenize every example with each of its choices (``Example.choices``, else
    ``default_choices``) for scoring; see ``ChoiceSet``."""
    encoded = encode_choices(examples, tokenizer, kind, max_length, separator, default_choices, truncation_side=truncation_side)
    groups: list[list[int]] = [[] for _ in examples]
    for row, owner in enumerate(encoded.example.tolist()):
        groups[owner].append(row)
    rows = encoded.rows

    def one_token(group: list[int]) -> bool:
        # every choice one labeled token, at the same place after the same input
        first = rows[group[0]]
        labeled = [(rows[r].labels != IGNORE_INDEX).nonzero().flatten() for r in group]
        if any(len(p) != 1 for p in labeled) or any(not torch.equal(p, labeled[0]) for p in labeled):
            return False
        if kind == DECODER_ONLY:
            at = int(labeled[0])
            return all(torch.equal(rows[r].input_ids[:at], first.input_ids[:at]) and len(rows[r].input_ids) == at + 1 for r in group)
        return all(torch.equal(rows[r].input_ids, first.input_ids) for r in group)

    if all(one_token(g) for g in groups):
        tokens = [[int(rows[r].labels[rows[r].labels != IGNORE_INDEX][0]) for r in g] for g in groups]
        return ChoiceSet(rows, groups, tokens)
    return ChoiceSet(rows, groups, None)


def apply_chat_template(examples: Sequence[Any], tokenizer: Any) -> list[Any]:
    """Each example's input as the user turn of the tokenizer's chat template, ending where the
    assistant's answer starts (``add_generation_prompt``); the target then follows directly.
    A leading BOS the template writes is dropped: the tokenizer adds its own. The part that
    may be truncated (``Example.cut``) moves with the input inside the template."""
    import dataclasses

    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"chat_template: {type(tokenizer).__name__} has no chat template (instruction-tuned models have one)")
    bos = tokenizer.bos_token if special_affixes(tokenizer)[0] else None
    out = []
    for example in examples:
        text = tokenizer.apply_chat_template([{"role": "user", "content": example.input_text}], tokenize=False, add_generation_prompt=True)
        if bos and text.startswith(bos):
            text = text[len(bos) :]
        # the template's own text around the input (the assistant cue) never gives way
        cut, at = example.cut or (0, len(example.input_text)), text.find(example.input_text)
        out.append(dataclasses.replace(example, input_text=text, cut=(cut[0] + at, cut[1] + at) if at >= 0 else None))
    return out


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
