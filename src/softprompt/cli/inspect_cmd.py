"""`softprompt inspect`: what a trained prompt looks like, without loading a backbone.

Prints the singular values of the materialized prompt ``P [n, d]``, its numerical rank at
stated tolerances, its stable rank and norms, and the method's own diagnostics (for
``rank_probe``, how many entries of σ are positive); optionally plots the spectrum.

Definitions (σ_1 ≥ σ_2 ≥ ... the singular values of P):

* numerical rank at relative tolerance ``rtol``: #{i : σ_i > rtol · σ_1};
* stable rank: ‖P‖_F² / σ_1² = Σ σ_i² / σ_1², a continuous, noise-robust lower bound on rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

TOLERANCES = (1e-2, 1e-3, 1e-6)
SHOW_SINGULAR_VALUES = 20


def spectrum(prompt: torch.Tensor, tolerances: Sequence[float] = TOLERANCES) -> dict[str, Any]:
    """Spectral summary of a prompt.

    Args:
        prompt: ``[n, d]``.
        tolerances: relative tolerances for the numerical rank.
    Returns:
        ``singular_values`` (list, descending), ``rank`` ({rtol: count}), ``stable_rank``,
        ``frobenius_norm``, ``row_norm_mean``, ``row_norm_min``, ``row_norm_max``, ``shape``.
    """
    # float64: at rtol 1e-6 float32 round-off (~1e-7 · σ_1) would sit too close to the threshold.
    p = prompt.detach().to(torch.float64).cpu()
    sigma = torch.linalg.svdvals(p)  # [min(n, d)], descending
    top = float(sigma[0]) if sigma.numel() else 0.0
    rows = p.norm(dim=1)  # [n]
    return {
        "shape": list(p.shape),
        "singular_values": sigma.tolist(),
        "rank": {rtol: int((sigma > rtol * top).sum()) if top > 0 else 0 for rtol in tolerances},
        "stable_rank": float((sigma**2).sum() / top**2) if top > 0 else 0.0,
        "frobenius_norm": float(p.norm()),
        "row_norm_mean": float(rows.mean()),
        "row_norm_min": float(rows.min()),
        "row_norm_max": float(rows.max()),
    }


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect", help="singular values, numerical and stable rank of a saved prompt",
        description="Summarize the materialized prompt P [n, d] of a prompt directory: singular values, "
                    "numerical rank at relative tolerances (count of σ_i > rtol·σ_max), stable rank "
                    "(‖P‖_F²/σ_max²), norms, and the method's diagnostics. No backbone is loaded.")
    parser.add_argument("prompt_dir", metavar="PROMPT_DIR", help="a directory written by model.save / softprompt train")
    parser.add_argument("--plot", metavar="PNG", help="also write a spectrum plot (σ_i/σ_max, log scale) to this file")
    parser.add_argument("--tolerances", default=",".join(str(t) for t in TOLERANCES), metavar="LIST",
                        help="comma-separated relative tolerances for the numerical rank (default: %(default)s)")
    parser.set_defaults(func=run)


def _parse_tolerances(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"--tolerances must be comma-separated numbers, got {text!r}") from None
    if not values or any(not 0 < v < 1 for v in values):
        raise ValueError(f"--tolerances must be numbers in (0, 1), got {text!r}")
    return values


def run(args) -> int:
    from softprompt.io import load_prompt_module

    tolerances = _parse_tolerances(args.tolerances)
    module, record = load_prompt_module(args.prompt_dir)
    module.eval()
    with torch.no_grad():
        prompt = module()  # [n, d]
    summary = spectrum(prompt, tolerances)
    sigma = summary["singular_values"]
    backbone = record["backbone"].get("name") or "unknown backbone"

    print(f"prompt: {args.prompt_dir}")
    print(f"method: {record['method']}  config: {record['config']}")
    print(f"backbone: {backbone}  trainable parameters: {module.num_trainable():,}")
    print(f"materialized prompt P: {summary['shape'][0]} x {summary['shape'][1]}")
    shown = ", ".join(f"{s:.4g}" for s in sigma[:SHOW_SINGULAR_VALUES])
    more = f", ... ({len(sigma) - SHOW_SINGULAR_VALUES} more)" if len(sigma) > SHOW_SINGULAR_VALUES else ""
    print(f"singular values: {shown}{more}")
    for rtol, count in summary["rank"].items():
        print(f"numerical rank (σ_i > {rtol:g}·σ_max): {count}")
    print(f"stable rank (‖P‖_F²/σ_max²): {summary['stable_rank']:.4f}")
    print(f"Frobenius norm: {summary['frobenius_norm']:.4g}  row norms: mean {summary['row_norm_mean']:.4g}, "
          f"min {summary['row_norm_min']:.4g}, max {summary['row_norm_max']:.4g}")
    for name, value in module.diagnostics().items():
        # e.g. rank_probe's positive_sigma: the entries of σ still above zero
        print(f"{name}: {value:g}")
    if args.plot:
        plot_spectrum(sigma, tolerances, args.plot, title=f"{record['method']} prompt, {summary['shape'][0]}x{summary['shape'][1]}")
        print(f"plot: {args.plot}")
    return 0


def plot_spectrum(sigma: Sequence[float], tolerances: Sequence[float], path: str | Path, title: str = "") -> Path:
    """Write a PNG of σ_i/σ_max (log scale) with the rank tolerances as dashed lines, atomically."""
    import os

    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path
