"""The accuracy benchmark's runs (``benchmarks.accuracy``): the data each task trains and reports
on, one run's config, softprompt's run and the zero-shot baseline, each run timed.

Splits. Training uses the task's train split minus ``holdout`` rows (a fixed permutation,
``split_seed`` 42, the same for every method and seed), which choose the checkpoint (and PEFT's
lr); the official validation split is reported (SuperGLUE's and GLUE's test labels are not
public), and no choice ever looks at it. Where ``--data-dir`` has no full train split for a task
(``../shared/data`` has FewGLUE's 32-row ``train32.jsonl`` only for BoolQ and COPA), the run
trains on ``train32`` minus its held-out rows, and records ``train_split: train32``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.accuracy_peft import run_peft
from benchmarks.common import model_name, resolve_for

BENCHMARK_DIRS = {"glue": "glue", "superglue": "superglue"}


def data_dir_for(task, root: str) -> str:
    return str(Path(root) / BENCHMARK_DIRS.get(task.benchmark, task.benchmark))


def holdout_for(n_train: int, wanted: int) -> int:
    """``wanted`` rows, but never more than a fifth of a small training split (CB has 250,
    FewGLUE's train32 32: 8 held out), and at least 8."""
    return max(8, min(wanted, n_train // 5))


@dataclass(frozen=True)
class TaskData:
    """Where a task's rows come from: ``files`` (TrainConfig's file options: none when the
    task's own files are under the data folder), the training split's name and size."""

    files: dict
    split: str
    n_train: int


def task_data(task_name: str, root: str) -> TaskData:
    """The task's full train split under ``root``, else FewGLUE's ``train32`` with the official
    validation split (the files named, so nothing else is read)."""
    from softprompt.tasks import get_task
    from softprompt.tasks.local import find_file

    task = get_task(task_name)
    folder = data_dir_for(task, root)
    try:
        find_file(task, "train", folder)
        return TaskData({}, "train", len(task.load("train", data_dir=folder)))
    except FileNotFoundError:
        pass
    try:
        files = {"train_file": str(find_file(task, "train32", folder)),
                 "validation_file": str(find_file(task, "validation", folder))}
    except FileNotFoundError as missing:
        raise SystemExit(f"{task_name}: no train split under {folder} (nor FewGLUE's train32): {missing}") from None
    return TaskData(files, "train32", len(task.load("train32", data_dir=folder)))


def base_config(args, task_name: str, seed: int, data: TaskData, **extra):
    """One run's ``TrainConfig`` (unresolved: the recipe fills the rest): the benchmark's budget,
    its held-out rows, ``--limit-eval`` capping the held-out and reported rows."""
    from softprompt.config import TrainConfig
    from softprompt.tasks import get_task

    task = get_task(task_name)
    return TrainConfig(task=task_name, model=args.model, seed=seed, data_dir=data_dir_for(task, args.data_dir), **data.files,
                       length=args.length, max_steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every,
                       eval_batch_size=64, max_length=args.max_length, holdout=holdout_for(data.n_train, args.holdout),
                       max_eval_examples=args.limit_eval, max_test_examples=args.limit_eval, zero_shot=False, log_every=50,
                       **extra)


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


def run_softprompt(args, variant: str, task_name: str, seed: int, backbone, tokenizer, data: TaskData) -> dict:
    from softprompt.filenames import safe_filename
    from softprompt.train import train

    method, overrides = parse_variant(variant)
    folder = method + "".join(f"-{k}={v}" for k, v in sorted(overrides.items()))
    out = Path(args.work) / safe_filename(model_name(args.model)) / task_name / folder / f"seed-{seed}"
    config = base_config(args, task_name, seed, data, method=method, output_dir=str(out), overwrite=True, **overrides)
    metrics = train(config, backbone, tokenizer)
    metric = metrics["selection_metric"]
    resolved = json.loads((out / "config.json").read_text())
    return {"library": "softprompt", "method": variant, "task": task_name, "seed": seed, "metric": metric,
            "validation": metrics["best_validation"][metric], "test": metrics["test"][metric],
            "best_step": metrics["best_step"], "trainable_parameters": metrics["trainable_parameters"],
            "test_n": metrics["test"].get("n"), "lr": resolved["lr"], "objective": resolved["objective"],
            "holdout": resolved["holdout"]}


def zero_shot(args, task_name: str, backbone, tokenizer, data: TaskData) -> dict:
    """The backbone with the task's template and no prompt, on the reported split."""
    from softprompt.evaluate import NoPrompt, evaluate
    from softprompt.trainingdata import load_data

    config, task = resolve_for(base_config(args, task_name, 0, data, method="prompt"), backbone, tokenizer)
    _, _, test, _ = load_data(config, task)
    result = evaluate(NoPrompt(backbone), tokenizer, task, test, mode="rank", batch_size=64, max_length=config.max_length,
                      separator=config.separator, truncation_side=config.truncation_side)
    metric = task.metrics[0]
    return {"library": "zero-shot", "method": "zero-shot", "task": task_name, "seed": None, "metric": metric,
            "test": result[metric], "test_n": result["n"], "trainable_parameters": 0, "lr": None}


def run_job(args, job, backbone, tokenizer, data: dict[str, TaskData]) -> dict:
    """One job, ``(model, kind, task, seed, method-or-lr)``, as its result row: what it measured,
    the model, the training split, the wall time of the run (PEFT's includes loading its own
    backbone) and the machine's load averages (1, 5, 15 min) at its start and end."""
    model, kind, task_name, seed, what = job
    load, started = os.getloadavg(), time.time()
    if kind == "zero":
        row = zero_shot(args, task_name, backbone, tokenizer, data[task_name])
    elif kind == "peft":
        row = run_peft(base_config(args, task_name, seed, data[task_name], method="prompt"), what,
                       full_logits=args.peft_full_logits)
    else:
        row = run_softprompt(args, what, task_name, seed, backbone, tokenizer, data[task_name])
    return {"job": json.dumps(job), "model": model, **row, "train_split": data[task_name].split,
            "wall_seconds": time.time() - started, "load_average": {"start": list(load), "end": list(os.getloadavg())},
            "threads": torch.get_num_threads(), "device": "cuda" if torch.cuda.is_available() else "cpu"}


def run_jobs(args, jobs, record, tasks=None) -> int:
    """Every job in turn, on one loaded backbone, each row recorded as soon as it finishes.
    ``jobs``: a list, or an iterator of jobs handed one by one (a worker's) with the ``tasks``
    they may name."""
    from softprompt.backbones import load_backbone

    if isinstance(jobs, list):
        if not jobs:
            return 0
        tasks = [j[2] for j in jobs]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backbone, tokenizer = load_backbone(args.model)
    backbone.to(device)
    data = {name: task_data(name, args.data_dir) for name in dict.fromkeys(tasks)}
    for name, d in data.items():
        if d.split != "train":
            print(f"{name}: no full train split under {args.data_dir}; training on {d.split} ({d.n_train} rows, "
                  f"{holdout_for(d.n_train, args.holdout)} held out)", flush=True)
    for job in jobs:
        record(run_job(args, job, backbone, tokenizer, data))
    return 0
