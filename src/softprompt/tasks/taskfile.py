"""Task files: a task as YAML (or JSON), so a user's own task is data like the built-in ones.

    name: reviews
    data: {train: train.csv, validation: dev.csv}     # relative to this file; see below
    template: "Review: {text}\\nSentiment:"
    label_field: stars
    labels: [1, 5]                                     # values as written in the files, class order
    label_words: [negative, positive]
    metrics: [accuracy, macro_f1]                      # the first picks the best checkpoint

``data`` maps each split to a file or to a folder of files (shards, read in name order), or
is one folder holding ``train.*``, ``validation.*``/``val.*``/``dev.*``, ``test.*`` files.
Generation: ``target_field: answer`` instead of the label lines. Regression: ``kind: regression``
with ``label_field`` and ``round_step: 0.2``. Rows from ``datasets``: ``hub: {path: NAME_OR_FOLDER,
config: ..., splits: {validation: dev}}``. Files in a benchmark's own layout under ``--data-dir``:
``local: {folders, files, reader, rename, columns, flatten}``. The split protocol: ``size``
(``small``/``large``: DePT's re-split), ``paper_splits``, ``attempt_splits``,
``attempt_test_split``. Every other key is a `Task` field of the same name
(`softprompt tasks --show NAME` prints a built-in task's file, tasks/builtin/NAME.yaml).

One file may hold variants of its task: ``styles: {instruction: {...}}`` changes fields for the
instruction style (decoder-only models; the top-level fields are the text-to-text style),
``styles: {base: {...}}`` what a base (pretrained only) model reads differently, on top of the
instruction style's changes (a file without it: the base style is the instruction style), and
``protocols: {dpt: {...}, dept: ..., ulpt: ...}`` a paper's task details (its template, filters,
checkpoint metric). Each variant lists only the fields it changes; a protocol's changes apply
first, then the style's, then ``--template`` / ``--label-words``.

    styles:
      instruction: {template: "Review: {sentence}\\nSentiment:", label_words: [negative, positive]}
    protocols:
      dpt: {metrics: [accuracy, f1]}

`task_to_dict` and `task_from_dict` are inverses: ``task_from_dict(task_to_dict(t)) == t``.
Errors are one line naming ``file:field`` (``file:styles.instruction.template``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from softprompt.metrics import METRIC_NAMES
from softprompt.paths import real_path
from softprompt.tasks.custom import find_split_files
from softprompt.tasks.local import READERS
from softprompt.tasks.preprocess import TRANSFORMS
from softprompt.tasks.rows import label_text
from softprompt.tasks.spec import EVAL_COPIES, KINDS, HubSource, LocalFormat, Task, template_fields
from softprompt.tasks.splits import PROTOCOLS, STRICT_PROTOCOLS
from softprompt.yamlfile import dump_yaml, load_yaml

SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_METRICS = {"classification": ("accuracy",), "regression": ("pearson", "spearman"),
                   "generation": ("em", "f1")}
# The task's keys in the order `task_to_dict` writes them; `target_field` is Task.answers_field.
FIELD_KEYS = ("name", "kind", "description", "benchmark", "aliases", "data", "local", "hub", "template",
              "preprocess", "truncate_field", "label_field", "labels", "label_names", "label_words",
              "choice_fields", "target_field", "choices_field", "group_field", "train_filter",
              "eval_filter", "max_train_rows", "expand_answers", "eval_copies", "scoring", "round_step",
              "round_gold", "metrics", "size", "paper_splits", "attempt_splits", "attempt_test_split")
KEYS = (*FIELD_KEYS, "styles", "protocols")
# What a style or a protocol may change: how a row becomes text, its target, how it is scored
# and split; never which task it is or where its rows live.
VARIANT_KEYS = tuple(k for k in FIELD_KEYS if k not in ("name", "description", "benchmark", "aliases",
                                                         "data", "local", "hub"))
# Template styles: text-to-text (the papers' T5 templates) is a file's top-level fields;
# instruction (decoder-only models) is its ``styles: {instruction: ...}`` changes; base (base
# decoder-only models) its ``styles: {base: ...}`` changes on top of the instruction ones.
STYLES = ("text-to-text", "instruction", "base")
# The styles a style builds on, in the order their changes apply.
STYLE_CHAIN = {"instruction": ("instruction",), "base": ("instruction", "base")}
LOCAL_KEYS = tuple(f.name for f in dataclasses.fields(LocalFormat))
HUB_KEYS = tuple(f.name for f in dataclasses.fields(HubSource))
SCORINGS = ("wsc_referent",)  # generation scored by referent matching; metrics.py
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Task) if f.default is not dataclasses.MISSING}
_DEFAULTS.update(paper_splits={}, attempt_splits={})


def is_task_file(name: str | os.PathLike) -> bool:
    """True when ``--task`` names a task file (``.yaml``, ``.yml``, ``.json``) rather than a task."""
    return str(name).lower().endswith(SUFFIXES)


def read_task_file(path: str | os.PathLike, style: str | None = None, protocol: str | None = None) -> Task:
    """The task a YAML/JSON file describes, in `style` under `protocol` (their changes when the
    file has them); relative paths are relative to the file's folder."""
    path = Path(path)
    return task_from_dict(read_task_document(path), where=str(path), base=path.parent,
                          default_name=path.name.split(".")[0], style=style, protocol=protocol)


