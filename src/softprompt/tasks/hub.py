"""The same rows through `datasets.load_dataset`, for users who are online.

Hub rows already carry the field names the templates use; only labels need normalizing:
ClassLabel integers are class indices (-1 = unlabeled), string labels (SciTail, WinoGrande) map
through the task's raw labels, and ReCoRD's entities/answers become sorted sets as the local
reader makes them. ``task`` is a `Task` (tasks/spec.py, above this module); only its fields are
read here.
"""

from __future__ import annotations

from pathlib import Path

from softprompt.tasks.rows import label_text, normalize_label


def load_hub_dataset(path: str, config: str | None, split: str):
    """One split through `datasets`: ``load_dataset(path, config, split=split)`` for a hub name
    or a folder in the hub's layout (data files, a ``README.md`` card with ``configs``), and
    ``load_from_disk`` for a folder that ``save_to_disk`` wrote. (Also a seam for tests.)"""
    import datasets  # here, not at the top: a heavy import that only hub reads need

    folder = Path(path)
    if folder.is_dir() and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()):
        saved = datasets.load_from_disk(str(folder))
        if isinstance(saved, datasets.DatasetDict):
            if split not in saved:
                raise ValueError(f"{path}: no split {split!r} (it has {', '.join(saved)})")
            return saved[split]
        if split != "train":
            raise ValueError(f"{path}: one saved dataset, read as the train split; no {split!r} split")
        return saved
    try:
        return datasets.load_dataset(path, config, split=split)
    except (ValueError, OSError) as err:  # an unknown split, config or dataset, offline: one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        kind = ValueError if isinstance(err, ValueError) else OSError
        raise kind(f"{path}" + (f" ({config})" if config else "") + f": {first}") from None


def read_rows(task, split: str) -> list[dict]:
    """Rows of one official split from the hub, labels mapped to class indices."""
    if task.hub is None:
        raise ValueError(f"task {task.name} is not on the hub; pass a data dir")
    hub_split = task.hub.splits.get(split, split)
    source = f"{task.hub.path}" + (f"/{task.hub.config}" if task.hub.config else "")
    dataset = load_hub_dataset(task.hub.path, task.hub.config, hub_split)
    key = task.label_field
    class_label = _class_label_names(dataset, key)
    typed = bool(getattr(dataset, "features", None))  # a datasets.Dataset knows its column types
    if class_label is not None and task.kind == "classification":
        known = [list(task.label_names or ()), [label_text(v) for v in task.raw_labels or ()]]
        if (task.label_names or task.raw_labels) and class_label not in known:
            raise ValueError(f"{source}[{hub_split}]: field '{key}': the dataset's classes "
                             f"{class_label} are not the task's {known[0] or known[1]}")
    rows = []
    for i, record in enumerate(dataset):
        row = dict(record)
        where = f"{source}[{hub_split}] row {i}"
        row["_where"] = where
        if task.preprocess == "record":
            row["entities"] = sorted(set(row["entities"]))
            row["answers"] = sorted(set(row["answers"]))
        if key is not None and key in row:
            value = row[key]
            if task.kind == "regression":
                if split.startswith("test") and value == -1:
                    row[key] = None
                else:
                    normalize_label(task, row, split, where)
            elif isinstance(value, int) and not isinstance(value, bool) and (
                    class_label is not None or task.raw_labels is None or not typed):
                # a ClassLabel's integer is the class index (-1: unlabeled); a plain integer
                # column is a label value like any other (stars: 1 ... 5)
                row[key] = None if value < 0 else value
            else:
                normalize_label(task, row, split, where)
        rows.append(row)
    if not rows:
        raise ValueError(f"{source}[{hub_split}]: the {split} split is empty (no rows)")
    return rows


def _class_label_names(dataset, key: str | None) -> list[str] | None:
    """The class names when `key` is a ``datasets.ClassLabel`` column, else None."""
    feature = (getattr(dataset, "features", None) or {}).get(key) if key else None
    return list(feature.names) if type(feature).__name__ == "ClassLabel" else None
