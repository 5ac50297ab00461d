"""The built-in tasks: one task file per task in tasks/builtin/ (``sst2.yaml``, ...), read by the
same loader as a user's task file (tasks/taskfile.py). The folder is the list: a new file there
is a new task, its name the file's name.

The files follow the code of DePT and ULPT (DePT's src/tasks.py, itself from ATTEMPT, itself from
T5) in templates, class order and metric order, so digits ``"0"``, ``"1"``, ... are the default
label words; ``get_task(name, label_words="names")`` uses the class names instead (``entailment``,
...), or pass your own words. The first metric of each task is the one that selects the best
checkpoint. Each file says where it departs from DePT's code (WinoGrande, STS-B: plain bugs) and
holds its own variants: ``styles: instruction:`` (a natural prompt ending in a cue, answered with
real words, one token each in common BPE vocabularies, the passage first so that a cut keeps the
question) and ``protocols:`` (each paper's task details, documented in the file).
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping, Sequence

from softprompt.tasks.spec import Task
from softprompt.tasks.taskfile import read_task_document, task_from_dict

FOLDER = Path(__file__).resolve().parent / "builtin"


def list_tasks() -> list[str]:
    """Names of every built-in task: the files in tasks/builtin/, in name order."""
    return sorted(path.stem for path in FOLDER.glob("*.yaml"))


def task_file(name: str) -> Path:
    """The file of a built-in task, by name or alias (what ``softprompt tasks --show`` prints)."""
    return FOLDER / f"{canonical_name(name)}.yaml"


def canonical_name(name: str) -> str:
    """A built-in task's name from its name or an alias, case-insensitive and with ``-``, ``_``
    or neither alike (``SST-2``, ``sst_2``, ``sst2``)."""
    key = str(name).strip().lower()
    found = _aliases().get(key) or _aliases().get(_squeeze(key))
    if found is None:
        close = difflib.get_close_matches(key, list(_aliases()), n=1, cutoff=0.6)
        hint = f"did you mean {_aliases()[close[0]]}? " if close else ""
        raise ValueError(f"unknown task {name!r}; {hint}known tasks: {', '.join(list_tasks())}")
    return found


def get_task(name: str, label_words: str | Sequence[str] | None = None,
             template: str | None = None, style: str | None = None, protocol: str | None = None) -> Task:
    """A built-in task by name or alias (case-insensitive: ``SST-2``, ``sst-2``, ``sst2``).

    label_words: other words per class (a sequence, a comma-separated string, ``"names"`` or
        ``"digits"``); template: another input template over the same fields.
    style: ``"text-to-text"`` (default: the papers' T5 templates) or ``"instruction"`` (for
        decoder-only models); an explicit ``template`` or ``label_words`` wins over the style's.
    protocol: a paper's protocol (``dpt``, ``dept``, ``ulpt``) applies that paper's task
        details (the file's ``protocols:``) before the style and the explicit overrides.
    """
    task = _builtin(canonical_name(name), style, protocol)
    return task.with_overrides(label_words=label_words, template=template)


@functools.cache
def _document(name: str) -> Any:
    """A built-in file's content, read once."""
    return read_task_document(FOLDER / f"{name}.yaml")


@functools.cache
def _builtin(name: str, style: str | None, protocol: str | None) -> Task:
    path = FOLDER / f"{name}.yaml"
    return task_from_dict(_document(name), where=str(path), base=path.parent, default_name=name,
                          style=style, protocol=protocol)


def _squeeze(key: str) -> str:
    return key.replace("-", "").replace("_", "")


@functools.cache
def _aliases() -> dict[str, str]:
    """Every accepted spelling of every built-in task's name and aliases -> its name. Two tasks
    claiming one spelling is an error naming both files."""
    table: dict[str, str] = {}
    for name in list_tasks():
        for alias in (name, *_builtin(name, None, None).aliases):
            for form in {alias, alias.replace("-", "_"), alias.replace("_", "-"), _squeeze(alias)}:
                form = form.lower()
                if table.setdefault(form, name) != name:
                    raise ValueError(f"{FOLDER / (name + '.yaml')}:aliases: {alias!r} is task "
                                     f"{table[form]}'s name already (as {form!r})")
    return table


class _Builtin(Mapping):
    """A read-only view over the built-in files, read when first asked: ``value(name)`` per
    task, the tasks whose value is None left out."""

    def __init__(self, value):
        self._value = value

    def __getitem__(self, name: str):
        value = self._value(name) if name in list_tasks() else None
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name for name in list_tasks() if self._value(name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _instruction(name: str) -> Mapping | None:
    styles = _document(name).get("styles") or {}
    return MappingProxyType(styles["instruction"]) if "instruction" in styles else None


# Every built-in task (text-to-text style, official protocol) by name.
TASKS: Mapping[str, Task] = _Builtin(lambda name: _builtin(name, None, None))
# The built-in tasks' instruction styles as their files write them (the fields the style
# changes); every built-in task has one (a test checks).
INSTRUCTION: Mapping[str, Mapping] = _Builtin(_instruction)
