"""Starting the workers: in this process, as N local processes, or as a SLURM job array
through ``submitit`` (optional: ``pip install softprompt[sweep]``). Every worker runs
``engine.work`` on the same sweep directory and storage; Optuna hands out the trials.

The storage URL reaches workers through the environment (``SOFTPROMPT_SWEEP_STORAGE``), never
their command line or a pickled job file, since it may hold a database password.

Stopping. SIGINT, SIGTERM (a scheduler's stop) and SIGHUP (the terminal closed) stop a launcher
of local workers as Ctrl-C does: it stops its workers (``STOP_SIGNALS`` each, then SIGKILL
after ``STOP_GRACE`` seconds), waits for them and says how to continue, in one line; a worker
whose launcher is gone anyway (SIGKILL) notices within a second and exits. Nothing is left
running. A worker stops at once on those signals, its trial resumable (``exit_on_signals``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

from ..signals import handling
from .engine import STORAGE_ENV, Sweep, complete, progress, work

# sbatch settings of a worker unless the spec's `slurm:` mapping says otherwise (submitit names).
SLURM_DEFAULTS: dict[str, Any] = {"timeout_min": 24 * 60, "cpus_per_task": 4, "nodes": 1, "tasks_per_node": 1}
# the launcher of local workers prints where the sweep stands when a trial ends, and at least
# this often (seconds) while trials run: a sweep runs for hours, its workers write to logs/
PROGRESS_EVERY = 120.0
# The signals that stop a sweep's processes (Ctrl-C, a scheduler's stop, the terminal closed).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_GRACE = 10.0  # seconds a stopped worker has to exit before it is killed


def run_local(sweep: Sweep, workers: int = 1) -> int:
    """Run the sweep to its end on this machine with ``workers`` processes (1: this one).
    Returns 0, or 1 when a worker died (its trial is taken over by the others, or resumes when
    the sweep is run again: the last line says which)."""
    with sweep.alive(reap=True):
        if workers == 1:
            work(sweep, 0)
            return 0
        logs = sweep.path / "logs"
        logs.mkdir(exist_ok=True)
        env = dict(os.environ)
        if not sweep.default_storage:
            env[STORAGE_ENV] = sweep.storage_url
        # the cores shared out, unless the user chose the thread count
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
        procs: list[subprocess.Popen] = []
        with _signals_interrupt():  # from before the first worker starts to after the last is stopped
            try:
                for i in range(workers):
                    with open(logs / f"worker-{i}.log", "a") as log:
                        procs.append(subprocess.Popen([sys.executable, "-m", "softprompt.sweep.worker", str(sweep.path), str(i)],
                                                      env=env, stdout=log, stderr=subprocess.STDOUT))
                codes = _wait_showing_progress(sweep, procs, logs)
            except KeyboardInterrupt:
                _stop(procs)  # each exits at once; its trial resumes on the next run
                raise KeyboardInterrupt(f"interrupted; run the same command again to continue {sweep.path}") from None
    died = [f"worker {i} ({_exit_reason(code)})" for i, code in enumerate(codes) if code != 0]
    if died and _complete(sweep):
        print(f"softprompt sweep: {', '.join(died)} ended abnormally (see {logs}); the other workers finished every "
              "trial: the sweep is complete", file=sys.stderr)
    elif died:
        print(f"softprompt sweep: {', '.join(died)} ended abnormally (see {logs}); run the same command again "
              "to finish what it left", file=sys.stderr)
    return 1 if died else 0


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the launcher, as Ctrl-C does, once: a second
    signal while it stops its workers is ignored, so the stopping always finishes."""
    fired = []

    def interrupt(signum, frame):
        if not fired:
            fired.append(signum)
            raise KeyboardInterrupt

    with handling(STOP_SIGNALS, interrupt):
        yield


