"""`softprompt sweep` in this process, on a tiny saved model: a failed trial is recorded and the
sweep goes on; a searched range; the SLURM path's job array; the table chooses on validation."""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path

import optuna
import pytest

from softprompt.cli import main
from softprompt.sweep import Sweep, SweepSpec
from softprompt.sweep.engine import progress
from conftest import tiny_llama
from helpers import read_report_csv, sweep_assets, sweep_trials, write_sweep_spec


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return sweep_assets(tmp_path_factory.mktemp("sweep"), tiny_llama())


def read_trials_csv(directory: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((directory / "report" / "trials.csv").read_text())))


def test_failed_trial_is_recorded_and_the_sweep_goes_on(assets, tmp_path, capsys):
    # rte has no data in the folder: that trial fails at loading, the other one runs
    spec = write_sweep_spec(assets, tmp_path, grid={"task": ["rte", "sst2"]}, base={"method": "prompt", "max_steps": 2, "lr": 0.1})
    directory = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--dir", str(directory)]) == 0
    trials = sweep_trials(directory)
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
    assert len(sweep_trials(directory)) == 2


def test_searched_learning_rate(assets, tmp_path):
    """lr searched in log(0.001, 1) by the random sampler, 3 trials; the cell reports the trial
    with the best validation score; the plots: metric vs lr, and rank_probe's positive σ."""
    grid = {"method": ["rank_probe"], "task": ["sst2"]}
    spec = write_sweep_spec(assets, tmp_path, grid=grid, base={"max_steps": 4, "log_every": 1},
                      search={"lr": "log(0.001, 1)"}, sampler="random", trials=3)
    directory = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--dir", str(directory)]) == 0
    sweep = Sweep.open(directory)
    (plan, study), = sweep.studies()
    assert plan.name.endswith("/method=rank_probe,task=sst2") and plan.grid is None
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 3 and all(0.001 <= t.params["lr"] <= 1 for t in complete)
    best = max(sorted(complete, key=lambda t: t.params["lr"]), key=lambda t: t.value)  # the smallest lr on a tie
    row = next(r for r in read_report_csv(directory) if r["task"] == "sst2")
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

    spec = write_sweep_spec(assets, tmp_path, grid={"method": ["prompt"], "task": ["sst2"], "seed": [0, 1]}, base={"max_steps": 2},
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
    assert [t.state.name for t in sweep_trials(sweep.path)] == ["COMPLETE", "COMPLETE"]


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