def read_task_document(path: str | os.PathLike) -> Any:
    """A task file's content as read (YAML 1.2 numbers; JSON is YAML), before any checks."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such task file")
    try:
        return load_yaml(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: invalid YAML ({getattr(err, 'problem', None) or err})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; save the file as UTF-8") from None


def write_task_file(task: Task) -> str:
    """The task as YAML text (what `softprompt tasks --show` prints)."""
    return dump_yaml(task_to_dict(task))


# ----------------------------------------------------------------------------- Task -> dict
def task_to_dict(task: Task) -> dict[str, Any]:
    """Every field that differs from `Task`'s default (kind, template, label fields, label words
    and metrics always), in `KEYS` order, as plain YAML values."""
    out: dict[str, Any] = {}
    for key in FIELD_KEYS:
        if key == "data":
            if _is_plain_files(task.local):
                out["data"] = {split: names[0] for split, names in task.local.files.items()}
            continue
        if key == "local":
            if task.local is not None and not _is_plain_files(task.local):
                out["local"] = _plain({k: getattr(task.local, k) for k in LOCAL_KEYS
                                       if k in ("folders", "files") or getattr(task.local, k)
                                       != getattr(LocalFormat((), {}), k)})
            continue
        if key == "hub":
            if task.hub is not None:
                out["hub"] = _plain({k: getattr(task.hub, k) for k in HUB_KEYS
                                     if k == "path" or getattr(task.hub, k)})
            continue
        if key == "labels":
            if task.raw_labels is not None:
                out["labels"] = list(task.raw_labels)
            continue
        if key == "label_names":
            if task.label_names != _names_from(task.raw_labels):
                out["label_names"] = _plain(task.label_names)
            continue
        if key == "target_field":
            if task.answers_field is not None:
                out["target_field"] = task.answers_field
            continue
        value = getattr(task, key)
        if key in ("kind", "template", "label_field", "label_words", "metrics"):
            if key == "label_words" and value is None:
                continue
            out[key] = _plain(value)
        elif value != _DEFAULTS.get(key):
            out[key] = _plain(value)
    return out


def _is_plain_files(local: LocalFormat | None) -> bool:
    """A user's files: one file per split, no benchmark folders, read by extension."""
    return (local is not None and not local.folders and local.reader == "auto" and not local.rename
            and not local.columns and not local.flatten and all(len(v) == 1 for v in local.files.values()))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _names_from(raw: tuple | None) -> tuple[str, ...] | None:
    """Class names a file's ``labels`` give when it has no ``label_names``: the values as text."""
    if raw is None:
        return None
    return tuple(label_text(v) for v in raw)


