"""Training a soft prompt: one explicit loop on accelerate, read top to bottom.

    metrics = train(TrainConfig(task="sst2", method="ulpt", length=20, rank=2, max_steps=150,
                                lr=0.05, data_dir="../shared/data/glue", output_dir="runs/x"))

A run, in order: open the output directory (checked once) -> task and data -> backbone and
prompt -> AdamW (or Adafactor) over the prompt's parameter groups -> resume from the checkpoint, or evaluate
zero-shot (the backbone with the task's template, no prompt) -> the loop: learning rate, forward
and backward over ``grad_accum`` micro-batches, clip, step, log, validate (keeping the best
prompt by the task's first metric), checkpoint -> test with the best prompt.

The data stream is continuous over epochs: epoch ``e`` visits ``length_grouped_order(seed, e)``
from index 0, and an optimizer step takes ``grad_accum`` micro-batches from wherever the stream
is. The checkpoint stores that position in ``RunState`` with the prompt, the optimizer and every
RNG state, so a resumed run replays exactly the batches and floats an uninterrupted one would
(bit-identical on CPU). The learning rate is a pure function of the step (``lr_at``).

Under a distributed launch (``distributed.py``; docs/distributed.md) every process runs this same
loop on its share of each global batch of ``batch_size × processes`` rows, and the prompt's
gradients are averaged before each step, so the processes keep identical prompts. Only the main
process writes the run's files; the others wait at a barrier where they would read them.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import distributed
from .backbones import enable_checkpointing
from .batching import apply_chat_template
from .checkpoint import STATE_FILE, backbone_fingerprint, check_backbone
from .config import TrainConfig
from .evaluate import NoPrompt, default_mode, evaluate
from .io import read_json
from .metrics import selection_metrics, with_selection
from .model import SoftPromptModel, attach
from .optim import T5XAdafactor, lr_at, make_optimizer, steps_per_epoch, total_steps_for, warmup_steps_for
from .plots import plot_run
from .progress import Progress
from .rundir import RunDir
from .runlog import summarize
from .settings import for_backbone, from_python, per_seed, style_for
from .trackers import Trackers
from .trainingdata import Stream, load_data, row_files, training_batches, write_rows
from .usage import usage_record

__all__ = ["RunState", "T5XAdafactor", "TrainingDiverged", "load_data", "lr_at", "make_optimizer", "steps_per_epoch",
           "total_steps_for", "train", "warmup_steps_for"]


class TrainingDiverged(RuntimeError):
    """The loss (or gradient) became NaN/inf; the last good prompt is in OUTPUT/prompt."""


@dataclass
class RunState:
    """Everything the loop changes, saved with each checkpoint (``state.json``)."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # the data stream's position: epoch and index within it
    index: int = 0
    best_value: float | None = None  # the selection metric of the best prompt so far
    best_step: int | None = None
    best_validation: dict[str, float] | None = None
    bad_evals: int = 0  # evaluations since the best (early stopping)
    zero_shot: dict[str, float] | None = None
    elapsed: float = 0.0  # seconds trained before this process (resumed runs)
    stopped: str | None = None  # "early_stopping" once patience runs out
    window_loss: float = 0.0  # loss summed since the last log line, so a resumed run logs the same averages
    processes: int = 1  # how many processes trained it: a global batch is batch_size × processes
    backbone: dict[str, Any] | None = None  # checkpoint.backbone_fingerprint: resume refuses another model


# ---------------------------------------------------------------------------------------
# Entry points


def train(config: TrainConfig, model: Any = None, tokenizer: Any = None, task: Any = None, *,
          train_data: Any = None, validation_data: Any = None, test_data: Any = None) -> dict[str, Any]:
    """Train (or resume) the run described by ``config``; returns the content of metrics.json
    (or, with ``seeds``, of summary.json: one run per seed in ``OUTPUT/seed-N``).

    Args:
        model: a transformers backbone (a prompt is attached) or a ready ``SoftPromptModel``;
            None loads ``config.model`` with ``softprompt.backbones.load_backbone`` (in
            ``config.dtype``, placed and quantized as the config says).
        tokenizer: the backbone's tokenizer (needed when ``model`` is given).
        task: a ``Task`` object instead of building it from ``config.task`` (a name or a task
            file) and the task options (``config.build_task``).
        train_data, validation_data, test_data: rows instead of files (a list of dicts, a
            ``datasets.Dataset``), written once to ``OUTPUT/data/<split>.jsonl``: the run records
            them as its ``train_file`` (...), so ``resume`` and ``softprompt eval`` read them there.
    Raises:
        RunExistsError, TrainingDiverged, ValueError/FileNotFoundError with one-line messages.

    A record built in Python is resolved first (``settings.from_python``: its recipe, the
    environment); the settings that depend on the backbone's kind once that is known.
    """
    rows = {k: v for k, v in dict(train_data=train_data, validation_data=validation_data, test_data=test_data).items() if v is not None}
    if rows and config.output_dir is None:
        raise ValueError("train: train_data needs output_dir: the rows are written into the run")
    config = from_python(config, row_files(config.output_dir, list(rows)) if rows else None)
    Trackers.check(config)  # a missing tracker package is one line now, not after loading the model
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():  # accelerate would run float32 and say nothing
        raise ValueError("--mixed-precision fp16 needs a CUDA GPU; on the CPU the run would be float32 (use bf16 or no)")
    distributed.start()
    # Only the main process checks and locks the directory (before any slow loading; it writes
    # nothing else yet); the others never read it before ``_prepare`` has made it ready.
    run = RunDir.open(config) if distributed.is_main() else RunDir(config.output_dir, main=False)
    try:
        if rows:
            config = _write_rows(run, config, rows)
        return _train_locked(config, run, model, tokenizer, task)
    finally:
        run.release()


