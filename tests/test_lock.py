"""The one file lock (softprompt.lock): a second holder is refused with one line naming the
first; a killed holder leaves no stale lock; the run directory, the sweep and the accuracy
benchmark all take this same lock, so each refuses the others' holder of its file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from softprompt.config import TrainConfig
from softprompt.lock import FileLock, LockHeld
from softprompt.rundir import LOCK_NAME, RunDir, RunLockedError


def test_a_second_holder_is_refused_with_one_line_naming_the_first(tmp_path):
    path = tmp_path / ".lock"
    first = FileLock.take(path)
    assert path.read_text() == f"{os.getpid()}\n"  # what a refused process names
    with pytest.raises(LockHeld) as refused:
        FileLock.take(path)  # another open file description: flock refuses it as it would another process
    assert refused.value.holder == str(os.getpid()) and "\n" not in str(refused.value)
    assert str(refused.value) == f"{path}: locked by another process (pid {os.getpid()})"
    with pytest.raises(LockHeld):
        FileLock.take(path, shared=True)
    first.close()
    assert not path.exists()  # an exclusive holder leaves nothing behind
    first.close()  # twice: nothing
    FileLock.take(path).close()  # free again


def test_shared_holders_coexist_and_keep_out_an_exclusive_one(tmp_path):
    path = tmp_path / ".sweep.lock"
    a, b = FileLock.take(path, shared=True), FileLock.take(path, shared=True)
    with pytest.raises(LockHeld):
        FileLock.take(path)
    a.close()
    assert path.exists()  # a shared holder never removes the file: others may hold it
    with pytest.raises(LockHeld):
        FileLock.take(path)
    b.close()
    c = FileLock.take(path)
    c.share()  # exclusive, then shared: another shared holder may join, no exclusive one
    FileLock.take(path, shared=True).close()
    with pytest.raises(LockHeld):
        FileLock.take(path)
    c.close()
    assert path.exists()


HOLDER = "import sys, time; from softprompt.lock import FileLock; held = FileLock.take(sys.argv[1]); print('held', flush=True); time.sleep(60)"


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    path = tmp_path / ".lock"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=rf"\(pid {proc.pid}\)"):
            FileLock.take(path)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    FileLock.take(path).close()  # the OS dropped it with the process (the file stayed)


def test_the_run_directory_takes_this_lock(tmp_path):
    config = TrainConfig(task="sst2", output_dir=str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    held = FileLock.take(tmp_path / "run" / LOCK_NAME)
    with pytest.raises(RunLockedError, match=rf"^{re.escape(str(tmp_path / 'run'))} is in use by another softprompt run \(pid {os.getpid()}\)"):
        RunDir.open(config)
    held.close()
    run = RunDir.open(config)
    with pytest.raises(LockHeld, match=rf"\(pid {os.getpid()}\)"):
        FileLock.take(tmp_path / "run" / LOCK_NAME)
    run.release()
    assert list((tmp_path / "run").iterdir()) == []  # .lock removed


def test_the_sweep_takes_this_lock(tmp_path):
    from softprompt.sweep import Sweep, SweepSpec
    from softprompt.sweep.engine import LOCK_FILE

    sweep = Sweep.create(SweepSpec.from_dict({"name": "s", "grid": {"task": ["cb"]}}), tmp_path / "sweep")
    with sweep.alive(reap=True):  # nobody else: it reaps, then holds the lock shared
        with pytest.raises(LockHeld):
            FileLock.take(sweep.path / LOCK_FILE)
        FileLock.take(sweep.path / LOCK_FILE, shared=True).close()  # as another worker would
    FileLock.take(sweep.path / LOCK_FILE).close()  # all gone: a launcher would reap


def test_the_accuracy_benchmark_takes_this_lock(tmp_path):
    from benchmarks import accuracy

    output = tmp_path / "results" / "accuracy.json"
    lock_file = output.with_name(f".{output.name}.lock")
    first = accuracy.hold(output)
    with pytest.raises(LockHeld, match=rf"\(pid {os.getpid()}\)"):
        FileLock.take(lock_file)
    first.close()
    held = FileLock.take(lock_file)
    with pytest.raises(SystemExit) as refused:
        accuracy.hold(output)
    assert str(refused.value) == (f"{output}: another benchmark is writing this file (pid {os.getpid()}); "
                                  "wait for it to finish or give another --output")
    held.close()
    accuracy.hold(output).close()
