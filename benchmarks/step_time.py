"""One training step (forward, backward, AdamW): softprompt vs Hugging Face PEFT prompt tuning.

Same backbone object, batch, prompt length, precision (float32) and threads; the two are
alternated after warm-up and the medians are compared. Work items 1, 2 and 5 of issue 5.

    python -m benchmarks.step_time smollm2            # batch 8, 48 text tokens, prompt 100
    python -m benchmarks.step_time t5                 # t5-base sizes (random), batch 8, 128 tokens
    python -m benchmarks.step_time smollm2 --no-memory --rounds 5
    python -m benchmarks.step_time --model gemma-3-270m     # another decoder-only backbone, same settings

``smollm2`` (the default) is the decoder-only benchmark, on ``--model`` (default SmolLM2-135M);
results: ``results/step_time_smollm2_threads{N}.json``, ``results/step_time_<model>_threads{N}.json``
for another model.

Labels: decoder-only: every text token is labeled (labels = input_ids) for both libraries;
PEFT prepends -100 for its virtual tokens and computes the full logits [B, n+T, V];
softprompt is called with ``return_logits=False`` (prompt once per batch, head only at the
labeled positions). T5: 16 random decoder target tokens per row for both.
"""

from __future__ import annotations

import argparse
import json

import torch

import softprompt

from .common import (
    RESULTS, add_model_option, add_thread_option, alternate, attach_peft, fmt_times, load_average, load_model, median, mib,
    model_name, model_tag, peak_rss, random_batch, reset_peak_rss, run_memory_child, set_threads, t5_base_random, timed, write_json,
)

T5_TARGET_LEN = 16
REPARAM_METHODS = {"dpt": {"bottleneck": 10}, "ulpt": {"rank": 2}, "residual": {"bottleneck": 400}}


