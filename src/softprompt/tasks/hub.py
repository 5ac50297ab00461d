"""The same rows through `datasets.load_dataset`, for users who are online.

Hub rows already carry the field names the templates use; only labels need normalizing:
ClassLabel integers are class indices (-1 = unlabeled), string labels (SciTail, WinoGrande) map
through the task's raw labels, and ReCoRD's entities/answers become sorted sets as the local
reader makes them.
"""

from __future__ import annotations

from softprompt.tasks.local import normalize_label
from softprompt.tasks.spec import Task


def load_hub_dataset(path: str, config: str | None, split: str):
    """`datasets.load_dataset` (a seam for tests, which cannot reach the hub)."""
    import datasets

    return datasets.load_dataset(path, config, split=split)


def read_rows(task: Task, split: str) -> list[dict]:
    """Rows of one official split from the hub, labels mapped to class indices."""
    if task.hub is None:
        raise ValueError(f"task {task.name} is not on the hub; pass a data dir")
    hub_split = task.hub.splits.get(split, split)
    source = f"{task.hub.path}" + (f"/{task.hub.config}" if task.hub.config else "")
    dataset = load_hub_dataset(task.hub.path, task.hub.config, hub_split)
    rows = []
    for i, record in enumerate(dataset):
        row = dict(record)
        where = f"{source}[{hub_split}] row {i}"
        row["_where"] = where
        if task.preprocess == "record":
            row["entities"] = sorted(set(row["entities"]))
            row["answers"] = sorted(set(row["answers"]))
        key = task.label_field
        if key is not None and key in row:
            value = row[key]
            if task.kind == "regression":
                if split.startswith("test") and value == -1:
                    row[key] = None
                else:
                    row[key] = float(value)
            elif isinstance(value, int) and not isinstance(value, bool):
                row[key] = None if value < 0 else value
            else:
                normalize_label(task, row, split, where)
        rows.append(row)
    return rows
