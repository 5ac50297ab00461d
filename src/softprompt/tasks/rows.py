"""The plain data every tasks module shares: where a task's rows live (`LocalFormat`,
`HubSource`), what one row becomes (`Example`), the row fields a template names, and a row's
label value mapped to its class (`normalize_label`, used by both readers: local.py and hub.py).

Nothing here imports another tasks module. Functions that take a ``task`` read a `Task`'s
fields (tasks/spec.py, which sits above the readers: ``Task.load`` calls them).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Example:
    """One text-to-text example, exactly as the model sees it.

    input_text: the model input (T5-style field tags, e.g. ``premise: ... hypothesis: ...``).
    target_text: the training target (a label word, a rounded number, or an answer).
    label: the gold value: class index (classification, and T5-style WSC's true/false), float
        (regression), answer string (generation); None when the split is unlabeled.
    choices: candidate targets for rank-mode evaluation (label words, ReCoRD entities, COPA's
        options as text), or None.
    answers: every gold answer (ReCoRD, MRQA, WSC referent); () otherwise.
    group: the id that grouped metrics aggregate over (MultiRC question, ReCoRD query).
    cut: the characters ``(start, end)`` of ``input_text`` that lose tokens when the input is
        too long: the field the task names (``Task.truncate_field``, the passage), else all but
        the template's closing text; None: anywhere (batching.py cuts the right end).
    """

    input_text: str
    target_text: str
    label: int | float | str | None
    choices: tuple[str, ...] | None = None
    answers: tuple[str, ...] = ()
    group: str | None = None
    # Not part of equality: it says how to shorten the text, not what the example is.
    cut: tuple[int, int] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class LocalFormat:
    """Where a task's rows live in the benchmark's own distribution layout.

    folders: candidate task folder names under the data dir (``CB``, ``SST-2``, ...).
    files: official split name -> candidate file names inside that folder.
    reader: ``jsonl`` | ``tsv`` | ``csv`` | ``multirc`` | ``record`` | ``mrqa`` (see tasks/local.py).
    rename: file column -> row field, so rows carry the field names of the hub version.
    columns: official split -> column names, for files that have no header line.
    flatten: nested object fields whose keys are lifted into the row (WSC's ``target``).
    """

    folders: tuple[str, ...]
    files: Mapping[str, tuple[str, ...]]
    reader: str = "jsonl"
    rename: Mapping[str, str] = field(default_factory=dict)
    columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    flatten: tuple[str, ...] = ()


@dataclass(frozen=True)
class HubSource:
    """The same rows on the Hugging Face hub: ``datasets.load_dataset(path, config, split=...)``.

    splits: official split name -> hub split name where they differ.
    """

    path: str
    config: str | None = None
    splits: Mapping[str, str] = field(default_factory=dict)


def template_fields(template: str) -> tuple[str, ...]:
    """The row fields a ``str.format`` template names, e.g. ``("premise", "hypothesis")``."""
    names = []
    try:
        for _, name, spec, conversion in string.Formatter().parse(template):
            if name is None:
                continue
            if name == "" or name.isdigit():
                raise ValueError(f"template {template!r}: fields must be named, like {{premise}}")
            # Only plain fields: a format spec ('{text:>99999999999}' asks for a 100 GB string),
            # indexing ('{text[999]}') or a conversion turn a row into an exception or an
            # allocation, never into a better input. Nested fields are flattened by the task.
            if spec or conversion or "." in name or "[" in name:
                raise ValueError(f"template {template!r}: write plain fields like {{{name.split('.')[0].split('[')[0]}}} "
                                 "(no format specs, conversions, indexing or attributes)")
            if name not in names:
                names.append(name)
    except ValueError as err:
        if str(err).startswith("template"):
            raise
        raise ValueError(f"malformed template {template!r}: {err}") from None
    return tuple(names)


def normalize_label(task, row: dict, split: str, where: str) -> None:
    """Replace the raw label in `row` by a class index (or float); None for unlabeled splits."""
    key = task.label_field
    if key is None or (task.kind == "generation" and task.raw_labels is None):
        return
    unlabeled = split.startswith("test")
    value = row.get(key)
    if value is None or value == "":
        if unlabeled:
            row[key] = None
            return
        raise ValueError(f"{where}: missing field '{key}'")
    if task.kind == "regression":
        try:
            row[key] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: field '{key}': not a number: {value!r}") from None
        return
    raw = task.raw_labels
    if raw is None:
        raise ValueError(f"{where}: field '{key}': label {value!r} is not a class index and the "
                         f"task lists no label values (give labels)")
    for i, known in enumerate(raw):
        # bool is an int in Python: compare types too, so JSON true never matches 1.
        if value == known and type(value) is type(known):
            row[key] = i
            return
    if not isinstance(value, (dict, list)):
        # The same value written as text or as a JSON number/boolean: "1" and 1, "true" and
        # true (TSV/CSV files, a task file's labels); never "1.0" and 1.
        text = label_text(value)
        for i, known in enumerate(raw):
            if text == label_text(known) or (isinstance(value, bool) and isinstance(known, str)
                                           and text == known.lower()):
                row[key] = i
                return
    raise ValueError(f"{where}: field '{key}': unknown label {value!r} (expected one of "
                     f"{', '.join(repr(r) for r in raw)})")


def label_text(value: Any) -> str:
    """A label value as text, the form files' values are compared in: ``1`` -> ``"1"``,
    ``True`` -> ``"true"``."""
    return str(value).lower() if isinstance(value, bool) else str(value)
