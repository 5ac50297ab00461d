"""Training from Python: ``softprompt.train`` and ``softprompt.TrainConfig`` at the top level, on
rows given as a list of dicts or a ``datasets.Dataset``. The rows are written once into the run
(``OUTPUT/data/<split>.jsonl``), which records them as its files, so a run on rows trains exactly
as the same run on files does, resumes, and is replaced by ``overwrite``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import softprompt
from conftest import tiny_llama
from helpers import NEGATIVE, POSITIVE, tiny_tokenizer
from softprompt import runlog

TRAIN = [{"text": POSITIVE[i % 6], "label": "pos"} if i % 2 else {"text": NEGATIVE[i % 6], "label": "neg"} for i in range(16)]
DEV = [{"text": s, "label": "pos"} for s in POSITIVE[:3]] + [{"text": s, "label": "neg"} for s in NEGATIVE[:3]]


def config(out: Path, **over) -> "softprompt.TrainConfig":
    base = dict(template="{text} :", label_words="neg=bad,pos=good", method="prompt", length=3, max_steps=4,
                batch_size=4, lr=0.1, warmup_steps=0, eval_every=2, eval_batch_size=8, log_every=1, output_dir=str(out))
    return softprompt.TrainConfig(**{**base, **over})


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def test_top_level_names(tmp_path):
    """``softprompt.train`` trains whether the name holds the function or, once anything imported
    ``softprompt.train``, the module (the import system sets the package's attribute to it)."""
    import importlib
    import subprocess
    import sys

    from softprompt.config import TrainConfig

    assert softprompt.TrainConfig is TrainConfig
    assert importlib.import_module("softprompt.train") is sys.modules["softprompt.train"] and callable(softprompt.train)
    with pytest.raises(ValueError, match="train_data needs output_dir"):
        softprompt.train(TrainConfig(template="{text}"), train_data=TRAIN)  # the module, called
    fresh = subprocess.run([sys.executable, "-c", "import softprompt, sys\nf = softprompt.train\n"
                            "print(f is sys.modules['softprompt.train'].train, callable(f), softprompt.TrainConfig.__module__)"],
                           capture_output=True, text=True, check=True)
    assert fresh.stdout.split() == ["True", "True", "softprompt.config"]
    assert {"train", "TrainConfig"} <= set(softprompt.__all__) and {"train", "TrainConfig"} <= set(dir(softprompt))


def test_rows_train_as_the_same_files_do_and_resume(tmp_path):
    tok = tiny_tokenizer()
    metrics = softprompt.train(config(tmp_path / "rows"), tiny_llama(), tok, train_data=TRAIN, validation_data=DEV)
    data = tmp_path / "rows" / "data"
    assert (data / "train.jsonl").read_text() == jsonl(TRAIN) and (data / "validation.jsonl").read_text() == jsonl(DEV)
    saved = json.loads((tmp_path / "rows" / "config.json").read_text())
    assert (saved["task"], saved["train_file"], saved["validation_file"]) == ("custom", str(data / "train.jsonl"), str(data / "validation.jsonl"))
    assert saved["sources"]["train_file"] == "python argument"

    # the same run on the same rows as files: the same log, step for step, and the same results
    files = tmp_path / "files"
    files.mkdir()
    (files / "train.jsonl").write_text(jsonl(TRAIN))
    (files / "dev.jsonl").write_text(jsonl(DEV))
    twin = softprompt.train(config(tmp_path / "twin", train_file=str(files / "train.jsonl"), validation_file=str(files / "dev.jsonl")),
                            tiny_llama(), tok)
    strip = lambda records: [{k: v for k, v in r.items() if k != "examples_per_second"} for r in records]  # noqa: E731
    assert strip(runlog.read(tmp_path / "rows")) == strip(runlog.read(tmp_path / "twin"))
    assert metrics["test"] == twin["test"] and metrics["best_validation"] == twin["best_validation"]

    # resume a finished run: with no rows (config.json names the files) or the same rows
    assert softprompt.train(config(tmp_path / "rows", resume=True), tiny_llama(), tok) == metrics
    assert softprompt.train(config(tmp_path / "rows", resume=True), tiny_llama(), tok, train_data=TRAIN, validation_data=DEV) == metrics
    with pytest.raises(ValueError, match=r"the rows given are not the run's .*train.jsonl; resume with the same rows, or none"):
        softprompt.train(config(tmp_path / "rows", resume=True), tiny_llama(), tok, train_data=TRAIN[:8], validation_data=DEV)


def test_an_interrupted_run_on_rows_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import softprompt.train as train_module

    tok, lr_at = tiny_tokenizer(), train_module.lr_at

    def interrupted(step, *args):
        if step == 3:
            raise KeyboardInterrupt
        return lr_at(step, *args)

    monkeypatch.setattr(train_module, "lr_at", interrupted)
    with pytest.raises(KeyboardInterrupt):
        softprompt.train(config(tmp_path / "run", max_steps=6), tiny_llama(), tok, train_data=TRAIN, validation_data=DEV)
    monkeypatch.setattr(train_module, "lr_at", lr_at)
    resumed = softprompt.train(config(tmp_path / "run", max_steps=6, resume=True), tiny_llama(), tok)
    whole = softprompt.train(config(tmp_path / "whole", max_steps=6), tiny_llama(), tok, train_data=TRAIN, validation_data=DEV)
    assert resumed["test"] == whole["test"] and resumed["steps"] == 6
    assert [r["loss"] for r in runlog.read(tmp_path / "run") if "loss" in r] == [r["loss"] for r in runlog.read(tmp_path / "whole") if "loss" in r]


def test_a_datasets_dataset_and_overwrite(tmp_path):
    datasets = pytest.importorskip("datasets")
    tok = tiny_tokenizer()
    out = tmp_path / "run"
    softprompt.train(config(out, max_steps=2), tiny_llama(), tok, train_data=TRAIN[:8], validation_data=DEV)
    with pytest.raises(softprompt.rundir.RunExistsError, match="holds another run"):
        softprompt.train(config(out, max_steps=2), tiny_llama(), tok, train_data=TRAIN, validation_data=DEV)
    assert (out / "data" / "train.jsonl").read_text() == jsonl(TRAIN[:8])  # a refused run writes nothing
    rows = datasets.Dataset.from_list(TRAIN)
    softprompt.train(config(out, max_steps=2, overwrite=True), tiny_llama(), tok, train_data=rows,
                     validation_data=datasets.Dataset.from_list(DEV))
    assert (out / "data" / "train.jsonl").read_text() == jsonl(TRAIN)
    saved = json.loads((out / "config.json").read_text())
    assert saved["train_file"] == str(out.resolve() / "data" / "train.jsonl")


def test_bad_rows_are_one_line(tmp_path):
    tok = tiny_tokenizer()
    for rows, message in [("text", "train_data must be a list of dicts or a datasets.Dataset, got str"),
                          ([{"text": "good", "label": "pos"}, ["bad"]], r"train_data\[1\] is a list; give mappings of field: value"),
                          ([], "train_data is empty")]:
        with pytest.raises(ValueError, match=message):
            softprompt.train(config(tmp_path / "bad", overwrite=True), tiny_llama(), tok, train_data=rows, validation_data=DEV)
    with pytest.raises(ValueError, match="train_data needs output_dir"):
        softprompt.train(softprompt.TrainConfig(template="{text} :"), tiny_llama(), tok, train_data=TRAIN)
