"""A run's output directory: opened (and checked) once, then the log, the checkpoint, the best
prompt and the metrics, every write atomic.

    OUTPUT/
      config.json     the resolved TrainConfig
      log.jsonl       one JSON record per log line, evaluation or event
      metrics.json    the finished run's results
      prompt/         the best prompt so far (a prompt directory: ``softprompt.load`` reads it)
      checkpoint/     prompt + optimizer + RNG tensors (safetensors) and the loop state (JSON)
      plots/          drawn from log.jsonl
      seed-N/         with several seeds: one run directory per seed; summary.json beside them

Checkpoints hold no pickle: tensors go to safetensors, everything else to JSON, and the RNG
states of torch, numpy and Python are stored so a resumed run replays the same floats.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .config import TrainConfig
from .io import atomic_file, copy_into_prompt, read_tensors, trainable_tensors, write_dir_atomically, write_json_atomically
from .model import SoftPromptModel

# Files and folders a run writes; `overwrite` removes exactly these, nothing else.
RUN_FILES = ("config.json", "log.jsonl", "metrics.json", "summary.json", "prompt", "checkpoint", "plots")
# Fields that may differ between a run and its resumption.
RESUMABLE = {"resume", "overwrite", "output_dir", "model", "data_dir", "eval_batch_size"}


class RunExistsError(ValueError):
    """The output directory holds another run and neither overwrite nor resume was asked."""


class RunDir:
    """The output directory of one run (or of a multi-seed run's parent).

    ``open`` checks it against the config and changes nothing; ``prepare`` then clears an
    overwritten run's files and writes ``config.json``. Only the main process writes
    (``main=False`` on the others under ``accelerate launch``).
    """

    def __init__(self, path: str | Path, main: bool = True):
        self.path = Path(path)
        self.main = main

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, config: TrainConfig) -> "RunDir":
        """Refuse a directory holding another run unless ``overwrite`` or ``resume`` (then the
        saved config must be the same run). Nothing is written."""
        run = cls(config.output_dir)
        if config.resume:
            saved = run.path / "config.json"
            if not saved.is_file():
                raise FileNotFoundError(f"{run.path}: nothing to resume (no config.json)")
            _check_same_run(TrainConfig.from_dict(json.loads(saved.read_text()), where=str(saved)), config, saved)
        else:
            found = run.holds_run()
            if found is not None and not config.overwrite:
                raise RunExistsError(f"{run.path} holds another run ({found}); pass --overwrite to replace it or --resume to continue it")
        return run

    def holds_run(self) -> str | None:
        """The first run file found here (so an error can name it), or None."""
        if not self.path.is_dir():
            return None
        for name in RUN_FILES:
            if (self.path / name).exists():
                return name
        seeds = sorted(self.path.glob("seed-*"))
        return seeds[0].name if seeds else None

    def prepare(self, config: TrainConfig) -> "RunDir":
        """With ``overwrite``, remove the old run's files (only those); write ``config.json``."""
        if config.overwrite and not config.resume:
            for name in RUN_FILES:
                target = self.path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            for seed_dir in self.path.glob("seed-*"):
                shutil.rmtree(seed_dir)
        self.path.mkdir(parents=True, exist_ok=True)
        if not config.resume and self.main:
            write_json_atomically(self.path / "config.json", config.to_dict())
        return self

    def seed_dir(self, seed: int) -> "RunDir":
        return RunDir(self.path / f"seed-{seed}", self.main)

    # -- the log ---------------------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        if self.main:
            with open(self.path / "log.jsonl", "a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")

    def records(self) -> list[dict[str, Any]]:
        path = self.path / "log.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def truncate_log(self, step: int) -> None:
        """Drop records written after ``step`` (a resumed run redoes them)."""
        path = self.path / "log.jsonl"
        if not self.main or not path.is_file():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
        with atomic_file(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept))

    # -- prompt, metrics ---------------------------------------------------------------------

    def save_prompt(self, model: SoftPromptModel) -> None:
        if self.main:
            model.save(self.path / "prompt")

    def has_prompt(self) -> bool:
        return (self.path / "prompt").is_dir()

    def load_best_prompt(self, model: SoftPromptModel) -> None:
        """Put the best prompt saved so far into ``model``."""
        prompt = self.path / "prompt"
        copy_into_prompt(model.prompt, read_tensors(prompt), prompt)

    def write_metrics(self, metrics: dict[str, Any], name: str = "metrics.json") -> None:
        if self.main:
            write_json_atomically(self.path / name, metrics)

    def read_metrics(self) -> dict[str, Any] | None:
        path = self.path / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else None

    # -- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self, model: SoftPromptModel, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """``checkpoint/``: prompt.safetensors, optimizer.safetensors (+ RNG), state.json."""
        if not self.main:
            return
        prompt = trainable_tensors(model.prompt)
        optim_tensors, optim_meta = _optimizer_state(optimizer)
        rng_tensors, rng_scalars = _rng_state()
        record = {**state, "optimizer": optim_meta, "rng": rng_scalars}

        def write(tmp: Path) -> None:
            save_file(prompt, str(tmp / "prompt.safetensors"))
            save_file({**optim_tensors, **rng_tensors}, str(tmp / "optimizer.safetensors"))
            (tmp / "state.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

        write_dir_atomically(self.path / "checkpoint", write)

    def latest_checkpoint(self) -> Path | None:
        """``checkpoint/``, or, if a kill landed inside ``write_dir_atomically`` between its two
        renames, the previous checkpoint it had just moved aside (``.checkpoint.old-PID``)."""
        if (self.path / "checkpoint" / "state.json").is_file():
            return self.path / "checkpoint"
        aside = [p for p in self.path.glob(".checkpoint.old-*") if (p / "state.json").is_file()]
        return max(aside, key=lambda p: json.loads((p / "state.json").read_text())["step"]) if aside else None

    def load_checkpoint(self, model: SoftPromptModel, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """Restore prompt, optimizer and RNG states from the latest checkpoint; returns the
        loop's state as saved, or None when there is none."""
        path = self.latest_checkpoint()
        if path is None:
            return None
        record = json.loads((path / "state.json").read_text())
        copy_into_prompt(model.prompt, load_file(str(path / "prompt.safetensors")), path / "prompt.safetensors")
        tensors = load_file(str(path / "optimizer.safetensors"))
        _load_optimizer_state(optimizer, tensors, record.pop("optimizer"))
        _set_rng_state(tensors, record.pop("rng"))
        return record


def _check_same_run(saved: TrainConfig, given: TrainConfig, where: Path) -> None:
    a, b = saved.to_dict(), given.to_dict()
    for key in sorted(set(a) | set(b)):
        if key not in RESUMABLE and a.get(key) != b.get(key):
            raise ValueError(f"{where}: cannot resume with {key}={b.get(key)!r}; the run used {a.get(key)!r}")


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
