"""Sweep specs (one-line errors, layers, studies, ranges; the shipped specs are valid) and what
the sweep asks of Optuna: a restarted search draws new values; a waiting trial is claimed by one
worker only on the default SQLite storage."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from softprompt.sweep import Range, Sweep, SweepSpec
from conftest import ROOT
from helpers import sweep_env


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
# calls first) and prints the trial ids it claimed and when it began and stopped asking; it
# starts when all (argv[3]) have said they are ready in the folder argv[2]
POP_ALL_WAITING = """
import json, os, sys, time
from pathlib import Path
from softprompt.sweep import Sweep
(_, study), = Sweep.open(sys.argv[1]).studies()
ready = Path(sys.argv[2])
(ready / str(os.getpid())).touch()
while len(list(ready.iterdir())) < int(sys.argv[3]):
    pass
claimed, began = [], time.monotonic()
while (trial_id := study._pop_waiting_trial_id()) is not None:
    claimed.append(trial_id)
print(json.dumps({"claimed": claimed, "asking": [began, time.monotonic()]}))
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
                                env=sweep_env(), stdout=subprocess.PIPE, text=True) for _ in range(3)]
    reports = [json.loads(w.communicate(timeout=120)[0]) for w in workers]
    claimed = [r["claimed"] for r in reports]
    every = sorted(i for c in claimed for i in c)
    assert every == sorted(t._trial_id for t in study.get_trials(deepcopy=False)), claimed
    # They did race: two workers were asking for trials at the same moment (CLOCK_MONOTONIC is
    # one clock for every process). Not "two got trials": with the lock, the worker holding it
    # may win every claim while the others wait, as it did on a loaded 2-core machine.
    asking = sorted(r["asking"] for r in reports)
    assert any(later[0] < earlier[1] for earlier, later in itertools.combinations(asking, 2)), reports


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_are_valid(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = SweepSpec.from_file(path)  # builds every trial's config
    assert spec.studies()
