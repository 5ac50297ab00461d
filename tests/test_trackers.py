"""Experiment trackers for real, offline (``--report-to``): TensorBoard's event files read back with
TensorBoard's own reader, MLflow's local file store read back with MLflow's client, W&B in offline
mode where it is installed. What each holds equals the run's log.jsonl record for record, and
the resolved config is there as hyperparameters."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_llama
from helpers import tiny_tokenizer, write_sst2
from softprompt import runlog
from softprompt.config import TrainConfig
from softprompt.train import train

ROOT = Path(__file__).resolve().parents[1]


def config(tmp_path: Path, **over) -> TrainConfig:
    base = dict(task="sst2", label_words="names", method="prompt", length=3, data_dir=str(write_sst2(tmp_path / "data")),
                max_steps=4, batch_size=4, lr=0.1, warmup_steps=0, objective="lm", style="text-to-text", eval_every=2,
                eval_batch_size=8, log_every=1, output_dir=str(tmp_path / "run"))
    return TrainConfig(**{**base, **over})


def expected(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """What a tracker must hold, from log.jsonl: each number of each record at its step, a
    section's metrics (validation, test, zero_shot) as section/metric, a flag as 0/1."""
    series: dict[str, list[tuple[int, float]]] = {}
    for record in runlog.read(run_dir):
        for key, value in record.items():
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for name, v in items:
                if key != "step" and isinstance(v, (bool, int, float)):
                    series.setdefault(key if name is None else f"{key}/{name}", []).append((record["step"], float(v)))
    return series


def hyperparameters(config_json: dict) -> dict[str, str]:
    """The resolved config as every tracker's text: scalars as Python prints them, the rest JSON."""
    return {k: str(v) if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v, sort_keys=True)
            for k, v in config_json.items()}


def test_tensorboard_and_mlflow_hold_exactly_the_log(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x keeps its file store behind this opt-in
    run_dir = tmp_path / "run"
    train(config(tmp_path, report_to="tensorboard,mlflow", patience=1), tiny_llama(), tiny_tokenizer())
    want = expected(run_dir)
    assert {"loss", "lr", "epoch", "validation/accuracy", "test/accuracy", "zero_shot/accuracy"} <= set(want)
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["report_to"] == "tensorboard,mlflow" and saved["sources"]["report_to"] == "python argument"

    # TensorBoard: its reader over the event files; scalars are float32 there
    events = EventAccumulator(str(run_dir / "trackers" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    got = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert got == {tag: [(s, float(np.float32(v))) for s, v in points] for tag, points in want.items()}
    (hparams_dir,) = {p.parent for p in (run_dir / "trackers" / "tensorboard").glob("*/events.out.tfevents.*")}
    session = EventAccumulator(str(hparams_dir))
    session.Reload()
    content = session.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    stored = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    tb_params = {k: v.string_value if v.HasField("string_value") else v.number_value for k, v in stored.items()}
    # TensorBoard keeps no None and stores numbers and flags as floats, the rest as the JSON text
    assert tb_params == {k: float(v) if isinstance(v, (bool, int, float)) else hyperparameters(saved)[k]
                         for k, v in saved.items() if v is not None}

    # MLflow: its client over the file store; float64, the exact values
    client = mlflow.MlflowClient(store.as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "sst2-prompt"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    got = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))]
           for key in run.data.metrics}
    assert got == want
    limit = mlflow.utils.validation.MAX_PARAM_VAL_LENGTH  # MLflow drops a longer value (accelerate warns)
    assert run.data.params == {k: v for k, v in hyperparameters(saved).items() if len(v) <= limit}


