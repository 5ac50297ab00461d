"""Peak memory of a SmolLM2 prompt-tuning step by backbone dtype: float32, bf16 and (where
bitsandbytes runs, a CUDA GPU) 4-bit, and how far their losses are from float32's.

    python -m benchmarks.memory --threads 1                       # CPU: float32 and bf16, prompts of 20 and 100
    python -m benchmarks.memory --device cuda --dtypes float32,bfloat16,4bit   # a GPU (benchmarks/gpu_check.sh)

Each configuration runs in its own fresh process (``--memory-child``): it loads the embedded
SmolLM2-135M-Instruct through ``load_backbone`` with the dtype (or quantization), attaches a ULPT
prompt (rank 2) and AdamW, and runs ``--steps`` training steps of batch 8 x 48 tokens (random
tokens, the last two of each row labeled, as a label word and EOS are; the packed step,
``return_logits=False``). It reports

* ``runtime``: the resident set before any weight is read (Python, torch, transformers), which
  no dtype changes; ``load``: once the model is loaded (a float32 model's weights are the
  safetensors file, memory-mapped: a page counts once it is read);
* ``step peak``: the resident-set high-water mark during the steps (``VmHWM`` after resetting it
  once the model, prompt and optimizer are built; benchmarks/common.py);
* ``load peak`` and ``process peak``: the high-water mark while loading, and of the whole
  process (transformers may hold a float32 copy of a tensor while it casts it to bf16);
* on a GPU, ``torch.cuda.max_memory_allocated`` during the steps (``cuda max allocated``), and
  after and during the load;
* the loss of every step, and its largest difference from float32's (same prompt, same batches).

Writes ``benchmarks/results/memory_<device>_threads<N>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from benchmarks.common import RESULTS, add_thread_option, load_average, mib, peak_rss, reset_peak_rss, run_memory_child, set_threads, write_json

BATCH, TOKENS, LABELED = 8, 48, 2


def child(args) -> dict:
    """One configuration in this (fresh) process; returns its figures."""
    import softprompt
    from softprompt.backbones import load_backbone
    from transformers import AutoModelForCausalLM  # noqa: F401 - the runtime, before any weight
    from transformers.models.llama import modeling_llama  # noqa: F401

    set_threads(args.threads)
    runtime = reset_peak_rss()  # Python, torch, transformers: what no dtype changes
    quantize = args.dtype if args.dtype.endswith("bit") else None
    dtype = "bfloat16" if quantize else args.dtype  # QLoRA's: the unquantized parts in bf16
    started = time.perf_counter()
    backbone, _ = load_backbone(None, dtype, quantize=quantize)
    if args.device == "cuda" and not quantize:
        backbone.to("cuda")
    load_seconds = time.perf_counter() - started
    load_peak = peak_rss()  # VmHWM so far: the load's peak, read before the reset below clears it
    loaded = reset_peak_rss()
    gpu: dict[str, int] = {}
    if args.device == "cuda":
        gpu = {"cuda_after_load": torch.cuda.memory_allocated(), "cuda_load_peak": torch.cuda.max_memory_allocated()}
        torch.cuda.reset_peak_memory_stats()
    model = softprompt.attach(backbone, "ulpt", length=args.length, rank=2, seed=0).train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    losses = []
    before_steps = reset_peak_rss()
    step_started = time.perf_counter()
    for _ in range(args.steps):
        ids = torch.randint(100, backbone.config.vocab_size - 100, (BATCH, TOKENS), generator=g).to(model.device)
        mask = torch.ones_like(ids)
        labels = ids.masked_fill(torch.arange(TOKENS, device=ids.device) < TOKENS - LABELED, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, return_logits=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    step_peak = peak_rss()
    record = {
        "dtype": args.dtype, "length": args.length, "device": args.device,
        "weights_dtype": str(next(p.dtype for p in backbone.parameters() if p.is_floating_point())).removeprefix("torch."),
        "prompt_dtype": str(model.prompt_embeddings().dtype).removeprefix("torch."),
        "runtime_rss": runtime, "load_rss": loaded, "rss_before_steps": before_steps, "step_peak_rss": step_peak,
        "load_peak_rss": load_peak, "process_peak_rss": max(load_peak, step_peak),
        "load_seconds": load_seconds, "step_seconds": (time.perf_counter() - step_started) / args.steps,
        "losses": losses,
    }
    if args.device == "cuda":  # the step's peak: weights, activations, the prompt and AdamW
        record.update(gpu, cuda_max_allocated=torch.cuda.max_memory_allocated())
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtypes", default="float32,bfloat16,4bit", help="backbone dtypes (4bit/8bit: bitsandbytes)")
    parser.add_argument("--lengths", default="20,100", help="prompt lengths")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    add_thread_option(parser)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(child(args)))
        return 0

    from softprompt.backbones import PlacementError
    from softprompt.backbones.placement import quantization_config

    results = {"load_average_before": load_average(), "threads": args.threads, "batch": BATCH, "tokens": TOKENS,
               "steps": args.steps, "device": args.device, "torch": torch.__version__, "runs": [], "skipped": {}}
    for dtype in args.dtypes.split(","):
        if dtype.endswith("bit"):
            try:
                quantization_config(dtype, "decoder-only")
            except PlacementError as err:  # no CUDA or no bitsandbytes: say so, measure the rest
                results["skipped"][dtype] = str(err)
                print(f"{dtype}: skipped ({err})", flush=True)
                continue
        for length in map(int, args.lengths.split(",")):
            extra = ["--dtype", dtype, "--length", str(length), "--steps", str(args.steps), "--device", args.device]
            if args.threads:
                extra += ["--threads", str(args.threads)]
            try:
                record = run_memory_child("benchmarks.memory", extra)
            except RuntimeError as err:  # one configuration failing (a GPU kernel, bitsandbytes) leaves the rest
                results["skipped"][f"{dtype} n={length}"] = str(err).strip().splitlines()[-1]
                print(f"{dtype} n={length}: failed ({results['skipped'][f'{dtype} n={length}']})", flush=True)
                continue
            results["runs"].append(record)
            gpu = f", cuda max allocated {mib(record['cuda_max_allocated'])}" if "cuda_max_allocated" in record else ""
            print(f"{dtype:9} n={length:3}: runtime {mib(record['runtime_rss'])}, load {mib(record['load_rss'])}, step peak {mib(record['step_peak_rss'])}, "
                  f"process peak {mib(record['process_peak_rss'])}{gpu}; {record['step_seconds']:.2f} s/step; "
                  f"losses {', '.join(f'{x:.4f}' for x in record['losses'])}", flush=True)
    by = {(r["dtype"], r["length"]): r for r in results["runs"]}
    for (dtype, length), r in by.items():
        base = by.get(("float32", length))
        if base is None or dtype == "float32":
            continue
        r["vs_float32"] = {
            "step_peak": r["step_peak_rss"] / base["step_peak_rss"],
            "step_peak_above_runtime": (r["step_peak_rss"] - r["runtime_rss"]) / (base["step_peak_rss"] - base["runtime_rss"]),
            "process_peak": r["process_peak_rss"] / base["process_peak_rss"],
            "load": r["load_rss"] / base["load_rss"],
            # the first step's loss is the same prompt on the same batch; later steps follow
            # trajectories that the first bf16 gradient already moved apart
            "first_loss_difference": abs(r["losses"][0] - base["losses"][0]),
            "max_loss_difference": max(abs(a - b) for a, b in zip(r["losses"], base["losses"])),
        }
        if "cuda_max_allocated" in r and "cuda_max_allocated" in base:
            r["vs_float32"]["cuda_step_peak"] = r["cuda_max_allocated"] / base["cuda_max_allocated"]
            print(f"{dtype} / float32, n={length}: cuda max allocated x{r['vs_float32']['cuda_step_peak']:.2f}")
        print(f"{dtype} / float32, n={length}: step peak x{r['vs_float32']['step_peak']:.2f} "
              f"(above the runtime x{r['vs_float32']['step_peak_above_runtime']:.2f}), process peak "
              f"x{r['vs_float32']['process_peak']:.2f}, after load x{r['vs_float32']['load']:.2f}; "
              f"loss difference {r['vs_float32']['first_loss_difference']:.4f} at the first step, "
              f"{r['vs_float32']['max_loss_difference']:.4f} at most")
    results["load_average_after"] = load_average()
    out = RESULTS / f"memory_{args.device}_threads{args.threads or torch.get_num_threads()}.json"
    write_json(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
