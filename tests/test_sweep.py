"""`softprompt sweep` on Optuna, on a tiny saved model: every grid point runs exactly once with
two worker processes; a worker killed with SIGKILL mid-trial and the sweep started again ends
with the table of an uninterrupted sweep; the report's numbers equal the trials' metrics.json;
the same against a real PostgreSQL server; a failed trial is recorded and the sweep goes on; a
searched range; the SLURM path's job array; the shipped specs are valid."""

from __future__ import annotations

import csv
import io
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
from softprompt.sweep import Range, Sweep, SweepSpec
from softprompt.sweep.engine import progress
from conftest import ROOT, tiny_llama
from helpers import tiny_tokenizer, write_sst2

WORDS = "the film movie was great good fun bad awful dull boring plot acting".split()
# 8 trials: 2 methods x 2 tasks x 2 seeds (choosing a learning rate per cell: test_searched_learning_rate
# on real runs, test_table_chooses_on_validation_never_test on made-up ones)
GRID = {"method": ["prompt", "dpt"], "task": ["sst2", "cb"], "seed": [0, 1]}


def write_cb(root: Path) -> Path:
    """A tiny CB folder in SuperGLUE's layout (premise, hypothesis, label)."""
    folder = root / "CB"
    folder.mkdir(parents=True, exist_ok=True)
    labels = ("entailment", "contradiction", "neutral")

    def rows(n: int, offset: int) -> str:
        return "".join(json.dumps({"premise": " ".join(WORDS[(i + offset) % 13: (i + offset) % 13 + 4]),
                                   "hypothesis": " ".join(WORDS[(2 * i) % 13: (2 * i) % 13 + 3]),
                                   "label": labels[i % 3], "idx": i}) + "\n" for i in range(n))

    (folder / "train.jsonl").write_text(rows(18, 0))
    (folder / "val.jsonl").write_text(rows(6, 5))
    return root


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    tiny_llama().save_pretrained(root / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(root / "tiny")
    write_sst2(root / "data")
    write_cb(root / "data")
    return root


def write_spec(assets: Path, folder: Path, grid=None, base=None, **extra) -> Path:
    """The tests' spec (as JSON, which YAML reads); ``base``: options replacing the base's."""
    spec = {
        "name": "tiny",
        "base": {"model": str(assets / "tiny"), "data_dir": str(assets / "data"), "style": "text-to-text", "objective": "lm",
                 "length": 3, "batch_size": 4, "max_steps": 8, "eval_every": 8, "checkpoint_every": 4, "log_every": 4,
                 "warmup_steps": 0, "zero_shot": False, "eval_batch_size": 8, "lr": 0.1},
        "per_task": {"sst2": {"label_words": "names"}},
        "per_method": {"dpt": {"bottleneck": 2}},
        "grid": grid or GRID,
        "heartbeat": 1,
        **extra,
    }
    spec["base"].update(base or {})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(json.dumps(spec))  # YAML reads JSON
    return path


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}


def sweep_command(spec: Path, directory: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from softprompt.cli import main; sys.exit(main())", "sweep", str(spec), "--dir", str(directory), "--workers", "2", *extra]


def read_csv(directory: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((directory / "report" / "table.csv").read_text())))


def read_trials_csv(directory: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((directory / "report" / "trials.csv").read_text())))


def trials_of(directory: Path, storage: str | None = None) -> list:
    sweep = Sweep.open(directory, storage)
    (plan, study), = sweep.studies()
    return study.get_trials(deepcopy=False)


def assert_each_point_once(directory: Path, storage: str | None = None) -> None:
    """Every grid point has exactly one complete trial and one directory; no trial directory
    is left over."""
    trials = trials_of(directory, storage)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    points = [tuple(t.params[k] for k in GRID) for t in complete]
    assert len(points) == len(set(points)) == 8, points
    dirs = [t.user_attrs["dir"] for t in complete]
    assert len(set(dirs)) == 8
    assert sorted(p.name for p in (directory / "trials").iterdir()) == sorted(Path(d).name for d in dirs)
    for t in complete:  # the directory holds the run of that point
        saved = json.loads((directory / t.user_attrs["dir"] / "config.json").read_text())
        assert (saved["method"], saved["task"], saved["seed"]) == tuple(t.params[k] for k in GRID)


