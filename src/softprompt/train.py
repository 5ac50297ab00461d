"""Training a soft prompt: one explicit loop on accelerate.

    metrics = train(TrainConfig(task="sst2", method="ulpt", length=20, rank=2, max_steps=150,
                                lr=0.05, data_dir="../shared/data/glue", output_dir="runs/x"))

Order of a run: resolve config -> load task, data and backbone -> zero-shot evaluation (the
backbone with the task's template, no prompt) -> AdamW over the prompt only, linear warmup then
linear decay, gradient clipping, gradient accumulation -> evaluation every ``eval_every`` steps,
the best prompt (by the task's first metric) kept in ``OUTPUT/prompt`` -> test with the best.

The data stream is continuous over epochs: epoch ``e`` visits ``length_grouped_order(seed, e)``
from index 0, and an optimizer step takes ``grad_accum`` micro-batches from wherever the stream
is. A checkpoint stores that position with the prompt, the optimizer and every RNG state, so a
resumed run replays exactly the batches and floats an uninterrupted one would (bit-identical on
CPU). The learning rate is a pure function of the step (``lr_at``), so there is no scheduler
state beyond the step itself.

Outputs (all JSON and checkpoint writes atomic): ``config.json``, ``log.jsonl``,
``metrics.json``, ``prompt/``, ``checkpoint/``, ``plots/``; with ``seeds`` one ``seed-N/`` per
seed and ``summary.json`` (mean ± std).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .batching import collate, encode_examples, length_grouped_order, pad_id
from .io import read_tensors, trainable_tensors, write_dir_atomically, write_json_atomically
from .model import SoftPromptModel, attach

MIXED_PRECISION = ("no", "bf16", "fp16")
EVAL_MODES = ("auto", "rank", "generate")
PROTOCOLS = ("paper", "attempt")
# Files and folders a run writes; `overwrite` removes exactly these, nothing else.
RUN_FILES = ("config.json", "log.jsonl", "metrics.json", "summary.json", "prompt", "checkpoint", "plots")
METHOD_FIELDS = ("length", "bottleneck", "rank", "init")


class TrainingDiverged(RuntimeError):
    """The loss (or gradient) became NaN/inf; the last good prompt is in OUTPUT/prompt."""


class RunExistsError(ValueError):
    """The output directory holds another run and neither overwrite nor resume was asked."""


# ---------------------------------------------------------------------------------------
# Config


@dataclass
class TrainConfig:
    """Everything a run needs; ``config.json`` holds it resolved. Field = CLI option
    (``max_steps`` <-> ``--max-steps``). ``None`` means "the default of that component"."""

    # what to train
    task: str = "sst2"
    model: str | None = None  # None: the embedded default (SmolLM2-135M-Instruct); hub name, dir, .gguf
    method: str = "ulpt"
    length: int | None = None
    bottleneck: int | None = None
    rank: int | None = None
    init: str | None = None
    method_options: dict[str, Any] = field(default_factory=dict)  # other method fields (projection, alpha, ...)
    label_words: str | None = None  # "names", "digits" or comma-separated words
    # data
    data_dir: str | None = None
    protocol: str = "paper"
    split_seed: int = 42
    shots: int | None = None
    shots_per_class: int | None = None
    max_length: int = 256
    separator: str = " "
    # optimization
    seed: int = 0
    seeds: list[int] | None = None
    max_steps: int | None = None  # wins over epochs; neither given: 1 epoch
    epochs: float | None = None
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 0.3
    warmup_steps: int = 0
    weight_decay: float = 1e-5
    max_grad_norm: float = 1.0
    patience: int | None = None  # evaluations without improvement before stopping
    # evaluation
    eval_every: int = 100
    eval_mode: str = "auto"
    eval_batch_size: int = 32
    max_eval_examples: int | None = None
    max_test_examples: int | None = None
    max_new_tokens: int = 16
    zero_shot: bool = True
    # bookkeeping
    output_dir: str = "runs/softprompt"
    overwrite: bool = False
    resume: bool = False
    checkpoint_every: int | None = None  # None: eval_every
    log_every: int = 10
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        from . import METHODS

        def positive(name: str, kind=int, optional: bool = False) -> None:
            value = getattr(self, name)
            if value is None and optional:
                return
            ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int) and value > 0
            if not ok:
                raise ValueError(f"TrainConfig: {name} must be a positive {'number' if kind is float else 'integer'}, got {value!r}")

        def choice(name: str, choices: tuple) -> None:
            if getattr(self, name) not in choices:
                raise ValueError(f"TrainConfig: {name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")

        if not isinstance(self.task, str) or not self.task:
            raise ValueError(f"TrainConfig: task must be a task name, got {self.task!r}")
        choice("method", METHODS)
        choice("protocol", PROTOCOLS)
        choice("eval_mode", EVAL_MODES)
        choice("mixed_precision", MIXED_PRECISION)
        for name in ("batch_size", "grad_accum", "eval_every", "eval_batch_size", "log_every", "max_new_tokens"):
            positive(name)
        for name in ("max_steps", "shots", "shots_per_class", "patience", "max_eval_examples", "max_test_examples", "checkpoint_every"):
            positive(name, optional=True)
        positive("epochs", float, optional=True)
        positive("lr", float)
        positive("max_grad_norm", float)
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 2:
            raise ValueError(f"TrainConfig: max_length must be an integer >= 2, got {self.max_length!r}")
        for name in ("warmup_steps", "seed", "split_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig: {name} must be a non-negative integer, got {value!r}")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ValueError(f"TrainConfig: weight_decay must be a non-negative number, got {self.weight_decay!r}")
        if self.shots is not None and self.shots_per_class is not None:
            raise ValueError("TrainConfig: give shots or shots_per_class, not both")
        if self.overwrite and self.resume:
            raise ValueError("TrainConfig: overwrite and resume exclude each other")
        if self.seeds is not None:
            if not isinstance(self.seeds, (list, tuple)) or not self.seeds or any(
                isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds
            ):
                raise ValueError(f"TrainConfig: seeds must be a non-empty list of non-negative integers, got {self.seeds!r}")
            if len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"TrainConfig: seeds must be distinct, got {self.seeds!r}")
            self.seeds = [int(s) for s in self.seeds]
        if not isinstance(self.method_options, dict):
            raise ValueError(f"TrainConfig: method_options must be a mapping, got {self.method_options!r}")
        self.prompt_config()  # the method's own validation (unknown option, bad value), early

    def prompt_options(self) -> dict[str, Any]:
        options = {name: getattr(self, name) for name in METHOD_FIELDS if getattr(self, name) is not None}
        clash = sorted(set(options) & set(self.method_options))
        if clash:
            raise ValueError(f"TrainConfig: {', '.join(clash)} given both as field and in method_options")
        return {**options, **self.method_options}

    def prompt_config(self):
        from .prompts import make_config

        try:
            return make_config(self.method, **self.prompt_options())
        except ValueError as err:
            raise ValueError(f"TrainConfig: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "TrainConfig") -> "TrainConfig":
        """Build from a mapping (a parsed YAML/JSON file); unknown keys are an error naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping of option: value, got {type(data).__name__}")
        data = {k.replace("-", "_"): v for k, v in data.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_config_file(path), where=str(path))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON config file as a dict; one-line errors naming the file (and line)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: invalid YAML ({getattr(err, 'problem', None) or err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option: value at the top level")
    return data


# ---------------------------------------------------------------------------------------
# Schedule


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup to ``base_lr`` over
    ``warmup_steps`` steps (the first step already gets ``base_lr / warmup_steps``), then
    linear decay reaching 0 at ``total_steps``."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    return base_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def total_steps_for(config: TrainConfig, num_examples: int, world: int = 1) -> int:
    """Optimizer steps of the run: ``max_steps``, else ``epochs`` (default 1) worth of batches."""
    if config.max_steps is not None:
        return config.max_steps
    micro_per_epoch = math.ceil(num_examples / (config.batch_size * world))
    return max(1, math.ceil((config.epochs or 1.0) * micro_per_epoch / config.grad_accum))


# ---------------------------------------------------------------------------------------
# Output directory


def _holds_run(path: Path) -> str | None:
    """The first run file found in ``path`` (so the error can name it), or None."""
    if not path.is_dir():
        return None
    for name in RUN_FILES:
        if (path / name).exists():
            return name
    seeds = sorted(path.glob("seed-*"))
    return seeds[0].name if seeds else None


def check_output_dir(config: TrainConfig) -> Path:
    """Refuse a directory holding another run unless ``overwrite`` or ``resume`` (then the
    saved config must match). Changes nothing on disk."""
    out = Path(config.output_dir)
    found = _holds_run(out)
    if config.resume:
        saved = out / "config.json"
        if not saved.is_file():
            raise FileNotFoundError(f"{out}: nothing to resume (no config.json)")
        _check_same_run(TrainConfig.from_dict(json.loads(saved.read_text()), where=str(saved)), config, saved)
    elif found is not None and not config.overwrite:
        raise RunExistsError(f"{out} holds another run ({found}); pass --overwrite to replace it or --resume to continue it")
    return out


def prepare_output_dir(config: TrainConfig) -> Path:
    """``check_output_dir``, then with ``overwrite`` remove the old run's files (only those)."""
    out = check_output_dir(config)
    if config.overwrite and not config.resume:
        for name in RUN_FILES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        for seed_dir in out.glob("seed-*"):
            shutil.rmtree(seed_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


# Fields that may differ between a run and its resumption.
_RESUMABLE = {"resume", "overwrite", "output_dir", "model", "data_dir", "eval_batch_size"}


def _check_same_run(saved: TrainConfig, given: TrainConfig, where: Path) -> None:
    a, b = saved.to_dict(), given.to_dict()
    for key in a:
        if key not in _RESUMABLE and a[key] != b[key]:
            raise ValueError(f"{where}: cannot resume with {key}={b[key]!r}; the run used {a[key]!r}")


# ---------------------------------------------------------------------------------------
# Checkpoints (safetensors + JSON, no pickle)


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss = random.getstate()
    scalars = {"python": [version, list(internal), gauss], "numpy": [kind, int(pos), int(has_gauss), float(cached)]}
    return tensors, scalars


def _set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    kind, pos, has_gauss, cached = scalars["numpy"]
    np.random.set_state((kind, tensors["rng/numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = scalars["python"]
    random.setstate((version, tuple(internal), gauss))


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten ``optimizer.state_dict()``: tensors -> ``optim/<param>/<key>``, the rest -> JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}/{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    slots: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, index, key = name.split("/", 2)
            slots.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split("/", 1)
        slots.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})


def save_checkpoint(path: Path, model: SoftPromptModel, optimizer, state: dict[str, Any]) -> None:
    """``checkpoint/``: prompt.safetensors, optimizer.safetensors (+ RNG), state.json."""
    prompt = trainable_tensors(model.prompt)
    optim_tensors, optim_meta = _optimizer_state(optimizer)
    rng_tensors, rng_scalars = _rng_state()
    record = {**state, "optimizer": optim_meta, "rng": rng_scalars}

    def write(tmp: Path) -> None:
        save_file(prompt, str(tmp / "prompt.safetensors"))
        save_file({**optim_tensors, **rng_tensors}, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    write_dir_atomically(path, write)


def _latest_checkpoint(out: Path) -> Path | None:
    """``OUTPUT/checkpoint``, or, if a kill landed inside ``write_dir_atomically`` between its
    two renames, the previous checkpoint it had just moved aside (``.checkpoint.old-PID``)."""
    if (out / "checkpoint" / "state.json").is_file():
        return out / "checkpoint"
    aside = [p for p in out.glob(".checkpoint.old-*") if (p / "state.json").is_file()]
    return max(aside, key=lambda p: json.loads((p / "state.json").read_text())["step"]) if aside else None


def load_checkpoint(path: Path, model: SoftPromptModel, optimizer) -> dict[str, Any]:
    """Restore prompt, optimizer and RNG states from ``path``; returns the loop's state."""
    record = json.loads((path / "state.json").read_text())
    prompt = load_file(str(path / "prompt.safetensors"))
    with torch.no_grad():
        for name, param in model.prompt.named_parameters():
            if param.requires_grad:
                param.copy_(prompt[name])
    tensors = load_file(str(path / "optimizer.safetensors"))
    _load_optimizer_state(optimizer, tensors, record.pop("optimizer"))
    _set_rng_state(tensors, record.pop("rng"))
    return record


# ---------------------------------------------------------------------------------------
# Data


def load_data(config: TrainConfig, task) -> tuple[list, list, list, str]:
    """``(train, validation, test, test_split)``. Under the paper protocol a task whose test
    split is missing or unlabeled is reported on its validation set (as the DPT paper does)."""
    kw = dict(data_dir=config.data_dir, protocol=config.protocol, seed=config.split_seed)
    train = task.sample(task.load("train", **kw), shots=config.shots, shots_per_class=config.shots_per_class, seed=config.seed)
    validation = task.load("validation", **kw)
    test_split = "test"
    try:
        test = task.load("test", **kw)
        if not test or all(e.label is None and not e.answers for e in test):
            raise FileNotFoundError("test split unlabeled")
    except FileNotFoundError:
        test, test_split = validation, "validation"
    if not train:
        raise ValueError(f"task {task.name}: the train split is empty")
    if not validation:
        raise ValueError(f"task {task.name}: the validation split is empty")
    if config.max_eval_examples:
        validation = validation[: config.max_eval_examples]
    if config.max_test_examples:
        test = test[: config.max_test_examples]
    return train, validation, test, test_split


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class Stream:
    """The training batches: epoch ``e`` walks ``length_grouped_order`` seeded by
    ``(seed, e)``; ``(epoch, index)`` is the whole position (stored in checkpoints)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.index = 0, 0
        self._order_epoch, self._order = None, []

    def order(self) -> list[int]:
        if self._order_epoch != self.epoch:
            global_batch = self.batch_size * self.world
            self._order = length_grouped_order(self.lengths, global_batch, _epoch_seed(self.seed, self.epoch))
            self._order_epoch = self.epoch
        return self._order

    def next(self) -> list[int]:
        """This process's indices of the next micro-batch."""
        global_batch = self.batch_size * self.world
        order = self.order()
        if self.world > 1 and self.index + global_batch > len(order):  # no ragged batch across processes
            self.epoch, self.index = self.epoch + 1, 0
            order = self.order()
        chunk = order[self.index : self.index + global_batch]
        self.index += global_batch
        if self.index >= len(order):
            self.epoch, self.index = self.epoch + 1, 0
        return chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]


# ---------------------------------------------------------------------------------------
# The run


def train(config: TrainConfig, model: Any = None, tokenizer: Any = None, task: Any = None) -> dict[str, Any]:
    """Train (or resume) the run described by ``config``; returns the content of metrics.json
    (or, with ``seeds``, of summary.json).

    Args:
        model: a transformers backbone (a prompt is attached) or a ready ``SoftPromptModel``;
            None loads ``config.model`` with ``softprompt.loading.load_backbone``.
        tokenizer: the backbone's tokenizer (needed when ``model`` is given).
        task: a ``Task`` object instead of looking ``config.task`` up by name.
    Raises:
        RunExistsError, TrainingDiverged, ValueError/FileNotFoundError with one-line messages.
    """
    if config.seeds:
        return train_seeds(config, model, tokenizer, task)
    out = check_output_dir(config)  # fail before any slow loading; write nothing yet
    if config.resume and (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())  # finished already
    if task is None:
        from .tasks import get_task

        task = get_task(config.task, label_words=config.label_words)
    train_examples, validation, test, test_split = load_data(config, task)
    if model is None:
        from .loading import load_backbone

        model, tokenizer = load_backbone(config.model)
    if tokenizer is None:
        raise ValueError("train: pass tokenizer= with model=")
    prepare_output_dir(config)
    if not config.resume:
        write_json_atomically(out / "config.json", config.to_dict())
    return _Run(config, out, model, tokenizer, task, train_examples, validation, test, test_split).run()


def train_seeds(config: TrainConfig, model=None, tokenizer=None, task=None) -> dict[str, Any]:
    """One run per seed into ``OUTPUT/seed-N``; ``OUTPUT/summary.json`` holds mean ± std."""
    if isinstance(model, SoftPromptModel):
        raise ValueError("train: with several seeds pass the backbone, not a SoftPromptModel")
    check_output_dir(config)
    if model is None:
        from .loading import load_backbone

        model, tokenizer = load_backbone(config.model)
    out = prepare_output_dir(config)
    if not config.resume:
        write_json_atomically(out / "config.json", config.to_dict())
    runs = {}
    for seed in config.seeds:
        seed_dir = out / f"seed-{seed}"
        resume = config.resume and (seed_dir / "config.json").is_file()
        sub = dataclasses.replace(config, seed=seed, seeds=None, output_dir=str(seed_dir), resume=resume, overwrite=False)
        runs[seed] = train(sub, model, tokenizer, task)
    summary = summarize(runs)
    write_json_atomically(out / "summary.json", summary)
    return summary


def summarize(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds of every metric of every section."""
    summary: dict[str, Any] = {"seeds": sorted(runs)}
    for section in ("zero_shot", "best_validation", "test"):
        table: dict[str, Any] = {}
        names = {k for m in runs.values() for k in (m.get(section) or {})}
        for name in sorted(names):
            values = [float(m[section][name]) for m in runs.values() if m.get(section) and name in m[section]]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            table[name] = {"mean": statistics.fmean(values), "std": std, "values": values}
        summary[section] = table
    for key in ("trainable_parameters",):
        summary[key] = next(iter(runs.values())).get(key)
    summary["wall_seconds"] = sum(float(m.get("wall_seconds", 0.0)) for m in runs.values())
    return summary


class _Run:
    """One seed's training run. Split out of ``train`` so each phase reads on its own."""

    def __init__(self, config, out, model, tokenizer, task, train_examples, validation, test, test_split):
        from accelerate import Accelerator

        from .evaluate import default_mode

        self.config, self.out, self.tokenizer, self.task = config, out, tokenizer, task
        self.validation, self.test, self.test_split = validation, test, test_split
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available())
        self.main = self.accelerator.is_main_process
        if isinstance(model, SoftPromptModel):
            self.model = model
        else:
            self.model = attach(model, config.method, tokenizer=tokenizer, seed=config.seed, config=config.prompt_config())
        self.backbone = self.model.backbone
        if config.gradient_checkpointing:
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.mode = config.eval_mode if config.eval_mode != "auto" else default_mode(task, validation)
        self.selection = task.metrics[0]
        self.kind = self.model.join.kind
        self.pad = pad_id(tokenizer)
        self.encoded = encode_examples(train_examples, tokenizer, self.kind, config.max_length, config.separator)
        self.stream = Stream([len(e) for e in self.encoded], config.batch_size, config.seed,
                             self.accelerator.process_index, self.accelerator.num_processes)
        self.total_steps = total_steps_for(config, len(self.encoded), self.accelerator.num_processes)
        self.checkpoint_every = config.checkpoint_every or config.eval_every

    # -- pieces --------------------------------------------------------------------------

    def evaluate(self, model, examples) -> dict[str, float]:
        from .evaluate import evaluate

        c = self.config
        return evaluate(model, self.tokenizer, self.task, examples, mode=self.mode, batch_size=c.eval_batch_size,
                        max_length=c.max_length, max_new_tokens=c.max_new_tokens, separator=c.separator)

    def log(self, record: dict[str, Any]) -> None:
        if self.main:
            with open(self.out / "log.jsonl", "a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")

    def truncate_log(self, step: int) -> None:
        """Drop log records written after the checkpoint we resume from (they will be redone)."""
        path = self.out / "log.jsonl"
        if not self.main or not path.is_file():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)

    def save_best(self, model: SoftPromptModel) -> None:
        if self.main:
            model.save(self.out / "prompt")

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        from .evaluate import NoPrompt

        c, out = self.config, self.out
        started = time.time()
        torch.manual_seed(c.seed)  # dropout, if the backbone has any
        random.seed(c.seed)
        np.random.seed(c.seed)
        optimizer = torch.optim.AdamW(self.model.trainable_parameters(), lr=c.lr, weight_decay=c.weight_decay)
        model, optimizer = self.accelerator.prepare(self.model, optimizer)
        raw = self.accelerator.unwrap_model(model)

        state = {"step": 0, "best_value": None, "best_step": None, "best_validation": None, "bad_evals": 0,
                 "zero_shot": None, "elapsed": 0.0, "stopped": None, "window_loss": 0.0}
        checkpoint = out / "checkpoint"
        found = _latest_checkpoint(out) if c.resume else None
        if found is not None:
            state.update(load_checkpoint(found, raw, optimizer))
            self.stream.epoch, self.stream.index = state["epoch"], state["index"]
            self.truncate_log(state["step"])
        else:
            self.truncate_log(-1)  # a resumed run killed before its first checkpoint starts over
            if c.zero_shot:
                state["zero_shot"] = self.evaluate(NoPrompt(raw.backbone), self.test)
                self.log({"step": 0, "zero_shot": state["zero_shot"], "split": self.test_split})
        elapsed_before = float(state["elapsed"])

        bar = tqdm(total=self.total_steps, initial=state["step"], disable=not (self.main and sys.stdout.isatty()),
                   dynamic_ncols=True, desc=f"{c.method} {c.task}")
        model.train()
        # The loss sum since the last log line lives in `state`, so a resumed run logs the
        # same averages; the speed window restarts (it measures this process).
        window_examples, window_start = 0, time.time()
        try:
            while state["step"] < self.total_steps and state["stopped"] is None:
                step = state["step"]
                lr = lr_at(step, self.total_steps, c.warmup_steps, c.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum, examples = 0.0, 0
                for micro in range(c.grad_accum):
                    index = self.stream.next()
                    batch = collate([self.encoded[i] for i in index], self.pad)
                    batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
                    sync = micro == c.grad_accum - 1
                    with self.accelerator.no_sync(model) if not sync else nullcontext():
                        with self.accelerator.autocast():
                            loss = model(**batch, return_logits=False).loss
                        value = float(loss.detach())
                        if not math.isfinite(value):
                            raise TrainingDiverged(f"loss is {value} at step {step + 1}")
                        self.accelerator.backward(loss / c.grad_accum)
                    loss_sum += value
                    examples += len(index)
                norm = self.accelerator.clip_grad_norm_(raw.trainable_parameters(), c.max_grad_norm)
                if norm is not None and not math.isfinite(float(norm)):
                    raise TrainingDiverged(f"gradient norm is {float(norm)} at step {step + 1}")
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] = step = step + 1
                state["window_loss"] += loss_sum / c.grad_accum
                window_examples += examples * self.accelerator.num_processes

                if step % c.log_every == 0 or step == self.total_steps:
                    n = (step - 1) % c.log_every + 1
                    speed = window_examples / max(time.time() - window_start, 1e-9)
                    record = {"step": step, "epoch": self.stream.epoch, "loss": state["window_loss"] / n, "lr": lr,
                              "examples_per_second": speed, **raw.diagnostics()}
                    self.log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.3g}", ex_s=f"{speed:.1f}")
                    state["window_loss"], window_examples, window_start = 0.0, 0, time.time()
                bar.update(1)

                if step % c.eval_every == 0 or step == self.total_steps:
                    self.validate(raw, state)
                    model.train()
                if step % self.checkpoint_every == 0 or step == self.total_steps or state["stopped"]:
                    state.update(epoch=self.stream.epoch, index=self.stream.index,
                                 elapsed=elapsed_before + time.time() - started)
                    if self.main:
                        save_checkpoint(checkpoint, raw, optimizer, state)
        except TrainingDiverged as err:
            bar.close()
            kept = "the best prompt so far"
            if not (out / "prompt").is_dir():
                self.save_best(raw)  # the parameters before the failing step: the last good prompt
                kept = "the last good prompt"
            self.log({"step": state["step"], "error": str(err)})
            self.plot()
            raise TrainingDiverged(f"training stopped: {err}; {kept} is in {out / 'prompt'}") from None
        bar.close()
        model.eval()
        return self.finish(raw, state, elapsed_before + time.time() - started)

    def validate(self, raw: SoftPromptModel, state: dict[str, Any]) -> None:
        metrics = self.evaluate(raw, self.validation)
        value = float(metrics[self.selection])
        self.log({"step": state["step"], "validation": metrics})
        if state["best_value"] is None or value > state["best_value"]:
            state.update(best_value=value, best_step=state["step"], best_validation=metrics, bad_evals=0)
            self.save_best(raw)
        else:
            state["bad_evals"] += 1
            if self.config.patience and state["bad_evals"] >= self.config.patience:
                state["stopped"] = "early_stopping"
                self.log({"step": state["step"], "early_stopping": True, "best_step": state["best_step"]})

    def finish(self, raw: SoftPromptModel, state: dict[str, Any], wall: float) -> dict[str, Any]:
        """Test with the best prompt, write metrics.json and the plots."""
        best = read_tensors(self.out / "prompt")
        with torch.no_grad():
            for name, param in raw.prompt.named_parameters():
                if param.requires_grad:
                    param.copy_(best[name])
        test = self.evaluate(raw, self.test)
        metrics = {
            "task": self.task.name, "method": self.config.method, "seed": self.config.seed,
            "zero_shot": state["zero_shot"], "best_validation": state["best_validation"], "test": test,
            "test_split": self.test_split, "eval_mode": self.mode, "selection_metric": self.selection,
            "best_step": state["best_step"], "steps": state["step"], "total_steps": self.total_steps,
            "stopped": state["stopped"] or "completed",
            "trainable_parameters": raw.num_trainable(), "wall_seconds": wall,
        }
        if self.main:
            self.log({"step": state["step"], "test": test, "split": self.test_split})
            self.plot()
            write_json_atomically(self.out / "metrics.json", metrics)
        self.backbone.eval()
        return metrics

    def plot(self) -> None:
        if self.main:
            try:
                plot_run(self.out, self.selection)
            except Exception as err:  # a plot must never lose a finished run
                print(f"softprompt: could not draw plots ({err})", file=sys.stderr)


def plot_run(out: Path, metric: str = "accuracy") -> Path:
    """``plots/loss.png``, ``plots/validation.png`` and, for rank_probe runs,
    ``plots/positive_sigma.png`` (the DPT paper's Figure 3), drawn from ``log.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    vals = [(r["step"], r["validation"][metric]) for r in records if "validation" in r and metric in r["validation"]]
    sigma = [(r["step"], r["positive_sigma"]) for r in records if "positive_sigma" in r]

    def draw(tmp: Path, points, name, ylabel, title):
        fig, ax = plt.subplots(figsize=(6, 4))
        if points:
            ax.plot(*zip(*points), marker="." if len(points) < 50 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(tmp / name, dpi=100)
        plt.close(fig)

    def write(tmp: Path) -> None:
        draw(tmp, losses, "loss.png", "training loss", "Training loss")
        draw(tmp, vals, "validation.png", f"validation {metric}", f"Validation {metric}")
        if sigma:
            draw(tmp, sigma, "positive_sigma.png", "positive σ entries", "Rank probe: positive singular values")

    return write_dir_atomically(out / "plots", write)
