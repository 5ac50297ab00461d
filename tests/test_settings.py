"""One resolver for run settings (softprompt.settings): each layer beats the one below it, every
option names its source, $SOFTPROMPT_DATA_DIR is applied by the library, `--explain` prints the
table and writes nothing, and a config.json from before sources still resumes."""

from __future__ import annotations

import json

import pytest

from softprompt.cli import main
from softprompt.config import KIND_DEFAULTS, TrainConfig
from softprompt.prompts import recipe_for
from softprompt.settings import (COMMAND_LINE, DATA_ENV, PYTHON, for_backbone, from_python, option_keys, resolve,
                                 resolved)
from softprompt.train import train
from conftest import tiny_llama
from helpers import saved_tiny_run_inputs, tiny_tokenizer, write_sst2


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)


def _resolve(*layers, kind="encoder-decoder"):
    return for_backbone(resolve(list(layers)), kind)


# -- precedence, pairwise ---------------------------------------------------------------------


def test_explicit_options_beat_the_config_file():
    c = _resolve(("config file a.yaml", {"lr": 0.2, "batch_size": 8}), (COMMAND_LINE, {"lr": 0.1}))
    assert (c.lr, c.batch_size) == (0.1, 8)
    assert (c.sources["lr"], c.sources["batch_size"]) == (COMMAND_LINE, "config file a.yaml")


def test_the_config_file_beats_the_paper_recipe():
    c = _resolve(("config file a.yaml", {"recipe": "ulpt-paper", "lr": 0.2}))
    assert (c.lr, c.sources["lr"]) == (0.2, "config file a.yaml")
    assert (c.max_steps, c.sources["max_steps"]) == (30_000, "recipe ulpt-paper")


def test_the_paper_recipe_beats_the_method_recipe_and_kind_defaults():
    assert recipe_for("ulpt", "decoder-only")["lr"] == 0.1  # what the recipe must beat
    c = _resolve((PYTHON, {"recipe": "ulpt-paper"}), kind="decoder-only")
    assert (c.lr, c.objective, c.style) == (0.6, "lm", "text-to-text")
    assert c.sources["lr"] == c.sources["objective"] == "recipe ulpt-paper"
    dept = _resolve((PYTHON, {"recipe": "dept-paper", "task": "cb"}))  # the authors' per-task value
    assert (dept.lr, dept.sources["lr"]) == (0.4, "recipe dept-paper (task cb)")


def test_the_method_recipe_beats_the_kind_defaults():
    c = _resolve((PYTHON, {"method": "ulpt"}), kind="decoder-only")
    assert (c.lr, c.sources["lr"]) == (0.1, "method recipe ulpt/decoder-only")
    assert (c.warmup_steps, c.sources["warmup_steps"]) == (KIND_DEFAULTS["decoder-only"]["warmup_steps"], "kind default decoder-only")
    assert (c.method_options["sink"], c.sources["sink"]) == ("bos", "method recipe ulpt/decoder-only")


def test_the_kind_defaults_and_the_environment_beat_the_plain_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    c = _resolve((PYTHON, {"method": "prompt", "task": "rte"}))
    assert (c.lr, c.sources["lr"]) == (0.3, "kind default encoder-decoder")
    assert (c.data_dir, c.sources["data_dir"]) == (str(tmp_path), f"environment {DATA_ENV}")
    assert (c.output_dir, c.sources["output_dir"]) == ("runs/rte-prompt", "default runs/<task>-<method>")
    assert (c.batch_size, c.sources["batch_size"]) == (16, "default")
    mine = _resolve(("config file a.yaml", {"data_dir": "mine"}), (COMMAND_LINE, {"output_dir": "out"}))
    assert (mine.data_dir, mine.output_dir) == ("mine", "out")  # the environment only fills what is unset


def test_the_special_rules_keep_their_meaning():
    # an exclusive pair: the user's warmup_steps drops the recipe's warmup_ratio, epochs its max_steps
    c = _resolve((COMMAND_LINE, {"recipe": "dpt-paper", "warmup_steps": 2, "max_steps": 5, "eval_every": 3}))
    assert (c.warmup_steps, c.warmup_ratio, c.max_steps, c.epochs, c.eval_unit) == (2, None, 5, None, "steps")
    # a recipe's warmup_ratio drops the kind's warmup_steps
    assert _resolve((PYTHON, {"recipe": "dpt-paper"}), kind="decoder-only").warmup_steps is None
    # between the user's layers no rule: both of a pair is an error
    with pytest.raises(ValueError, match="a.yaml: give warmup_steps or warmup_ratio, not both"):
        resolve([("config file a.yaml", {"warmup_steps": 3}), (COMMAND_LINE, {"warmup_ratio": 0.1})], where="a.yaml")
    # another method than the recipe's: none of its method options; DePT's max_length stays nested
    assert resolve([(PYTHON, {"recipe": "dpt-paper", "method": "prompt"})]).method_options == {}
    dept = resolve([(PYTHON, {"recipe": "dept-paper", "task": "multirc"})])
    assert dept.sources["method_options.max_length"] == "recipe dept-paper (task multirc)" and dept.max_length == 348
    # the separator follows chat_template; the class objective only for classification tasks
    assert resolve([(PYTHON, {"chat_template": True})]).separator == ""
    assert for_backbone(resolve([(PYTHON, {})]), "decoder-only", classification=False).objective == "lm"


