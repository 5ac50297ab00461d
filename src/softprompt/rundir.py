"""A run's output directory: opened (and checked) once, then the log, the checkpoint, the best
prompt and the metrics, every write atomic.

    OUTPUT/
      .lock           present while a process runs the run; it holds an OS lock on it
      config.json     the resolved TrainConfig
      log.jsonl       one JSON record per log line, evaluation or event
      metrics.json    the finished run's results
      prompt/         the best prompt so far (a prompt directory: ``softprompt.load`` reads it)
      checkpoint/     prompt + optimizer + RNG tensors (safetensors) and the loop state (JSON)
      plots/          drawn from log.jsonl
      seed-N/         with several seeds: one run directory per seed; summary.json beside them

One process at a time: ``open`` takes an exclusive ``flock`` on ``OUTPUT/.lock`` and keeps it
until ``release``. The OS drops it when the process dies, so a killed run never leaves a stale
lock; a second process is refused with one line naming the holder's pid (sweeps and multi-seed
runs rely on this). Under the lock nothing else writes here, so what an interrupted atomic write
left (``.*.tmp-*``, ``.*.old-*``) is garbage and is cleared.

Checkpoints hold no pickle: tensors go to safetensors, everything else to JSON, and the RNG
states of torch, numpy and Python are stored so a resumed run replays the same floats. Each
names its run (``run_identity``: a hash of the config fields that define it), and resume takes
only its own run's newest complete checkpoint.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from .config import TrainConfig
from .io import (
    PromptFileError, atomic_file, check_finite, clear_leftovers, copy_into_prompt, read_json, read_safetensors,
    read_tensors, trainable_tensors, write_dir_atomically, write_json_atomically,
)
from .model import SoftPromptModel

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock
    fcntl = None

# Files and folders a run writes; `overwrite` removes exactly these (and leftovers), nothing else.
RUN_FILES = ("config.json", "log.jsonl", "metrics.json", "summary.json", "prompt", "checkpoint", "plots")
# Fields that may differ between a run and its resumption (all others define the run).
RESUMABLE = {"resume", "overwrite", "output_dir", "model", "data_dir", "eval_batch_size"}
LOCK_NAME = ".lock"
# Log records a resumed run writes again even at its checkpoint's step (written after it).
AFTER_CHECKPOINT = ("test", "error")


class RunExistsError(ValueError):
    """The output directory holds another run and neither overwrite nor resume was asked."""


class RunLockedError(RunExistsError):
    """Another live process holds the output directory."""


class CheckpointError(ValueError):
    """No checkpoint of this run can be resumed from; the message names the file and why."""


def run_identity(config: dict[str, Any]) -> str:
    """The name a checkpoint gives its run: a hash of the config fields that define the run
    (every field but ``RESUMABLE``), as ``config.json`` holds them."""
    defining = {k: v for k, v in config.items() if k not in RESUMABLE}
    return hashlib.sha256(json.dumps(defining, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _main_rank() -> bool:
    """Under ``accelerate launch``/``torchrun`` only rank 0 takes the lock and clears leftovers."""
    return os.environ.get("RANK", "0") == "0"


class RunDir:
    """The output directory of one run (or of a multi-seed run's parent).

    ``open`` checks it against the config and takes its lock; ``prepare`` then clears an
    overwritten run's files and writes ``config.json``; ``release`` gives the lock back. Only the
    main process writes (``main=False`` on the others under ``accelerate launch``).
    """

    def __init__(self, path: str | Path, main: bool = True):
        self.path = Path(path)
        self.main = main
        self._lock_fd: int | None = None
        self._created = False  # this process created the directory (release removes it if empty)
        self._fresh = False  # this process wrote config.json for a new run
        self._identity: str | None = None

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, config: TrainConfig) -> "RunDir":
        """Refuse a directory holding another run unless ``overwrite`` or ``resume`` (then the
        saved config must be the same run), or one another process is running in; take its
        lock. Writes nothing else."""
        run = cls(config.output_dir)
        if os.path.lexists(run.path) and not run.path.is_dir():
            raise RunExistsError(f"{run.path} exists and is not a directory; choose another output directory")
        saved = run.path / "config.json"
        if config.resume and not saved.is_file():
            raise FileNotFoundError(f"{run.path}: nothing to resume (no config.json)")
        run.lock()
        try:
            if config.resume:
                _check_same_run(TrainConfig.from_dict(read_json(saved), where=str(saved)), config, saved)
                if not (run.path / "metrics.json").is_file():  # (a finished run needs none)
                    run._checkpoints(strict=True)  # a broken or foreign checkpoint is named before any slow loading
            else:
                found = run.holds_run()
                if found is not None and not config.overwrite:
                    raise RunExistsError(f"{run.path} holds another run ({found}); pass --overwrite to replace it or --resume to continue it")
        except BaseException:
            run.release()
            raise
        return run

    def lock(self) -> None:
        """Take the directory (creating it) for this process, or raise ``RunLockedError``
        naming the process that has it."""
        if self._lock_fd is not None or fcntl is None or not _main_rank():
            return
        self._created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunExistsError(f"{self.path}: cannot create the run directory ({err.strerror or err})") from None
        file = self.path / LOCK_NAME
        while True:
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _read_pid(fd)
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise RunLockedError(
                    f"{self.path} is in use by another softprompt run (pid {holder}); "
                    "wait for it to end or choose another output directory"
                ) from None
            try:  # the holder removes the file as it ends: a lock on a removed file is no lock
                current = os.stat(file)
                same = (current.st_dev, current.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        """Give the directory back (``train`` does when the run ends, however it ends). A new
        run that wrote nothing but its ``config.json`` leaves nothing behind."""
        if self._lock_fd is None:
            return
        try:
            if self._fresh and self.path.is_dir():
                if {p.name for p in self.path.iterdir()} <= {LOCK_NAME, "config.json"}:
                    (self.path / "config.json").unlink(missing_ok=True)
            (self.path / LOCK_NAME).unlink(missing_ok=True)  # still locked: nobody can take the old file
        finally:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._created:
            try:
                self.path.rmdir()  # only if empty
            except OSError:
                pass

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
        """With ``overwrite``, remove the old run's files (only those) and what interrupted
        writes left; write ``config.json``."""
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
        if self.main and _main_rank():
            # A resumed run may still need a checkpoint a kill left moved aside (.checkpoint.old-*);
            # its next completed checkpoint removes it.
            clear_leftovers(self.path, keep_old=config.resume)
        if not config.resume and self.main:
            write_json_atomically(self.path / "config.json", config.to_dict())
            self._fresh = True
        self._identity = None
        return self

    def seed_dir(self, seed: int) -> "RunDir":
        return RunDir(self.path / f"seed-{seed}", self.main)

    def identity(self) -> str | None:
        """``run_identity`` of the run in ``config.json`` (None before there is one)."""
        if self._identity is None and (self.path / "config.json").is_file():
            self._identity = run_identity(read_json(self.path / "config.json"))
        return self._identity

    # -- the log ---------------------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        if self.main:
            with open(self.path / "log.jsonl", "a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")

    def records(self) -> list[dict[str, Any]]:
        return [record for _, record in self._log_lines()]

    def _log_lines(self) -> list[tuple[str, dict[str, Any]]]:
        """``(line, record)`` of each complete record. A torn last line (a kill or a full disk
        mid-write) is dropped; a bad line before it is an error naming it."""
        path = self.path / "log.jsonl"
        if not path.is_file():
            return []
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        out = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                if i == last:
                    continue
                raise CheckpointError(f"{path}:{i + 1}: not a JSON record ({err.msg}); fix or remove that line") from None
            out.append((line, record))
        return out

    def truncate_log(self, step: int) -> None:
        """Keep the records written before the checkpoint at ``step`` (a resumed run redoes
        the rest, the test record included), and drop a torn last line."""
        path = self.path / "log.jsonl"
        if not self.main or not path.is_file():
            return
        kept = [line for line, r in self._log_lines()
                if r.get("step", 0) <= step and not any(key in r for key in AFTER_CHECKPOINT)]
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

    def keep_last_good_prompt(self, model: SoftPromptModel) -> str:
        """After a diverged step, make ``prompt/`` the last good prompt: the best one saved, else
        ``model``'s parameters if they are still finite (those before the failing step), else
        the newest checkpoint's; always finite and from before the bad step. Returns a phrase
        saying what it holds, for the error message."""
        where = self.path / "prompt"
        if self.has_prompt() and _finite_file(where / "prompt.safetensors"):
            return f"the best prompt so far is in {where}"
        if all(bool(torch.isfinite(p).all()) for p in model.trainable_parameters()):
            self.save_prompt(model)
            return f"the last good prompt is in {where}"
        for _, path, record, prompt, _ in self._checkpoints():
            copy_into_prompt(model.prompt, prompt, path / "prompt.safetensors")
            self.save_prompt(model)
            return f"the last good prompt (step {record['step']}) is in {where}"
        return "no finite prompt was saved before it"

    def write_metrics(self, metrics: dict[str, Any], name: str = "metrics.json") -> None:
        if self.main:
            write_json_atomically(self.path / name, metrics)

    def read_metrics(self) -> dict[str, Any] | None:
        path = self.path / "metrics.json"
        return read_json(path) if path.is_file() else None

    # -- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self, model: SoftPromptModel, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """``checkpoint/``: prompt.safetensors, optimizer.safetensors (+ RNG), state.json (with
        the run's identity)."""
        if not self.main:
            return
        prompt = trainable_tensors(model.prompt)
        optim_tensors, optim_meta = _optimizer_state(optimizer)
        rng_tensors, rng_scalars = _rng_state()
        record = {**state, "run": self.identity(), "optimizer": optim_meta, "rng": rng_scalars}

        def write(tmp: Path) -> None:
            save_file(prompt, str(tmp / "prompt.safetensors"))
            save_file({**optim_tensors, **rng_tensors}, str(tmp / "optimizer.safetensors"))
            (tmp / "state.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

        write_dir_atomically(self.path / "checkpoint", write)

    def latest_checkpoint(self) -> Path | None:
        """The folder of the newest complete checkpoint of this run (see ``load_checkpoint``)."""
        found = self._checkpoints()
        return found[0][1] if found else None

    def load_checkpoint(self, model: SoftPromptModel, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """Restore prompt, optimizer and RNG states from this run's newest complete checkpoint:
        ``checkpoint/``, or the one a swap had moved aside when a kill landed between its two
        renames (``.checkpoint.old-PID``). Returns the loop's state as saved, or None when there
        is none. Another run's checkpoint is never taken; a broken one (a truncated file) gives
        way to an older complete one, and ``CheckpointError`` names it when there is none."""
        found = self._checkpoints(strict=True)
        if not found:
            return None
        _, path, record, prompt, tensors = found[0]
        copy_into_prompt(model.prompt, prompt, path / "prompt.safetensors")
        _load_optimizer_state(optimizer, tensors, record.pop("optimizer"))
        _set_rng_state(tensors, record.pop("rng"))
        record.pop("run", None)
        return record

    def _checkpoints(self, strict: bool = False) -> list[tuple[int, Path, dict, dict, dict]]:
        """This run's complete checkpoints, newest first: ``(step, folder, state, prompt
        tensors, optimizer tensors)``. With ``strict``, a foreign ``checkpoint/``, or only broken
        ones, raise ``CheckpointError``."""
        main = self.path / "checkpoint"
        candidates = ([main] if main.is_dir() else []) + sorted(self.path.glob(".checkpoint.old-*"))
        found, broken = [], []
        for folder in candidates:
            try:
                record = read_json(folder / "state.json")
                if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                    raise PromptFileError(f"{folder / 'state.json'}: not a checkpoint state")
                if record.get("run") != self.identity():
                    if folder == main and strict:
                        raise CheckpointError(
                            f"{folder / 'state.json'}: the checkpoint belongs to another run (run {record.get('run')}, "
                            f"this one is {self.identity()}); pass --overwrite to start over"
                        )
                    continue  # another run's leftover: never resumed from
                prompt = read_safetensors(folder / "prompt.safetensors")
                for name, tensor in prompt.items():
                    check_finite(name, tensor, folder / "prompt.safetensors")
                tensors = read_safetensors(folder / "optimizer.safetensors")
            except (PromptFileError, FileNotFoundError) as err:
                broken.append(str(err))
                continue
            found.append((record["step"], folder, record, prompt, tensors))
        found.sort(key=lambda item: -item[0])
        if strict and not found and broken:
            raise CheckpointError(f"{broken[0]}; no complete checkpoint to resume from (remove {main} to start the run over)")
        return found


def _read_pid(fd: int) -> str:
    """The pid the lock's holder wrote (it may be an instant late)."""
    for _ in range(50):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "unknown"


def _finite_file(file: Path) -> bool:
    try:
        tensors = read_safetensors(file)
    except (PromptFileError, FileNotFoundError):
        return False
    return all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


def _check_same_run(saved: TrainConfig, given: TrainConfig, where: Path) -> None:
    a, b = saved.to_dict(), given.to_dict()
    for key in sorted(set(a) | set(b)):
        # None in the given config means "the default": the saved run holds what it resolved to
        if key not in RESUMABLE and b.get(key) is not None and a.get(key) != b.get(key):
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
