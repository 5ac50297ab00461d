"""The accuracy benchmark's report (``benchmarks.accuracy --report``): Markdown tables per model.

For each model: accuracy per (task, method) as mean ± std over seeds with their number, the
zero-shot row (the task's template, no prompt), PEFT at the lr its held-out rows choose, each
method minus PEFT paired by seed, the mean wall time of a run with the load average at its start,
and issue 33's target per cell: at least PEFT's mean − 1 point and above zero-shot.

A results file is ``{"runs": [row, ...]}``; a row without ``model`` is SmolLM2-135M-Instruct's
(files written before ``--model`` was recorded), as is a legacy ``"zero_shot": {task: value}``.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from benchmarks.common import model_name

DEFAULT_MODEL = model_name(None)
PEFT_NAME = "PEFT prompt tuning (lr: best on validation)"
MARGIN = 1.0  # points: a method meets the target at PEFT's mean − MARGIN or above


def model_of(row: dict) -> str:
    return row.get("model", DEFAULT_MODEL)


def row_key(row: dict) -> tuple:
    """What a row measured, as its job names it: ``(model, kind, task, seed, method-or-lr)``."""
    if row["library"] == "zero-shot":
        return model_of(row), "zero", row["task"], None, None
    if row["library"] == "peft":
        return model_of(row), "peft", row["task"], row["seed"], row["lr"]
    return model_of(row), "softprompt", row["task"], row["seed"], row["method"]


def zero_shot_rows(data: dict) -> list[dict]:
    """The file's zero-shot rows, a legacy ``zero_shot`` mapping (SmolLM2's) included."""
    legacy = [{"library": "zero-shot", "method": "zero-shot", "model": DEFAULT_MODEL, "task": task, "seed": None,
               "test": value, "lr": None} for task, value in data.get("zero_shot", {}).items()]
    return legacy + [r for r in data.get("runs", []) if r["library"] == "zero-shot"]


def parse_rename(spec: str) -> tuple[str, str]:
    """``ulpt@sink=bos:ulpt`` → ``("ulpt@sink=bos", "ulpt")``: the last colon splits."""
    variant, sep, name = spec.rpartition(":")
    if not sep or not variant.strip() or not name.strip():
        raise SystemExit(f"--rename: {spec!r}: expected VARIANT:NAME, e.g. 'ulpt@sink=bos:ulpt'")
    return variant.strip(), name.strip()


def merge_results(files: list[tuple[Path, dict]], rename: dict[str, str]) -> dict:
    """The runs and zero-shot figures of several results files as one, for a table that pairs
    records measured in separate launches. ``rename`` maps a softprompt variant's name to the one
    its runs count as. Two records of one (model, library, method, task, seed, lr) are an error
    that names both files: silently keeping either would choose a figure. Zero-shot figures are
    deterministic: the first file's is kept. Returns ``{"runs": [...], "zero_shot": {(model, task): value}}``."""
    runs, zero, seen = [], {}, {}
    for path, data in files:
        for r in zero_shot_rows(data):
            zero.setdefault((model_of(r), r["task"]), r)
        for r in data.get("runs", []):
            if r["library"] == "zero-shot":
                continue
            r = {**r, "method": rename.get(r["method"], r["method"])} if r["library"] == "softprompt" else r
            key = row_key(r)
            if key in seen:
                what = f"{r['method']} on {r['task']}, seed {r['seed']}" + (f", lr {r['lr']:g}" if r["library"] == "peft" else "")
                raise SystemExit(f"{path}: {what} is also in {seen[key]} (model {key[0]}); give each run to the report once")
            seen[key] = path
            runs.append(r)
    return {"runs": runs, "zero_shot": zero}


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f} (n=1)"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f} (n={len(values)})"


def accuracy_table(runs: list[dict], zero: dict[str, dict], tasks: list[str]) -> str:
    """Methods × tasks: the reported split's metric in points, mean ± std over seeds (n=seeds)."""
    names = list(dict.fromkeys(r["method"] for r in runs))
    lines = ["| method | params | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    lines.append("| zero-shot (template only) | 0 | "
                 + " | ".join(f"{100 * zero[t]['test']:.1f}" if t in zero else "-" for t in tasks) + " |")
    for name in names:
        rows = [r for r in runs if r["method"] == name]
        cells = [[100 * r["test"] for r in rows if r["task"] == t] for t in tasks]
        lines.append(f"| {name} | {rows[0]['trainable_parameters']:,} | "
                     + " | ".join(mean_std(c) if c else "-" for c in cells) + " |")
    return "\n".join(lines)