@pytest.fixture(scope="module")
def uninterrupted(assets, tmp_path_factory):
    """The reference sweep: 2 worker processes, default SQLite storage, never interrupted."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    spec = write_spec(assets, folder)
    result = subprocess.run(sweep_command(spec, folder / "sweep"), env=env(), capture_output=True, text=True, timeout=300)
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
    before = len(trials_of(directory))
    assert main(["sweep", str(spec), "--dir", str(directory)]) == 0
    assert len(trials_of(directory)) == before


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
    rows = read_csv(directory)
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
    proc = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
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
    trials = trials_of(directory, storage)
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
    spec = write_spec(assets, tmp_path)
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
    assert read_csv(directory) == read_csv(reference)


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
    spec = write_spec(assets, tmp_path)
    directory = tmp_path / "sweep"
    victim, code, stderr = kill_mid_trial(sweep_command(spec, directory, "--storage", url), directory, everything=False)
    assert code == 1  # the launcher says a worker died: at once, while the other goes on, and at the end
    said = re.search(r"softprompt sweep: worker \d died \(signal 9\)[^\n]* \(see [^\n]*worker-\d\.log\); the others go on", stderr)
    assert said and "trials done" in stderr[said.end():], stderr[-2000:]
    assert not (directory / "optuna.db").exists()  # the server held the study, not the default SQLite file
    logs = "".join(p.read_text() for p in (directory / "logs").glob("worker-*.log"))
    assert re.search(rf"softprompt sweep: trials/{victim.name} [^\n\r]*: resuming", logs)
    before = len(trials_of(directory, url))
    restart_here(spec, directory, "--storage", url)
    assert len(trials_of(directory, url)) == before
    assert_resumed_in_place(directory, victim, url)
    assert_each_point_once(directory, url)
    assert read_csv(directory) == read_csv(reference)


# ---------------------------------------------------------------------------------------
# In this process: failures, a searched range, SLURM


def test_failed_trial_is_recorded_and_the_sweep_goes_on(assets, tmp_path, capsys):
    # rte has no data in the folder: that trial fails at loading, the other one runs
    spec = write_spec(assets, tmp_path, grid={"task": ["rte", "sst2"]}, base={"method": "prompt", "max_steps": 2, "lr": 0.1})
    directory = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--dir", str(directory)]) == 0
    trials = trials_of(directory)
    states = {t.params["task"]: t for t in trials}
    assert states["rte"].state == optuna.trial.TrialState.FAIL
    assert states["rte"].user_attrs["error"].startswith("FileNotFoundError: no train file for task rte")
    assert states["sst2"].state == optuna.trial.TrialState.COMPLETE
    record = json.loads((directory / states["rte"].user_attrs["dir"] / "trial.json").read_text())
    assert record["error"] == states["rte"].user_attrs["error"]
    failed = Path(states["rte"].user_attrs["dir"]).name
    assert f"failed: `{failed}` (task=rte): FileNotFoundError" in (directory / "report" / "table.md").read_text()
    assert progress(Sweep.open(directory)) == "2/2 trials done (1 failed)"
    lines = {r["task"]: r for r in read_trials_csv(directory)}
    assert (lines["rte"]["state"], lines["rte"]["trial"], lines["rte"]["validation"]) == ("failed", failed, "")
    assert lines["rte"]["error"] == states["rte"].user_attrs["error"]
    assert lines["sst2"]["state"] == "finished" and float(lines["sst2"]["validation"]) == states["sst2"].value
    # a failed trial is a finished grid point: running again does not retry it
    assert main(["sweep", str(spec), "--dir", str(directory)]) == 0
    assert len(trials_of(directory)) == 2


def test_searched_learning_rate(assets, tmp_path):
    """lr searched in log(0.001, 1) by the random sampler, 3 trials; the cell reports the trial
    with the best validation score; the plots: metric vs lr, and rank_probe's positive σ."""
    grid = {"method": ["rank_probe"], "task": ["sst2"]}
    spec = write_spec(assets, tmp_path, grid=grid, base={"max_steps": 4, "log_every": 1},
                      search={"lr": "log(0.001, 1)"}, sampler="random", trials=3)
    directory = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--dir", str(directory)]) == 0
    sweep = Sweep.open(directory)
    (plan, study), = sweep.studies()
    assert plan.name.endswith("/method=rank_probe,task=sst2") and plan.grid is None
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 3 and all(0.001 <= t.params["lr"] <= 1 for t in complete)
    best = max(sorted(complete, key=lambda t: t.params["lr"]), key=lambda t: t.value)  # the smallest lr on a tie
    row = next(r for r in read_csv(directory) if r["task"] == "sst2")
    metrics = json.loads((directory / best.user_attrs["dir"] / "metrics.json").read_text())
    assert json.loads(row["chosen"]) == {"lr": best.params["lr"]}
    assert float(row["mean"]) == metrics["test"]["accuracy"] and float(row["validation_mean"]) == best.value
    # table.md, read by people, gives the searched lr to 3 significant digits; the CSV keeps all 17
    assert f"| rank_probe | lr={best.params['lr']:.3g} (" in (directory / "report" / "table.md").read_text()
    # trials.csv: every trial's numbers, checked against Optuna's record and the run's own files
    lines = read_trials_csv(directory)
    assert len(lines) == 3 and {line["state"] for line in lines} == {"finished"}
    for t in complete:
        line = next(x for x in lines if x["trial"] == Path(t.user_attrs["dir"]).name)
        own = json.loads((directory / t.user_attrs["dir"] / "metrics.json").read_text())
        assert (float(line["lr"]), float(line["validation"])) == (t.params["lr"], t.value)
        assert (line["method"], line["task"], line["metric"], line["split"]) == ("rank_probe", "sst2", "accuracy", "validation")
        assert float(line["reported"]) == own["test"]["accuracy"] and int(line["best_step"]) == own["best_step"]
        assert float(line["wall_seconds"]) == own["wall_seconds"] and line["error"] == ""
    plots = directory / "report" / "plots"
    assert (plots / "lr-rank_probe.png").stat().st_size > 0 and (plots / "positive-sigma-sst2.png").stat().st_size > 0
    # the budget is spent: running again adds no trial
    assert main(["sweep", str(spec), "--dir", str(directory)]) == 0
    assert len(study.get_trials()) == 3


