"""`train --overwrite` removes only what softprompt wrote (softprompt.rundir: ``is_run``, ``owned``):
a folder that is not a softprompt run (a copied Hugging Face model folder, a user's plots) is
refused with one line and left exactly as it was; inside a run, a user's file beside the run's
survives, and one inside a folder softprompt writes whole stops the overwrite, named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from softprompt.cli import main
from softprompt.config import TrainConfig
from softprompt.rundir import RunExistsError, is_run, owned
from softprompt.train import train
from conftest import tiny_llama
from helpers import saved_tiny_run_inputs, tiny_tokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("overwrite")
    saved_tiny_run_inputs(root)
    return root


def train_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", str(root / "tiny"), "--task", "sst2", "--label-words", "names", "--data-dir",
            str(root / "data"), "--method", "prompt", "--length", "3", "--batch-size", "4", "--max-steps", "1",
            "--eval-every", "1", "--output-dir", str(out), *extra]


def config(root: Path, out: Path, **over) -> TrainConfig:
    base = dict(task="sst2", label_words="names", method="prompt", length=3, data_dir=str(root / "data"), max_steps=1,
                batch_size=4, lr=0.1, eval_every=1, eval_batch_size=8, zero_shot=False, output_dir=str(out))
    return TrainConfig(**{**base, **over})


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` and its bytes (None for a folder): equal means untouched."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def user_model_folder(root: Path) -> Path:
    """The issue's folder: a copy of a Hugging Face model (its config.json) plus a user's plots/ and seed-7/."""
    folder = root / "hf-copy"
    tiny_llama().save_pretrained(folder)
    (folder / "plots").mkdir()
    (folder / "plots" / "figure1.svg").write_text("<svg/>")
    (folder / "seed-7").mkdir()
    (folder / "seed-7" / "notes.txt").write_text("mine")
    return folder


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_a_model_folder_with_the_user_s_files_is_refused_untouched(setup, tmp_path, capsys, extra):
    folder = user_model_folder(tmp_path)
    before = snapshot(folder)
    capsys.readouterr()
    assert main(train_args(setup, folder, *extra)) == 2
    err = one_line_error(capsys)
    assert f"{folder} is not a softprompt run" in err and "nothing was changed" in err
    assert snapshot(folder) == before  # config.json kept, plots/ and seed-7/ kept, nothing written


@pytest.mark.parametrize("what", ["plots/figure1.svg", "seed-7/notes.txt", "log.jsonl", "prompt/prompt.safetensors",
                                  "config.json"])
def test_any_run_name_without_softprompt_s_config_is_not_a_run(setup, tmp_path, what):
    folder = tmp_path / "mine"
    (folder / what).parent.mkdir(parents=True, exist_ok=True)
    (folder / what).write_text('{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}')
    before = snapshot(folder)
    with pytest.raises(RunExistsError, match="is not a softprompt run"):
        train(config(setup, folder, overwrite=True), tiny_llama(), tiny_tokenizer())
    assert snapshot(folder) == before


def test_the_positive_marker(setup, tmp_path):
    run = tmp_path / "run"
    train(config(setup, run), tiny_llama(), tiny_tokenizer())
    assert is_run(run)
    for text in ['{"model_type": "llama"}', "{}", "[]", '{"method": "prompt", "architectures": []}', "not json",
                 '{"method": "lora"}']:
        (tmp_path / "other").mkdir(exist_ok=True)
        (tmp_path / "other" / "config.json").write_text(text)
        assert not is_run(tmp_path / "other"), text
    assert {p.name for p in owned(run)} == {"config.json", "log.jsonl", "metrics.json", "prompt", "checkpoint", "plots"}


def test_overwrite_keeps_the_user_s_files_beside_the_run_s(setup, tmp_path):
    run = tmp_path / "run"
    train(config(setup, run, seeds=[1, 2]), tiny_llama(), tiny_tokenizer())
    (run / "notes.txt").write_text("mine")
    (run / "seed-1" / "notes.txt").write_text("mine too")
    (run / "seed-notes").mkdir()  # not a seed folder: a user's
    (run / "seed-notes" / "a.txt").write_text("kept")
    old = json.loads((run / "summary.json").read_text())
    metrics = train(config(setup, run, seeds=[3], overwrite=True), tiny_llama(), tiny_tokenizer())
    assert metrics["seeds"] == [3] and json.loads((run / "summary.json").read_text())["seeds"] == [3] != old["seeds"]
    assert (run / "notes.txt").read_text() == "mine" and (run / "seed-notes" / "a.txt").read_text() == "kept"
    # seed-1's run files are gone, the user's note in it stays; seed-2 (all softprompt's) is gone
    assert sorted(p.name for p in (run / "seed-1").iterdir()) == ["notes.txt"]
    assert not (run / "seed-2").exists() and is_run(run / "seed-3")


@pytest.mark.parametrize("where", ["plots/figure1.svg", "prompt/notes.md", "checkpoint/mine.txt", "seed-1/plots/fig.svg"])
def test_a_user_s_file_inside_a_folder_softprompt_writes_whole_stops_the_overwrite(setup, tmp_path, capsys, where):
    run = tmp_path / "run"
    seeds = ["--seeds", "1"] if where.startswith("seed-") else []
    assert main(train_args(setup, run, *seeds)) == 0
    (run / where).parent.mkdir(parents=True, exist_ok=True)
    (run / where).write_text("mine")
    before = snapshot(run)
    capsys.readouterr()
    assert main(train_args(setup, run, *seeds, "--overwrite", "--lr", "0.05")) == 2
    err = one_line_error(capsys)
    assert f"{run / where} was not written by softprompt" in err
    assert snapshot(run) == before


def test_a_seed_folder_that_is_not_a_run_stops_the_overwrite(setup, tmp_path):
    run = tmp_path / "run"
    train(config(setup, run), tiny_llama(), tiny_tokenizer())
    (run / "seed-3").mkdir()
    (run / "seed-3" / "notes.txt").write_text("mine")
    before = snapshot(run)
    with pytest.raises(RunExistsError, match=f"{run / 'seed-3'} is not a softprompt run"):
        train(config(setup, run, overwrite=True), tiny_llama(), tiny_tokenizer())
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------------
# eval --output goes through the one guard of files (cli/outputs.py)


def test_eval_output_never_replaces_the_run_s_config(setup, tmp_path, capsys):
    run = tmp_path / "run"
    train(config(setup, run), tiny_llama(), tiny_tokenizer())
    before = snapshot(run)
    eval_args = ["eval", str(run / "prompt"), "--model", str(setup / "tiny"), "--data-dir", str(setup / "data")]
    for target in (run / "config.json", run / "metrics.json", run / "prompt" / "prompt_config.json", run / "plots" / "loss.png"):
        for extra in ([], ["--overwrite"]):
            capsys.readouterr()
            assert main([*eval_args, "--output", str(target), *extra]) == 2
            err = one_line_error(capsys)
            assert f"--output {target}" in err and ("softprompt run folder" in err or "input" in err), err
    assert snapshot(run) == before
    mine = tmp_path / "metrics.json"
    mine.write_text("mine")
    assert main([*eval_args, "--output", str(mine)]) == 2
    assert f"--output {mine} exists; pass --overwrite" in one_line_error(capsys) and mine.read_text() == "mine"
    assert main([*eval_args, "--output", str(mine), "--overwrite"]) == 0
    assert json.loads(mine.read_text())["n"] == 6


def test_every_option_that_writes_a_file_goes_through_the_guard():
    """A command whose option names a file to write (--output FILE, --plot PNG) calls output_file."""
    import re

    import softprompt.cli as cli

    for module in sorted(Path(cli.__file__).parent.glob("*_cmd.py")):
        text = module.read_text()
        writes = re.findall(r'add_argument\("(--output|--plot)"[^)]*metavar="(?:FILE|PNG)"', text)
        if writes:
            assert "output_file(" in text, f"{module.name}: {writes} bypass cli/outputs.output_file"
