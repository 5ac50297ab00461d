"""The sweep on Optuna: its directory, its studies, and what a worker does.

    DIR/
      sweep.json        the spec as run (a restart must give the same one)
      optuna.db         the default storage: SQLite, no server (``--storage URL`` for a shared one)
      .sweep.lock       every live launcher and worker on this machine holds a shared lock on it
      trials/NNNN/      one ordinary run directory per trial (config.json, log.jsonl, metrics.json,
                        checkpoint/ ...) plus trial.json: the trial's axis values (and its error)
      logs/             the output of local worker processes

A worker loops: run a waiting trial (a retry) or start a new one while the grid has an unstarted
point (the search its budget); when only other workers' trials are running, wait for them to end
or to go stale. Optuna chooses the values (GridSampler, TPE, random); nothing here schedules.

Killed workers. A trial records its directory in its user attributes before training. Its worker
keeps Optuna's heartbeat; a trial whose heartbeat stops (the worker was killed, or its machine
died) is failed by the next worker that looks and re-enqueued by Optuna's
``RetryHeartbeatStaleTrialCallback`` with the same values and user attributes, so the retry trains
in the same directory and ``train(resume=True)`` continues from the checkpoint there. On one
machine with the default storage this is immediate: a launcher that gets ``.sweep.lock`` exclusively
knows no worker of this sweep is alive and re-enqueues every RUNNING trial at once. A worker
that receives SIGINT, SIGTERM or SIGHUP exits at once, as a kill would (every write of a run is
atomic; ``launch.exit_on_signals``).

A finished grid point is never run again: the GridSampler gives trial ``k`` grid point ``k``; a
trial that finds its point held (two workers raced past the last free one) is pruned unrun and
marked ``skipped``. A trial that fails is recorded with its error (user attribute ``error``, and in
trial.json) and the sweep goes on; it is not retried unless asked (``retry_failed``, ``softprompt
sweep SPEC --retry-failed``: same values, same directory, resumed from its checkpoint).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from softprompt import runlog
from softprompt.extras import require
from softprompt.io import atomic_file, read_json, write_json_atomically
from softprompt.lock import FileLock, LockHeld

from .spec import StudyPlan, SweepSpec
from .storage import lock_on_begin, shown_url

STORAGE_ENV = "SOFTPROMPT_SWEEP_STORAGE"  # how a launcher hands --storage to its workers (never argv)
SPEC_FILE = "sweep.json"
LOCK_FILE = ".sweep.lock"


class Sweep:
    """A sweep directory, its spec and its Optuna storage."""

    def __init__(self, path: str | Path, spec: SweepSpec, storage_url: str | None = None):
        self.path = Path(path).resolve()
        self.spec = spec
        self.default_storage = storage_url is None
        self.storage_url = storage_url or f"sqlite:///{self.path / 'optuna.db'}"
        self._storage = None

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def create(cls, spec: SweepSpec, path: str | Path, storage_url: str | None = None) -> "Sweep":
        """Make (or reopen) the sweep in ``path``; a directory holding another sweep is refused."""
        path = Path(path)
        saved = path / SPEC_FILE
        data = json.loads(json.dumps(spec.to_dict()))
        storage = shown_url(storage_url)
        if saved.is_file():
            old = read_json(saved)
            if (old.get("spec") or {}).get("name") != spec.name or old.get("identity") != spec.identity():
                before = old.get("spec") or {}
                diff = sorted(k for k in set(before) | set(data) if before.get(k) != data.get(k))
                raise ValueError(f"{path} holds another sweep (its {SPEC_FILE} differs in {', '.join(diff) or 'name'}); "
                                 "give another --dir, or the same spec to continue that one")
            if old.get("storage", storage) != storage:  # another database would start the trials over
                raise ValueError(f"{path} was run with --storage {old['storage']}; give the same storage "
                                 f"(or edit 'storage' in {saved} if the database moved)")
        elif path.exists() and any(not p.name.startswith(".") for p in path.iterdir()):
            raise ValueError(f"{path} exists and holds no sweep ({SPEC_FILE}); give another --dir")
        path.mkdir(parents=True, exist_ok=True)
        # (heartbeat, retries and SLURM options may change between runs; the trials may not).
        # Keys keep the spec's order: it orders the axes, the studies' names and the report.
        with atomic_file(saved) as tmp:
            tmp.write_text(json.dumps({"identity": spec.identity(), "storage": storage, "spec": data}, indent=2) + "\n")
        sweep = cls.open(path, storage_url)  # exactly what the workers read
        sweep.studies()  # create them now, before any worker races to
        return sweep

    @classmethod
    def open(cls, path: str | Path, storage_url: str | None = None) -> "Sweep":
        path = Path(path)
        data = read_json(path / SPEC_FILE, f"not a sweep directory: no {SPEC_FILE}")
        return cls(path, SweepSpec.from_dict(data["spec"], where=str(path / SPEC_FILE)), storage_url)

    # -- Optuna ------------------------------------------------------------------------------

    def storage(self):
        """The RDB storage with the heartbeat on (a trial silent for 2 heartbeats is stale) and
        stale trials re-enqueued with their values and directory."""
        if self._storage is None:
            optuna = require("optuna", "softprompt sweep")
            from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            sqlite = self.storage_url.startswith("sqlite")
            engine = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
            self._storage = RDBStorage(
                self.storage_url, engine_kwargs=engine, heartbeat_interval=self.spec.heartbeat,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=self.spec.retries),
            )
            if sqlite:
                lock_on_begin(self._storage.engine)
        return self._storage

    def sampler(self, plan: StudyPlan, worker: int = 0, existing: int = 0):
        """The study's sampler in this process. A search's seed depends on the worker and on how
        many trials the study already holds (``existing``): a restarted sweep would otherwise draw
        the same values again (measured: the SmolLM2 sweep re-ran lr 0.044 and 0.140 after a
        restart). A fresh, uninterrupted sweep draws what it always drew."""
        optuna = require("optuna", "softprompt sweep")

        if plan.grid is not None:  # the same seed everywhere: every process shuffles the grid alike
            return optuna.samplers.GridSampler(plan.grid, seed=self.spec.seed)
        seed = self.spec.seed + worker + 1009 * existing  # distinct for fewer than 1009 workers
        if self.spec.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    def studies(self, worker: int = 0) -> list[tuple[StudyPlan, Any]]:
        optuna = require("optuna", "softprompt sweep")

        studies = []
        for plan in self.spec.studies():
            study = optuna.create_study(study_name=plan.name, storage=self.storage(), direction="maximize", load_if_exists=True)
            study.sampler = self.sampler(plan, worker, existing=len(study.get_trials(deepcopy=False)))
            studies.append((plan, study))
        return studies

    def trial_dir(self, plan: StudyPlan, number: int) -> str:
        """A trial's directory, relative to the sweep's."""
        many = len(self.spec.studies()) > 1
        return f"trials/{plan.index:02d}-{number:04d}" if many else f"trials/{number:04d}"

    # -- liveness ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def alive(self, reap: bool = False) -> Iterator[None]:
        """Hold ``.sweep.lock`` shared while this process works on the sweep. With ``reap`` and
        the default storage (one machine), first try it exclusively: if no other launcher or
        worker holds it, every RUNNING trial is a dead one, re-enqueued now."""
        lock = None
        try:
            if reap and self.default_storage:
                try:
                    lock = FileLock.take(self.path / LOCK_FILE)
                except LockHeld:
                    pass  # a launcher or worker of this sweep is alive: its trials are not dead
                else:
                    for plan, study in self.studies():
                        for trial in _trials(study, "RUNNING"):
                            retry(self, study, trial)
                    lock.share()
            if lock is None:
                lock = FileLock.take(self.path / LOCK_FILE, shared=True, wait=True)
            yield
        finally:
            if lock is not None:
                lock.close()


# ---------------------------------------------------------------------------------------
# The worker


def work(sweep: Sweep, worker: int = 0, poll: float | None = None) -> dict[str, int]:
    """Run trials until none is left to start and none is running; returns how many trials
    this process finished, failed and skipped. ``poll``: seconds between looks while only
    others' trials run (default: the heartbeat)."""
    poll = poll or sweep.spec.heartbeat
    studies = sweep.studies(worker)
    while True:
        pending = False
        for plan, study in studies:
            status = _status(plan, study)
            if status["waiting"] or status["can_start"]:  # a retry first (Optuna pops waiting trials first)
                study.optimize(lambda trial: objective(sweep, plan, study, trial), n_trials=1, catch=(Exception,))
                break
            pending = pending or status["running"]
        else:
            if not pending:
                return _done_by(_me(), studies)
            # only running trials are left (other workers', or dead ones): wait for them to end
            # or to go stale (then their retries wait, and this worker takes one)
            time.sleep(poll)
            for plan, study in studies:
                reap_stale(sweep, study)


