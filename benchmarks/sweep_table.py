"""The SmolLM2 learning-rate sweep's tables from its committed results file, through the same
report code as ``softprompt sweep report`` (so the choice rule is the library's: per cell, the
lr with the best score on the held-out training rows; the dev split never chooses).

    python -m benchmarks.sweep_table benchmarks/results/sweep_smollm2_lr_cpu.json

A sweep's own directory (``runs/sweeps/...``) is not committed and a new checkout has none, so
the finished trials are kept in ``benchmarks/results/`` as one record each (lr, held-out score,
dev score, wall time); this prints the papers' layout (methods × tasks, the dev figure at the
chosen lr) and, per study, every trial by lr, as Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from softprompt.sweep.report import TrialResult, build_table, markdown
from softprompt.sweep.spec import SweepSpec


def trial_results(records: list[dict], holdout: int | None) -> list[TrialResult]:
    """Each record as the report reads a trial directory: its params, config (``holdout``: the
    spec's, which says what the runs validated on) and metrics."""
    results = []
    for r in records:
        metric = r["metric"]
        params = {"method": r["method"], "task": r["task"], "seed": r["seed"], "lr": r["lr"]}
        metrics = {"method": r["method"], "task": r["task"], "seed": r["seed"], "selection_metric": metric,
                   "test_split": "validation", "best_validation": {metric: r["validation"]}, "test": {metric: r["test"]},
                   "best_step": r.get("best_step"), "wall_seconds": r.get("wall_seconds")}
        results.append(TrialResult(Path(r["trial"]), params, {"lr": r["lr"], "holdout": holdout}, metrics))
    return results


def by_lr(records: list[dict], rows: list[str], tasks: list[str]) -> str:
    """One line per study: every trial as ``lr: held-out / dev`` (× 100), by lr."""
    lines = ["| study | trials (lr: held-out / dev) | wall per trial |", "|---|---|---|"]
    for method in rows:
        for task in tasks:
            study = sorted((r for r in records if r["method"] == method and r["task"] == task), key=lambda r: r["lr"])
            if not study:
                continue
            trials = "; ".join(f"{r['lr']:.3g}: {100 * r['validation']:.1f} / {100 * r['test']:.1f}" for r in study)
            walls = [r["wall_seconds"] for r in study if r.get("wall_seconds")]
            wall = f"{min(walls):,.0f}-{max(walls):,.0f} s" if walls else "–"
            lines.append(f"| `{method}`, {task} ({len(study)}) | {trials} | {wall} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="a results file: {'sweep': SPEC, 'trials': [...]}")
    parser.add_argument("--spec", default=None, help="the sweep's spec (default: the file's own 'sweep')")
    args = parser.parse_args(argv)
    data = json.loads(Path(args.results).read_text())
    spec = SweepSpec.from_file(args.spec or data["sweep"])
    records = data["trials"]
    table = build_table(spec, trial_results(records, spec.base.get("holdout")))
    print(markdown(spec, table))
    print(by_lr(records, table.rows, table.tasks))
    walls = [r["wall_seconds"] for r in records if r.get("wall_seconds")]
    if walls:
        print(f"\n{len(records)} trials, {sum(walls) / 3600:.1f} h of trial time in all "
              f"(median {statistics.median(walls):,.0f} s a trial).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