def _stop(procs: list[subprocess.Popen]) -> None:
    """Stop the workers: SIGTERM, SIGKILL for those still alive after ``STOP_GRACE`` seconds, and
    wait for every one (so none is left running, nor a zombie)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _complete(sweep: Sweep) -> bool:
    try:
        return complete(sweep)
    except Exception:  # a busy or unreachable database: say what is always true
        return False


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """``STOP_SIGNALS`` end this process at once, like a kill: its trial stays RUNNING in the
    storage and is resumed from its checkpoint by whoever runs the sweep next (every write of a
    run is atomic). The previous handlers come back on exit (only in the main thread)."""

    def stop(signum, frame):
        print(f"softprompt sweep: stopped by signal {signum}; the running trial resumes when the sweep is run again",
              file=sys.stderr, flush=True)
        os._exit(128 + signum)

    with handling(STOP_SIGNALS, stop):
        yield


def _exit_with_parent(poll: float = 1.0) -> None:
    """Exit when the launcher that started this worker is gone (killed with SIGKILL, which it
    cannot pass on): a daemon thread watches the parent's pid."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        print("softprompt sweep: the launcher is gone; stopping (the running trial resumes when the sweep is run again)",
              file=sys.stderr, flush=True)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _wait_showing_progress(sweep: Sweep, procs: list, logs, poll: float = 5.0) -> list[int]:
    """Wait for the worker processes; print ``progress`` when the count of done trials
    changes, and every ``PROGRESS_EVERY`` seconds, and say at once when a worker dies (the
    others go on; a sweep of hours would otherwise run on short-handed unnoticed). Returns
    their exit codes."""
    shown, last, dead = None, time.monotonic(), set()
    while any(p.poll() is None for p in procs):
        time.sleep(poll)
        for i, p in enumerate(procs):
            if p.poll() not in (None, 0) and i not in dead:
                dead.add(i)
                print(f"softprompt sweep: worker {i} died ({_exit_reason(p.returncode)}){_last_words(logs / f'worker-{i}.log')}; "
                      "the others go on and take its trial over once its heartbeat stops", file=sys.stderr, flush=True)
        line = _progress_line(sweep)
        done = line.split(";")[0]
        if done != shown or time.monotonic() - last >= PROGRESS_EVERY:
            print(line, file=sys.stderr, flush=True)
            shown, last = done, time.monotonic()
    codes = [p.wait() for p in procs]
    print(_progress_line(sweep), file=sys.stderr, flush=True)
    return codes


def _last_words(log) -> str:
    """``: LAST LINE (see LOG)`` from a dead worker's log, or ``(see LOG)`` if it is empty."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    return (f": {lines[-1].strip()[:200]}" if lines else "") + f" (see {log})"


def _progress_line(sweep: Sweep) -> str:
    try:
        return f"softprompt sweep: {progress(sweep)}"
    except Exception as err:  # a busy or unreachable database must not stop the launcher
        return f"softprompt sweep: progress unavailable ({type(err).__name__})"


def _exit_reason(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit {code}"


def slurm_executor(sweep: Sweep, workers: int, cluster: str = "slurm"):
    """A submitit executor for ``workers`` array tasks with the spec's ``slurm`` settings;
    ``cluster="local"`` or ``"debug"`` for submitit's own local executors."""
    try:
        import submitit
    except ImportError:
        raise ValueError("--launcher slurm needs submitit: pip install 'softprompt[sweep]'") from None
    try:
        executor = submitit.AutoExecutor(folder=sweep.path / "slurm", cluster=cluster)
    except RuntimeError as err:  # e.g. no srun on this machine
        raise ValueError(f"--launcher slurm: {err}") from None
    options = {**SLURM_DEFAULTS, **sweep.spec.slurm}
    executor.update_parameters(name=f"sweep-{sweep.spec.name}", slurm_array_parallelism=workers, **options)
    return executor


def submit_slurm(sweep: Sweep, workers: int, executor=None) -> list:
    """Submit ``workers`` workers as one job array; returns submitit's jobs. The storage URL
    goes through the environment sbatch exports to the jobs."""
    executor = executor or slurm_executor(sweep, workers)
    if not sweep.default_storage:
        os.environ[STORAGE_ENV] = sweep.storage_url
    return executor.map_array(run_worker, [str(sweep.path)] * workers, list(range(workers)))


def run_worker(path: str, index: int) -> dict[str, int]:
    """One worker (what a SLURM array task or a local worker process runs)."""
    sweep = Sweep.open(path, os.environ.get(STORAGE_ENV) or None)
    with sweep.alive():
        return work(sweep, index)


def main(argv: list[str] | None = None) -> int:
    """``python -m softprompt.sweep.worker DIR INDEX``: a local worker process."""
    argv = sys.argv[1:] if argv is None else argv
    path, index = argv[0], int(argv[1])
    _exit_with_parent()
    with exit_on_signals():
        counts = run_worker(path, index)
    print(f"softprompt sweep: worker {index} done: {counts}", file=sys.stderr)
    return 0

