"""A sweep leaves nothing running and says the truth: SIGTERM or SIGHUP to `softprompt sweep
--workers 2` stops both workers (gone within a bounded time) and the launcher says how to continue
in one line; a worker killed while the other finishes every trial ends with "the sweep is
complete"; `--retry-failed` runs failed trials again in their directories; `sweep report` with a
hand-broken trial file skips that trial, names it, and writes the rest; `train` takes SIGHUP as
SIGTERM (a resume hint)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from softprompt.cli import main
from conftest import tiny_llama
from helpers import sweep_assets, sweep_env, sweep_trials, write_cb, write_sweep_spec

GRID = {"method": ["prompt"], "task": ["sst2", "cb"], "seed": [0, 1]}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return sweep_assets(tmp_path_factory.mktemp("signals"), tiny_llama())


def launch(spec: Path, directory: Path) -> subprocess.Popen:
    command = [sys.executable, "-c", "import sys; from softprompt.cli import main; sys.exit(main())", "sweep", str(spec),
               "--dir", str(directory), "--workers", "2"]
    return subprocess.Popen(command, env=sweep_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def training_pids(directory: Path, want: int, proc: subprocess.Popen, mid_trial: bool = False, timeout: float = 150) -> set[int]:
    """The pids of the processes training trials (each trial's .lock names it), once ``want`` are
    seen; ``mid_trial``: only a trial that has a checkpoint and no metrics yet."""
    seen, deadline = set(), time.time() + timeout
    while len(seen) < want and time.time() < deadline and proc.poll() is None:
        for folder in sorted((directory / "trials").glob("*")) if (directory / "trials").is_dir() else []:
            try:
                pid = int((folder / ".lock").read_text().strip())
            except (OSError, ValueError):
                continue
            if not mid_trial or ((folder / "checkpoint").is_dir() and not (folder / "metrics.json").exists()):
                seen.add(pid)
        time.sleep(0.003)
    assert len(seen) >= want, f"saw {seen}"
    return seen


def gone_within(pids: set[int], seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        alive = set()
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.add(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_stopped_launcher_stops_its_workers_and_says_so_in_one_line(assets, tmp_path, sig):
    spec = write_sweep_spec(assets, tmp_path, grid=GRID, base={"max_steps": 40, "eval_every": 20, "checkpoint_every": 10})
    directory = tmp_path / "sweep"
    proc = launch(spec, directory)
    workers: set[int] = set()
    try:
        workers = training_pids(directory, 2, proc)
        time.sleep(0.2)
        proc.send_signal(sig)
        stderr = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert gone_within(workers, 15), f"workers {workers} still running"
    lines = stderr.strip().splitlines()
    said = f"softprompt sweep: interrupted; run the same command again to continue {directory}"
    assert proc.returncode == 130 and lines[-1] == said and stderr.count("interrupted") == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    # and the sweep does continue: every trial resumable, nothing RUNNING is left for long
    assert all(t.state != optuna.trial.TrialState.COMPLETE or t.user_attrs.get("dir") for t in sweep_trials(directory))


def test_a_worker_killed_while_the_other_finishes_everything_ends_complete(assets, tmp_path):
    spec = write_sweep_spec(assets, tmp_path, grid=GRID)
    directory = tmp_path / "sweep"
    proc = launch(spec, directory)
    try:
        victim = next(iter(training_pids(directory, 1, proc, mid_trial=True)))
        os.kill(victim, signal.SIGKILL)
        stderr = proc.communicate(timeout=300)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "softprompt sweep: 4/4 trials done" in stderr
    assert "the other workers finished every trial: the sweep is complete" in stderr, stderr[-2000:]
    assert "run the same command again" not in stderr
    assert proc.returncode == 1  # a worker did die: said, and the status says it too
    complete = [t for t in sweep_trials(directory) if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4


# ---------------------------------------------------------------------------------------
# In this process: --retry-failed, a broken trial file in the report


@pytest.fixture(scope="module")
def with_failures(assets, tmp_path_factory):
    """A sweep whose CB trials failed (their data was missing), then its data put back."""
    folder = tmp_path_factory.mktemp("failures")
    data = folder / "data"
    shutil.copytree(assets / "data" / "SST-2", data / "SST-2")
    spec = write_sweep_spec(assets, folder, grid=GRID, base={"data_dir": str(data), "max_steps": 4, "eval_every": 4})
    directory = folder / "sweep"
    assert main(["sweep", str(spec), "--dir", str(directory)]) == 0
    write_cb(data)
    return spec, directory


def test_failed_trials_are_run_again_only_when_asked(with_failures, capsys):
    spec, directory = with_failures
    states = lambda: sorted(t.state.name for t in sweep_trials(directory))  # noqa: E731
    assert states() == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    failed = sorted(t.user_attrs["dir"] for t in sweep_trials(directory) if t.state.name == "FAIL")
    capsys.readouterr()
    assert main(["sweep", str(spec), "--dir", str(directory)]) == 0  # the same command: nothing is retried
    err = capsys.readouterr().err
    assert states() == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    assert f"2 trial(s) failed (see the report); to run them again: softprompt sweep {spec} --dir {directory} --retry-failed" in err

    assert main(["sweep", str(spec), "--dir", str(directory), "--retry-failed"]) == 0
    err = capsys.readouterr().err
    assert f"retrying 2 failed trial(s): {', '.join(failed)}" in err and "trial(s) failed" not in err
    trials = sweep_trials(directory)
    done = sorted(t.user_attrs["dir"] for t in trials if t.state.name == "COMPLETE")
    assert len(done) == 4 and set(failed) <= set(done)  # in the same directories
    for t in trials:
        if t.state.name == "COMPLETE" and t.user_attrs["dir"] in failed:
            assert "error" not in t.user_attrs and t.system_attrs["failed_trial"] is not None
            assert "error" not in json.loads((directory / t.user_attrs["dir"] / "trial.json").read_text())
    assert sorted(p.name for p in (directory / "trials").iterdir()) == sorted(Path(d).name for d in done)
    assert main(["sweep", str(spec), "--dir", str(directory), "--retry-failed"]) == 0
    assert "retrying 0 failed trial(s)" in capsys.readouterr().err


@pytest.mark.parametrize("broken", ['{"test": ', "[]", '{"selection_metric": "accuracy"}', b"\xff\xfe", ""])
def test_report_skips_a_hand_broken_trial_and_names_it(with_failures, tmp_path, capsys, broken):
    _, source = with_failures
    directory = tmp_path / "sweep"
    shutil.copytree(source, directory)
    finished = sorted(p.parent for p in (directory / "trials").glob("*/metrics.json"))
    victim = finished[0] / "metrics.json"
    victim.write_bytes(broken if isinstance(broken, bytes) else broken.encode())
    capsys.readouterr()
    assert main(["sweep", "report", str(directory)]) == 0
    captured = capsys.readouterr()
    said = [line for line in captured.err.splitlines() if line.strip()]
    assert len(said) == 1 and said[0].startswith(f"softprompt sweep report: skipping trial {victim.parent.name}: {victim}"), said
    table = (directory / "report" / "table.md").read_text()
    assert f"- unreadable: `{victim.parent.name}`" in table
    trials_csv = (directory / "report" / "trials.csv").read_text()
    assert f"{victim.parent.name},unreadable," in trials_csv
    assert (directory / "report" / "table.csv").read_text().count("\n") >= 2  # the other trials' cells


# ---------------------------------------------------------------------------------------
# train: SIGHUP as SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_train_stops_on_sighup_as_on_sigterm_with_a_resume_hint(tmp_path, capsys, monkeypatch, sig):
    import softprompt.train

    def stopped(config):
        (Path(config.output_dir)).mkdir(parents=True, exist_ok=True)
        (Path(config.output_dir) / "config.json").write_text("{}")  # as a run that started
        os.kill(os.getpid(), sig)
        time.sleep(5)
        raise AssertionError("the signal did not stop training")

    monkeypatch.setattr(softprompt.train, "train", stopped)
    before = signal.getsignal(sig)
    out = tmp_path / "run"
    assert main(["train", "--task", "sst2", "--output-dir", str(out), "--method", "prompt"]) == 130
    assert capsys.readouterr().err.strip() == f"softprompt train: interrupted; continue with: softprompt train --resume {out}"
    assert signal.getsignal(sig) == before  # the handler is given back
