"""``--task`` and the quick task options, resolved to one `Task` (every command goes through here).

    resolve_task("sst2", style="instruction")                       # a built-in task
    resolve_task("my_task.yaml")                                    # a task file (tasks/taskfile.py)
    resolve_task(None, train_file="train.csv", validation_file="dev.csv",
                 template="Review: {text}\\nSentiment:", label_words="neg=negative,pos=positive")

The keyword options are named like `TrainConfig`'s fields (``OPTIONS``), so a run's config.json
rebuilds the same task. With file options and no task, the task is the user's files
(``custom``); with a task, the files replace where its rows come from (its template, labels and
reader stay).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from softprompt.paths import real_path
from softprompt.tasks.custom import custom_task
from softprompt.tasks.local import read_file
from softprompt.tasks.registry import get_task
from softprompt.tasks.rows import LocalFormat, label_text
from softprompt.tasks.spec import Task
from softprompt.tasks.taskfile import is_task_file, read_task_file

CUSTOM = "custom"  # the task name that means "the files of --train-file etc."
FILE_OPTIONS = {"train_file": "train", "validation_file": "validation", "test_file": "test"}
OPTIONS = ("template", "label_words", *FILE_OPTIONS, "label_field", "target_field")
SPECIAL_WORDS = ("names", "digits")


def resolve_task(task: str | None = None, *, style: str | None = None, protocol: str | None = None,
                 template: str | None = None,
                 label_words: str | None = None, train_file: str | None = None,
                 validation_file: str | None = None, test_file: str | None = None,
                 label_field: str | None = None, target_field: str | None = None) -> Task:
    """The task that ``--task`` plus the quick options describe.

    Args:
        task: a task name or alias, a task file (``.yaml``/``.yml``/``.json``), or None /
            ``"custom"`` for the files given below.
        style: ``text-to-text`` or ``instruction``: a built-in task's or a task file's
            ``styles:`` entry of that name, if it has one (else its top-level template).
        protocol: a paper's protocol (``dpt``, ``dept``, ``ulpt``) applies that paper's details
            (the task's or file's ``protocols:`` entry of that name, if any).
        template: the input template, overriding the task's.
        label_words: comma-separated words (one per class), ``names``, ``digits``, or
            ``VALUE=WORD`` pairs (``neg=negative,pos=positive``: the label values as written in
            the files, in class order, each with its word).
        train_file, validation_file, test_file: the split's rows (.jsonl, .json, .csv, .tsv,
            optionally .gz).
        label_field: the field holding the class; default ``label``.
        target_field: the field holding the answer (a generation task).
    """
    given = {"train_file": train_file, "validation_file": validation_file, "test_file": test_file}
    files = {FILE_OPTIONS[option]: str(path) for option, path in given.items() if path is not None}
    if label_field is not None and target_field is not None:
        raise ValueError("give --label-field (classification) or --target-field (generation), not both")
    if task is None or task == CUSTOM:
        if not files:
            raise ValueError("give --task NAME or FILE, or your data with --train-file (and --validation-file, --test-file)")
        return _from_files(files, template, label_words, label_field, target_field)

    if is_task_file(task):
        spec = read_task_file(task, style=style, protocol=protocol)
        spec = spec.with_overrides(label_words=_words(label_words, spec), template=template)
    elif "/" in task or "\\" in task or Path(task).is_file():
        raise ValueError(f"--task {task}: a task file's name ends in .yaml, .yml or .json "
                         f"(task names: softprompt tasks)")
    else:
        spec = get_task(task, label_words=_words(label_words), template=template, style=style, protocol=protocol)
    if label_field is not None:
        if spec.kind == "generation":
            raise ValueError(f"--label-field: task {spec.name} is a generation task (use --target-field)")
        spec = dataclasses.replace(spec, label_field=label_field)
    if target_field is not None:
        if spec.kind != "generation":
            raise ValueError(f"--target-field: task {spec.name} is a {spec.kind} task (use --label-field)")
        spec = dataclasses.replace(spec, answers_field=target_field)
    return with_files(spec, files) if files else spec


def with_files(task: Task, files: dict[str, str]) -> Task:
    """The task reading its splits from these files (and nothing else), in its own format.

    files: split -> path; a split the protocol reads under another official name (MNLI's
    validation is validation_matched) is filed under that name.
    """
    for split, path in files.items():
        if not Path(path).exists():
            raise FileNotFoundError(f"--{split}-file {path}: no such file or folder")
    fmt = task.local or LocalFormat(folders=(), files={})
    reader = fmt.reader if fmt.reader in ("multirc", "record", "mrqa") else "auto"
    official = {split: task.paper_splits.get(split, split) for split in files}
    local = LocalFormat(folders=(), files={official[s]: (str(real_path(p, f'--{s}-file')),) for s, p in files.items()},
                        reader=reader, rename=fmt.rename,
                        columns={k: v for k, v in fmt.columns.items() if k in official.values()},
                        flatten=fmt.flatten)
    return dataclasses.replace(task, local=local, hub=None)


def _words(label_words: str | None, task: Task | None = None) -> str | tuple[str, ...] | None:
    """``names``/``digits`` as they are, else the comma-separated words; ``VALUE=WORD`` only
    names files' values, which a built-in task already knows."""
    if label_words is None or label_words in SPECIAL_WORDS:
        return label_words
    pairs = [w.strip() for w in label_words.split(",")]
    if any("=" in w for w in pairs):
        if task is None or task.raw_labels is None:
            raise ValueError("--label-words VALUE=WORD pairs are for your own files; give one word per class")
        raw = [label_text(v) for v in task.raw_labels]
        mapping = dict(_pair(w) for w in pairs)
        missing = [v for v in raw if v not in mapping]
        extra = [v for v in mapping if v not in raw]
        if missing or extra:
            raise ValueError(f"--label-words: the task's label values are {', '.join(raw)}; "
                             f"got {', '.join(mapping)}")
        return tuple(mapping[v] for v in raw)
    return tuple(pairs)


def _pair(text: str) -> tuple[str, str]:
    value, sep, word = text.partition("=")
    if not sep or not value.strip() or not word.strip():
        raise ValueError(f"--label-words: expected VALUE=WORD, got {text!r}")
    return value.strip(), word.strip()


def _from_files(files: dict[str, str], template: str | None, label_words: str | None,
                label_field: str | None, target_field: str | None) -> Task:
    if template is None:
        fields = _first_row_fields(files)
        raise ValueError(f"give --template over the fields of your rows ({fields}), "
                         f"e.g. --template 'Text: {{{fields.split(', ')[0]}}}\\nAnswer:'")
    if target_field is not None:
        if label_words is not None:
            raise ValueError("--label-words: a generation task (--target-field) has no label words")
        return custom_task(files, template, target_field=target_field, name=CUSTOM)
    labels, words = None, None
    if label_words == "digits":
        labels = None
    elif label_words not in (None, "names"):
        items = [w.strip() for w in label_words.split(",")]
        if any("=" in w for w in items):
            labels, words = zip(*(_pair(w) for w in items))
        else:
            words = tuple(items)
    task = custom_task(files, template, label_field=label_field or "label", labels=labels,
                       label_words=words, name=CUSTOM)
    if label_words == "digits":
        task = task.with_overrides(label_words="digits")
    return task


def _first_row_fields(files: dict[str, str]) -> str:
    """The field names of the first row of the first file (for an error message)."""
    path = next(iter(files.values()))
    for _, row in read_file(path):
        return ", ".join(row)
    return "none: the file has no rows"
