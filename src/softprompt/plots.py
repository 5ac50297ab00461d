"""Pictures: training curves and the method's diagnostics from ``log.jsonl``, and a prompt's
singular-value spectrum. Every PNG is written atomically; matplotlib runs headless (Agg)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .extras import require
from .filenames import inside, safe_filename
from .io import atomic_file, write_dir_atomically

# Keys of a step record that are not a method's diagnostics.
STEP_KEYS = {"step", "epoch", "loss", "lr", "examples_per_second"}


def _pyplot():
    matplotlib = require("matplotlib", "plots")  # softprompt[plots]; train() skips its plots without it (one line)
    matplotlib.use("Agg")  # no display needed
    return require("matplotlib.pyplot", "plots")


def plot_run(out: Path, metric: str = "accuracy", labels: dict[str, str] | None = None) -> Path:
    """``plots/loss.png``, ``plots/validation.png`` (with the zero-shot score as a dashed line) and one ``plots/<name>.png`` per diagnostic
    the method logged (rank_probe: ``positive_sigma.png``, the DPT paper's Figure 3), drawn from
    ``out/log.jsonl``. ``labels`` gives diagnostics their axis labels."""
    plt = _pyplot()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss" in r]
    losses = [(r["step"], r["loss"]) for r in steps]
    vals = [(r["step"], r["validation"][metric]) for r in records if "validation" in r and metric in r["validation"]]
    names = sorted({k for r in steps for k, v in r.items() if k not in STEP_KEYS and isinstance(v, (int, float))})
    labels = labels or {}
    zero = next((r for r in records if metric in (r.get("zero_shot") or {})), None)

    def draw(tmp: Path, points, name, ylabel, title, baseline=None):
        fig, ax = plt.subplots(figsize=(6, 4))
        if points:
            ax.plot(*zip(*points), marker="." if len(points) < 50 else None, label="prompt")
        if baseline is not None:  # what the prompt adds: the backbone alone, same template
            ax.axhline(baseline[0], linestyle="--", color="gray", label=baseline[1])
            ax.legend(loc="lower right")
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(inside(tmp, tmp / name), dpi=100)
        plt.close(fig)

    def write(tmp: Path) -> None:
        draw(tmp, losses, "loss.png", "training loss", "Training loss")
        baseline = (zero["zero_shot"][metric], f"zero-shot, on the reported split ({zero.get('split', 'test')})") if zero else None
        draw(tmp, vals, "validation.png", f"validation {metric}", f"Validation {metric}", baseline)
        for name in names:
            points = [(r["step"], r[name]) for r in steps if name in r]
            # a diagnostic's name is a key of the log's records: a file name only once made safe
            draw(tmp, points, f"{safe_filename(name)}.png", labels.get(name, name), labels.get(name, name))

    return write_dir_atomically(out / "plots", write)


def plot_spectrum(sigma: Sequence[float], tolerances: Sequence[float], path: str | Path, title: str = "") -> Path:
    """A PNG of σ_i/σ_max (log scale) with the rank tolerances as dashed lines."""
    plt = _pyplot()
    top = sigma[0] if sigma and sigma[0] > 0 else 1.0
    # A floor keeps exact zeros (a prompt of rank b < n) drawable on a log axis.
    floor = min(tolerances) * 1e-3
    rel = [max(s / top, floor) for s in sigma]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(range(1, len(rel) + 1), rel, marker="o", markersize=3)
    for rtol in tolerances:
        ax.axhline(rtol, linestyle="--", linewidth=0.8, color="gray")
        ax.annotate(f"rtol {rtol:g}", (len(rel), rtol), fontsize=7, ha="right", va="bottom", color="gray")
    ax.set_xlabel("index i")
    ax.set_ylabel("σ_i / σ_max")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)
