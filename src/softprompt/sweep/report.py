"""``softprompt sweep report DIR``: the papers' table from a sweep's trial directories.

Rows are methods (and any other axis that is not the task, the seed or a chosen one), columns
are tasks, each cell the mean ± std over seeds of the task's own metric (its first,
``selection_metric``) on the split the run reports, and an average column. Where the sweep
varies a chosen axis (``select``: the searched ranges and ``lr`` by default), each cell takes the
value whose mean *validation* score over seeds is best; the test split never chooses.

Written to ``DIR/report/``: ``table.md`` (values × 100), ``table.csv`` (values as the runs
report them, one line per cell, plus each row's average), ``trials.csv`` (one line per trial:
its axis values, state, validation score, reported metric, best step and wall time: the numbers
behind every choice, for a table of metric against learning rate), and ``plots/``: the validation metric
against the learning rate for each method, and for ``rank_probe`` runs the number of positive
σ over training steps (the DPT paper's Figure 3). Only files are read (``trial.json``,
``config.json``, ``metrics.json``, ``log.jsonl``): no database is needed. A trial whose files
cannot be read (a hand-broken ``metrics.json``) is left out of the numbers and named: one line on
stderr, and in table.md and trials.csv as ``unreadable``; the rest of the report is written.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softprompt import runlog
from softprompt.extras import require
from softprompt.filenames import inside, safe_filename
from softprompt.io import atomic_file, read_json

from .engine import SPEC_FILE
from .spec import SweepSpec


@dataclass
class TrialResult:
    """What one trial directory holds."""

    dir: Path
    params: dict[str, Any]
    config: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None
    unreadable: str | None = None  # why its files cannot be read (then config and metrics are None)

    @property
    def method(self) -> str:
        return (self.metrics or self.config or {}).get("method", self.params.get("method", "?"))

    @property
    def task(self) -> str:
        return (self.metrics or self.config or {}).get("task", self.params.get("task", "?"))

    @property
    def state(self) -> str:
        """unreadable (a broken file), failed (it recorded an error), finished (it wrote
        metrics.json) or unfinished."""
        return "unreadable" if self.unreadable else "failed" if self.error else "finished" if self.metrics is not None else "unfinished"


@dataclass
class Cell:
    """One (row, task): the chosen trials (one per seed) and their reported metric."""

    metric: str
    split: str
    values: list[float]
    chosen: dict[str, Any] = field(default_factory=dict)
    validation: float | None = None
    chosen_on: str = "validation"  # the rows the choice read: never the reported split

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


@dataclass
class Table:
    rows: list[str]
    tasks: list[str]
    cells: dict[tuple[str, str], Cell]
    select: list[str]
    trials: list[TrialResult]

    def average(self, row: str) -> float | None:
        """The mean of the row's task means, when it has every task."""
        means = [self.cells[(row, t)].mean for t in self.tasks if (row, t) in self.cells]
        return statistics.fmean(means) if means and len(means) == len(self.tasks) else None


def collect(path: str | Path) -> tuple[SweepSpec, list[TrialResult]]:
    """The sweep's spec and every trial directory's content."""
    path = Path(path)
    data = read_json(path / SPEC_FILE, f"not a sweep directory: no {SPEC_FILE}")
    spec = SweepSpec.from_dict(data["spec"], where=str(path / SPEC_FILE))
    results = []
    for record_file in sorted((path / "trials").glob("*/trial.json")):
        try:
            results.append(read_trial(spec, record_file.parent))
        except (OSError, ValueError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(f"softprompt sweep report: skipping trial {record_file.parent.name}: {reason}", file=sys.stderr, flush=True)
            results.append(TrialResult(record_file.parent, {}, unreadable=reason))
    return spec, results


def read_trial(spec: SweepSpec, folder: Path) -> TrialResult:
    """One trial directory's files, checked for everything the report reads from them; a
    ``ValueError`` naming the file otherwise."""
    record, config = _object(folder / "trial.json"), None
    if (folder / "config.json").is_file():
        config = _object(folder / "config.json")
    metrics = _object(folder / runlog.METRICS_NAME) if (folder / runlog.METRICS_NAME).is_file() else None
    if not isinstance(record.get("params", {}), dict):
        raise ValueError(f"{folder / 'trial.json'}: 'params' is not a JSON object")
    if metrics is not None:
        try:  # what build_table and the CSVs take from it
            validation_score(spec, metrics)
            float(metrics["test"][metrics["selection_metric"]])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{folder / runlog.METRICS_NAME}: not a finished run's metrics (no usable "
                             f"{err.args[0] if isinstance(err, KeyError) else 'score'})") from None
    return TrialResult(folder, record.get("params", {}), config, metrics, error=record.get("error"))


