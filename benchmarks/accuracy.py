"""Accuracy against PEFT prompt tuning: the same backbone, template, label words, training
rows, batches, step budget and seeds; softprompt with its defaults, PEFT with its best
learning rate from a small grid chosen on validation.

    python -m benchmarks.accuracy --tasks sst2,rte,cb --seeds 0,1,2 --data-dir ../shared/data

Per task and seed, the training split loses ``--holdout`` rows (a fixed permutation, the same
for everyone) that serve as the validation set: every run keeps the checkpoint that scores best
there, and PEFT's learning rate is the one whose mean validation score is best. The reported
metric is on the official validation split (the test split's labels are not public), which no
choice ever looked at. Evaluation is rank classification over the label words for both.

softprompt: ``softprompt.train`` with the decoder-only recipe (template, label words, objective,
learning rate, warmup: whatever the library defaults to). PEFT: ``PromptTuningConfig`` with text
init (the embeddings of "Answer with <word> or <word>." repeated), trained on the language-model
loss of the label word + EOS (its usual recipe), AdamW, the same warmup and linear decay as
softprompt's recipe, the same batch order (softprompt's length-grouped stream, same seed).

Results: ``benchmarks/results/accuracy.json`` (every run) and a Markdown table on stdout.
``--report --include OTHER.json`` prints one table of runs from several launches, paired by seed;
``--rename VARIANT:NAME`` counts a variant's runs as a method's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from benchmarks.common import RESULTS, set_threads, write_json
from softprompt.lock import FileLock, LockHeld
from softprompt import settings

BENCHMARK_DIRS = {"glue": "glue", "superglue": "superglue"}


def data_dir_for(task, root: str) -> str:
    return str(Path(root) / BENCHMARK_DIRS.get(task.benchmark, task.benchmark))


def holdout_for(n_train: int, wanted: int) -> int:
    """``wanted`` rows, but never more than a fifth of a small training split (CB has 250)."""
    return max(8, min(wanted, n_train // 5))


def base_config(args, task_name: str, seed: int, root: str, n_train: int, **extra):
    from softprompt.config import TrainConfig
    from softprompt.tasks import get_task

    task = get_task(task_name)
    return TrainConfig(task=task_name, seed=seed, data_dir=data_dir_for(task, root), length=args.length,
                       max_steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every,
                       eval_batch_size=64, max_length=args.max_length, holdout=holdout_for(n_train, args.holdout),
                       zero_shot=False, log_every=50, **extra)


# -- softprompt ------------------------------------------------------------------------------

def run_softprompt(args, method: str, task_name: str, seed: int, backbone, tokenizer, n_train: int, **overrides) -> dict:
    from softprompt.train import train

    variant = method + "".join(f"-{k}={v}" for k, v in sorted(overrides.items()))
    out = Path(args.work) / task_name / variant / f"seed-{seed}"
    config = base_config(args, task_name, seed, args.data_dir, n_train, method=method, output_dir=str(out), overwrite=True,
                         **overrides)
    started = time.time()
    metrics = train(config, backbone, tokenizer)
    metric = metrics["selection_metric"]
    resolved = json.loads((out / "config.json").read_text())
    return {"library": "softprompt", "method": method, "task": task_name, "seed": seed, "metric": metric,
            "validation": metrics["best_validation"][metric], "test": metrics["test"][metric],
            "best_step": metrics["best_step"], "trainable_parameters": metrics["trainable_parameters"],
            "test_n": metrics["test"].get("n"), "lr": resolved["lr"], "objective": resolved["objective"],
            "wall_seconds": time.time() - started}


# -- PEFT --------------------------------------------------------------------------------------


class PeftScorer(torch.nn.Module):
    """A PEFT prompt-tuning model behind softprompt's scoring interface (``choice_scores``,
    ``frozen_prompt``), so both libraries are evaluated by the same code. Right padding: PEFT
    puts its virtual tokens first, so with left padding pads would sit between them and the text."""

    def __init__(self, peft_model, n_virtual: int):
        super().__init__()
        self.peft, self.n = peft_model, n_virtual
        self.backbone = peft_model.get_base_model()
        from softprompt.backbones import join_for

        self.join = join_for(self.backbone)

    def frozen_prompt(self):
        return contextlib.nullcontext()

    def choice_scores(self, input_ids, attention_mask, labels, choice_tokens=None, choice_rows=None):
        if choice_tokens is None:
            raise ValueError("the PEFT scorer handles single-token label words only")
        logits = self.peft(input_ids=input_ids, attention_mask=attention_mask).logits  # [B, n+T, V]
        rows, cols = (labels != -100).nonzero(as_tuple=True)
        picked = torch.log_softmax(logits[rows, self.n + cols - 1].float(), -1)  # the position before each label
        return picked.gather(1, choice_tokens.clamp(min=0)).masked_fill(choice_tokens < 0, float("-inf"))


def run_peft(args, task_name: str, seed: int, lr: float, tokenizer, n_train: int) -> dict:
    from peft import PromptTuningConfig, get_peft_model

    from softprompt.backbones import load_backbone
    from softprompt.batching import encode_examples, collate, pad_id
    from softprompt.evaluate import evaluate
    from softprompt.tasks import get_task
    from softprompt.train import Stream, lr_at, load_data

    started = time.time()
    backbone, tokenizer = load_backbone(args.model)  # fresh: PEFT wraps the model it is given
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backbone.to(device)
    config = settings.resolved(base_config(args, task_name, seed, args.data_dir, n_train, method="prompt"), "decoder-only")
    task = get_task(task_name, style=config.style)
    train_rows, validation, test, _ = load_data(config, task)
    encoded = encode_examples(train_rows, tokenizer, "decoder-only", config.max_length, config.separator)
    model = get_peft_model(backbone, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=args.length))
    init_text = f"Answer with {' or '.join(task.label_words)}."
    ids = tokenizer(init_text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor((ids * (args.length // len(ids) + 1))[: args.length], device=device)
    embedding = model.prompt_encoder["default"].embedding
    with torch.no_grad():
        embedding.weight.copy_(backbone.get_input_embeddings()(ids))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    stream = Stream([len(e) for e in encoded], config.batch_size, seed)
    torch.manual_seed(seed)
    pad = pad_id(tokenizer)
    scorer = PeftScorer(model, args.length)
    best, best_state, best_step = None, None, None
    model.train()
    for step in range(config.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config.max_steps, config.warmup_steps, lr)
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in stream.next()], pad).items()}  # right padding
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % config.eval_every == 0 or step + 1 == config.max_steps:
            value = evaluate(scorer, tokenizer, task, validation, mode="rank", batch_size=64,
                             max_length=config.max_length, separator=config.separator)[task.metrics[0]]
            if best is None or value > best:
                best, best_step, best_state = value, step + 1, embedding.weight.detach().clone()
            model.train()
    with torch.no_grad():
        embedding.weight.copy_(best_state)
    tested = evaluate(scorer, tokenizer, task, test, mode="rank", batch_size=64,
                      max_length=config.max_length, separator=config.separator)
    return {"library": "peft", "method": "peft-prompt", "task": task_name, "seed": seed, "metric": task.metrics[0],
            "validation": best, "test": tested[task.metrics[0]], "test_n": tested.get("n"), "best_step": best_step,
            "trainable_parameters": sum(p.numel() for p in params),
            "lr": lr, "objective": "lm", "wall_seconds": time.time() - started}


# -- the table -----------------------------------------------------------------------------------


def zero_shot(args, task_name: str, backbone, tokenizer, n_train: int) -> float:
    from softprompt.evaluate import NoPrompt, evaluate
    from softprompt.tasks import get_task
    from softprompt.train import load_data

    config = settings.resolved(base_config(args, task_name, 0, args.data_dir, n_train, method="prompt"), "decoder-only")
    task = get_task(task_name, style=config.style)
    _, _, test, _ = load_data(config, task)
    return evaluate(NoPrompt(backbone), tokenizer, task, test, mode="rank", batch_size=64, max_length=config.max_length,
                    separator=config.separator)[task.metrics[0]]


def table(runs: list[dict], zero: dict[str, float], tasks: list[str]) -> str:
    most = max(Counter((r["method"], r["task"]) for r in runs).values(), default=0)  # seeds of the fullest cell

    def cell(rows):
        values = [100 * r["test"] for r in rows]
        if not values:
            return "-"
        if len(values) == 1:
            return f"{values[0]:.1f} (n=1)"
        return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}" + (f" (n={len(values)})" if len(values) < most else "")

    names = list(dict.fromkeys(r["method"] for r in runs))
    lines = ["| method | params | " + " | ".join(tasks) + " |", "|---|---|" + "---|" * len(tasks)]
    lines.append("| zero-shot (template only) | 0 | " + " | ".join(f"{100 * zero[t]:.1f}" if t in zero else "-" for t in tasks) + " |")
    for name in names:
        rows = [r for r in runs if r["method"] == name]
        params = f"{rows[0]['trainable_parameters']:,}"
        lines.append(f"| {name} | {params} | " + " | ".join(cell([r for r in rows if r["task"] == t]) for t in tasks) + " |")
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
    known = [f"{t} {n} rows (one row = {100 / n:.1f} points)" for t, n in sizes.items() if n]
    if known:
        lines.append("\nReported split: " + ", ".join(known) + ".")
    return "\n".join(lines)


def parse_variant(spec: str) -> tuple[str, dict]:
    """``ulpt`` or ``ulpt@objective=lm;lr=0.05``: a method and config overrides (YAML values)."""
    from softprompt.config import load_yaml

    method, _, rest = spec.partition("@")
    overrides = {}
    for pair in filter(None, rest.split(";")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--methods: {spec!r}: expected method@key=value;key=value")
        overrides[key.strip()] = load_yaml(value)
    return method.strip(), overrides


def jobs_for(args, tasks, seeds, methods, lrs) -> list[tuple]:
    """Every run of the benchmark as ``(kind, task, seed, method-or-lr)``: zero-shot first, then
    seed by seed, so a benchmark stopped early has whole seeds of every task."""
    jobs = [("zero", t, None, None) for t in tasks]
    for seed in seeds:
        for task_name in tasks:
            jobs += [("softprompt", task_name, seed, m) for m in methods]
            jobs += [("peft", task_name, seed, lr) for lr in lrs]
    return jobs


def job_key(job) -> str:
    return json.dumps(job)


def run_job(args, job, backbone, tokenizer, n_train: dict) -> dict:
    kind, task_name, seed, what = job
    if kind == "zero":
        return {"job": job_key(job), "zero_shot": zero_shot(args, task_name, backbone, tokenizer, n_train[task_name])}
    if kind == "peft":
        return {"job": job_key(job), **run_peft(args, task_name, seed, what, tokenizer, n_train[task_name])}
    method, overrides = parse_variant(what)
    result = run_softprompt(args, method, task_name, seed, backbone, tokenizer, n_train[task_name], **overrides)
    return {"job": job_key(job), **result, "method": what}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="sst2,rte,cb")
    parser.add_argument("--methods", default="prompt,residual,dpt,ulpt,dept,rank_probe",
                        help="comma-separated methods, each optionally with config overrides: "
                             "prompt,ulpt@objective=lm;lr=0.05")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--peft-lrs", default="3e-3,1e-2,3e-2",
                        help="PEFT's learning-rate grid (with --report: the lrs its choice is made among)")
    parser.add_argument("--model", default=None, help="backbone (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--data-dir", default="../shared/data", help="folder holding glue/ and superglue/")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--holdout", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes sharing the runs (one device; useful on a GPU, where one "
                             "small model leaves most of it idle)")
    parser.add_argument("--report", action="store_true", help="only print the table of the runs in --output")
    parser.add_argument("--include", action="append", default=[], metavar="FILE",
                        help="with --report: another results file whose runs join --output's in the table "
                             "(read only; repeat for more)")
    parser.add_argument("--rename", action="append", default=[], metavar="VARIANT:NAME",
                        help="with --report: count VARIANT's runs as NAME's, e.g. 'ulpt@sink=bos:ulpt' for a "
                             "variant whose overrides the recipe has since adopted")
    parser.add_argument("--shard", default=None, help=argparse.SUPPRESS)  # k/N: a worker's share
    parser.add_argument("--work", default="/tmp/softprompt-accuracy", help="where the runs go")
    parser.add_argument("--output", default=str(RESULTS / "accuracy.json"))
    args = parser.parse_args(argv)
    if (args.include or args.rename) and not args.report:
        parser.error("--include and --rename only shape a --report")
    set_threads(args.threads)

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    lrs = [float(x) for x in args.peft_lrs.split(",") if x.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    output = Path(args.output)
    lock = None if args.shard is not None else hold(output)  # noqa: F841 (held until the process ends)
    done = json.loads(output.read_text()) if output.is_file() else {"runs": [], "zero_shot": {}}
    finished = {r["job"] for r in done["runs"] if "job" in r} | {json.dumps(["zero", t, None, None]) for t in done["zero_shot"]}
    todo = [j for j in jobs_for(args, tasks, seeds, methods, lrs) if job_key(j) not in finished]

    if args.shard is not None:  # a worker: run its share, one JSON line per result
        k, n = (int(x) for x in args.shard.split("/"))
        return run_jobs(args, todo[k::n], record=lambda r: print("RESULT " + json.dumps(r), flush=True))

    def record(result: dict) -> None:
        if "zero_shot" in result:
            done["zero_shot"][json.loads(result["job"])[1]] = result["zero_shot"]
        else:
            done["runs"].append(result)
        write_json(output, done)  # after every run: an interrupted benchmark loses one run at most
        print(json.dumps(result), flush=True)

    if args.report:
        pass
    elif args.jobs > 1 and todo:
        run_workers(argv if argv is not None else sys.argv[1:], args.jobs, record)
    else:
        run_jobs(args, todo, record)

    merged = merge_results([(output, done), *((Path(f), json.loads(Path(f).read_text())) for f in args.include)],
                           dict(parse_rename(r) for r in args.rename))
    # PEFT: the learning rate with the best mean validation score, per task
    runs = [r for r in merged["runs"] if r["library"] == "softprompt" and r["task"] in tasks and r["seed"] in seeds]
    peft_name = "PEFT prompt tuning (lr: best on validation)"
    chosen = {}
    for task_name in tasks:
        peft = [r for r in merged["runs"]
                if r["library"] == "peft" and r["task"] == task_name and r["seed"] in seeds and r["lr"] in lrs]
        if peft:
            by_lr = {lr: [r for r in peft if r["lr"] == lr] for lr in {r["lr"] for r in peft}}
            best_lr = max(by_lr, key=lambda lr: statistics.fmean(r["validation"] for r in by_lr[lr]))
            runs += [{**r, "method": peft_name} for r in by_lr[best_lr]]
            chosen[task_name] = best_lr
            print(f"PEFT on {task_name}: lr {best_lr:g} (mean validation by lr: "
                  + ", ".join(f"{lr:g} {100 * statistics.fmean(r['validation'] for r in rows):.1f} (n={len(rows)})"
                              for lr, rows in sorted(by_lr.items())) + ")", file=sys.stderr)
    if not args.include and not args.rename:  # the choice belongs to --output's own runs only
        if chosen:
            done.setdefault("peft_best_lr", {}).update(chosen)
        write_json(output, done)
    print(table(runs, merged["zero_shot"], tasks))
    if any(r["method"] == peft_name for r in runs):
        print("\n" + against(runs, tasks, peft_name))
    return 0


def parse_rename(spec: str) -> tuple[str, str]:
    """``ulpt@sink=bos:ulpt`` → ``("ulpt@sink=bos", "ulpt")``: the last colon splits."""
    variant, sep, name = spec.rpartition(":")
    if not sep or not variant.strip() or not name.strip():
        raise SystemExit(f"--rename: {spec!r}: expected VARIANT:NAME, e.g. 'ulpt@sink=bos:ulpt'")
    return variant.strip(), name.strip()


def merge_results(files: list[tuple[Path, dict]], rename: dict[str, str]) -> dict:
    """The runs and zero-shot figures of several results files as one, for a table that pairs
    records measured in separate launches. ``rename`` maps a softprompt variant's name to the one
    its runs count as. Two records of one (library, method, task, seed, lr) are an error that names
    both files: silently keeping either would choose a figure."""
    runs, zero, seen = [], {}, {}
    for path, data in files:
        for task_name, value in data.get("zero_shot", {}).items():
            zero.setdefault(task_name, value)
        for r in data.get("runs", []):
            r = {**r, "method": rename.get(r["method"], r["method"])} if r["library"] == "softprompt" else r
            key = (r["library"], r["method"], r["task"], r["seed"], r["lr"] if r["library"] == "peft" else None)
            if key in seen:
                what = f"{r['method']} on {r['task']}, seed {r['seed']}" + (f", lr {r['lr']:g}" if key[4] is not None else "")
                raise SystemExit(f"{path}: {what} is also in {seen[key]}; give each run to the report once")
            seen[key] = path
            runs.append(r)
    return {"runs": runs, "zero_shot": zero}


def hold(output: Path):
    """Take the output file's lock (``.NAME.lock`` beside it) for this process's life, or stop: a
    second launch onto the same file would run the first's pending jobs beside it and overwrite
    its records (the file is read once, at the start). Workers (``--shard``) take none."""
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        return FileLock.take(output.with_name(f".{output.name}.lock"))
    except LockHeld as held:
        raise SystemExit(f"{output}: another benchmark is writing this file (pid {held.holder}); "
                         "wait for it to finish or give another --output") from None


def run_jobs(args, jobs, record) -> int:
    from softprompt.backbones import load_backbone
    from softprompt.tasks import get_task

    if not jobs:
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backbone, tokenizer = load_backbone(args.model)
    backbone.to(device)
    n_train = {}
    for task_name in {j[1] for j in jobs}:
        task = get_task(task_name)
        n_train[task_name] = len(task.load("train", data_dir=data_dir_for(task, args.data_dir)))
    for job in jobs:
        record(run_job(args, job, backbone, tokenizer, n_train))
    return 0


def run_workers(argv: list[str], n: int, record) -> None:
    """``n`` copies of this script, each running every n-th pending job; results stream back as
    ``RESULT {json}`` lines and are recorded here, so the output file has one writer."""
    import subprocess
    import threading

    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.accuracy", *argv, "--shard", f"{k}/{n}"],
                              stdout=subprocess.PIPE, text=True) for k in range(n)]
    lock = threading.Lock()

    def pump(proc):
        for line in proc.stdout:
            if line.startswith("RESULT "):
                with lock:
                    record(json.loads(line[len("RESULT "):]))

    threads = [threading.Thread(target=pump, args=(p,)) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [p.wait() for p in procs]
    if any(failed):
        print(f"warning: workers exited with {failed}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
