"""Evaluation: rank classification and greedy generation.

* ``rank``: every choice of an example (``Example.choices``: the label words, or the row's own
  candidates such as COPA's options or ReCoRD's entities) is scored by the sum of its tokens'
  log-probabilities given the input (``model.choice_scores``: one forward per example when
  every choice is one token, else one per choice; the head runs only at the scored
  positions); the best choice is the prediction. The prompt is computed once per evaluation
  (``model.frozen_prompt``) and, decoder-only, its keys and values are kept across batches and
  calls until the prompt changes (``backbones.prefix_cache``).
* ``generate``: greedy decoding, then ``task.parse`` maps the text to a prediction; text that
  maps to no label is *invalid* and counts as wrong.

Under a distributed launch each process scores a share of the batches and every process gets
all the predictions (``distributed.my_batches``, ``gather_rows``): a batch is scored whole by
one process, so every row is scored once, with the floats a one-process run gives it, and the
metrics equal the one-process run's.

``NoPrompt`` is a ``PromptedModel`` holding no prompt, so the zero-shot baseline (the task's
template, no prompt) runs through the same code as a ``SoftPromptModel``. With a ``PromptBank``,
``prompts`` names each example's prompt and the batches mix them.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from . import distributed
from .backbones import DECODER_ONLY, IGNORE_INDEX, input_device
from .batching import collate, encode_choice_set, encode_pairs, eos_id, pad_id, report_truncated
from .model import PromptedModel
from .progress import Progress

MODES = ("rank", "generate")


NoPrompt = PromptedModel
"""``NoPrompt(backbone)``: the backbone on the text alone, a ``PromptedModel`` holding no prompt
(so with the interface of a ``SoftPromptModel``: ``score``, ``choice_scores``, ``generate``). It
leaves the backbone's ``requires_grad`` as it finds it."""


def default_mode(task: Any, examples: Sequence[Any] = ()) -> str:
    """``rank`` when every example has choices (or the task has label words), else ``generate``."""
    if task.kind == "classification" and task.label_words:
        return "rank"
    if examples and all(e.choices for e in examples):
        return "rank"
    return "generate"


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tokenizer: Any,
    task: Any,
    examples: Sequence[Any],
    mode: str = "rank",
    batch_size: int = 16,
    max_length: int = 256,
    max_new_tokens: int = 16,
    separator: str = " ",
    truncation_side: str = "right",
) -> dict[str, float]:
    """Score ``model`` (a ``SoftPromptModel``, ``NoPrompt``, or anything with their ``choice_scores``,
    ``generate`` and ``frozen_prompt``) on ``examples``.

    Returns:
        ``{metric: value for metric in task.metrics}`` (fractions in [0, 1]) plus
        ``invalid`` (how many generations mapped to no label; 0 in rank mode) and ``n``.
    """
    if mode not in MODES:
        raise ValueError(f"eval mode must be one of {', '.join(MODES)}; got {mode!r}")
    examples = list(examples)
    if not examples:
        raise ValueError(f"no examples to evaluate task {task.name} on")
    was_training = model.training
    model.eval()
    try:
        if mode == "rank":
            predictions = rank_predictions(model, tokenizer, task, examples, batch_size, max_length, separator, truncation_side)
        else:
            texts = generate_texts(model, tokenizer, examples, batch_size, max_length, max_new_tokens, truncation_side)
            predictions = [task.parse(t, e) for t, e in zip(texts, examples)]
    finally:
        model.train(was_training)
    result = dict(task.score(predictions, examples))
    result["invalid"] = sum(p is None for p in predictions)
    result["n"] = len(examples)
    return result


def _kind(model: nn.Module) -> str:
    return model.join.kind


def _device(model: nn.Module) -> torch.device:
    """Where the inputs go: the embedding's execution device, also for a dispatched backbone."""
    return input_device(model.backbone)


def _named(prompts: Sequence[str] | None, rows: list[int]) -> dict[str, Any]:
    """``prompt=`` for a batch whose rows belong to examples ``rows`` (nothing without a bank)."""
    return {} if prompts is None else {"prompt": [prompts[e] for e in rows]}


@torch.no_grad()
def rank_predictions(model, tokenizer, task, examples, batch_size=16, max_length=256, separator=" ", truncation_side="right",
                     prompts=None) -> list[Any]:
    """The best choice of each example, as ``task.parse`` reads it (a class index for
    classification, the choice's text for generation tasks such as ReCoRD). ``prompts``: with a
    ``PromptBank``, each example's prompt name (a batch mixes them)."""
    best = rank_choices(model, tokenizer, examples, task.label_words, batch_size, max_length, separator, truncation_side, prompts)
    predictions = []
    for i, example in enumerate(examples):
        options = example.choices if example.choices else task.label_words
        picked = int(best[i])
        if task.kind == "classification" and task.choice_fields and example.choices:
            predictions.append(picked)  # the row's own texts (COPA's options): choice = class
            continue
        parsed = task.parse(options[picked])
        # Classification choices are the label words, so parse gives the index; if a task's
        # choices are not parseable words, the index is the prediction.
        predictions.append(picked if parsed is None and task.kind == "classification" else parsed)
    return predictions