def _object(file: Path) -> dict[str, Any]:
    data = read_json(file)
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def validation_score(spec: SweepSpec, metrics: dict[str, Any]) -> float:
    """The value the sweep maximized: the objective metric of the best validation."""
    metric = metrics["selection_metric"] if spec.objective == "auto" else spec.objective
    return float(metrics["best_validation"][metric])


def build_table(spec: SweepSpec, results: list[TrialResult]) -> Table:
    """Group the finished trials into cells; the order of rows, tasks and (on a tie) choices
    comes from the spec, never from which trial ran first."""
    axes = spec.axes()
    extra = [a for a in axes if a not in ("method", "task", "seed") and a not in spec.select]
    groups: dict[tuple[str, str], dict[tuple, list[TrialResult]]] = {}
    row_keys: dict[str, tuple] = {}
    for r in results:
        if r.metrics is None:
            continue
        shown = ", ".join(f"{a}={r.params[a]}" for a in extra if a in r.params)
        row = f"{r.method} ({shown})" if shown else r.method
        row_keys[row] = tuple(_rank(spec, a, v) for a, v in [("method", r.method)] + [(a, r.params.get(a)) for a in extra])
        choice = tuple((a, r.params[a]) for a in spec.select if a in r.params)
        groups.setdefault((row, r.task), {}).setdefault(choice, []).append(r)
    rows = sorted(row_keys, key=lambda row: (row_keys[row], row))
    tasks = sorted({task for _, task in groups}, key=lambda t: (_rank(spec, "task", t), t))
    cells = {}
    for key, by_choice in groups.items():
        # the choice with the best mean validation score over its seeds (the spec's first on a tie)
        ordered = sorted(by_choice, key=lambda c: tuple(_rank(spec, a, v) for a, v in c))
        best = max(ordered, key=lambda c: statistics.fmean(validation_score(spec, r.metrics) for r in by_choice[c]))
        chosen = sorted(by_choice[best], key=lambda r: (r.metrics.get("seed", 0), r.dir.name))
        metric = chosen[0].metrics["selection_metric"]
        cells[key] = Cell(metric, chosen[0].metrics.get("test_split", "test"),
                          [float(r.metrics["test"][metric]) for r in chosen], dict(best),
                          statistics.fmean(validation_score(spec, r.metrics) for r in chosen),
                          _chosen_on(chosen))
    return Table(rows, tasks, cells, list(spec.select), results)


def _chosen_on(trials: list[TrialResult]) -> str:
    """What the runs validated on: rows held out from the training split (``holdout``), or the
    task's validation split. Said in the table, because the reported split is often the official
    validation split too, and "chosen on validation" would read as chosen on the reported rows."""
    held_out = [bool((r.config or {}).get("holdout")) for r in trials]
    return "held-out training rows" if held_out and all(held_out) else "validation"


