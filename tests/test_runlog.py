"""A run's log and results files (softprompt.runlog): records round-trip; a torn last line (a
kill or a full disk mid-write) is dropped, a bad line before it is a one-line error naming it;
the module, the lock and the atomic writer import no torch, and the sweep's launcher and report
no model code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from softprompt import runlog

RECORDS = [{"step": 0, "zero_shot": {"accuracy": 0.5}}, {"step": 2, "loss": 1.25, "lr": 0.1},
           {"step": 2, "validation": {"accuracy": 0.75, "n": 6}}, {"step": 4, "loss": 0.5, "note": "é ✓"},
           {"step": 4, "test": {"accuracy": 0.8}}]


def test_records_round_trip(tmp_path):
    assert runlog.read(tmp_path) == [] and runlog.last_step(tmp_path) == 0  # before the first record
    for record in RECORDS:
        runlog.append(tmp_path, record)
    assert runlog.read(tmp_path) == RECORDS
    assert [json.loads(line) for line, _ in runlog.read_lines(tmp_path)] == RECORDS
    assert runlog.last_step(tmp_path) == 4
    assert (tmp_path / "log.jsonl").read_text().count("\n") == len(RECORDS)  # one line each


def test_a_torn_last_line_is_dropped(tmp_path):
    for record in RECORDS[:3]:
        runlog.append(tmp_path, record)
    with open(tmp_path / "log.jsonl", "a") as handle:
        handle.write('{"step": 4, "lo')  # a kill mid-write
    assert runlog.read(tmp_path) == RECORDS[:3]
    assert runlog.last_step(tmp_path) == 2


def test_a_bad_line_before_the_last_names_it(tmp_path):
    runlog.append(tmp_path, RECORDS[0])
    with open(tmp_path / "log.jsonl", "a") as handle:
        handle.write("{oops\n")
    runlog.append(tmp_path, RECORDS[1])
    with pytest.raises(runlog.RunLogError) as err:
        runlog.read(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'log.jsonl'}:2: not a JSON record (")
    assert str(err.value).endswith("; fix or remove that line") and "\n" not in str(err.value)
    assert runlog.last_step(tmp_path) == 0  # a watcher is told nothing rather than stopped


def test_keep_until_a_checkpoint_drops_what_a_resumed_run_writes_again(tmp_path):
    for record in [*RECORDS, {"step": 3, "error": "diverged"}]:
        runlog.append(tmp_path, record)
    with open(tmp_path / "log.jsonl", "a") as handle:
        handle.write('{"step": 6')
    runlog.keep_until(tmp_path, 2)
    assert runlog.read(tmp_path) == RECORDS[:3]  # up to step 2; the test and error records go
    assert (tmp_path / "log.jsonl").read_text().endswith("\n")  # the torn line went too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]  # one atomic rewrite, no temporary left
    runlog.keep_until(tmp_path / "nothing", 2)  # no log: nothing to do


def test_metrics_round_trip(tmp_path):
    assert runlog.read_metrics(tmp_path) is None
    metrics = {"best_step": 4, "test": {"accuracy": 0.8}, "selection_metric": "accuracy"}
    runlog.write_metrics(tmp_path, metrics)
    runlog.write_metrics(tmp_path, {"seeds": [0, 1]}, "summary.json")
    assert runlog.read_metrics(tmp_path) == metrics
    assert runlog.read_metrics(tmp_path, "summary.json") == {"seeds": [0, 1]}


LIGHT = """
import sys
import softprompt.io, softprompt.lock, softprompt.runlog
from softprompt.io import atomic_file, write_json_atomically
assert 'torch' not in sys.modules, 'torch imported'
import softprompt.sweep.engine, softprompt.sweep.launch, softprompt.sweep.report
heavy = [m for m in sys.modules if m.startswith('transformers') or m in ('softprompt.model', 'softprompt.rundir', 'softprompt.train')]
assert not heavy, heavy
from softprompt.io import save_prompt  # a name that moved to prompt_files.py: still found here
assert save_prompt.__module__ == 'softprompt.prompt_files'
"""


def test_the_log_lock_and_writer_import_no_torch_and_the_sweep_no_model_code():
    result = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
