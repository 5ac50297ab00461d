"""The accuracy benchmark spread over sittings: each run's row is on disk as soon as the run ends,
a relaunch runs only the jobs the file does not hold (per model: rows written before rows named
their model are SmolLM2's), a launch with another budget stops, and every row carries the run's
wall time and the machine's load. The runs are faked: no model is trained here."""

from __future__ import annotations

import json

import pytest

from benchmarks import accuracy, accuracy_runs


@pytest.fixture
def fake_runs(monkeypatch):
    """``accuracy.run_jobs`` replaced: each job becomes a row at once, and the file is read back
    after each record (the row must be there). Returns the jobs run, launch by launch."""
    launches = []

    def run_jobs(args, jobs, record):
        launches.append(list(jobs))
        for model, kind, task, seed, what in jobs:
            row = {"job": json.dumps([model, kind, task, seed, what]), "model": model, "task": task, "seed": seed,
                   "test": 0.8, "validation": 0.8, "trainable_parameters": 10, "wall_seconds": 1.0}
            if kind == "zero":
                row.update(library="zero-shot", method="zero-shot", lr=None, trainable_parameters=0)
            elif kind == "peft":
                row.update(library="peft", method="peft-prompt", lr=what)
            else:
                row.update(library="softprompt", method=what, lr=0.1)
            record(row)
            assert row in json.loads(open(args.output).read())["runs"]  # written as soon as it finished
        return 0

    monkeypatch.setattr(accuracy, "run_jobs", run_jobs)
    return launches


def launch(output, *argv):
    return accuracy.main(["--tasks", "sst2", "--methods", "prompt,peft", "--peft-lrs", "0.01", "--output", str(output), *argv])


def test_a_relaunch_runs_only_what_the_file_lacks(tmp_path, fake_runs, capsys):
    output = tmp_path / "accuracy.json"
    launch(output, "--seeds", "0")
    assert fake_runs[-1] == [("SmolLM2-135M-Instruct", "zero", "sst2", None, None),
                             ("SmolLM2-135M-Instruct", "softprompt", "sst2", 0, "prompt"),
                             ("SmolLM2-135M-Instruct", "peft", "sst2", 0, 0.01)]
    launch(output, "--seeds", "0,1")  # seed 0 and the zero-shot figure are there: seed 1 only
    assert fake_runs[-1] == [("SmolLM2-135M-Instruct", "softprompt", "sst2", 1, "prompt"),
                             ("SmolLM2-135M-Instruct", "peft", "sst2", 1, 0.01)]
    launch(output, "--seeds", "0,1")  # all done: nothing runs, the report is printed
    assert fake_runs[-1] == []
    launch(output, "--seeds", "0,1", "--model", "gemma-3-270m")  # another model: all of its jobs
    assert [j[0] for j in fake_runs[-1]] == ["gemma-3-270m"] * 5
    rows = json.loads(output.read_text())["runs"]
    assert len(rows) == 10 and {r["model"] for r in rows} == {"SmolLM2-135M-Instruct", "gemma-3-270m"}
    out = capsys.readouterr().out
    assert "### SmolLM2-135M-Instruct" in out and "### gemma-3-270m" in out


def test_rows_from_before_the_model_was_recorded_are_smollm2s(tmp_path, fake_runs):
    output = tmp_path / "accuracy.json"
    output.write_text(json.dumps({"zero_shot": {"sst2": 0.787}, "runs": [
        {"library": "softprompt", "method": "prompt", "task": "sst2", "seed": 0, "lr": 0.1, "test": 0.86,
         "validation": 0.87, "trainable_parameters": 11520}]}))
    launch(output, "--seeds", "0", "--methods", "prompt")
    assert fake_runs[-1] == []
    launch(output, "--seeds", "0", "--methods", "prompt", "--model", "gemma3")  # an alias: the model's own name
    assert fake_runs[-1] == [("gemma-3-270m", "zero", "sst2", None, None), ("gemma-3-270m", "softprompt", "sst2", 0, "prompt")]


def test_another_budget_needs_another_file(tmp_path, fake_runs):
    output = tmp_path / "accuracy.json"
    launch(output, "--seeds", "0", "--steps", "2", "--limit-eval", "8")
    assert json.loads(output.read_text())["budget"]["steps"] == 2
    before = output.read_text()
    with pytest.raises(SystemExit, match=r"another budget \(steps 2 there, 150 here, limit_eval 8 there, None here\)"):
        launch(output, "--seeds", "0,1")
    assert len(fake_runs) == 1 and output.read_text() == before


def test_an_unknown_method_stops_before_any_run(tmp_path, fake_runs):
    with pytest.raises(SystemExit, match="--methods: unknown nope"):
        launch(tmp_path / "a.json", "--methods", "prompt,nope")
    assert fake_runs == []


def test_each_row_has_the_runs_wall_time_and_load(monkeypatch):
    clock = iter([1000.0, 1042.5])
    loads = iter([(1.5, 1.0, 0.5), (2.0, 1.2, 0.6)])
    monkeypatch.setattr(accuracy_runs.time, "time", lambda: next(clock))
    monkeypatch.setattr(accuracy_runs.os, "getloadavg", lambda: next(loads))
    monkeypatch.setattr(accuracy_runs, "run_softprompt", lambda args, what, task, seed, *rest: {
        "library": "softprompt", "method": what, "task": task, "seed": seed, "test": 0.9})
    data = {"copa": accuracy_runs.TaskData({"train_file": "train32.jsonl"}, "train32", 32)}
    row = accuracy_runs.run_job(None, ("gemma-3-270m", "softprompt", "copa", 1, "ulpt"), None, None, data)
    assert row["wall_seconds"] == 42.5
    assert row["load_average"] == {"start": [1.5, 1.0, 0.5], "end": [2.0, 1.2, 0.6]}
    assert row["model"] == "gemma-3-270m" and row["train_split"] == "train32" and row["method"] == "ulpt"
    assert json.loads(row["job"]) == ["gemma-3-270m", "softprompt", "copa", 1, "ulpt"]


def test_a_task_without_a_full_train_split_trains_on_train32(tmp_path):
    folder = tmp_path / "superglue" / "COPA"
    folder.mkdir(parents=True)
    row = {"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": 0, "idx": 0}
    (folder / "train32.jsonl").write_text("\n".join(json.dumps({**row, "idx": i}) for i in range(32)))
    (folder / "val.jsonl").write_text(json.dumps(row))
    data = accuracy_runs.task_data("copa", str(tmp_path))
    assert (data.split, data.n_train) == ("train32", 32)
    assert data.files == {"train_file": str(folder / "train32.jsonl"), "validation_file": str(folder / "val.jsonl")}
    assert accuracy_runs.holdout_for(data.n_train, 200) == 8
    (folder / "train.jsonl").write_text("\n".join(json.dumps({**row, "idx": i}) for i in range(400)))
    assert accuracy_runs.task_data("copa", str(tmp_path)) == accuracy_runs.TaskData({}, "train", 400)