def _train_locked(config: TrainConfig, run: RunDir, model: Any, tokenizer: Any, task: Any) -> dict[str, Any]:
    if config.seeds and isinstance(model, SoftPromptModel):
        raise ValueError("train: with several seeds pass the backbone, not a SoftPromptModel")
    if config.fsdp:
        distributed.check_several_processes("fsdp")
    if not config.seeds and config.resume and run.read_metrics() is not None:
        return run.read_metrics()  # finished already
    if config.resume:  # before the slow loading
        for sub in [run] if not config.seeds else [run.seed_dir(s) for s in config.seeds]:
            if (folder := sub.latest_checkpoint()) is not None:
                distributed.check_processes(read_json(folder / STATE_FILE).get("processes", 1), sub.path)
    # The backbone's kind picks the task's template style and the layers of settings that depend
    # on it (settings.for_backbone); it is read from the model's config, before the slow load.
    from .backbones import backbone_facts, facts_of

    kind, bos, base = facts_of(getattr(model, "backbone", model), tokenizer) if model is not None else backbone_facts(config.model)
    if task is None:
        task = config.build_task(style_for(config, kind, base))
    config = for_backbone(config, kind, bos=bos, base=base, task=task)
    # One config per seed (the few-shot sample depends on the seed); data before the model, so
    # a missing file fails fast.
    seeds = {None: config} if not config.seeds else {
        s: per_seed(config, s, run.seed_dir(s).path, resume=config.resume and (run.seed_dir(s).path / "config.json").is_file())
        for s in config.seeds}
    data = {s: load_data(c, task) for s, c in seeds.items()}
    if model is None:
        from .backbones import load_backbone

        # the run's dtype, device map and quantization; a device or library missing here is one line
        model, tokenizer = load_backbone(config.model, **config.load_options())
    if tokenizer is None:
        raise ValueError("train: pass tokenizer= with model=")
    if config.chat_template:
        data = {s: tuple(apply_chat_template(part, tokenizer) if isinstance(part, list) else part for part in d) for s, d in data.items()}
    _prepare(run, config)
    if not config.seeds:
        return _train_one(config, run, model, tokenizer, task, data[None])
    runs = {}
    for seed, seed_config in seeds.items():
        sub = run.seed_dir(seed)
        finished = seed_config.resume and sub.read_metrics()
        runs[seed] = finished or _train_one(seed_config, _prepare(sub, seed_config), model, tokenizer, task, data[seed])
    summary = summarize(runs)
    run.write_metrics(summary, "summary.json")
    distributed.barrier()
    return summary


def _write_rows(run: RunDir, config: TrainConfig, rows: dict[str, Any]) -> TrainConfig:
    """The rows into ``OUTPUT/data/`` before anything reads them. A new run is prepared first
    (an overwritten run's files go, config.json is written: a run that fails later is still a
    run ``--overwrite`` replaces), and then no longer overwrites: ``_prepare`` would remove the rows."""
    if run.main:
        if not config.resume:
            run.prepare(config)
        write_rows(run.path, rows, resume=config.resume)
    distributed.barrier()  # the other processes read the rows
    return config.replace(overwrite=False) if config.overwrite else config


def _prepare(run: RunDir, config: TrainConfig) -> RunDir:
    """The main process prepares the directory (clears an overwritten run, writes config.json);
    the others wait until it is ready."""
    if run.main:
        run.prepare(config)
    distributed.barrier()
    return run


# ---------------------------------------------------------------------------------------
# One run