def wall_table(runs: list[dict], zero: dict[str, dict], tasks: list[str]) -> str:
    """Mean wall time of a run per (method, task), with the mean 1-minute load average at the
    runs' starts (where recorded): a CPU's times are read against its load."""

    def cell(rows):
        walls = [r["wall_seconds"] for r in rows if r.get("wall_seconds") is not None]
        if not walls:
            return "-"
        loads = [r["load_average"]["start"][0] for r in rows if r.get("load_average")]
        return f"{statistics.fmean(walls):,.0f} s" + (f" (load {statistics.fmean(loads):.1f})" if loads else "")

    names = list(dict.fromkeys(r["method"] for r in runs))
    lines = ["| wall time per run (mean) | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    lines.append("| zero-shot | " + " | ".join(cell([zero[t]] if t in zero else []) for t in tasks) + " |")
    lines += [f"| {name} | " + " | ".join(cell([r for r in runs if r["method"] == name and r["task"] == t]) for t in tasks) + " |"
              for name in names]
    return "\n".join(lines)


def against(runs: list[dict], tasks: list[str], reference: str) -> str:
    """Each method minus ``reference`` (PEFT at its chosen lr), paired by seed: the mean
    difference ± its standard error over the seeds both have, in points. Pairing removes what
    the seed does to both (the batch order, the held-out rows); the standard error says which
    differences the seeds resolve: a target of "within 2 points" is decided only where the
    interval's side is clear of it."""
    ref = {(r["task"], r["seed"]): 100 * r["test"] for r in runs if r["method"] == reference}

    def cell(name, task):
        diffs = [100 * r["test"] - ref[task, r["seed"]] for r in runs
                 if r["method"] == name and r["task"] == task and (task, r["seed"]) in ref]
        if not diffs:
            return "-"
        if len(diffs) == 1:
            return f"{diffs[0]:+.1f} (n=1)"
        se = statistics.stdev(diffs) / len(diffs) ** 0.5
        return f"{statistics.fmean(diffs):+.1f} ± {se:.1f} (n={len(diffs)})"

    names = [n for n in dict.fromkeys(r["method"] for r in runs) if n != reference]
    lines = [f"| minus {reference}, paired by seed | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    lines += [f"| {name} | " + " | ".join(cell(name, t) for t in tasks) + " |" for name in names]
    sizes = {t: next((r["test_n"] for r in runs if r["task"] == t and r.get("test_n")), None) for t in tasks}
    known = [f"{t} {n} rows (one row = {100 / n:.2g} points)" for t, n in sizes.items() if n]
    if known:
        lines.append("\nReported split: " + ", ".join(known) + ".")
    return "\n".join(lines)


def targets(runs: list[dict], zero: dict[str, dict], tasks: list[str], reference: str) -> str:
    """Per (method, task): the mean minus PEFT's mean and minus zero-shot, in points, and whether
    the target holds (≥ PEFT − ``MARGIN`` and > zero-shot; "?" where either is missing)."""

    def mean(rows):
        return statistics.fmean(100 * r["test"] for r in rows) if rows else None

    def cell(name, task):
        value = mean([r for r in runs if r["method"] == name and r["task"] == task])
        if value is None:
            return "-"
        peft = mean([r for r in runs if r["method"] == reference and r["task"] == task])
        base = 100 * zero[task]["test"] if task in zero else None
        parts = [f"{value - peft:+.1f} vs PEFT" if peft is not None else "PEFT ?",
                 f"{value - base:+.1f} vs zero-shot" if base is not None else "zero-shot ?"]
        met = None if peft is None or base is None else value >= peft - MARGIN and value > base
        return ", ".join(parts) + (": ?" if met is None else ": met" if met else ": MISSED")

    names = [n for n in dict.fromkeys(r["method"] for r in runs) if n != reference]
    lines = [f"| target: ≥ PEFT − {MARGIN:g} and > zero-shot (means) | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    lines += [f"| {name} | " + " | ".join(cell(name, t) for t in tasks) + " |" for name in names]
    return "\n".join(lines)


def choose_peft(runs: list[dict], model: str, task: str, lrs: list[float]) -> tuple[float | None, list[dict]]:
    """PEFT's lr on ``task``: the best mean score on the held-out rows among ``lrs``, and all of
    its runs. The means compare the lrs on the seeds every one of them ran, so a grid run on
    seed 0 and only the lr it chose on later seeds (a launch that cannot afford the whole grid
    per seed) keeps seed 0's choice; with no seed in common, each lr's mean is over its own
    seeds."""
    peft = [r for r in runs if r["library"] == "peft" and model_of(r) == model and r["task"] == task and r["lr"] in lrs]
    if not peft:
        return None, []
    by_lr = {lr: [r for r in peft if r["lr"] == lr] for lr in dict.fromkeys(r["lr"] for r in peft)}
    common = set.intersection(*({r["seed"] for r in rows} for rows in by_lr.values()))

    def chosen_on(rows):  # the rows a choice reads: the seeds every lr ran, where there are some
        return [r for r in rows if r["seed"] in common] or rows

    best = max(by_lr, key=lambda lr: statistics.fmean(r["validation"] for r in chosen_on(by_lr[lr])))
    print(f"PEFT on {task}: lr {best:g} ({model}; mean validation by lr"
          + (f" on seeds {', '.join(map(str, sorted(common)))}" if common else "") + ": "
          + ", ".join(f"{lr:g} {100 * statistics.fmean(r['validation'] for r in chosen_on(rows)):.1f} "
                      f"(n={len(chosen_on(rows))})" for lr, rows in sorted(by_lr.items())) + ")", file=sys.stderr)
    return best, by_lr[best]


def chosen_lrs(held: dict, chosen: dict) -> dict:
    """A file's ``peft_best_lr`` (``{model: {task: lr}}``; a legacy ``{task: lr}`` is SmolLM2's)
    updated with this report's choices."""
    nested = {m: dict(v) for m, v in held.items() if isinstance(v, dict)}
    legacy = {t: lr for t, lr in held.items() if not isinstance(lr, dict)}
    if legacy:
        nested[DEFAULT_MODEL] = {**legacy, **nested.get(DEFAULT_MODEL, {})}
    for model, by_task in chosen.items():
        nested.setdefault(model, {}).update(by_task)
    return nested


def report(merged: dict, tasks: list[str] | None, seeds: list[int] | None, lrs: list[float],
           methods: list[str] | None) -> tuple[str, dict]:
    """The Markdown report of ``merged`` (``merge_results``), one section per model, and the lr
    chosen for PEFT per model and task. ``tasks``, ``seeds``, ``methods``: None takes every one
    in the runs; ``methods`` names softprompt variants and ``peft``."""
    runs = [r for r in merged["runs"] if seeds is None or r["seed"] in seeds]
    if tasks is None:
        tasks = list(dict.fromkeys([*(r["task"] for r in runs), *(t for _, t in merged["zero_shot"])]))
    runs = [r for r in runs if r["task"] in tasks]
    models = list(dict.fromkeys([*(model_of(r) for r in runs), *(m for m, t in merged["zero_shot"] if t in tasks)]))
    sections, chosen = [], {}
    for model in models:
        mine = [r for r in runs if model_of(r) == model and r["library"] == "softprompt"
                and (methods is None or r["method"] in methods)]
        if methods is None or "peft" in methods:
            for task in tasks:
                lr, rows = choose_peft(runs, model, task, lrs)
                if lr is not None:
                    chosen.setdefault(model, {})[task] = lr
                    mine += [{**r, "method": PEFT_NAME} for r in rows]
        zero = {t: r for (m, t), r in merged["zero_shot"].items() if m == model and t in tasks}
        parts = [f"### {model}", accuracy_table(mine, zero, tasks)]
        if any(r["method"] == PEFT_NAME for r in mine):
            parts += [against(mine, tasks, PEFT_NAME), targets(mine, zero, tasks, PEFT_NAME)]
        parts.append(wall_table(mine, zero, tasks))
        sections.append("\n\n".join(parts))
    return "\n\n".join(sections), chosen