def test_slurm_launcher_builds_a_job_array(assets, tmp_path, monkeypatch):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'softprompt[sweep]')")
    from submitit.core.utils import DelayedSubmission
    from submitit.slurm.test_slurm import mocked_slurm

    from softprompt.sweep.launch import run_worker, slurm_executor, submit_slurm

    spec = write_spec(assets, tmp_path, grid={"method": ["prompt"], "task": ["sst2"], "seed": [0, 1]}, base={"max_steps": 2},
                      slurm={"slurm_partition": "gpu", "gpus_per_node": 1})
    sweep = Sweep.create(SweepSpec.from_file(spec), tmp_path / "sweep")
    monkeypatch.setenv("SOFTPROMPT_SWEEP_STORAGE", "")
    with mocked_slurm():
        jobs = submit_slurm(sweep, workers=3, executor=slurm_executor(sweep, 3))
        assert len(jobs) == 3 and len({j.job_id.split("_")[0] for j in jobs}) == 1  # one array of three
        sbatch = next((tmp_path / "sweep" / "slurm").rglob("*submission.sh")).read_text()
    assert "#SBATCH --array=0-2%3" in sbatch
    assert "#SBATCH --partition=gpu" in sbatch and "#SBATCH --gpus-per-node=1" in sbatch
    assert "#SBATCH --job-name=sweep-tiny" in sbatch
    submissions = [DelayedSubmission.load(job.paths.submitted_pickle) for job in jobs]
    assert all(s.function is run_worker for s in submissions)
    assert [s.args for s in submissions] == [(str(sweep.path), i) for i in range(3)]
    # the array's tasks, run here one after the other: the first does both points, the rest nothing
    assert submissions[0].result() == {"complete": 2, "failed": 0, "skipped": 0}
    submissions[1].result(), submissions[2].result()
    assert [t.state.name for t in trials_of(sweep.path)] == ["COMPLETE", "COMPLETE"]


