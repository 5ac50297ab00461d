"""A run's records: ``log.jsonl`` (one JSON record per line: a logged step, an evaluation, an
event) and the results files (``metrics.json``, a multi-seed run's ``summary.json``), written and
read here only. Torch-free, so the sweep's launcher and its report read runs through it without
the model code.

The log is appended to line by line; a kill or a full disk mid-write leaves a torn last line,
which every reader drops. A bad line before the last one is no such accident: an error names it.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from .io import atomic_file, read_json, write_json_atomically

LOG_NAME = "log.jsonl"
METRICS_NAME = "metrics.json"
# Records a resumed run writes again even at its checkpoint's step (they come after it).
AFTER_CHECKPOINT = ("test", "error")


class RunLogError(ValueError):
    """A line of a run's log.jsonl (not its last) is not a JSON record; the message names it."""


def append(run_dir: str | Path, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / LOG_NAME, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def read(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's complete log records, oldest first ([] before the first)."""
    return [record for _, record in read_lines(run_dir)]


def read_lines(run_dir: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """``(line, record)`` of each complete record. A torn last line is dropped; a bad line
    before it raises ``RunLogError`` naming it."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if i == last:
                continue
            raise RunLogError(f"{path}:{i + 1}: not a JSON record ({err.msg}); fix or remove that line") from None
        out.append((line, record))
    return out


def last_step(run_dir: str | Path) -> int:
    """The step of the run's last record (0 before its first, or when the log cannot be read:
    this only tells a watcher how far a run is)."""
    try:
        records = read(run_dir)
    except (OSError, RunLogError):
        return 0
    return int(records[-1].get("step", 0)) if records else 0


def keep_until(run_dir: str | Path, step: int) -> None:
    """Keep the records written up to the checkpoint at ``step`` (a resumed run writes the rest
    again, its test record included), and drop a torn last line; one atomic rewrite."""
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        return
    kept = [line for line, r in read_lines(run_dir)
            if r.get("step", 0) <= step and not any(key in r for key in AFTER_CHECKPOINT)]
    with atomic_file(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))


def write_metrics(run_dir: str | Path, metrics: dict[str, Any], name: str = METRICS_NAME) -> None:
    write_json_atomically(Path(run_dir) / name, metrics)


def read_metrics(run_dir: str | Path, name: str = METRICS_NAME) -> dict[str, Any] | None:
    """A finished run's results (None while it has none)."""
    path = Path(run_dir) / name
    return read_json(path) if path.is_file() else None


def summarize(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds of every metric of every section."""
    summary: dict[str, Any] = {"seeds": sorted(runs)}
    for section in ("zero_shot", "best_validation", "test"):
        table: dict[str, Any] = {}
        names = {k for m in runs.values() for k in (m.get(section) or {})}
        for name in sorted(names):
            values = [float(m[section][name]) for m in runs.values() if m.get(section) and name in m[section]]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            table[name] = {"mean": statistics.fmean(values), "std": std, "values": values}
        summary[section] = table
    summary["trainable_parameters"] = next(iter(runs.values())).get("trainable_parameters")
    summary["wall_seconds"] = sum(float(m.get("wall_seconds", 0.0)) for m in runs.values())
    return summary
