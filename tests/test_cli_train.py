"""`softprompt train` and `softprompt eval` end to end on a tiny saved model: outputs,
config file + overrides, one-line errors with nothing written, refusing another run."""

from __future__ import annotations

import json

import pytest

from softprompt.cli import main
from conftest import tiny_llama
from helpers import tiny_tokenizer, write_sst2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tiny_llama().save_pretrained(root / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(root / "tiny")
    write_sst2(root / "data")
    return root


def base_args(root, out, *extra):
    return ["train", "--model", str(root / "tiny"), "--task", "sst2", "--label-words", "names",
            "--data-dir", str(root / "data"), "--method", "prompt", "--length", "3", "--batch-size", "4",
            "--eval-every", "2", "--lr", "0.1", "--output-dir", str(out), *extra]


def exit_code(argv) -> int:
    """``main``'s return value, or the code of the SystemExit argparse raises on a bad type."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_train_then_eval_then_refuse(setup, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(base_args(setup, out, "--max-steps", "2")) == 0
    printed = capsys.readouterr().out
    assert "zero-shot:" in printed and "test:" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and set(metrics["test"]) == {"accuracy", "invalid", "n"}

    # eval reads task, model and data from the run's config.json
    assert main(["eval", str(out / "prompt")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["accuracy"] == metrics["test"]["accuracy"] and result["n"] == 6

    # another run in the same directory is refused, untouched; --overwrite replaces it
    stamp = (out / "metrics.json").read_text()
    assert main(base_args(setup, out, "--max-steps", "1")) == 2
    assert "holds another run" in one_line_error(capsys)
    assert (out / "metrics.json").read_text() == stamp
    assert main(base_args(setup, out, "--max-steps", "1", "--eval-every", "1", "--overwrite")) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 1

    # resuming a finished run is a no-op that reports its metrics
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 0
    assert "test:" in capsys.readouterr().out


def test_config_file_with_overrides(setup, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {setup / 'tiny'}\ntask: sst2\nlabel-words: names\ndata_dir: {setup / 'data'}\n"
                   f"method: dpt\nlength: 4\nbottleneck: 2\nmax_steps: 5\nbatch_size: 4\nzero_shot: false\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--max-steps", "1", "--eval-every", "1", "--output-dir", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["method"], saved["bottleneck"], saved["max_steps"], saved["zero_shot"]) == ("dpt", 2, 1, False)
    assert json.loads((out / "metrics.json").read_text())["zero_shot"] is None


@pytest.mark.parametrize("extra, message", [
    (["--method", "lora"], "method must be one of"),
    (["--lr", "abc"], "invalid float value"),
    (["--eval-mode", "beam"], "eval_mode must be one of"),
    (["--seeds", "1,x"], "--seeds must be comma-separated integers"),
    (["--rank", "2"], "unknown option(s) rank"),  # the vanilla prompt has no rank
    (["--method-option", "oops"], "KEY=VALUE"),
    (["--protocol", "mine"], "protocol must be one of"),
])
def test_bad_values_one_line_nothing_written(setup, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    assert exit_code(base_args(setup, out, "--max-steps", "1", *extra)) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


def test_unknown_config_key_and_missing_resume(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("task: sst2\nlearning_rate: 0.1\n")
    assert main(["train", "--config", str(cfg)]) == 2
    assert "bad.yaml: unknown option(s) learning_rate" in one_line_error(capsys)
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "nothing to resume" in one_line_error(capsys)
    assert main(["eval", str(tmp_path)]) == 2
    assert "prompt_config.json: missing" in one_line_error(capsys)


def test_yaml_numbers_are_read_as_users_write_them(tmp_path):
    """PyYAML (YAML 1.1) leaves ``1e-3`` a string; config files, sweep specs and
    ``--method-option`` read it as the float a user means, and strings stay strings."""
    from softprompt.cli.train_cmd import _method_option_pairs
    from softprompt.config import TrainConfig, read_config_file

    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nwarmup_steps: 10\ntask: rte\n")
    data = read_config_file(path)
    assert data == {"lr": 0.001, "warmup_steps": 10, "task": "rte"}
    assert TrainConfig.from_dict({**data, "model": "m", "method": "prompt"}).lr == 0.001
    assert _method_option_pairs(["lr_update=5e-4", "init=normal"]) == {"lr_update": 0.0005, "init": "normal"}