def test_a_resolved_record_passes_unchanged_and_the_python_record_says_so():
    c = resolved(TrainConfig(task="rte", lr=0.2, length=4, method="prompt"), "decoder-only")
    assert (c.sources["lr"], c.sources["task"], c.sources["length"]) == (PYTHON, PYTHON, PYTHON)
    assert from_python(c) is c and for_backbone(c, "decoder-only") is c
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_every_option_has_a_source():
    c = resolved(TrainConfig(method="dept", recipe="dept-paper", task="cb"), "encoder-decoder")
    assert set(c.sources) == set(option_keys(c))
    assert "method_options.max_length" in c.sources and "lr_update" in c.sources and "sources" not in c.sources


# -- the library applies $SOFTPROMPT_DATA_DIR ------------------------------------------------


def test_train_reads_the_data_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(write_sst2(tmp_path / "data")))
    config = TrainConfig(task="sst2", label_words="names", method="prompt", length=2, max_steps=1, batch_size=4,
                         eval_every=1, zero_shot=False, output_dir=str(tmp_path / "run"))
    assert config.data_dir is None
    train(config, tiny_llama(), tiny_tokenizer(bos=True))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data_dir"] == str(tmp_path / "data")
    assert saved["sources"]["data_dir"] == f"environment {DATA_ENV}"
    # the tiny tokenizer has no chat template: a base model, whose lr is prompt's base recipe (0.03)
    assert (saved["lr"], saved["sources"]["lr"]) == (0.03, "method recipe prompt/decoder-only base")
    assert saved["sources"]["max_steps"] == PYTHON
    assert set(saved["sources"]) == set(option_keys(TrainConfig.from_dict(saved)))  # a source for every option


# -- the command line --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("settings")
    saved_tiny_run_inputs(root)
    return root


def test_explain_prints_value_and_source_and_writes_nothing(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("batch_size: 8\nlr: 0.2\n")
    argv = ["train", "--config", str(cfg), "--model", str(tiny_dir / "tiny"), "--task", "sst2", "--method", "ulpt",
            "--lr", "0.05", "--label-words", "names", "--explain"]
    assert main(argv) == 0
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in capsys.readouterr().out.splitlines()}
    assert rows["option"] == ["value", "source"]
    assert rows["lr"] == ["0.05", COMMAND_LINE] and rows["batch_size"] == ["8", f"config file {cfg}"]
    assert rows["warmup_steps"] == ["10", "kind default decoder-only"]
    assert rows["sink"] == ["bos", "method recipe ulpt/decoder-only"]
    assert rows["output_dir"] == ["runs/sst2-ulpt", "default runs/<task>-<method>"]
    assert rows["rank"][1] == "default"  # a method option left to the method
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]  # nothing written


def test_config_json_names_sources_and_an_old_one_still_resumes(tiny_dir, tmp_path, capsys, monkeypatch):
    argv = ["train", "--model", str(tiny_dir / "tiny"), "--task", "sst2", "--label-words", "names", "--data-dir",
            str(tiny_dir / "data"), "--method", "prompt", "--length", "2", "--batch-size", "4", "--max-steps", "2",
            "--eval-every", "1", "--checkpoint-every", "1", "--output-dir"]
    assert main(argv + [str(tmp_path / "new")]) == 0
    saved = json.loads((tmp_path / "new" / "config.json").read_text())
    assert set(saved["sources"]) == set(option_keys(TrainConfig.from_dict(saved)))
    assert saved["sources"]["length"] == COMMAND_LINE  # and a base model's lr (a tiny tokenizer, no chat template):
    assert (saved["lr"], saved["sources"]["lr"]) == (0.03, "method recipe prompt/decoder-only base")

    # a run saved before sources existed: its writer knew no sources (config.json and the
    # checkpoint's run identity without them); interrupted after its last checkpoint
    out = tmp_path / "old"
    with monkeypatch.context() as old:
        to_dict = TrainConfig.to_dict
        old.setattr(TrainConfig, "to_dict", lambda self: {k: v for k, v in to_dict(self).items() if k != "sources"})
        assert main(argv + [str(out)]) == 0
    assert "sources" not in json.loads((out / "config.json").read_text())
    (out / "metrics.json").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 0
    assert "test:" in capsys.readouterr().out and (out / "metrics.json").is_file()
    assert "sources" not in json.loads((out / "config.json").read_text())  # kept as written
    assert main(["train", "--resume", str(out), "--explain"]) == 0
    assert f"config file {out / 'config.json'}" in capsys.readouterr().out
