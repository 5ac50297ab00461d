"""`softprompt inspect`: what a trained prompt looks like, without loading a backbone.

Prints the singular values of the materialized prompt ``P [n, d]``, its numerical rank at
stated tolerances, its stable rank and norms (``softprompt.spectrum`` defines them), and the
method's own diagnostics (for ``rank_probe``, how many entries of σ are positive); optionally
plots the spectrum.
"""

from __future__ import annotations

SHOW_SINGULAR_VALUES = 20


def register(subparsers) -> None:
    from softprompt.spectrum import TOLERANCES

    parser = subparsers.add_parser(
        "inspect", help="singular values, numerical and stable rank of a saved prompt",
        description="Summarize the materialized prompt P [n, d] of a prompt directory: singular values, "
                    "numerical rank at relative tolerances (count of σ_i > rtol·σ_max), stable rank "
                    "(‖P‖_F²/σ_max²), norms, and the method's diagnostics. No backbone is loaded.")
    parser.add_argument("prompt_dir", metavar="PROMPT_DIR", help="a directory written by model.save / softprompt train")
    parser.add_argument("--plot", metavar="PNG", help="also write a spectrum plot (σ_i/σ_max, log scale) to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
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
    import torch

    from softprompt.io import load_prompt_module
    from softprompt.plots import plot_spectrum
    from softprompt.spectrum import spectrum

    from .outputs import output_file

    tolerances = _parse_tolerances(args.tolerances)
    if args.plot:
        output_file(args.plot, "--plot", args.overwrite, inputs=[args.prompt_dir])
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
