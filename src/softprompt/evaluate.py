"""Evaluation: rank classification and greedy generation.

* ``rank``: every choice of an example (``Example.choices``, e.g. the label words) is scored
  by the sum of its tokens' log-probabilities given the input (``model.score``, which applies
  the head only at the scored positions); the best choice is the prediction.
* ``generate``: greedy decoding, then ``task.parse`` maps the text to a prediction; text that
  maps to no label is *invalid* and counts as wrong.

``NoPrompt`` wraps a bare backbone with the same ``score``/``generate`` interface, so the
zero-shot baseline (the task's template, no prompt) runs through the same code.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from .backbones import DECODER_ONLY, IGNORE_INDEX, join_for
from .batching import collate, encode_choices, encode_pairs, eos_id, pad_id, report_truncated

MODES = ("rank", "generate")


class NoPrompt(nn.Module):
    """A backbone with an empty prompt: ``score`` and ``generate`` as on a ``SoftPromptModel``.

    Runs the joins' plain concatenation path with a ``[0, d]`` prompt, i.e. the backbone on
    the text alone.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.join = join_for(backbone)
        self.backbone = backbone

    def _empty(self) -> torch.Tensor:
        table = self.backbone.get_input_embeddings().weight
        return table.new_zeros(0, table.shape[1])

    def score(self, input_ids, attention_mask, labels) -> torch.Tensor:
        embeds = self.backbone.get_input_embeddings()(input_ids)
        return self.join.score(self._empty(), embeds, attention_mask, labels)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, **kwargs) -> torch.Tensor:
        embeds = self.backbone.get_input_embeddings()(input_ids)
        return self.join.generate(self._empty(), embeds, attention_mask, **kwargs)


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
) -> dict[str, float]:
    """Score ``model`` (a ``SoftPromptModel`` or ``NoPrompt``) on ``examples``.

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
            predictions = rank_predictions(model, tokenizer, task, examples, batch_size, max_length, separator)
        else:
            texts = generate_texts(model, tokenizer, examples, batch_size, max_length, max_new_tokens)
            predictions = [task.parse(t) for t in texts]
    finally:
        model.train(was_training)
    result = dict(task.score(predictions, examples))
    result["invalid"] = sum(p is None for p in predictions)
    result["n"] = len(examples)
    return result


def _kind(model: nn.Module) -> str:
    return model.join.kind


def _device(model: nn.Module) -> torch.device:
    return model.backbone.get_input_embeddings().weight.device


def rank_predictions(model, tokenizer, task, examples, batch_size=16, max_length=256, separator=" ") -> list[Any]:
    """The best choice of each example, as ``task.parse`` reads it (a class index for
    classification, the choice's text for generation tasks such as ReCoRD)."""
    rows = encode_choices(examples, tokenizer, _kind(model), max_length, separator, default_choices=task.label_words)
    report_truncated(rows.rows, max_length)
    scores = _score_rows(model, rows.rows, pad_id(tokenizer), batch_size)  # [R]
    best_score = torch.full((len(examples),), -math.inf, dtype=scores.dtype)
    best_score = best_score.scatter_reduce(0, rows.example, scores, reduce="amax")
    # first choice reaching the maximum (ties go to the lower index, deterministic)
    is_best = scores == best_score[rows.example]
    first = torch.full((len(examples),), len(rows.example), dtype=torch.long)
    first = first.scatter_reduce(0, rows.example, torch.where(is_best, torch.arange(len(scores)), len(scores)), reduce="amin")
    predictions = []
    for i, example in enumerate(examples):
        choices = example.choices if example.choices else task.label_words
        picked = int(rows.choice[first[i]])
        parsed = task.parse(choices[picked])
        # Classification choices are the label words, so parse gives the index; if a task's
        # choices are not parseable words, the index is the prediction.
        predictions.append(picked if parsed is None and task.kind == "classification" else parsed)
    return predictions


def _score_rows(model, rows, pad, batch_size) -> torch.Tensor:
    """``model.score`` over ``rows``, in batches of similar length; ``[R]`` float32 on CPU."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = torch.empty(len(rows), dtype=torch.float32)
    device = _device(model)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate([rows[i] for i in index], pad).items()}
        out[index] = model.score(batch["input_ids"], batch["attention_mask"], batch["labels"]).float().cpu()
    return out


def generate_texts(model, tokenizer, examples, batch_size=16, max_length=256, max_new_tokens=16) -> list[str]:
    """Greedy continuations of each example's input (decoded, special tokens dropped)."""
    kind = _kind(model)
    # The inputs as training sees them, without the target: decoder-only rows are
    # [BOS?] input; the model continues with separator + target.
    encoded = encode_pairs([e.input_text for e in examples], [""] * len(examples), tokenizer, kind, max_length)
    report_truncated(encoded, max_length)
    eos = eos_id(tokenizer)
    pad = pad_id(tokenizer)
    device = _device(model)
    texts = [""] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
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
            max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=eos,
        )
        for row, i in enumerate(index):
            tokens = new[row].tolist()
            if eos in tokens:
                tokens = tokens[: tokens.index(eos)]
            texts[i] = tokenizer.decode(tokens, skip_special_tokens=True)
    return texts