def _train_one(c: TrainConfig, run: RunDir, model: Any, tokenizer: Any, task: Any, data: tuple) -> dict[str, Any]:
    started = time.time()
    train_examples, validation, test, test_split = data

    # -- setup: accelerator, prompt, data stream ---------------------------------------------
    accelerator = distributed.accelerator(c.mixed_precision)
    world = distributed.world()
    if not isinstance(model, SoftPromptModel):
        model = attach(model, c.method, tokenizer=tokenizer, seed=c.seed, config=c.prompt_config())
    raw = model
    if c.fsdp:
        distributed.shard_backbone(raw, raw.backbone, accelerator.device)
    raw.usage = usage_record(c, task)  # saved with every prompt: how it is read (predict, eval)
    fingerprint = backbone_fingerprint(raw.backbone)
    if c.gradient_checkpointing:
        enable_checkpointing(raw.backbone)
    mode = c.eval_mode if c.eval_mode != "auto" else default_mode(task, validation)
    # a metric, or the mean of several (Residual PT); with_selection adds a mean to each result
    selection, averaged = selection_metrics(c.selection_metric, task.metrics, task.name)
    lengths, make_batch = training_batches(c, train_examples, tokenizer, raw.join.kind, task)
    stream = Stream(lengths, c.batch_size, c.seed, distributed.rank(), world)
    total_steps = total_steps_for(c, len(lengths), world)
    warmup = warmup_steps_for(c, total_steps)
    # --eval-every and --checkpoint-every count steps, or epochs (DPT evaluates after each epoch)
    unit = steps_per_epoch(c, len(lengths), world) if c.eval_unit == "epochs" else 1
    eval_every = c.eval_every * unit
    checkpoint_every = (c.checkpoint_every or c.eval_every) * unit

    def score(m, examples) -> dict[str, float]:
        return with_selection(evaluate(m, tokenizer, task, examples, mode=mode, batch_size=c.eval_batch_size, max_length=c.max_length,
                                       max_new_tokens=c.max_new_tokens, separator=c.separator, truncation_side=c.truncation_side),
                              selection, averaged)

    def plot() -> None:
        if run.main:
            try:
                plot_run(run.path, selection, raw.prompt.diagnostic_labels)
            except Exception as err:  # a plot must never lose a finished run
                print(f"softprompt: could not draw plots ({err})", file=sys.stderr)

    # -- optimizer over the method's parameter groups: each group's peak from the one lr --------
    torch.manual_seed(c.seed)  # dropout, if the backbone has any
    random.seed(c.seed)
    np.random.seed(c.seed)
    groups = raw.prompt.param_groups()
    peaks = [g.peak(c.lr) for g in groups]
    optimizer = make_optimizer(c, [{"params": g.params, "lr": lr} for g, lr in zip(groups, peaks)])
    # Precision and device from accelerate, not its DDP wrapper (evaluation_mode): the gradients
    # to average are the prompt's few, averaged by distributed.average_gradients; DDP would
    # broadcast every frozen weight and refuses an FSDP-sharded backbone.
    model = accelerator.prepare_model(raw, evaluation_mode=True)
    optimizer = accelerator.prepare_optimizer(optimizer)

    # -- resume from the checkpoint, or start with the zero-shot baseline --------------------
    saved = run.load_checkpoint(raw, optimizer) if c.resume else None
    trackers = Trackers.start(c, run.path, resumed_step=saved["step"] if saved else None) if run.main else Trackers([])

    def log(record: dict[str, Any]) -> None:  # each record to log.jsonl and to the trackers (--report-to)
        run.log(record)
        trackers.log(record)

    if saved is not None:
        check_backbone(saved.get("backbone"), fingerprint, run.path)
        state = RunState(**saved)
        stream.epoch, stream.index = state.epoch, state.index
        run.truncate_log(state.step)
    else:
        state = RunState(backbone=fingerprint)
        run.truncate_log(-1)  # a resumed run killed before its first checkpoint starts over
        if c.zero_shot:
            state.zero_shot = score(NoPrompt(raw.backbone), test)
            log({"step": 0, "zero_shot": state.zero_shot, "split": test_split})
    elapsed_before = state.elapsed

    # -- the loop ------------------------------------------------------------------------------
    bar = Progress(total_steps, f"{c.method} {c.task}", initial=state.step, enabled=run.main)
    model.train()
    window_examples, window_start = 0, time.time()  # speed is measured per process
    try:
        while state.step < total_steps and state.stopped is None:
            # learning rate: a pure function of the step, each group scaled to its own peak
            step = state.step
            lr = lr_at(step, total_steps, warmup, c.lr, c.lr_schedule)
            for group, peak in zip(optimizer.param_groups, peaks):
                group["lr"] = lr_at(step, total_steps, warmup, peak, c.lr_schedule)
            # forward and backward over grad_accum micro-batches
            loss_sum, examples, shown = 0.0, 0, {}
            for _ in range(c.grad_accum):
                index = stream.next()
                batch = {k: v.to(accelerator.device) for k, v in make_batch(index).items()}
                with accelerator.autocast():
                    loss = model(**batch, return_logits=False).loss
                accelerator.backward(loss / c.grad_accum)
                loss_sum += float(loss.detach())
                examples += len(index)
            # the processes' gradients and losses averaged, so every process takes the same step
            # and stops at the same step (nothing happens in one process)
            loss_sum = distributed.average_gradients(raw.trainable_parameters(), loss_sum)
            if not math.isfinite(loss_sum):
                raise TrainingDiverged(f"loss is {loss_sum / c.grad_accum} at step {step + 1}")
            # clip and update
            if c.max_grad_norm > 0:
                norm = accelerator.clip_grad_norm_(raw.trainable_parameters(), c.max_grad_norm)
            else:  # no clipping (Lester et al.'s Adafactor, Residual PT): only check the gradient is finite
                grads = [p.grad.detach().norm() for p in raw.trainable_parameters() if p.grad is not None]
                norm = torch.stack(grads).norm() if grads else None
            if norm is not None and not math.isfinite(float(norm)):
                raise TrainingDiverged(f"gradient norm is {float(norm)} at step {step + 1}")
            optimizer.step()
            if not all(bool(torch.isfinite(p).all()) for p in raw.trainable_parameters()):
                raise TrainingDiverged(f"the prompt became NaN/inf at step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            state.step = step = step + 1
            state.window_loss += loss_sum / c.grad_accum
            window_examples += examples * world
            # log
            if step % c.log_every == 0 or step == total_steps:
                n = (step - 1) % c.log_every + 1
                speed = window_examples / max(time.time() - window_start, 1e-9)
                record = {"step": step, "epoch": stream.epoch, "loss": state.window_loss / n, "lr": lr,
                          "examples_per_second": speed, **raw.diagnostics()}
                log(record)
                shown = dict(loss=f"{record['loss']:.4f}", lr=f"{lr:.3g}", ex_s=f"{speed:.1f}")
                state.window_loss, window_examples, window_start = 0.0, 0, time.time()
            bar.update(1, **shown)
            # validate: keep the best prompt, stop early when patience runs out
            if step % eval_every == 0 or step == total_steps:
                metrics = score(raw, validation)
                log({"step": step, "validation": metrics})
                if state.best_value is None or float(metrics[selection]) > state.best_value:
                    state.best_value, state.best_step, state.best_validation, state.bad_evals = float(metrics[selection]), step, metrics, 0
                    run.save_prompt(raw)
                else:
                    state.bad_evals += 1
                    if c.patience and state.bad_evals >= c.patience:
                        state.stopped = "early_stopping"
                        log({"step": step, "early_stopping": True, "best_step": state.best_step})
                model.train()
            # checkpoint
            if step % checkpoint_every == 0 or step == total_steps or state.stopped:
                state.epoch, state.index = stream.epoch, stream.index
                state.elapsed, state.processes = elapsed_before + time.time() - started, world
                run.save_checkpoint(raw, optimizer, dataclasses.asdict(state))
    except TrainingDiverged as err:
        bar.close()
        kept = run.keep_last_good_prompt(raw) if run.main else "the main process keeps the last good prompt"  # finite, from before the failing step
        log({"step": state.step, "error": str(err)})
        plot()
        trackers.finish()
        raise TrainingDiverged(f"training stopped: {err}; {kept}") from None
    except BaseException:  # an interrupted run closes its tracker runs too (MLflow keeps one active per process)
        trackers.finish()
        raise
    bar.close()
    model.eval()

    # -- test with the best prompt -------------------------------------------------------------
    distributed.barrier()  # the main process may still be writing prompt/
    run.load_best_prompt(raw)
    test_metrics = score(raw, test)
    metrics = {
        "task": task.name, "method": c.method, "seed": c.seed,
        "zero_shot": state.zero_shot, "best_validation": state.best_validation, "test": test_metrics,
        "test_split": test_split, "eval_mode": mode, "selection_metric": selection,
        "best_step": state.best_step, "steps": state.step, "total_steps": total_steps,
        "stopped": state.stopped or "completed",
        "trainable_parameters": raw.num_trainable(), "wall_seconds": elapsed_before + time.time() - started,
    }
    log({"step": state.step, "test": test_metrics, "split": test_split})
    plot()
    trackers.finish()
    run.write_metrics(metrics)
    raw.backbone.eval()
    distributed.barrier()  # when train() returns, on any process, the run's files are complete
    return metrics


class _CallableModule(types.ModuleType):
    """``softprompt.train(config, ...)`` trains whichever object the name holds: the function (what
    the package's lazy ``__getattr__`` gives) or this module, which the import system puts in that
    attribute once anything imports ``softprompt.train``. Calling the module calls ``train``."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
