"""`softprompt sweep` end to end, with worker processes, on a tiny saved model: every grid point
runs exactly once with two workers; a worker killed with SIGKILL mid-trial and the sweep started
again ends with the table of an uninterrupted sweep; the report's numbers equal the trials'
metrics.json; the same against a real PostgreSQL server. (In this process: test_sweep_trials.py;
specs and storage: test_sweep_spec.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from softprompt.cli import main
from softprompt.sweep import Sweep
from softprompt.sweep.engine import progress
from conftest import tiny_llama
from helpers import SWEEP_GRID, read_report_csv, sweep_assets, sweep_env, sweep_trials, write_sweep_spec


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return sweep_assets(tmp_path_factory.mktemp("sweep"), tiny_llama())


def sweep_command(spec: Path, directory: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from softprompt.cli import main; sys.exit(main())", "sweep", str(spec), "--dir", str(directory), "--workers", "2", *extra]


def assert_each_point_once(directory: Path, storage: str | None = None) -> None:
    """Every grid point has exactly one complete trial and one directory; no trial directory
    is left over."""
    trials = sweep_trials(directory, storage)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    points = [tuple(t.params[k] for k in SWEEP_GRID) for t in complete]
    assert len(points) == len(set(points)) == 8, points
    dirs = [t.user_attrs["dir"] for t in complete]
    assert len(set(dirs)) == 8
    assert sorted(p.name for p in (directory / "trials").iterdir()) == sorted(Path(d).name for d in dirs)
    for t in complete:  # the directory holds the run of that point
        saved = json.loads((directory / t.user_attrs["dir"] / "config.json").read_text())
        assert (saved["method"], saved["task"], saved["seed"]) == tuple(t.params[k] for k in SWEEP_GRID)


@pytest.fixture(scope="module")
def uninterrupted(assets, tmp_path_factory):
    """The reference sweep: 2 worker processes, default SQLite storage, never interrupted."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    spec = write_sweep_spec(assets, folder)
    result = subprocess.run(sweep_command(spec, folder / "sweep"), env=sweep_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| method | sst2 (accuracy) | cb (accuracy) | average |" in result.stdout
    assert "softprompt sweep: 8/8 trials done\n" in result.stderr  # the launcher's last progress line
    return folder / "sweep", spec


def test_grid_with_two_workers_runs_every_point_exactly_once(uninterrupted):
    directory, spec = uninterrupted
    assert_each_point_once(directory)
    logs = "".join(p.read_text() for p in (directory / "logs").glob("worker-*.log"))
    assert logs.count(": starting") == 8 and "resuming" not in logs
    assert "worker 0 done" in logs and "worker 1 done" in logs  # both worked
    # running the finished sweep again runs nothing
    before = len(sweep_trials(directory))
    assert main(["sweep", str(spec), "--dir", str(directory)]) == 0
    assert len(sweep_trials(directory)) == before


def independent_table(directory: Path) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(method, task) -> (mean, sample std, n) over seeds of the test accuracy, read from the
    trials' own config.json and metrics.json."""
    runs = {}
    for folder in (directory / "trials").iterdir():
        config = json.loads((folder / "config.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["selection_metric"] == "accuracy"  # SST-2's and CB's own (first) metric
        runs.setdefault((config["method"], config["task"]), []).append(metrics["test"]["accuracy"])
    return {key: (statistics.fmean(v), statistics.stdev(v), len(v)) for key, v in runs.items()}


def test_report_numbers_equal_the_trials_metrics(uninterrupted):
    directory, _ = uninterrupted
    expected = independent_table(directory)
    rows = read_report_csv(directory)
    cells = {(r["row"], r["task"]): r for r in rows if r["task"] != "average"}
    assert set(cells) == set(expected)
    for key, (mean, std, n) in expected.items():
        assert float(cells[key]["mean"]) == pytest.approx(mean, abs=1e-12)
        assert float(cells[key]["std"]) == pytest.approx(std, abs=1e-12)
        assert int(cells[key]["n"]) == n and cells[key]["metric"] == "accuracy" and cells[key]["split"] == "validation"
    for method in ("prompt", "dpt"):
        average = next(r for r in rows if r["row"] == method and r["task"] == "average")
        assert float(average["mean"]) == pytest.approx(statistics.fmean([expected[(method, "sst2")][0], expected[(method, "cb")][0]]))
    markdown = (directory / "report" / "table.md").read_text()
    mean, std, _ = expected[("dpt", "cb")]
    assert f"{100 * mean:.2f} ± {100 * std:.2f}" in markdown


def kill_mid_trial(command: list[str], directory: Path, everything: bool) -> tuple[Path, int, str]:
    """Start the sweep and SIGKILL the worker training a trial that has a checkpoint and no
    metrics yet. ``everything``: then kill the launcher and the other worker too (the machine
    went down); else let them go on to the end. Returns that trial's folder, the
    launcher's exit code and what it printed to stderr."""
    proc = subprocess.Popen(command, env=sweep_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    victim, deadline = None, time.time() + 120
    try:
        while victim is None and time.time() < deadline and proc.poll() is None:
            for folder in sorted((directory / "trials").glob("*")) if (directory / "trials").is_dir() else []:
                try:
                    pid = int((folder / ".lock").read_text().strip())  # the process training it
                except (OSError, ValueError):
                    continue
                if (folder / "checkpoint").is_dir() and not (folder / "metrics.json").exists():
                    os.kill(pid, signal.SIGKILL)
                    time.sleep(0.05)
                    if not (folder / "metrics.json").exists():  # (else it had just finished: look again)
                        victim = folder
                    break
            time.sleep(0.003)
        if everything:
            os.killpg(proc.pid, signal.SIGKILL)
        stderr = proc.communicate(timeout=300)[1]
        code = proc.returncode
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert victim is not None, "no trial caught mid-run"
    return victim, code, stderr


def restart_here(spec: Path, directory: Path, *extra: str) -> None:
    """Run the sweep again, in this process (one worker: the tests' budget has no room for
    another start of Python and torch)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker processes run (OMP_NUM_THREADS=1): the same floats
    try:
        assert main(["sweep", str(spec), "--dir", str(directory), *extra]) == 0
    finally:
        torch.set_num_threads(threads)


def assert_resumed_in_place(directory: Path, victim: Path, storage: str | None = None) -> None:
    """The killed trial was re-enqueued with its values and directory and finished there,
    resuming what it had left."""
    trials = sweep_trials(directory, storage)
    relative = f"trials/{victim.name}"
    mine = [t for t in trials if t.user_attrs.get("dir") == relative]
    assert [t.state.name for t in mine] == ["FAIL", "COMPLETE"]  # the killed trial (failed as dead), its retry
    assert mine[1].system_attrs["failed_trial"] == mine[0].number and mine[1].params == mine[0].params
    assert (victim / "metrics.json").is_file()
    logs = "".join(p.read_text() for p in (directory / "logs").glob("worker-*.log"))
    assert re.search(rf"softprompt sweep: {relative} [^\n\r]*: starting", logs)


def test_killed_worker_then_restart_gives_the_same_table(assets, uninterrupted, tmp_path, capfd):
    """SQLite, one machine: the worker is killed mid-trial and so is the rest of the sweep; the
    restarted sweep finds no live worker (it gets .sweep.lock exclusively), re-enqueues the
    dead trials at once and resumes them from their checkpoints."""
    reference, _ = uninterrupted
    spec = write_sweep_spec(assets, tmp_path)
    directory = tmp_path / "sweep"
    victim, _, _ = kill_mid_trial(sweep_command(spec, directory), directory, everything=True)
    assert not (victim / "metrics.json").exists() and (victim / "checkpoint").is_dir()
    # the dead trial still reads RUNNING in the storage; progress shows it at its logged step
    logged = [json.loads(line)["step"] for line in (victim / "log.jsonl").read_text().splitlines()]
    assert re.search(rf"^\d/8 trials done; running: (.*, )?{victim.name} at step {logged[-1]}(,|$)", progress(Sweep.open(directory)))
    capfd.readouterr()
    restart_here(spec, directory)
    assert re.search(rf"softprompt sweep: trials/{victim.name} [^\n\r]*: resuming", capfd.readouterr().err)
    assert_resumed_in_place(directory, victim)
    assert_each_point_once(directory)
    assert read_report_csv(directory) == read_report_csv(reference)


# ---------------------------------------------------------------------------------------
# PostgreSQL


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server in a temporary directory on a loopback port (as the `postgres` user
    when the tests run as root: initdb refuses root); yields a function making a fresh
    database URL."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install the distribution's postgresql package")
    psycopg2 = pytest.importorskip("psycopg2", reason="the PostgreSQL driver psycopg2 is not installed (pip install 'softprompt[sweep]')")
    prefix: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="softprompt-pg-"))
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run initdb as")
        os.chown(base, user.pw_uid, user.pw_gid)
        runuser = shutil.which("runuser")
        prefix = [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c"]
        if not runuser:
            pytest.skip("running as root without runuser")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = base / "data"
    run = lambda *args: subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)  # noqa: E731
    done = run(initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    if done.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"initdb failed: {done.stderr.strip()[-300:]}")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    done = run(pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "-t", "60", "start")
    if done.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"pg_ctl start failed: {done.stderr.strip()[-300:]}")
    count = iter(range(1000))

    def database() -> str:
        name = f"sweep{next(count)}"
        connection = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        connection.autocommit = True
        connection.cursor().execute(f"CREATE DATABASE {name}")
        connection.close()
        return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{name}"

    try:
        yield database
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_postgres_killed_worker_then_restart_gives_the_same_table(assets, uninterrupted, postgres, tmp_path):
    """Against a real PostgreSQL server: two workers, one SIGKILLed mid-trial. Its heartbeat
    stops, so the other worker re-enqueues the trial (same values, same directory) and
    resumes it from its checkpoint; the sweep started again has nothing left to do, and the
    table is the uninterrupted sweep's."""
    reference, _ = uninterrupted
    url = postgres()
    spec = write_sweep_spec(assets, tmp_path)
    directory = tmp_path / "sweep"
    victim, code, stderr = kill_mid_trial(sweep_command(spec, directory, "--storage", url), directory, everything=False)
    assert code == 1  # the launcher says a worker died: at once, while the other goes on, and at the end
    said = re.search(r"softprompt sweep: worker \d died \(signal 9\)[^\n]* \(see [^\n]*worker-\d\.log\); the others go on", stderr)
    assert said and "trials done" in stderr[said.end():], stderr[-2000:]
    assert not (directory / "optuna.db").exists()  # the server held the study, not the default SQLite file
    logs = "".join(p.read_text() for p in (directory / "logs").glob("worker-*.log"))
    assert re.search(rf"softprompt sweep: trials/{victim.name} [^\n\r]*: resuming", logs)
    before = len(sweep_trials(directory, url))
    restart_here(spec, directory, "--storage", url)
    assert len(sweep_trials(directory, url)) == before
    assert_resumed_in_place(directory, victim, url)
    assert_each_point_once(directory, url)
    assert read_report_csv(directory) == read_report_csv(reference)