def progress(sweep: Sweep) -> str:
    """One line on where the sweep stands, from the storage: trials done (a failed trial is a
    done point) out of the spec's total, how many failed, and the running trials with the step
    their run has logged, e.g. ``34/108 trials done (1 failed); running: 05-0002 at step 40``."""
    count = tally(sweep)
    parts = [f"{count['done']}/{count['total']} trials done" + (f" ({count['failed']} failed)" if count["failed"] else "")]
    if count["running"]:
        parts.append("running: " + ", ".join(f"{Path(d).name} at step {runlog.last_step(sweep.path / d)}" for d in sorted(count["running"])))
    return "; ".join(parts)


def complete(sweep: Sweep) -> bool:
    """Whether every point of the sweep is done (finished or failed) and nothing waits or runs."""
    count = tally(sweep)
    return count["done"] >= count["total"] and not count["running"] and not count["waiting"]


def tally(sweep: Sweep) -> dict[str, Any]:
    """From the storage: ``total`` (the spec's points), ``done`` (finished ones, failed included),
    ``failed``, ``waiting`` (retries not yet taken) and ``running`` (the directories of running
    trials)."""
    optuna = require("optuna", "softprompt sweep")

    total = done = failed = waiting = 0
    running = []
    for plan in sweep.spec.studies():
        total += plan.size
        try:
            study = optuna.load_study(study_name=plan.name, storage=sweep.storage())
        except KeyError:  # not created yet
            continue
        trials = study.get_trials(deepcopy=False)
        retried = _retried(trials)
        for t in trials:
            if not _holds(t, retried):
                continue
            if t.state.is_finished():
                done += 1
                failed += t.state == optuna.trial.TrialState.FAIL
            elif t.state == optuna.trial.TrialState.RUNNING and t.user_attrs.get("dir"):
                running.append(t.user_attrs["dir"])
            waiting += t.state == optuna.trial.TrialState.WAITING
    return {"total": total, "done": done, "failed": failed, "waiting": waiting, "running": running}