def test_mlflow_defaults_to_a_sqlite_store_in_the_run(tmp_path, monkeypatch):
    """No $MLFLOW_TRACKING_URI: the runs go to OUTPUT/trackers/mlflow.db, which --overwrite replaces."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    train(config(tmp_path, report_to="mlflow", max_steps=2), tiny_llama(), tiny_tokenizer())
    store = tmp_path / "run" / "trackers" / "mlflow.db"
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "sst2-prompt"]
    (run,) = client.search_runs([experiment.experiment_id])
    got = {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics}
    assert got == expected(tmp_path / "run")
    train(config(tmp_path, max_steps=2, overwrite=True), tiny_llama(), tiny_tokenizer())
    assert not (tmp_path / "run" / "trackers").exists()


def test_a_resumed_run_keeps_tensorboard_equal_to_the_log(tmp_path, monkeypatch):
    """A run interrupted while computing step 4 (its last checkpoint at step 2, step 3 logged)
    and resumed: the events after the checkpoint are purged as log.jsonl's records are, so the
    event files hold each step once, equal to the log."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    import softprompt.train as train_module

    backbone, tok = tiny_llama(), tiny_tokenizer()
    lr_at = train_module.lr_at

    def interrupted(step, *args):
        if step == 3:
            raise KeyboardInterrupt
        return lr_at(step, *args)

    monkeypatch.setattr(train_module, "lr_at", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path, report_to="tensorboard", max_steps=6), backbone, tok)
    assert max(r["step"] for r in runlog.read(tmp_path / "run")) == 3
    monkeypatch.setattr(train_module, "lr_at", lr_at)
    train(config(tmp_path, report_to="tensorboard", max_steps=6, resume=True), backbone, tok)
    events = EventAccumulator(str(tmp_path / "run" / "trackers" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    got = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    want = expected(tmp_path / "run")
    assert [s for s, _ in want["loss"]] == [1, 2, 3, 4, 5, 6]
    assert got == {tag: [(s, float(np.float32(v))) for s, v in points] for tag, points in want.items()}


def wandb_records(path: Path):
    """The records of a W&B offline run file (wandb 0.31 ships no Python reader of its own): W&B's
    LevelDB-style log, a 7-byte file header (``:W&B``, magic, version), then 32 KiB blocks of
    chunks, each with a 7-byte header (CRC-32, length, type: 1 full, 2 first, 3 middle, 4
    last); each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a header is padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:  # zero padding at the end
            break
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed here (pip install 'softprompt[trackers]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(config(tmp_path, report_to="wandb"), tiny_llama(), tiny_tokenizer())
    (offline,) = (tmp_path / "run" / "trackers" / "wandb").glob("offline-run-*/run-*.wandb")
    records = list(wandb_records(offline))
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    got: dict[str, list[tuple[int, float]]] = {}
    for row in history:
        for key, value in row.items():
            if not key.startswith("_"):
                got.setdefault(key, []).append((int(row["_step"]), float(value)))
    assert got == expected(tmp_path / "run")
    (settings,) = [r.config for r in records if r.WhichOneof("record_type") == "config"][:1]
    stored = {item.key: json.loads(item.value_json) for item in settings.update}
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert {k: stored[k] for k in saved} == {k: hyperparameters(saved)[k] if not isinstance(v, (bool, int, float, str, type(None))) else v
                                            for k, v in saved.items()}


def test_an_unknown_tracker_is_one_line():
    with pytest.raises(ValueError, match=r"report_to must be comma-separated names among tensorboard, mlflow, wandb or all; got 'tensorbord'"):
        TrainConfig(report_to="tensorbord")
    assert TrainConfig(report_to="all").report_to == "all"


def test_a_missing_tracker_package_is_one_line(tmp_path):
    """tensorboard hidden from the import system: `softprompt train --report-to tensorboard`
    ends with one line naming the extra, before any step."""
    data = write_sst2(tmp_path / "data")
    env = {**os.environ, "SOFTPROMPT_TEST_HIDE": "tensorboard,tensorboardX",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "fixtures" / "hide_packages"), str(ROOT / "tests"), str(ROOT / "src")])}
    script = ("from conftest import tiny_llama\nfrom helpers import tiny_tokenizer\nfrom softprompt.config import TrainConfig\n"
              "from softprompt.train import train\n"
              f"train(TrainConfig(task='sst2', label_words='names', method='prompt', length=3, data_dir={str(data)!r}, max_steps=2,"
              f" batch_size=4, eval_every=2, zero_shot=False, report_to='tensorboard', output_dir={str(tmp_path / 'run')!r}),"
              " tiny_llama(), tiny_tokenizer())\n")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == ("softprompt.extras.MissingExtra: --report-to tensorboard needs tensorboard, which is not installed: "
                    "pip install 'softprompt[trackers]'")
