"""Metrics as the papers compute them: per-example scorers plus aggregators.

Fractions are returned in [0, 1] (not percent), correlations in [-1, 1]. Predictions are what
`Task.parse` returns (or a class index from rank mode); None means the text mapped to no label
and always counts as wrong:
- accuracy / grouped exact match: None never equals the gold label;
- binary F1 and Matthews: None becomes the opposite of the gold class (DePT's
  ``f1_score_with_invalid``), so it is a false positive or a false negative; a strict task
  (the papers' protocols) keeps Matthews' None as a class of its own (-1), as their code does;
- macro-F1: None becomes -1, a class outside the label set (T5's ``mean_multiclass_f1`` with
  ``string_label_to_class_id``'s default): a miss for the gold class, no false positive;
- correlations: None becomes -1.0 (T5's ``string_to_float`` default).
"""

from __future__ import annotations

import re
import string
from collections import Counter, OrderedDict
from typing import Any, Callable, Sequence

METRIC_NAMES = ("accuracy", "f1", "macro_f1", "em", "f1a", "matthews", "pearson", "spearman")

# ----------------------------------------------------------------------------- per example
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lowercase, drop punctuation and articles, collapse whitespace."""
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when prediction and gold are equal after SQuAD normalization."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1 between normalized prediction and gold."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def max_over_gold(scorer: Callable[[str, str], float], prediction: str | None,
                  golds: Sequence[str]) -> float:
    """The best score of `prediction` against any gold answer (0 for None or no golds)."""
    if prediction is None or not golds:
        return 0.0
    return max(scorer(prediction, gold) for gold in golds)


_DETERMINERS = {"a", "an", "few", "her", "his", "each", "every", "many", "much", "my", "our",
                "some", "that", "the", "their", "these", "this", "those", "which", "whose", "your"}


def wsc_referent_match(prediction: str | None, referent: str) -> int:
    """T5's ``wsc_simple`` postprocessor: 1 if the prediction names the referent, 0 if not,
    -1 for an empty prediction (so it never matches a gold label)."""
    def clean(s: str) -> str:
        return " ".join(w for w in s.strip().lower().split(" ") if w not in _DETERMINERS)

    if prediction is None:
        return -1
    prediction, referent = clean(prediction), clean(referent)
    if not prediction:
        return -1
    if ("'" in prediction) != ("'" in referent):
        return 0  # "Bob" must not match "Bob's hat"
    pred_words, ref_words = set(prediction.split(" ")), set(referent.split(" "))
    return int(pred_words.issubset(ref_words) or ref_words.issubset(pred_words))


# ----------------------------------------------------------------------------- aggregators
def _check(predictions: Sequence, golds: Sequence) -> None:
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} examples")
    if not golds:
        raise ValueError("no examples to score")


def accuracy(predictions: Sequence, golds: Sequence) -> float:
    """Fraction of predictions equal to the gold value (None is wrong)."""
    _check(predictions, golds)
    return sum(p is not None and p == g for p, g in zip(predictions, golds)) / len(golds)


def _binary_with_invalid(predictions: Sequence, golds: Sequence) -> list[int]:
    return [(1 - int(g)) if p is None else int(p) for p, g in zip(predictions, golds)]


def binary_f1(predictions: Sequence, golds: Sequence) -> float:
    """F1 of the positive class 1 (MRPC, QQP, MultiRC's F1a)."""
    from sklearn.metrics import f1_score

    _check(predictions, golds)
    preds = _binary_with_invalid(predictions, golds)
    return float(f1_score([int(g) for g in golds], preds, pos_label=1, zero_division=0))


def macro_f1(predictions: Sequence, golds: Sequence, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over classes 0..num_classes-1 (CB)."""
    from sklearn.metrics import f1_score

    _check(predictions, golds)
    preds = [-1 if p is None else int(p) for p in predictions]
    return float(f1_score([int(g) for g in golds], preds, labels=list(range(num_classes)),
                          average="macro", zero_division=0))


def matthews(predictions: Sequence, golds: Sequence, invalid_class: bool = False) -> float:
    """Matthews correlation (CoLA); 0.0 when undefined (one class only). invalid_class: None
    is a class of its own (DPT's metrics.py:108-112, DePT's src/metrics.py:118-120), not the
    opposite of the gold class."""
    from sklearn.metrics import matthews_corrcoef

    _check(predictions, golds)
    golds = [int(g) for g in golds]
    if set(golds) <= {0, 1} and not invalid_class:
        preds = _binary_with_invalid(predictions, golds)
    else:
        preds = [-1 if p is None else int(p) for p in predictions]
    return float(matthews_corrcoef(golds, preds))


def _numbers(predictions: Sequence) -> list[float]:
    return [-1.0 if p is None else float(p) for p in predictions]


def _correlation(name: str, predictions: Sequence, golds: Sequence) -> float:
    """``scipy.stats.<name>`` between predictions and golds; 0.0 when undefined (a constant side)."""
    import scipy.stats

    _check(predictions, golds)
    x, y = _numbers(predictions), [float(g) for g in golds]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return 0.0
    return float(getattr(scipy.stats, name)(x, y)[0])


def pearson(predictions: Sequence, golds: Sequence) -> float:
    """Pearson correlation (STS-B); 0.0 when undefined (a constant side)."""
    return _correlation("pearsonr", predictions, golds)


def spearman(predictions: Sequence, golds: Sequence) -> float:
    """Spearman rank correlation (STS-B); 0.0 when undefined (a constant side)."""
    return _correlation("spearmanr", predictions, golds)


def group_mean(values: Sequence[float], groups: Sequence[Any]) -> float:
    """Mean over groups of the mean within each group (no groups: plain mean)."""
    if not values:
        raise ValueError("no examples to score")
    if all(g is None for g in groups):
        return sum(values) / len(values)
    by_group: OrderedDict[Any, list[float]] = OrderedDict()
    for value, group in zip(values, groups):
        by_group.setdefault(group, []).append(value)
    return sum(sum(v) / len(v) for v in by_group.values()) / len(by_group)


def group_exact_match(correct: Sequence[bool], groups: Sequence[Any]) -> float:
    """Fraction of groups whose every member is correct (MultiRC's EM per question)."""
    by_group: OrderedDict[Any, bool] = OrderedDict()
    for ok, group in zip(correct, groups):
        by_group[group] = by_group.get(group, True) and bool(ok)
    if not by_group:
        raise ValueError("no examples to score")
    return sum(by_group.values()) / len(by_group)


# ----------------------------------------------------------------------------- dispatch
def score(names: Sequence[str], predictions: Sequence, examples: Sequence, *, kind: str,
          num_classes: int | None = None, scoring: str | None = None, strict: bool = False) -> dict[str, float]:
    """Compute each metric in `names` for a task of `kind`.

    Args:
        names: metric names (see METRIC_NAMES).
        predictions: parsed predictions, one per example; None is wrong.
        examples: the Examples (their `label`, `answers` and `group` are read).
        kind: ``classification`` | ``regression`` | ``generation``.
        num_classes: for macro-F1.
        scoring: ``wsc_referent``: a generation task scored as accuracy of referent matching.
        strict: Matthews counts None as a class of its own (the papers' protocols).
    Returns:
        {name: value}, in the order of `names`.
    """
    _check(predictions, examples)
    golds = [e.label for e in examples]
    groups = [e.group for e in examples]
    if any(g is None for g in golds) and kind != "generation":
        raise ValueError("cannot score an unlabeled split")
    results: dict[str, float] = {}
    for name in names:
        if name not in METRIC_NAMES:
            raise ValueError(f"unknown metric {name!r} (known: {', '.join(METRIC_NAMES)})")
        if kind == "generation":
            results[name] = _generation_metric(name, predictions, examples, golds, groups, scoring)
        elif name == "accuracy":
            results[name] = accuracy(predictions, golds)
        elif name in ("f1", "f1a"):
            results[name] = binary_f1(predictions, golds)
        elif name == "macro_f1":
            results[name] = macro_f1(predictions, golds, num_classes or 1 + max(int(g) for g in golds))
        elif name == "matthews":
            results[name] = matthews(predictions, golds, invalid_class=strict)
        elif name == "em":
            correct = [p is not None and p == g for p, g in zip(predictions, golds)]
            results[name] = group_exact_match(correct, groups) if any(groups) else sum(correct) / len(correct)
        elif name == "pearson":
            results[name] = pearson(predictions, golds)
        elif name == "spearman":
            results[name] = spearman(predictions, golds)
    return results


def _generation_metric(name, predictions, examples, golds, groups, scoring) -> float:
    if scoring == "wsc_referent":
        if name != "accuracy":
            raise ValueError(f"metric {name!r} does not apply to referent matching")
        if any(g is None for g in golds):
            raise ValueError("cannot score an unlabeled split")
        matched = [wsc_referent_match(p, e.answers[0] if e.answers else "")
                   for p, e in zip(predictions, examples)]
        return accuracy(matched, golds)
    if any(not e.answers for e in examples):
        raise ValueError("cannot score an unlabeled split (an example has no gold answers)")
    if name in ("f1", "f1a"):
        values = [max_over_gold(token_f1, p, e.answers) for p, e in zip(predictions, examples)]
    elif name in ("em", "accuracy"):
        values = [max_over_gold(exact_match, p, e.answers) for p, e in zip(predictions, examples)]
    else:
        raise ValueError(f"metric {name!r} does not apply to generation tasks")
    return group_mean(values, groups)


# ----------------------------------------------------------------------------- checkpoint selection
def selection_metrics(selection: str | None, names: Sequence[str], task: str = "") -> tuple[str, tuple[str, ...]]:
    """The validation value that chooses the checkpoint: ``(its name, the metrics it averages)``.

    selection: None (the task's first metric), a metric name, ``mean`` (the mean of all the
    task's metrics: Residual PT's prompt_tuner2.py:825 ``np.mean(acc_dict['score'])``) or
    ``mean(a,b)`` (the mean of those). A mean of one metric is that metric.
    """
    if selection is None:
        return names[0], (names[0],)
    text = selection.replace(" ", "")
    if text == "mean":
        parts = tuple(names)
    elif text.startswith("mean(") and text.endswith(")"):
        parts = tuple(p for p in text[5:-1].split(",") if p)
    else:
        parts = (selection,)
    unknown = [p for p in parts if p not in names]
    if not parts or unknown:
        shown = selection if parts == (selection,) else (unknown[0] if unknown else "")
        raise ValueError(f"selection_metric {shown!r} is not a metric of task {task} ({', '.join(names)}; "
                         f"or mean, or mean(a,b) of them)")
    if len(parts) == 1:
        return parts[0], parts
    return f"mean({','.join(parts)})", parts


def with_selection(results: dict[str, float], name: str, parts: Sequence[str]) -> dict[str, float]:
    """`results` with the selection value added under `name` when it is a mean of several."""
    if name in results:
        return results
    return {**results, name: sum(float(results[p]) for p in parts) / len(parts)}