# ----------------------------------------------------------------------------- dict -> Task
def task_from_dict(data: Any, where: str = "task", base: str | os.PathLike | None = None,
                   default_name: str = "custom", style: str | None = None,
                   protocol: str | None = None) -> Task:
    """Build a Task from a task file's mapping; errors name ``where:field``.

    base: the folder relative ``data`` paths (and a relative local ``hub`` folder) start from.
    style, protocol: apply the file's ``styles`` / ``protocols`` entry of that name, if any
    (``text-to-text`` and None: the top-level fields).
    """
    if style not in (None, *STYLES):
        raise ValueError(f"style must be {', '.join(STYLES[:-1])} or {STYLES[-1]}, got {style!r}")
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a mapping of field: value, got {type(data).__name__}")
    data = _keys(data)
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise ValueError(f"{where}:{unknown[0]}: unknown field (known: {', '.join(KEYS)})")
    base = Path(base) if base is not None else Path(".")
    origin: dict[str, str] = {}  # a field a variant changed -> where it is written

    def fail(key: str, message: str) -> ValueError:
        return ValueError(f"{where}:{origin.get(key, key)}: {message}")

    data = _with_variant(data, style, protocol, origin, fail)

    def text(key: str, optional: bool = True) -> str | None:
        value = data.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or (not optional and not value):
            raise fail(key, f"expected text, got {value!r}")
        return value

    def strings(key: str) -> tuple[str, ...] | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        if not isinstance(value, list) or not value or any(not isinstance(v, str) for v in value):
            raise fail(key, f"expected a list of strings, got {value!r}")
        return tuple(value)

    def split_map(key: str) -> dict[str, str]:
        value = data.get(key) or {}
        if not isinstance(value, Mapping) or any(not isinstance(v, str) for v in value.values()):
            raise fail(key, f"expected a mapping of split: split name, got {value!r}")
        return {str(k): v for k, v in value.items()}

    template = data.get("template")
    if not isinstance(template, str) or not template:
        raise fail("template", "missing; give the input text with {field} for each row field, "
                               "e.g. 'Review: {text}\\nSentiment:'")
    try:
        template_fields(template)
    except ValueError as err:
        raise fail("template", str(err)) from None
    target_field = text("target_field")
    kind = data.get("kind") or ("generation" if target_field else
                                "regression" if data.get("round_step") is not None else "classification")
    if kind not in KINDS:
        raise fail("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    label_field = text("label_field") if "label_field" in data else (None if kind == "generation" else "label")
    if kind != "generation" and label_field is None:
        raise fail("label_field", f"a {kind} task needs the field holding its label")
    if kind != "generation" and target_field is not None:
        raise fail("target_field", f"only for generation tasks (this one is {kind})")

    raw = data.get("labels")
    if raw is not None and (not isinstance(raw, list) or not raw
                            or any(isinstance(v, (dict, list)) or v is None for v in raw)):
        raise fail("labels", f"expected a list of label values as written in the files, got {raw!r}")
    raw_labels = tuple(raw) if raw is not None else None
    if raw_labels is not None and len(set(_names_from(raw_labels))) != len(raw_labels):
        raise fail("labels", f"values must be distinct (as text too: 1 and '1' are one value), got {list(raw_labels)}")
    label_names = strings("label_names") if "label_names" in data else _names_from(raw_labels)
    label_words = strings("label_words")
    if kind == "classification":
        if label_words is None:
            label_words = label_names
        if label_words is None:
            raise fail("label_words", "a classification task needs labels (values in the files) "
                                      "or label_words (one per class)")
        classes = len(label_names or label_words)
        if len(label_words) != classes:
            raise fail("label_words", f"{len(label_words)} words for {classes} classes {list(label_names or ())}")
        if raw_labels is not None and len(raw_labels) != classes:
            raise fail("labels", f"{len(raw_labels)} values for {classes} classes")

    metrics = strings("metrics") or DEFAULT_METRICS[kind]
    bad = [m for m in metrics if m not in METRIC_NAMES]
    if bad:
        raise fail("metrics", f"unknown metric {bad[0]!r} (known: {', '.join(METRIC_NAMES)})")

    round_step = data.get("round_step")
    if round_step is not None and (isinstance(round_step, bool) or not isinstance(round_step, (int, float))
                                   or not 0 < round_step <= 1 or abs(1 / round_step - round(1 / round_step)) > 1e-9):
        raise fail("round_step", f"expected a fraction 1/n such as 0.2 or 0.5, got {round_step!r}")
    if round_step is not None and kind != "regression":
        raise fail("round_step", f"only for regression tasks (this one is {kind})")

    if sum(k in data for k in ("data", "local")) > 1:
        raise fail("data", "give data (your files) or local (a benchmark's layout), not both")
    local = None
    if "data" in data:
        local = _data_files(data["data"], base, fail)
    elif "local" in data:
        local = _local_format(data["local"], fail)
    hub = _hub_source(data["hub"], base, fail) if "hub" in data else None
    if local is None and hub is None:
        raise fail("data", "missing; give data (files or a folder per split) or hub (a dataset)")

    size = data.get("size")
    if size not in (None, "small", "large"):
        raise fail("size", f"must be small or large (the attempt protocol's re-split), got {size!r}")
    flags = {key: data.get(key, _DEFAULTS[key]) for key in ("expand_answers", "round_gold")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise fail(key, f"expected true or false, got {value!r}")
    flags["strict"] = protocol in STRICT_PROTOCOLS  # the papers' protocols score as their code
    if data.get("eval_copies") not in EVAL_COPIES:
        raise fail("eval_copies", f"unknown {data['eval_copies']!r} (known: {', '.join(c for c in EVAL_COPIES if c)})")
    if data.get("scoring") is not None and data["scoring"] not in SCORINGS:
        raise fail("scoring", f"unknown {data['scoring']!r} (known: {', '.join(SCORINGS)})")
    max_train_rows = data.get("max_train_rows")
    if max_train_rows is not None and (isinstance(max_train_rows, bool) or not isinstance(max_train_rows, int)
                                       or max_train_rows < 1):
        raise fail("max_train_rows", f"expected a positive integer, got {max_train_rows!r}")
    try:
        return Task(
            name=text("name") or default_name, kind=kind, template=template, metrics=tuple(metrics),
            benchmark=text("benchmark") or "custom", description=text("description") or "",
            label_field=label_field, label_names=label_names, raw_labels=raw_labels,
            label_words=label_words, answers_field=target_field, choices_field=text("choices_field"),
            group_field=text("group_field"), preprocess=_preprocess(text("preprocess"), fail),
            truncate_field=text("truncate_field"), train_filter=text("train_filter"),
            eval_filter=text("eval_filter"), max_train_rows=max_train_rows, scoring=text("scoring"),
            eval_copies=data.get("eval_copies"),
            round_step=float(round_step) if round_step is not None else None, size=size,
            paper_splits=split_map("paper_splits"), attempt_splits=split_map("attempt_splits"),
            attempt_test_split=text("attempt_test_split") or "validation", local=local, hub=hub,
            aliases=strings("aliases") or (), choice_fields=strings("choice_fields") or (), **flags)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _keys(data: Mapping) -> dict[str, Any]:
    """A file's keys as field names (``label-words`` is ``label_words``)."""
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _with_variant(data: dict, style: str | None, protocol: str | None, origin: dict, fail) -> dict:
    """The file's fields with the protocol's changes and then the style's applied; `origin`
    records where each changed field is written. Every variant's field names are checked, the
    chosen ones' values then as any field's."""
    merged = {k: v for k, v in data.items() if k not in ("styles", "protocols")}
    # text-to-text is the top level, so instruction and base are the styles a file lists
    for section, known, chosen in (("protocols", PROTOCOLS, (protocol,)), ("styles", STYLES[1:], STYLE_CHAIN.get(style, ()))):
        variants = data.get(section) or {}
        if not isinstance(variants, Mapping):
            raise fail(section, f"expected a mapping of name: changed fields ({', '.join(known)}), got {variants!r}")
        for name, changes in variants.items():
            if name not in known:
                raise fail(f"{section}.{name}", f"unknown name (known: {', '.join(known)})")
            if not isinstance(changes, Mapping) or not changes:
                raise fail(f"{section}.{name}", f"expected a mapping of the fields it changes, got {changes!r}")
            bad = [k for k in _keys(changes) if k not in VARIANT_KEYS]
            if bad:
                raise fail(f"{section}.{name}.{bad[0]}", f"not a field a variant changes (those: {', '.join(VARIANT_KEYS)})")
        for name in chosen:
            for key, value in _keys(variants.get(name) or {}).items():
                merged[key] = value
                origin[key] = f"{section}.{name}.{key}"
    return merged


def _preprocess(name: str | None, fail) -> str | None:
    if name is not None and name not in TRANSFORMS:
        raise fail("preprocess", f"unknown {name!r} (known: {', '.join(TRANSFORMS)})")
    return name


def _data_files(value: Any, base: Path, fail) -> LocalFormat:
    if isinstance(value, str):
        folder = base / value
        if folder.is_dir():
            files = find_split_files(folder)
        elif folder.is_file():
            files = {"train": str(folder)}
        else:
            raise fail("data", f"{folder} does not exist")
    elif isinstance(value, Mapping) and value:
        files = {}
        for split, name in value.items():
            if not isinstance(name, str):
                raise fail(f"data.{split}", f"expected a file name, got {name!r}")
            path = base / name  # a file, or a folder of files read in name order
            if not path.exists():
                raise fail(f"data.{split}", f"{path} does not exist")
            files[str(split)] = str(real_path(path, f'data.{split}'))
    else:
        raise fail("data", f"expected a folder or a mapping of split: file, got {value!r}")
    return LocalFormat(folders=(), files={s: (str(real_path(p, f'data.{s}')),) for s, p in files.items()}, reader="auto")


def _local_format(value: Any, fail) -> LocalFormat:
    if not isinstance(value, Mapping):
        raise fail("local", f"expected a mapping with {', '.join(LOCAL_KEYS)}, got {value!r}")
    unknown = [k for k in value if k not in LOCAL_KEYS]
    if unknown:
        raise fail(f"local.{unknown[0]}", f"unknown field (known: {', '.join(LOCAL_KEYS)})")
    files = value.get("files")
    if not isinstance(files, Mapping) or not files:
        raise fail("local.files", f"expected a mapping of split: [file names], got {files!r}")
    reader = value.get("reader", "jsonl")
    if reader not in (*READERS, "auto"):
        raise fail("local.reader", f"unknown reader {reader!r} (known: auto, {', '.join(READERS)})")

    def names(key, v):
        v = [v] if isinstance(v, str) else v
        if not isinstance(v, list) or any(not isinstance(x, str) for x in v):
            raise fail(f"local.{key}", f"expected a list of names, got {v!r}")
        return tuple(v)

    return LocalFormat(
        folders=names("folders", value.get("folders") or []),
        files={str(s): names(f"files.{s}", v) for s, v in files.items()}, reader=reader,
        rename={str(k): str(v) for k, v in (value.get("rename") or {}).items()},
        columns={str(s): names(f"columns.{s}", v) for s, v in (value.get("columns") or {}).items()},
        flatten=names("flatten", value.get("flatten") or []))


def _hub_source(value: Any, base: Path, fail) -> HubSource:
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, Mapping):
        raise fail("hub", f"expected a mapping with {', '.join(HUB_KEYS)}, got {value!r}")
    unknown = [k for k in value if k not in HUB_KEYS]
    if unknown:
        raise fail(f"hub.{unknown[0]}", f"unknown field (known: {', '.join(HUB_KEYS)})")
    path = value.get("path")
    if not isinstance(path, str) or not path:
        raise fail("hub.path", f"expected a dataset name or folder, got {path!r}")
    local = base / path
    if path.startswith((".", "/", "~")) or local.is_dir():
        local = Path(os.path.expanduser(path)) if path.startswith("~") else local
        if not local.is_dir():
            raise fail("hub.path", f"{local} is not a folder")
        path = str(real_path(local, 'hub.path'))
    config = value.get("config")
    if config is not None and not isinstance(config, str):
        raise fail("hub.config", f"expected a config name, got {config!r}")
    splits = value.get("splits") or {}
    if not isinstance(splits, Mapping):
        raise fail("hub.splits", f"expected a mapping of split: hub split, got {splits!r}")
    return HubSource(path=path, config=config, splits={str(k): str(v) for k, v in splits.items()})
