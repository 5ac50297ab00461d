"""Training-step time as the prompt grows, softprompt vs PEFT, on SmolLM2 (batch 8, 48 text tokens).

    python -m benchmarks.prompt_length                         # n = 10 50 100 200 400
    python -m benchmarks.prompt_length --threads 1 --rounds 3

For each n both libraries are built on the same backbone and alternated (after one
warm-up step each). Prints a table, the least-squares slope of time against n (seconds
per prompt token), and writes ``benchmarks/results/prompt_length.png`` and ``.json``.
softprompt runs the prompt once per batch, so its slope should be about 1/B of PEFT's,
which runs it once per row (and computes logits at every prompt position).
"""

from __future__ import annotations

import argparse

import torch

from .common import RESULTS, add_thread_option, alternate, load_average, load_model, median, set_threads, write_json
from .step_time import build


def slope(xs, ys) -> float:
    """Least-squares slope of ys against xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def plot(lengths, sp, pf, batch, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lengths, pf, "o-", label="PEFT prompt tuning")
    ax.plot(lengths, sp, "s-", label="softprompt (prompt once per batch)")
    ax.set_xlabel("prompt length n (tokens)")
    ax.set_ylabel("median step time (s)")
    ax.set_title(f"SmolLM2-135M, batch {batch}, 48 text tokens, float32, {torch.get_num_threads()} thread(s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[10, 50, 100, 200, 400])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-len", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    add_thread_option(parser)
    args = parser.parse_args(argv)
    set_threads(args.threads)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32")
    backbone = load_model()[0]
    rows = []
    for n in args.lengths:
        sp_step, _ = build("smollm2", "softprompt", n, args.batch, args.text_len, backbone=backbone)
        pf_step, _ = build("smollm2", "peft", n, args.batch, args.text_len, backbone=backbone)
        times = alternate({"softprompt": sp_step, "peft": pf_step}, rounds=args.rounds, warmup=1)
        sp, pf = median(times["softprompt"]), median(times["peft"])
        rows.append({"n": n, "softprompt": sp, "peft": pf, "ratio": sp / pf, "raw": times})
        print(f"  n={n:4d}  softprompt {sp:7.3f} s  peft {pf:7.3f} s  ratio {sp / pf:.3f}", flush=True)
    lengths = [r["n"] for r in rows]
    sp_slope = slope(lengths, [r["softprompt"] for r in rows])
    pf_slope = slope(lengths, [r["peft"] for r in rows])
    print("\n| n | softprompt (s) | PEFT (s) | ratio |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['softprompt']:.3f} | {r['peft']:.3f} | {r['ratio']:.3f} |")
    print(f"\nslope (ms per prompt token): softprompt {1e3 * sp_slope:.2f}, PEFT {1e3 * pf_slope:.2f}, "
          f"ratio {sp_slope / pf_slope:.3f} (batch {args.batch}: once per batch would be about {1 / args.batch:.3f})")
    print(f"load average during the run: {load_average()}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = f"threads{torch.get_num_threads()}"
    plot(lengths, [r["softprompt"] for r in rows], [r["peft"] for r in rows], args.batch, RESULTS / f"prompt_length_{suffix}.png")
    write_json(RESULTS / f"prompt_length_{suffix}.json", {"batch": args.batch, "text_len": args.text_len, "rows": rows,
                                                          "slope_softprompt": sp_slope, "slope_peft": pf_slope,
                                                          "load_average": load_average()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