def build(kind: str, which: str, length: int, batch: int, text_len: int, method: str = "prompt", backbone=None,
          model: str | None = None):
    """Return ``(step, trainable_module)`` where ``step()`` runs one full training step;
    ``kind`` ``smollm2`` (decoder-only: ``model``, default SmolLM2) or ``t5``."""
    if backbone is None:
        backbone = load_model(model)[0] if kind == "smollm2" else t5_base_random()
    vocab = backbone.config.vocab_size
    ids, mask = random_batch(batch, text_len, vocab)
    if kind == "smollm2":
        labels = ids.clone()
    else:
        labels = random_batch(batch, T5_TARGET_LEN, vocab, seed=1)[0]
    if which == "softprompt":
        options = {"length": length, **REPARAM_METHODS.get(method, {})}
        model = softprompt.attach(backbone, method=method, seed=0, **options)
        params = model.trainable_parameters()

        def loss_fn():
            return model(ids, mask, labels, return_logits=False).loss
    else:
        model = attach_peft(backbone, length, "CAUSAL_LM" if kind == "smollm2" else "SEQ_2_SEQ_LM")
        params = [p for p in model.parameters() if p.requires_grad]

        def loss_fn():
            return model(input_ids=ids, attention_mask=mask, labels=labels).loss
    model.eval()  # dropout off in both (the T5 config has dropout 0.1); cost is the same
    optimizer = torch.optim.AdamW(params, lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        return loss

    return step, model


def memory_child(kind, which, length, batch, text_len, steps=3, model_spec=None):
    step, model = build(kind, which, length, batch, text_len, model=model_spec)
    with torch.no_grad():  # page in memory-mapped weights, so the baseline holds the whole model
        for p in model.parameters():
            p.sum()
    # Reset before the first step: memory a step frees is kept by the allocator, so a
    # baseline taken after a warm-up step would already hold the step's own peak.
    base = reset_peak_rss()
    for _ in range(steps):
        step()
    peak = peak_rss()
    return {"baseline": base, "peak": peak, "extra": peak - base}


def reparam_cost(backbone, length: int, step_median: float, rounds: int = 50) -> dict[str, dict]:
    """Time ``prompt_embeddings()`` forward+backward per method; fraction of a step."""
    out = {}
    for method, options in REPARAM_METHODS.items():
        model = softprompt.attach(backbone, method=method, length=length, seed=0, **options)
        model.train()

        def call():
            emb = model.prompt_embeddings()
            emb.sum().backward()

        for _ in range(5):
            call()
        times = [timed(call) for _ in range(rounds)]
        out[method] = {"seconds": median(times), "fraction_of_step": median(times) / step_median}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", nargs="?", default="smollm2", choices=["smollm2", "t5"],
                        help="smollm2: the decoder-only step on --model (default); t5: t5-base's sizes, random weights")
    parser.add_argument("--length", type=int, default=100, help="prompt length n")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-len", type=int, default=None, help="text tokens per row (48 smollm2, 128 t5)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-child", choices=["softprompt", "peft"], help=argparse.SUPPRESS)
    add_model_option(parser)
    add_thread_option(parser)
    args = parser.parse_args(argv)
    if args.kind == "t5" and model_tag(args.model):
        parser.error("--model names the decoder-only backbone; t5 builds its own")
    set_threads(args.threads)
    text_len = args.text_len or (48 if args.kind == "smollm2" else 128)
    if args.memory_child:
        print(json.dumps(memory_child(args.kind, args.memory_child, args.length, args.batch, text_len, model_spec=args.model)))
        return 0

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32")
    backbone = load_model(args.model)[0] if args.kind == "smollm2" else t5_base_random()
    name = model_name(args.model) if args.kind == "smollm2" else "t5-base sizes, random weights"
    # Build softprompt first: get_peft_model wraps (but does not change) the same backbone.
    sp_step, sp_model = build(args.kind, "softprompt", args.length, args.batch, text_len, backbone=backbone)
    peft_step, peft_model = build(args.kind, "peft", args.length, args.batch, text_len, backbone=backbone)
    times = alternate({"softprompt": sp_step, "peft": peft_step}, rounds=args.rounds, warmup=2)
    sp, pf = median(times["softprompt"]), median(times["peft"])
    print(f"{name}: batch {args.batch}, text {text_len}, prompt {args.length}, one step (fwd, bwd, AdamW)")
    print(f"  softprompt  {fmt_times(times['softprompt'])}")
    print(f"  peft        {fmt_times(times['peft'])}")
    paired = median([a / b for a, b in zip(times["softprompt"], times["peft"])])
    print(f"  ratio softprompt / peft = {sp / pf:.3f} (of medians); {paired:.3f} (median of per-round ratios)")
    print(f"  load average during the run: {load_average()}")
    result = {"kind": args.kind, "model": name, "batch": args.batch, "text_len": text_len, "length": args.length,
              "threads": torch.get_num_threads(), "softprompt_s": times["softprompt"], "peft_s": times["peft"],
              "softprompt_median": sp, "peft_median": pf, "ratio": sp / pf, "paired_ratio": paired,
              "load_average": load_average()}

    reparam = reparam_cost(sp_model.backbone, args.length, sp)
    print("  reparameterization cost (prompt_embeddings forward+backward, median):")
    for method, r in reparam.items():
        print(f"    {method:9s} {r['seconds'] * 1e3:8.3f} ms = {100 * r['fraction_of_step']:.3f}% of a softprompt step")
    result["reparam"] = reparam

    if not args.no_memory:
        del sp_model, peft_model, backbone
        child_args = [args.kind, "--model", args.model, "--threads", str(torch.get_num_threads()),
                      "--length", str(args.length), "--batch", str(args.batch), "--text-len", str(text_len)]
        mem = {which: run_memory_child("benchmarks.step_time", [which, *child_args]) for which in ("softprompt", "peft")}
        for which, m in mem.items():
            print(f"  peak RSS {which:10s}: step needs {mib(m['extra'])} over the loaded model "
                  f"({mib(m['baseline'])}); process peak {mib(m['peak'])}")
        print(f"  memory ratio (extra) softprompt / peft = {mem['softprompt']['extra'] / mem['peft']['extra']:.3f}")
        result["memory"] = mem
    stem = (model_tag(args.model)[1:] or "smollm2") if args.kind == "smollm2" else "t5"
    write_json(RESULTS / f"step_time_{stem}_threads{torch.get_num_threads()}.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