def _rank(spec: SweepSpec, axis: str, value: Any) -> tuple:
    """Where ``value`` comes among the axis's values in the spec (grid order), else by value."""
    for block in spec.grid:
        if axis in block and value in block[axis]:
            return (0, block[axis].index(value), "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


# ---------------------------------------------------------------------------------------
# Writing


def markdown(spec: SweepSpec, table: Table) -> str:
    def header(task: str) -> str:
        cell = next((c for (r, t), c in table.cells.items() if t == task), None)
        return f"{task} ({cell.metric})" if cell else task

    counts = [len(c.values) for c in table.cells.values()]
    uniform = len(set(counts)) == 1
    lines = [f"# Sweep {spec.name}", ""]
    splits = sorted({c.split for c in table.cells.values()})
    lines.append(f"Each task's own metric on its reported split ({', '.join(splits) or '-'}), × 100, mean ± std over "
                 + (f"{counts[0]} seed(s)" if uniform and counts else "seeds (n per cell)")
                 + (f"; {', '.join(table.select)} chosen per cell on {_chosen_on_text(table)}." if table.select else "."))
    lines += ["", "| method | " + " | ".join(header(t) for t in table.tasks) + " | average |",
              "|---" * (len(table.tasks) + 2) + "|"]
    for row in table.rows:
        parts = []
        for task in table.tasks:
            cell = table.cells.get((row, task))
            if cell is None:
                parts.append("–")
            else:
                parts.append(f"{100 * cell.mean:.2f} ± {100 * cell.std:.2f}" + ("" if uniform else f" (n={len(cell.values)})"))
        average = table.average(row)
        lines.append(f"| {row} | " + " | ".join(parts) + f" | {'–' if average is None else f'{100 * average:.2f}'} |")
    if table.select:
        lines += ["", f"Chosen on {_chosen_on_text(table)} ({', '.join(table.select)}; their mean score there × 100):", "",
                  "| method | " + " | ".join(table.tasks) + " |", "|---" * (len(table.tasks) + 1) + "|"]
        for row in table.rows:
            parts = []
            for task in table.tasks:
                cell = table.cells.get((row, task))
                parts.append("–" if cell is None else f"{_values(cell.chosen)} ({100 * cell.validation:.2f})")
            lines.append(f"| {row} | " + " | ".join(parts) + " |")
    failed = [r for r in table.trials if r.state == "failed"]
    unfinished = [r for r in table.trials if r.state == "unfinished"]
    unreadable = [r for r in table.trials if r.state == "unreadable"]
    finished = sum(r.metrics is not None for r in table.trials)
    lines += ["", f"Trials: {finished} finished, {len(failed)} failed, {len(unfinished)} unfinished"
              + (f", {len(unreadable)} unreadable (left out)." if unreadable else ".")]
    for r in unreadable:
        lines.append(f"- unreadable: `{r.dir.name}`: {r.unreadable}")
    for r in failed:
        lines.append(f"- failed: `{r.dir.name}` ({_values(r.params)}): {r.error}")
    for r in unfinished:
        lines.append(f"- unfinished: `{r.dir.name}` ({_values(r.params)})")
    return "\n".join(lines) + "\n"


def _chosen_on_text(table: Table) -> str:
    return " or ".join(sorted({cell.chosen_on for cell in table.cells.values()})) or "validation"


def _values(values: dict[str, Any]) -> str:
    """``lr=0.00206, seed=1``: floats to 3 significant digits (a searched lr has 17; the CSVs keep
    every digit)."""
    return ", ".join(f"{k}={_short(v)}" for k, v in values.items())


def csv_text(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["row", "task", "metric", "split", "mean", "std", "n", "values", "chosen", "validation_mean"])
    for row in table.rows:
        for task in table.tasks:
            cell = table.cells.get((row, task))
            if cell is not None:
                writer.writerow([row, task, cell.metric, cell.split, repr(cell.mean), repr(cell.std), len(cell.values),
                                 ";".join(repr(v) for v in cell.values), json.dumps(cell.chosen, sort_keys=True),
                                 repr(cell.validation)])
        average = table.average(row)
        if average is not None:
            writer.writerow([row, "average", "", "", repr(average), "", "", "", "", ""])
    return out.getvalue()


def trials_csv_text(spec: SweepSpec, results: list[TrialResult]) -> str:
    """One line per trial directory, in the directories' order: ``state`` is
    ``TrialResult.state`` (as in table.md); ``validation`` is the score the sweep maximized, ``reported``
    the task's metric on the reported split with the prompt that validation chose."""
    axes = spec.axes()
    names = axes + sorted({k for r in results for k in r.params} - set(axes))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["trial", "state", *names, "validation", "metric", "split", "reported", "best_step", "wall_seconds", "error"])
    for r in results:
        m = r.metrics
        numbers = ["", "", "", "", "", ""]
        if m is not None:
            metric = m["selection_metric"]
            numbers = [repr(validation_score(spec, m)), metric, m.get("test_split", "test"), repr(float(m["test"][metric])),
                       m.get("best_step", ""), m.get("wall_seconds", "")]
        writer.writerow([r.dir.name, r.state, *(r.params.get(k, "") for k in names), *numbers, r.error or r.unreadable or ""])
    return out.getvalue()