def test_table_chooses_on_validation_never_test(tmp_path):
    """Made-up results: a cell takes the lr whose mean validation score is best, whatever the
    test says; a tie goes to the spec's first lr; the order results come in changes nothing."""
    from softprompt.sweep.report import TrialResult, build_table, csv_text, markdown

    spec = SweepSpec.from_dict({"name": "s", "grid": {"method": ["prompt", "dpt"], "task": ["rte", "cb"],
                                                      "seed": [1, 2], "lr": [0.3, 0.1]}})
    assert spec.select == ["lr"]

    def result(method, task, seed, lr, val, test, error=None):
        metrics = {"method": method, "task": task, "seed": seed, "selection_metric": "accuracy", "test_split": "validation",
                   "best_validation": {"accuracy": val}, "test": {"accuracy": test}}
        return TrialResult(tmp_path / f"{method}-{task}-{seed}-{lr}", {"method": method, "task": task, "seed": seed, "lr": lr},
                           {"lr": lr}, None if error else metrics, error)

    results = [
        result("prompt", "rte", 1, 0.1, 0.5, 0.9), result("prompt", "rte", 2, 0.1, 0.7, 0.9),   # validation mean 0.6
        result("prompt", "rte", 1, 0.3, 0.8, 0.1), result("prompt", "rte", 2, 0.3, 0.8, 0.2),   # 0.8: chosen
        result("prompt", "cb", 1, 0.1, 0.5, 0.5), result("prompt", "cb", 2, 0.1, 0.5, 0.7),
        result("dpt", "cb", 1, 0.1, 0.5, 0.4), result("dpt", "cb", 2, 0.1, 0.5, 0.6),           # a tie: 0.3 comes first
        result("dpt", "cb", 1, 0.3, 0.5, 0.2), result("dpt", "cb", 2, 0.3, 0.5, 0.4),
        result("dpt", "rte", 1, 0.3, 0.5, 0.4, error="ValueError: boom"),
    ]
    table = build_table(spec, results)
    assert (table.rows, table.tasks) == (["prompt", "dpt"], ["rte", "cb"])
    rte = table.cells[("prompt", "rte")]
    assert rte.chosen == {"lr": 0.3} and rte.values == [0.1, 0.2] and rte.mean == pytest.approx(0.15)
    assert rte.std == pytest.approx(statistics.stdev([0.1, 0.2])) and rte.validation == pytest.approx(0.8)
    assert table.cells[("dpt", "cb")].chosen == {"lr": 0.3} and table.cells[("dpt", "cb")].values == [0.2, 0.4]
    assert table.average("prompt") == pytest.approx((0.15 + 0.6) / 2) and table.average("dpt") is None
    text = markdown(spec, table)
    assert "| prompt | 15.00 ± 7.07 | 60.00 ± 14.14 | 37.50 |" in text and "| dpt | – | 30.00 ± 14.14 | – |" in text
    assert "failed: `dpt-rte-1-0.3` (method=dpt, task=rte, seed=1, lr=0.3): ValueError: boom" in text
    assert csv_text(build_table(spec, results[::-1])) == csv_text(table)
    # the reported split is the official validation split here, and the choice read it
    assert "lr chosen per cell on validation." in text and "Chosen on validation (lr;" in text

    # runs that validate on rows held out from the training split say so
    for r in results:
        r.config["holdout"] = 200
    held = markdown(spec, build_table(spec, results))
    assert "lr chosen per cell on held-out training rows." in held and "Chosen on held-out training rows (lr;" in held
    assert "chosen per cell on validation" not in held


# ---------------------------------------------------------------------------------------
# Specs


def test_spec_errors_are_one_line_naming_the_key(tmp_path):
    def error(**data) -> str:
        with pytest.raises(ValueError) as err:
            SweepSpec.from_dict({"name": "x", **data}, where="s.yaml")
        assert "\n" not in str(err.value)
        return str(err.value)

    assert "validation metric" in error(objective="test.accuracy")
    assert "bottleneck" in error(grid={"method": ["prompt", "dpt"], "bottleneck": [2]})
    assert "method=prompt" in error(grid={"method": ["prompt", "dpt"], "bottleneck": [2]})
    assert "log(a, b)" in error(search={"lr": "between 1 and 2"})
    assert "not a valid range" in error(search={"lr": "log(0, 1)"})
    assert "sampler tpe or random" in error(search={"lr": "log(0.01, 1)"}, sampler="grid")
    assert "unknown key(s) grids" in error(grids={})
    assert "output_dir" in error(base={"output_dir": "x"})
    assert "both a grid axis and searched" in error(grid={"lr": [0.1]}, search={"lr": "log(0.01, 1)"})
    assert "select names" in error(grid={"lr": [0.1]}, select=["length"])