def _done_by(worker: str, studies) -> dict[str, int]:
    counts = {"complete": 0, "failed": 0, "skipped": 0}
    for _, study in studies:
        for t in study.get_trials(deepcopy=False):
            if t.user_attrs.get("worker") == worker and t.state.is_finished():
                key = "skipped" if "skipped" in t.user_attrs else "complete" if t.state.name == "COMPLETE" else "failed"
                counts[key] += 1
    return counts


def objective(sweep: Sweep, plan: StudyPlan, study, trial) -> float:
    """Train the trial's run in its directory (resuming what is there) and return its
    validation metric."""
    optuna = require("optuna", "softprompt sweep")

    from softprompt.rundir import RunLockedError
    from softprompt.train import train

    me = _frozen(study, trial.number)
    sweep.storage().record_heartbeat(me._trial_id)  # now, not a moment later: "dir" set implies a heartbeat
    trial.set_user_attr("worker", _me())
    reason = _skip_reason(plan, study, me)
    if reason:
        trial.set_user_attr("skipped", reason)
        raise optuna.TrialPruned(reason)
    relative = me.user_attrs.get("dir") or sweep.trial_dir(plan, trial.number)
    trial.set_user_attr("dir", relative)
    path = sweep.path / relative
    record: dict[str, Any] = {"study": plan.name, "trial": trial.number, "retry_of": me.system_attrs.get("failed_trial")}
    try:
        params = {**plan.fixed}
        if plan.grid is not None:
            params.update({name: trial.suggest_categorical(name, values) for name, values in plan.grid.items()})
        params.update({name: r.suggest(trial, name) for name, r in sweep.spec.search.items()})
        record["params"] = params
        write_json_atomically(path / "trial.json", record)
        shown = " ".join(f"{k}={v}" for k, v in params.items())
        print(f"softprompt sweep: {relative} {shown}: {'resuming' if (path / 'config.json').is_file() else 'starting'}",
              file=sys.stderr, flush=True)
        while True:
            config = sweep.spec.trial_config(params, path, resume=(path / "config.json").is_file())
            try:
                metrics = train(config)
                break
            except RunLockedError:  # a process taken for dead still runs it: wait, then take its result
                time.sleep(sweep.spec.heartbeat)
        metric = metrics["selection_metric"] if sweep.spec.objective == "auto" else sweep.spec.objective
        value = float((metrics.get("best_validation") or {})[metric])
    except Exception as err:
        text = str(err).strip().splitlines()
        message = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
        trial.set_user_attr("error", message)
        write_json_atomically(path / "trial.json", {"params": {}, **record, "error": message})
        print(f"softprompt sweep: {relative} failed: {message}", file=sys.stderr, flush=True)
        raise
    print(f"softprompt sweep: {relative} {shown}: validation {metric} {value:.4f}", file=sys.stderr, flush=True)
    return value