def plot(spec: SweepSpec, table: Table, folder: Path) -> list[Path]:
    """``lr-<method>.png`` for each method run at several learning rates, and
    ``positive-sigma-<task>.png`` for ``rank_probe`` runs; returns the files written."""
    matplotlib = require("matplotlib", "the sweep's plots")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", "the sweep's plots")

    written = []
    finished = [r for r in table.trials if r.metrics is not None and r.config is not None]
    for method in dict.fromkeys(r.method for r in finished):
        mine = [r for r in finished if r.method == method and r.config.get("lr")]
        if len({r.config["lr"] for r in mine}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        series: dict[str, list[tuple[float, float]]] = {}
        for r in mine:
            extra = {k: v for k, v in r.params.items() if k not in ("method", "seed", "lr")}
            series.setdefault(_values(extra) or r.task, []).append((float(r.config["lr"]), validation_score(spec, r.metrics)))
        for label, points in series.items():
            lrs = sorted({x for x, _ in points})
            means = [statistics.fmean(y for x, y in points if x == lr) for lr in lrs]
            line, = ax.plot(lrs, means, marker="o", label=label)
            ax.scatter(*zip(*points), s=10, alpha=0.5, color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        metric = spec.objective if spec.objective != "auto" else mine[0].metrics["selection_metric"]
        where = _chosen_on(mine)
        ax.set_ylabel(f"best {metric} on {where}")
        ax.set_title(f"{method}: score on {where} vs learning rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, folder, f"lr-{method}"))
        plt.close(fig)
    probes = [r for r in finished if r.method == "rank_probe" and (r.dir / runlog.LOG_NAME).is_file()]
    for task in dict.fromkeys(r.task for r in probes):
        fig, ax = plt.subplots(figsize=(6, 4))
        mine = [p for p in probes if p.task == task]
        varied = [k for k in dict.fromkeys(k for r in mine for k in r.params)  # what tells the lines apart
                  if k != "task" and len({repr(r.params.get(k)) for r in mine}) > 1]
        for r in mine:
            points = [(rec["step"], rec["positive_sigma"]) for rec in runlog.read(r.dir) if "positive_sigma" in rec]
            if points:
                label = _values({k: r.params.get(k) for k in varied}) or r.dir.name
                ax.plot(*zip(*points), marker=".", label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("positive σ entries")
        ax.set_title(f"rank_probe on {task}: positive σ over training")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, folder, f"positive-sigma-{task}"))
        plt.close(fig)
    return written


def _short(value: Any) -> str:
    """A value as a reader wants it: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _save(fig, folder: Path, name: str) -> Path:
    """``folder/<name>.png``; ``name`` holds a method's or a task's name, from the trials' files."""
    path = inside(folder, folder / f"{safe_filename(name)}.png")
    with atomic_file(path) as tmp:
        fig.tight_layout()
        fig.savefig(tmp, dpi=100)
    return path


def write_report(path: str | Path) -> dict[str, Any]:
    """Write ``DIR/report/`` (table.md, table.csv, trials.csv, plots/); returns the table, the Markdown and
    the files written."""
    path = Path(path)
    spec, results = collect(path)
    table = build_table(spec, results)
    out = path / "report"
    text = markdown(spec, table)
    with atomic_file(out / "table.md") as tmp:
        tmp.write_text(text)
    with atomic_file(out / "table.csv") as tmp:
        tmp.write_text(csv_text(table))
    with atomic_file(out / "trials.csv") as tmp:
        tmp.write_text(trials_csv_text(spec, results))
    plots = plot(spec, table, out / "plots")
    return {"table": table, "markdown": text, "files": [out / "table.md", out / "table.csv", out / "trials.csv", *plots]}