def test_spec_layers_studies_and_ranges():
    spec = SweepSpec.from_dict({
        "name": "s", "base": {"task": "rte", "length": 20, "max_steps": 10},
        "per_method": {"dpt": {"bottleneck": 4}}, "per_task": {"cb": {"max_steps": 5}},
        "grid": [{"method": ["prompt", "dpt"], "task": ["rte", "cb"]}, {"method": ["dpt"], "bottleneck": [2, 8]}],
    })
    assert [p.name.split("/")[-1] for p in spec.studies()] == ["0", "1"] and [p.size for p in spec.studies()] == [4, 2]
    config = spec.trial_config({"method": "dpt", "task": "cb"}, "out")
    assert (config.max_steps, config.method_options["bottleneck"], config.method_options["length"]) == (5, 4, 20)
    assert spec.trial_config({"method": "dpt", "bottleneck": 8}, "out").method_options["bottleneck"] == 8
    assert spec.select == [] and spec.axes() == ["method", "task", "bottleneck"]
    searched = SweepSpec.from_dict({"name": "s", "grid": {"task": ["rte", "cb"]}, "search": {"lr": "log(1e-3, 1)"}, "trials": 4})
    assert searched.sampler == "tpe" and searched.select == ["lr"]
    assert [p.name.split("/")[-1] for p in searched.studies()] == ["task=rte", "task=cb"]
    assert Range.parse("int(2, 8)", "x").values == (2, 8) and Range.parse("choice(a, 3)", "x").values == ("a", 3)
    assert searched.identity() != spec.identity()


@pytest.mark.parametrize("kind", ["tpe", "random"])
def test_a_restarted_search_draws_new_values(tmp_path, kind):
    """A search's sampler is seeded by the worker and by the trials already stored: a restart
    (same worker number, same spec) must not draw the values it drew before."""
    spec = SweepSpec.from_dict({"name": "s", "grid": {"task": ["cb"]}, "search": {"lr": "log(1e-3, 1)"},
                                "sampler": kind, "trials": 6})
    sweep = Sweep.create(spec, tmp_path / "sweep")

    def draw(worker: int) -> float:  # what this process's sampler proposes next, recorded as done
        (_, study), = sweep.studies(worker)
        trial = study.ask()
        value = trial.suggest_float("lr", 1e-3, 1, log=True)
        study.tell(trial, 0.5)
        return value

    first = draw(0)
    assert draw(0) != first  # a restart of worker 0
    assert len({draw(0), draw(1), draw(0)}) == 3
    fresh = Sweep.create(spec, tmp_path / "again")  # a fresh sweep repeats the first draw exactly
    (_, study), = fresh.studies(0)
    assert study.ask().suggest_float("lr", 1e-3, 1, log=True) == first


# a process that claims waiting trials of a sweep's study until none is left (what study.ask()
# calls first) and prints the trial ids it claimed; it starts when all (argv[3]) have said
# they are ready in the folder argv[2]
POP_ALL_WAITING = """
import json, os, sys
from pathlib import Path
from softprompt.sweep import Sweep
(_, study), = Sweep.open(sys.argv[1]).studies()
ready = Path(sys.argv[2])
(ready / str(os.getpid())).touch()
while len(list(ready.iterdir())) < int(sys.argv[3]):
    pass
claimed = []
while (trial_id := study._pop_waiting_trial_id()) is not None:
    claimed.append(trial_id)
print(json.dumps(claimed))
"""


def test_a_waiting_trial_is_claimed_by_one_worker_only(tmp_path):
    """A retry waits in the queue; with the default SQLite storage, workers racing for the
    queue must each get different trials (SQLite ignores Optuna's SELECT ... FOR UPDATE:
    without a lock taken at BEGIN, 3 processes claimed 60 queued trials 72-78 times)."""
    sweep = Sweep.create(SweepSpec.from_dict({"name": "s", "grid": {"task": ["cb"]}, "search": {"lr": "log(1e-3, 1)"},
                                              "trials": 60}), tmp_path / "sweep")
    (_, study), = sweep.studies()
    for i in range(60):
        study.enqueue_trial({"lr": 10 ** (-3 + i / 20)})
    (tmp_path / "ready").mkdir()
    workers = [subprocess.Popen([sys.executable, "-c", POP_ALL_WAITING, str(sweep.path), str(tmp_path / "ready"), "3"],
                                env=env(), stdout=subprocess.PIPE, text=True) for _ in range(3)]
    claimed = [json.loads(w.communicate(timeout=120)[0]) for w in workers]
    every = sorted(i for c in claimed for i in c)
    assert every == sorted(t._trial_id for t in study.get_trials(deepcopy=False)), claimed
    assert sum(map(bool, claimed)) >= 2, claimed  # they did race


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_are_valid(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = SweepSpec.from_file(path)  # builds every trial's config
    assert spec.studies()