def retry(sweep: Sweep, study, trial) -> bool:
    """Fail a RUNNING trial known to be dead and enqueue its retry (same values, same
    directory), as Optuna does for a stale one; False when another process got there first."""
    optuna = require("optuna", "softprompt sweep")

    storage = sweep.storage()
    try:
        if not storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    storage.get_heartbeat_stale_trial_callback()(study, storage.get_trial(trial._trial_id))
    return True


def retry_failed(sweep: Sweep) -> list[str]:
    """Enqueue a retry of every trial that failed with an error and has none yet: the same
    values and directory (``objective`` resumes the run from its checkpoint there), its error
    left behind. Returns the retried trials' directories."""
    import copy

    RetryHeartbeatStaleTrialCallback = require("optuna.storages", "softprompt sweep").RetryHeartbeatStaleTrialCallback

    again = RetryHeartbeatStaleTrialCallback(max_retry=None)  # asked for by the user: past the spec's `retries`
    retried_dirs = []
    for _, study in sweep.studies():
        trials = study.get_trials(deepcopy=False)
        retried = _retried(trials)
        for trial in _trials(study, "FAIL"):
            if trial.number in retried or "skipped" in trial.user_attrs:
                continue
            trial = copy.deepcopy(trial)
            trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in ("error", "worker")}
            again(study, trial)
            retried_dirs.append(trial.user_attrs.get("dir", f"trial {trial.number}"))
    return retried_dirs


def reap_stale(sweep: Sweep, study) -> None:
    """Fail and re-enqueue the stale trials (Optuna's heartbeat check), and those killed before
    their first heartbeat: RUNNING without a directory long after they started."""
    optuna = require("optuna", "softprompt sweep")

    optuna.storages.fail_stale_trials(study)
    limit = datetime.timedelta(seconds=10 * sweep.spec.heartbeat)
    for trial in _trials(study, "RUNNING"):
        if "dir" not in trial.user_attrs and trial.datetime_start and datetime.datetime.now() - trial.datetime_start > limit:
            retry(sweep, study, trial)


# ---------------------------------------------------------------------------------------
# Bookkeeping over a study's trials


def _me() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def _trials(study, state: str) -> list:
    optuna = require("optuna", "softprompt sweep")

    return study.get_trials(deepcopy=False, states=(getattr(optuna.trial.TrialState, state),))


def _frozen(study, number: int):
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _retried(trials) -> set[int]:
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _holds(t, retried: set[int]) -> bool:
    """Whether trial ``t`` stands for its point: not skipped, and not a dead trial that a retry
    replaced."""
    optuna = require("optuna", "softprompt sweep")

    return "skipped" not in t.user_attrs and not (t.state == optuna.trial.TrialState.FAIL and t.number in retried)


def _origin(t) -> int:
    """The number of the trial ``t`` continues (itself, or the first of a chain of retries)."""
    return t.system_attrs.get("failed_trial", t.number)


def _skip_reason(plan: StudyPlan, study, me) -> str | None:
    """Why trial ``me`` must not run: its grid point is another trial's, or the search's budget
    is spent by trials that came before it. A retry never skips for the budget."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    others = [t for t in trials if t.number != me.number and _holds(t, retried)]
    if plan.grid is not None:
        point = me.system_attrs.get("grid_id")
        for t in others:
            if t.system_attrs.get("grid_id") == point and (t.state.is_finished() or _origin(t) < _origin(me)):
                return f"grid point {point} is trial {t.number}'s"
        return None
    if "failed_trial" in me.system_attrs:
        return None
    before = sum(1 for t in others if _origin(t) < _origin(me))
    return f"the budget of {plan.budget} trials is spent" if before >= plan.budget else None


def _status(plan: StudyPlan, study) -> dict[str, bool]:
    optuna = require("optuna", "softprompt sweep")

    trials = study.get_trials(deepcopy=False)
    states = {t.state for t in trials}
    if plan.grid is not None:
        can_start = len({t.system_attrs.get("grid_id") for t in trials if "grid_id" in t.system_attrs}) < plan.size
    else:
        retried = _retried(trials)
        can_start = sum(_holds(t, retried) for t in trials) < plan.budget
    return {"waiting": optuna.trial.TrialState.WAITING in states, "running": optuna.trial.TrialState.RUNNING in states,
            "can_start": can_start}
