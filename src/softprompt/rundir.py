"""A run's output directory: its life (opened and checked once, prepared, overwritten, seed
subdirectories), composed of the lock (``lock.py``), the log and results files (``runlog.py``) and
the checkpoint (``checkpoint.py``); every write atomic (``io.py``).

    OUTPUT/
      .lock           present while a process runs the run; it holds an OS lock on it
      config.json     the resolved TrainConfig
      log.jsonl       one JSON record per log line, evaluation or event
      metrics.json    the finished run's results
      prompt/         the best prompt so far (a prompt directory: ``softprompt.load`` reads it)
      checkpoint/     prompt + optimizer + RNG tensors (safetensors) and the loop state (JSON)
      plots/          drawn from log.jsonl
      trackers/       --report-to's TensorBoard, MLflow and W&B output (trackers.py)
      data/           rows given to train() in Python, as JSON Lines (train_data=...)
      seed-N/         with several seeds: one run directory per seed; summary.json beside them

What softprompt wrote is told by one rule (``is_run``, ``owned``): a run directory is one whose
``config.json`` is a ``TrainConfig`` record (it names a softprompt method and holds only
softprompt's keys), never any ``config.json`` (a copied Hugging Face model folder has one).
``--overwrite`` removes only what ``owned`` lists: the run's own files (``RUN_FILES``) and each
``seed-N`` run's. A folder that is not a softprompt run is refused, nothing removed or written; a
user's other file beside a run's files (``OUTPUT/notes.txt``, ``OUTPUT/seed-1/notes.txt``)
survives; a user's file inside a folder softprompt writes whole (``prompt/``, ``checkpoint/``,
``plots/``, which a run replaces by one swap) stops the overwrite with one line naming it.

One process at a time: ``open`` takes the exclusive lock on ``OUTPUT/.lock`` and keeps it until
``release``. The OS drops it when the process dies, so a killed run never leaves a stale lock; a
second process is refused with one line naming the holder's pid (sweeps and multi-seed runs rely
on this). Under the lock nothing else writes here, so what an interrupted atomic write left
(``.*.tmp-*``, ``.*.old-*``) is garbage and is cleared.

A checkpoint names its run (``run_identity``: a hash of the config fields that define it), and
resume takes only its own run's newest complete checkpoint.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from . import checkpoint, distributed, runlog
from .checkpoint import CheckpointError
from .config import TrainConfig
from .io import PromptFileError, clear_leftovers, read_json, write_dir_atomically, write_json_atomically
from .lock import FileLock, LockHeld
from .model import SoftPromptModel
from .cards import CARD_NAME
from .prompt_files import CONFIG_NAME, WEIGHTS_NAME, copy_into_prompt, read_safetensors, read_tensors
from .prompts import methods

__all__ = ["RunDir", "RunExistsError", "RunLockedError", "CheckpointError", "run_identity", "is_run", "owned",
           "RUN_FILES", "RESUMABLE"]

# Files and folders a run writes; `overwrite` removes exactly these (and leftovers), nothing else.
RUN_FILES = ("config.json", runlog.LOG_NAME, runlog.METRICS_NAME, "summary.json", "prompt", checkpoint.FOLDER, "plots", "trackers", "data")
# The folders among them that a run writes whole (one atomic swap), and the only names it puts in
# each: anything else there is a user's, and replacing the folder would lose it.
OWN_FOLDERS = {
    "prompt": (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME),
    checkpoint.FOLDER: (checkpoint.PROMPT_FILE, checkpoint.OPTIMIZER_FILE, checkpoint.STATE_FILE),
    "plots": ("*.png",),  # plots.plot_run: one PNG per curve
    # trackers.py: each tracker's own output ("NAME/": a folder the tracker writes as it likes)
    "trackers": ("tensorboard/", "wandb/", "mlflow.db"),
    "data": ("train.jsonl", "validation.jsonl", "test.jsonl"),  # train(train_data=...): the rows given in Python
}
SEED_DIR = re.compile(r"seed--?[0-9]+")  # RunDir.seed_dir's names; "seed-notes" is a user's folder
# The fields a checkpoint's run name (``run_identity``) leaves out. Frozen: a checkpoint written by
# an earlier version holds the hash without them, and must still resume. (The hash is of
# config.json, which a resumed run never rewrites, so it never changes in a run.)
# fsdp, device_map, max_memory: where the same frozen weights sit, not what they compute (dtype and
# quantize change the numbers: a run resumed with another is refused).
IDENTITY_OMITS = ("resume", "overwrite", "output_dir", "model", "data_dir", "eval_batch_size", "fsdp", "device_map", "max_memory")
# Fields that may differ between a run and its resumption (all others define the run): those, and
# the ones made resumable since, which stay in the hash. gradient_checkpointing recomputes the same
# activations (RNG state kept), so a run that ran out of memory resumes with it; checkpoint_every
# and report_to say when the state is saved and where records also go. (log_every stays: a
# checkpoint's window_loss sums the steps since the last log line under the old interval.)
RESUMABLE = {*IDENTITY_OMITS, "gradient_checkpointing", "checkpoint_every", "report_to"}
LOCK_NAME = ".lock"


class RunExistsError(ValueError):
    """The output directory holds another run and neither overwrite nor resume was asked."""


class RunLockedError(RunExistsError):
    """Another live process holds the output directory."""


def run_identity(config: dict[str, Any]) -> str:
    """The name a checkpoint gives its run: a hash of the config fields that define the run
    (every field but ``IDENTITY_OMITS``), as ``config.json`` holds them."""
    defining = {k: v for k, v in config.items() if k not in IDENTITY_OMITS}
    return hashlib.sha256(json.dumps(defining, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunDir:
    """The output directory of one run (or of a multi-seed run's parent).

    ``open`` checks it against the config and takes its lock; ``prepare`` then clears an
    overwritten run's files and writes ``config.json``; ``release`` gives the lock back. Only the
    main process writes (``main=False`` on the others under ``accelerate launch``).
    """

    def __init__(self, path: str | Path, main: bool = True):
        self.path = Path(path)
        self.main = main
        self._lock: FileLock | None = None
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
                if not (run.path / runlog.METRICS_NAME).is_file():  # (a finished run needs none)
                    checkpoint.find(run.path, run.identity(), strict=True)  # a broken or foreign checkpoint is named before any slow loading
            else:
                found = run.holds_run()
                if found is not None and not is_run(run.path):
                    raise RunExistsError(f"{run.path} is not a softprompt run (it holds {found}, and no config.json of a "
                                         "softprompt run); nothing was changed: choose another output directory")
                if found is not None and not config.overwrite:
                    raise RunExistsError(f"{run.path} holds another run ({found}); pass --overwrite to replace it or --resume to continue it")
                if found is not None:
                    owned(run.path)  # a user's file in the run's folders is named now, before any slow loading
        except BaseException:
            run.release()
            raise
        return run

    def lock(self) -> None:
        """Take the directory (creating it) for this process, or raise ``RunLockedError``
        naming the process that has it."""
        if self._lock is not None or not distributed.is_main():
            return
        self._created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunExistsError(f"{self.path}: cannot create the run directory ({err.strerror or err})") from None
        try:
            self._lock = FileLock.take(self.path / LOCK_NAME)
        except LockHeld as held:
            raise RunLockedError(
                f"{self.path} is in use by another softprompt run (pid {held.holder}); "
                "wait for it to end or choose another output directory"
            ) from None

    def release(self) -> None:
        """Give the directory back (``train`` does when the run ends, however it ends). A new
        run that wrote nothing but its ``config.json`` leaves nothing behind."""
        if self._lock is None:
            return
        try:
            if self._fresh and self.path.is_dir():
                if {p.name for p in self.path.iterdir()} <= {LOCK_NAME, "config.json"}:
                    (self.path / "config.json").unlink(missing_ok=True)
        finally:
            self._lock.close()  # removes .lock
            self._lock = None
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
        seeds = seed_dirs(self.path)
        return seeds[0].name if seeds else None

    def prepare(self, config: TrainConfig) -> "RunDir":
        """With ``overwrite``, remove the old run's files (only those) and what interrupted
        writes left; write ``config.json``."""
        if config.overwrite and not config.resume and self.holds_run() is not None:
            for target in owned(self.path):
                if target.name in OWN_FOLDERS:
                    shutil.rmtree(target)
                elif target.is_dir():  # a seed-N run: gone if nothing of the user's is left in it
                    try:
                        target.rmdir()
                    except OSError:
                        pass
                else:
                    target.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        if self.main and distributed.is_main():
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

    # -- the log (runlog.py) -----------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        if self.main:
            runlog.append(self.path, record)

    def records(self) -> list[dict[str, Any]]:
        return runlog.read(self.path)

    def truncate_log(self, step: int) -> None:
        """Keep the records written before the checkpoint at ``step`` (a resumed run redoes
        the rest, the test record included), and drop a torn last line."""
        if self.main:
            runlog.keep_until(self.path, step)

    # -- prompt, metrics ---------------------------------------------------------------------

    def save_prompt(self, model: SoftPromptModel) -> None:
        if self.main:
            with checkpoint.save_errors(self.path, "prompt"):
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
        for found in checkpoint.find(self.path, self.identity()):
            copy_into_prompt(model.prompt, found.prompt, found.folder / checkpoint.PROMPT_FILE)
            self.save_prompt(model)
            return f"the last good prompt (step {found.step}) is in {where}"
        return "no finite prompt was saved before it"

    def write_metrics(self, metrics: dict[str, Any], name: str = runlog.METRICS_NAME) -> None:
        if self.main:
            runlog.write_metrics(self.path, metrics, name)

    def read_metrics(self) -> dict[str, Any] | None:
        return runlog.read_metrics(self.path)

    # -- checkpoints (checkpoint.py) ---------------------------------------------------------

    def save_checkpoint(self, model: SoftPromptModel, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """``checkpoint/`` swapped in atomically; ``checkpoint.pack`` says what its files hold
        (``state`` plus the run's identity)."""
        if not self.main:
            return
        prompt, tensors, record = checkpoint.pack(model.prompt, optimizer, {**state, "run": self.identity()})

        def write(tmp: Path) -> None:
            save_file(prompt, str(tmp / checkpoint.PROMPT_FILE))
            save_file(tensors, str(tmp / checkpoint.OPTIMIZER_FILE))
            (tmp / checkpoint.STATE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

        with checkpoint.save_errors(self.path, checkpoint.FOLDER):
            write_dir_atomically(self.path / checkpoint.FOLDER, write)

    def latest_checkpoint(self) -> Path | None:
        """The folder of the newest complete checkpoint of this run (see ``load_checkpoint``)."""
        found = checkpoint.find(self.path, self.identity())
        return found[0].folder if found else None

    def load_checkpoint(self, model: SoftPromptModel, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """Restore prompt, optimizer and RNG states from this run's newest complete checkpoint
        (``checkpoint.find``). Returns the loop's state as saved, or None when there is none; a
        broken or foreign one raises ``CheckpointError`` naming it."""
        found = checkpoint.find(self.path, self.identity(), strict=True)
        return checkpoint.restore(found[0], model.prompt, optimizer) if found else None


def is_run(folder: str | Path) -> bool:
    """Whether ``folder`` is a softprompt run directory: its ``config.json`` is a JSON object
    naming a softprompt method that ``TrainConfig`` reads (so it holds only softprompt's keys).
    The one positive marker; nothing else (a ``log.jsonl``, a ``plots/``) makes a run."""
    file = Path(folder) / "config.json"
    if not file.is_file():
        return False
    try:
        data = read_json(file)
        return isinstance(data, dict) and data.get("method") in methods() and bool(TrainConfig.from_dict(data))
    except (OSError, ValueError, TypeError):
        return False


def seed_dirs(folder: Path) -> list[Path]:
    """The ``seed-N`` folders of a multi-seed run, by name."""
    return sorted(p for p in folder.iterdir() if SEED_DIR.fullmatch(p.name) and p.is_dir() and not p.is_symlink())


def owned(folder: str | Path) -> list[Path]:
    """What softprompt wrote in the run directory ``folder``, which alone ``--overwrite`` removes:
    the ``RUN_FILES`` present, then each ``seed-N`` run's, each seed folder after its content (it
    is removed only if that leaves it empty). ``RunExistsError`` of one line when ``folder`` (or a
    ``seed-N`` in it) is not a softprompt run, or names the first entry of the run's files that
    softprompt did not write (a user's file in ``plots/``, a folder where a file belongs)."""
    folder = Path(folder)
    if not is_run(folder):
        raise RunExistsError(f"{folder} is not a softprompt run (no config.json of a softprompt run); "
                             "--overwrite only removes what softprompt wrote: move it away or choose another output directory")
    found = []
    for name in RUN_FILES:
        path = folder / name
        if not os.path.lexists(path):
            continue
        patterns = OWN_FOLDERS.get(name)
        wrong_kind = path.is_symlink() or (not path.is_dir() if patterns else not path.is_file())
        foreign = [path] if wrong_kind else [] if patterns is None else sorted(
            e for e in path.iterdir() if e.is_symlink() or not (e.is_file() or e.is_dir())
            or not any(fnmatch.fnmatchcase(e.name + "/" * e.is_dir(), p) for p in patterns))
        if foreign:
            raise RunExistsError(f"{foreign[0]} was not written by softprompt; --overwrite only removes softprompt's own "
                                 f"files: move it out of {folder} first")
        found.append(path)
    for seed in seed_dirs(folder):
        # (what interrupted writes left, ``.*.tmp-*``, is cleared by the seed run's ``prepare``)
        found += owned(seed) if any(not e.name.startswith(".") for e in seed.iterdir()) else []
        found.append(seed)
    return found


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