@torch.no_grad()
def rank_choices(model, tokenizer, examples, default_choices=None, batch_size=16, max_length=256, separator=" ",
                 truncation_side="right", prompts=None) -> torch.Tensor:
    """The index of each example's best choice (``Example.choices``, else ``default_choices``),
    ``[E]``; ties go to the lower index. ``prompts``: with a ``PromptBank``, each example's
    prompt name (a batch mixes them, and examples of different tasks bring their own choices)."""
    choices = encode_choice_set(examples, tokenizer, _kind(model), max_length, separator, default_choices=default_choices,
                                truncation_side=truncation_side)
    report_truncated([choices.rows[g[0]] for g in choices.groups], max_length)
    if _kind(model) == DECODER_ONLY and not len(getattr(model, "prompts", ())):
        for e, group in enumerate(choices.groups):  # nothing ahead of the choice: no position predicts it
            if any(int(choices.rows[r].labels[0]) != IGNORE_INDEX for r in group):
                raise ValueError(f"example {e + 1} has an empty input ({examples[e].input_text!r}): with no prompt (the zero-shot "
                                 "baseline) a decoder-only model has no token to score its choices after; drop the row or pass --no-zero-shot")
    pad, device = pad_id(tokenizer), _device(model)
    best = [0] * len(examples)
    order = sorted(range(len(examples)), key=choices.lengths().__getitem__)  # similar lengths batch together
    # batch_size counts rows: with one row per choice, fewer examples fit in a batch
    per_batch = max(1, batch_size // (1 if choices.single_token else max(len(g) for g in choices.groups)))
    mine = distributed.my_batches([order[s : s + per_batch] for s in range(0, len(order), per_batch)], model.backbone)
    progress = Progress(len(mine), f"scoring {len(examples)} examples", leave=False)
    with model.frozen_prompt():
        for index in mine:
            batch = {k: v.to(device) for k, v in choices.batch(index, pad).items()}
            rows = index if choices.single_token else [e for e in index for _ in choices.groups[e]]  # each batch row's example
            scores = model.choice_scores(**batch, **_named(prompts, rows)).float().cpu()  # [E, C]
            for e, picked in zip(index, scores.argmax(dim=1).tolist()):  # the first maximum: ties go to the lower index
                best[e] = picked
            progress.update(1)
    progress.close()
    best = torch.tensor(distributed.gather_rows(best, mine, model.backbone), dtype=torch.long)
    return best


@torch.no_grad()
def generate_texts(model, tokenizer, examples, batch_size=16, max_length=256, max_new_tokens=16, truncation_side="right",
                   prompts=None) -> list[str]:
    """Greedy continuations of each example's input (decoded, special tokens dropped).
    ``prompts``: with a ``PromptBank``, each example's prompt name (a batch mixes them)."""
    kind = _kind(model)
    # The inputs as training sees them, without the target: decoder-only rows are
    # [BOS?] input; the model continues with separator + target.
    encoded = encode_pairs([e.input_text for e in examples], [""] * len(examples), tokenizer, kind, max_length,
                           cuts=[getattr(e, "cut", None) for e in examples], truncation_side=truncation_side)
    report_truncated(encoded, max_length)
    eos = eos_id(tokenizer)
    pad = pad_id(tokenizer)
    device = _device(model)
    texts = [""] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: len(encoded[i]))
    mine = distributed.my_batches([order[s : s + batch_size] for s in range(0, len(order), batch_size)], model.backbone)
    progress = Progress(len(mine), f"generating for {len(examples)} examples", leave=False)
    with model.frozen_prompt():
        for index in mine:
            _generate_batch(model, tokenizer, encoded, index, kind, pad, eos, device, max_new_tokens, texts, prompts)
            progress.update(1)
    progress.close()
    texts = distributed.gather_rows(texts, mine, model.backbone)
    return texts


def _generate_batch(model, tokenizer, encoded, index, kind, pad, eos, device, max_new_tokens, texts, prompts=None) -> None:
    """Greedy continuations of the rows ``index`` of ``encoded``, written into ``texts``."""
    rows = []
    for i in index:
        e = encoded[i]
        # decoder-only: drop the empty target's EOS (labels mark where it is)
        keep = e.labels == IGNORE_INDEX if kind == DECODER_ONLY else torch.ones_like(e.input_ids, dtype=torch.bool)
        rows.append(type(e)(e.input_ids[keep], e.labels[:0]))
    # left padding: each row's text ends at the last column, where generation continues
    batch = collate(rows, pad, padding_side="left")
    new = model.generate(
        batch["input_ids"].to(device), batch["attention_mask"].to(device),
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=eos, **_named(prompts, index),
    )
    for row, i in enumerate(index):
        tokens = new[row].tolist()
        if eos in tokens:
            tokens = tokens[: tokens.index(eos)]
        texts[i] = tokenizer.decode(tokens, skip_special_tokens=True)
