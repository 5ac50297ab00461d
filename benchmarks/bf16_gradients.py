"""How far bf16 autocast moves a prompt's gradient: the gradient of the loss with respect to the
materialized prompt ``[n, d]`` and to the method's own parameters, in float32 and under bf16
autocast, on real training batches at the prompt's initialization.

    python -m benchmarks.bf16_gradients --methods ulpt,prompt --batches 4          # CPU: ~10 min
    python -m benchmarks.bf16_gradients --methods "ulpt,ulpt@sink=bos"             # a variant: method@key=value;...
    python -m benchmarks.bf16_gradients --device cuda --methods ulpt,prompt,dpt   # a GPU

Prints, per method and batch, the cosine between the two gradients overall, per parameter and
for the first prompt rows (a decoder's first positions are its attention sink), and writes the
figures to ``benchmarks/results/bf16_gradients_<device>.json``. The backbone, task, template and
objective are the accuracy benchmark's (decoder-only recipe, SST-2, 20 tokens, batches of 16).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from benchmarks.common import RESULTS, set_threads, write_json


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def measure(spec: str, args, backbone, tokenizer) -> list[dict]:
    from benchmarks.accuracy_runs import parse_variant
    from softprompt import attach
    from softprompt.backbones import join_for
    from softprompt.config import TrainConfig
    from softprompt.settings import resolved
    from softprompt.train import load_data, training_batches

    method, overrides = parse_variant(spec)  # e.g. ulpt@sink=bos
    kind = join_for(backbone).kind
    config = TrainConfig(task="sst2", method=method, seed=args.seed, data_dir=args.data_dir, length=args.length,
                         batch_size=args.batch_size, holdout=200, **overrides)
    task = config.build_task("instruction")
    config = resolved(config, kind, classification=True, label_words=task.label_words)
    examples = load_data(config, task)[0]
    model = attach(backbone, method, tokenizer=tokenizer, seed=args.seed, config=config.prompt_config()).to(args.device)
    _, make_batch = training_batches(config, examples, tokenizer, kind, task)
    seen: dict[str, torch.Tensor] = {}

    def keep(module, inputs, output):  # the gradient reaching the materialized prompt [n, d]
        output.register_hook(lambda grad: seen.__setitem__("prompt", grad.detach().float().cpu()))

    hook = model.prompt.register_forward_hook(keep)

    def gradients(batch, bf16: bool) -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch, return_logits=False).loss
        loss.backward()
        grads = {name: p.grad.detach().float().cpu() for name, p in model.named_parameters() if p.requires_grad}
        return float(loss.detach()), {"prompt rows": seen["prompt"], **grads}

    records = []
    for b in range(args.batches):
        index = list(range(b * args.batch_size, (b + 1) * args.batch_size))
        batch = {k: v.to(args.device) for k, v in make_batch(index).items()}
        loss32, full = gradients(batch, False)
        loss16, half = gradients(batch, True)
        rows = full["prompt rows"]
        record = {"method": spec, "batch": b, "loss_float32": loss32, "loss_bf16": loss16,
                  "cosine": {name: cosine(full[name], half[name]) for name in full},
                  "row_cosine": [cosine(rows[i], half["prompt rows"][i]) for i in range(min(4, rows.shape[0]))],
                  "row_norm": [float(rows[i].norm()) for i in range(min(4, rows.shape[0]))],
                  "rest_norm": float(rows[4:].norm())}
        records.append(record)
        shown = ", ".join(f"{k} {v:+.3f}" for k, v in record["cosine"].items())
        print(f"{spec} batch {b}: loss {loss32:.4f} / {loss16:.4f}; cosine {shown}; first rows "
              + " ".join(f"{c:+.2f}" for c in record["row_cosine"]), flush=True)
    hook.remove()
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="ulpt,prompt")
    parser.add_argument("--model", default=None, help="backbone (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--data-dir", default="../shared/data/glue")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    from softprompt.backbones import load_backbone

    records = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        backbone, tokenizer = load_backbone(args.model)  # a fresh backbone: attach freezes and wraps it
        records += measure(method, args, backbone.to(args.device), tokenizer)
    write_json(args.output or RESULTS / f"bf16_gradients_{args.device}.json", {"runs": records})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
