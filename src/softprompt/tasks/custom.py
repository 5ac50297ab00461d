"""A user's own task: JSONL, CSV or TSV files plus a template.

    task = custom_task({"train": "train.jsonl", "validation": "dev.jsonl"},
                       template="{premise} question: {hypothesis}",
                       label_field="label", labels=("entailment", "not_entailment"),
                       label_words=("yes", "no"))

Three kinds: classification (`label_field`, class values `labels`, optional `label_words`),
free generation (`target_field`), or regression (`label_field` with ``regression=True``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from softprompt.metrics import METRIC_NAMES
from softprompt.tasks import local as local_files
from softprompt.tasks.rows import LocalFormat, label_text
from softprompt.tasks.spec import Task

SPLIT_STEMS = {"train": ("train",), "validation": ("validation", "val", "dev"), "test": ("test",)}
EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv", ".jsonl.gz", ".json.gz", ".csv.gz", ".tsv.gz")


def find_split_files(folder: str | os.PathLike) -> dict[str, str]:
    """``train.*``, ``validation.*``/``val.*``/``dev.*`` and ``test.*`` files in a folder."""
    folder = Path(folder)
    found = {}
    for split, stems in SPLIT_STEMS.items():
        for stem in stems:
            hits = [folder / f"{stem}{ext}" for ext in EXTENSIONS if (folder / f"{stem}{ext}").is_file()]
            if hits:
                found[split] = str(hits[0])
                break
    if not found:
        raise FileNotFoundError(f"no train/validation/test .jsonl, .csv or .tsv files in {folder}")
    return found


def custom_task(data: str | os.PathLike | Mapping[str, str | os.PathLike], template: str, *,
                label_field: str | None = None, labels: Sequence | None = None,
                label_words: Sequence[str] | None = None, target_field: str | None = None,
                regression: bool = False, round_step: float | None = None,
                metrics: Sequence[str] | None = None, name: str = "custom",
                size: str | None = None) -> Task:
    """Build a Task over the user's files.

    Args:
        data: a folder with ``train``/``validation`` (or ``val``, ``dev``)/``test`` files, one
            file (used as the train split), or a mapping split -> file (or folder of files).
        template: ``str.format`` template over the row's fields.
        label_field: the field holding the class (or the number, with `regression`).
        labels: the class values as written in the files, in class-index order; inferred
            (sorted distinct values of every split's file) when omitted.
        label_words: target text per class (default: the labels as text).
        target_field: the field holding the answer, for free generation.
        round_step: regression targets rounded to this step (a fraction 1/n, e.g. 0.2).
        metrics: metric names; the first selects the best checkpoint.
        size: ``small`` or ``large`` to re-split with the attempt protocol (None: keep files).
    """
    if isinstance(data, Mapping):
        files = {str(k): str(v) for k, v in data.items()}
    elif Path(data).is_dir():
        files = find_split_files(data)
    else:
        files = {"train": str(data)}
    for split, path in files.items():
        if not Path(path).exists():  # a file, or a folder of files (tasks/local.split_files)
            raise FileNotFoundError(f"{split} file {path} does not exist")
    if (target_field is None) == (label_field is None):
        raise ValueError("give label_field (classification or regression) or target_field (generation)")
    if regression and target_field is not None:
        raise ValueError("regression needs label_field, not target_field")
    local = LocalFormat(folders=(), files={s: (p,) for s, p in files.items()}, reader="auto")

    if target_field is not None:
        kind, default_metrics = "generation", ("em", "f1")
    elif regression:
        kind, default_metrics = "regression", ("pearson", "spearman")
    else:
        kind, default_metrics = "classification", ("accuracy",)
    metrics = tuple(metrics) if metrics else default_metrics
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(METRIC_NAMES)})")

    raw_labels = None
    if kind == "classification":
        if labels is None:
            labels, seen = _infer_labels(local, label_field, name)
            if label_words is not None and len(label_words) != len(labels):
                found = ", ".join(f"{v!r} ({n} rows, first {where})" for v, (n, where) in seen.items())
                raise ValueError(f"{len(label_words)} label words for the {len(labels)} values of "
                                 f"'{label_field}' in the files: {found}")
        raw_labels = tuple(label_text(v) for v in labels)
        label_words = tuple(label_words) if label_words is not None else raw_labels
    elif label_words is not None:
        raise ValueError("label_words only apply to classification tasks")
    return Task(name=name, kind=kind, template=template, metrics=metrics, benchmark="custom",
                description=f"custom task over {', '.join(files.values())}",
                label_field=label_field if kind != "generation" else None,
                label_names=raw_labels, raw_labels=raw_labels, label_words=label_words,
                answers_field=target_field, round_step=round_step, size=size, local=local)


def _infer_labels(local: LocalFormat, label_field: str, name: str) -> tuple[tuple, dict]:
    """Sorted distinct label values over every labeled file (numbers sort numerically), and
    for each value its row count and the first place it occurs."""
    probe = Task(name=name, kind="generation", template="", metrics=("em",), benchmark="custom",
                 label_field=None, answers_field=label_field, local=local)
    seen: dict[str, tuple[int, str]] = {}
    for split in local.files:
        for row in local_files.read_rows(probe, split, "."):
            value = row.get(label_field)
            if value is None or value == "":
                if split.startswith("test"):
                    continue
                raise ValueError(f"{row['_where']}: missing field '{label_field}'")
            if isinstance(value, (dict, list)):
                raise ValueError(f"{row['_where']}: field '{label_field}': a label must be one value, got {value!r}")
            text = label_text(value)
            count, first = seen.get(text, (0, row["_where"]))
            seen[text] = (count + 1, first)
    if not seen:
        raise ValueError(f"no values of '{label_field}' found to infer the labels from")

    def key(v):
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, 0.0, v)

    labels = tuple(sorted(seen, key=key))
    return labels, {v: seen[v] for v in labels}
