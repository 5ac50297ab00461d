"""No NaN prompt, no lost file, one clear line (issue 14): non-finite options and tensors, the
last good prompt of a diverged run, what `export --overwrite` may replace, and the messages that
were tracebacks."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import softprompt
from softprompt.cli import main
from softprompt.config import TrainConfig
from softprompt.io import PromptFileError
from softprompt.train import TrainingDiverged, train
from conftest import tiny_llama
from helpers import tiny_tokenizer, write_sst2


def config(tmp_path: Path, **over) -> TrainConfig:
    base = dict(task="sst2", label_words="names", method="prompt", length=3, data_dir=str(write_sst2(tmp_path / "data")),
                max_steps=6, batch_size=4, lr=0.1, eval_every=100, checkpoint_every=1, eval_batch_size=8, log_every=1,
                zero_shot=False, output_dir=str(tmp_path / "run"))
    base.update(over)
    return TrainConfig(**base)


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    tiny_llama().save_pretrained(root / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(root / "tiny")
    write_sst2(root / "data")
    return root


# ---------------------------------------------------------------------------------------
# Non-finite options and tensors


@pytest.mark.parametrize("field, value", [("lr", float("inf")), ("lr", float("nan")), ("max_grad_norm", float("inf")),
                                          ("epochs", float("inf")), ("weight_decay", float("inf")), ("weight_decay", float("nan"))])
def test_non_finite_options_are_rejected(field, value):
    with pytest.raises(ValueError, match=rf"{field} must be a (positive|non-negative) finite number"):
        TrainConfig(**{field: value})


def test_lr_inf_on_the_command_line_is_one_line_and_writes_nothing(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", str(tiny_dir / "tiny"), "--task", "sst2", "--data-dir", str(tiny_dir / "data"),
            "--method", "prompt", "--length", "3", "--max-steps", "2", "--lr", "inf", "--output-dir", str(out)]
    assert main(argv) == 2
    assert "lr must be a positive finite number, got inf" in one_line(capsys)
    assert not out.exists()


def test_last_good_prompt_is_finite_and_from_before_the_bad_step(tmp_path):
    """The parameters themselves turn NaN in step 3's forward: the last good prompt is the one
    saved before it (the step-2 checkpoint), not the NaN parameters."""
    model = softprompt.attach(tiny_llama(), "prompt", length=3, seed=0)
    calls, before = {"n": 0}, []

    def poison(module, args):
        if module.training:
            calls["n"] += 1
            if calls["n"] == 3:
                before.append(module.embedding.detach().clone())
                with torch.no_grad():
                    module.embedding.fill_(float("nan"))

    model.prompt.register_forward_pre_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 3; the last good prompt \(step 2\) is in"):
        train(config(tmp_path), model, tiny_tokenizer())
    saved = load_file(str(tmp_path / "run" / "prompt" / "prompt.safetensors"))["embedding"]
    assert torch.isfinite(saved).all() and torch.equal(saved, before[0])
    softprompt.load(tiny_llama(), tmp_path / "run" / "prompt")  # loadable


def test_a_step_that_makes_the_prompt_non_finite_stops_before_it_is_evaluated_or_saved(tmp_path):
    """The loss is finite but the update makes the prompt NaN (at step 2, an evaluation step):
    the run stops there, and the NaN prompt is never kept as the best one."""
    model = softprompt.attach(tiny_llama(), "prompt", length=3, seed=0)
    after = []

    def poison(optimizer, args, kwargs):
        after.append(model.prompt.embedding.detach().clone())
        if len(after) == 2:
            with torch.no_grad():
                model.prompt.embedding.fill_(float("nan"))

    from torch.optim.optimizer import register_optimizer_step_post_hook

    handle = register_optimizer_step_post_hook(poison)
    try:
        with pytest.raises(TrainingDiverged, match=r"the prompt became NaN/inf at step 2; the last good prompt \(step 1\)"):
            train(config(tmp_path, eval_every=2), model, tiny_tokenizer())
    finally:
        handle.remove()
    saved = load_file(str(tmp_path / "run" / "prompt" / "prompt.safetensors"))["embedding"]
    assert torch.equal(saved, after[0])


@pytest.fixture
def nan_prompt(tmp_path):
    model = softprompt.attach(tiny_llama(), "prompt", length=3, seed=0)
    model.save(tmp_path / "p")
    weights = tmp_path / "p" / "prompt.safetensors"
    tensors = load_file(str(weights))
    tensors["embedding"][1, 2] = float("nan")
    save_file(tensors, str(weights))
    return tmp_path / "p"


def test_a_nan_prompt_is_refused_by_load_eval_inspect_and_export(nan_prompt, tiny_dir, tmp_path, capsys):
    message = r"prompt.safetensors: tensor embedding holds 1 NaN or infinite value\(s\) of 96"
    with pytest.raises(PromptFileError, match=message):
        softprompt.load(tiny_llama(), nan_prompt)
    for argv in (["inspect", str(nan_prompt)],
                 ["export", str(nan_prompt), str(tmp_path / "peft")],
                 ["eval", str(nan_prompt), "--task", "sst2", "--model", str(tiny_dir / "tiny"), "--data-dir", str(tiny_dir / "data")]):
        assert main(argv) == 2, argv
        assert "NaN or infinite" in one_line(capsys), argv
    assert not (tmp_path / "peft").exists()


def test_a_nan_peft_adapter_is_refused(tmp_path):
    model = softprompt.attach(tiny_llama(), "prompt", length=3, seed=0)
    model.save(tmp_path / "p")
    softprompt.export_peft(tmp_path / "p", tmp_path / "peft")
    weights = tmp_path / "peft" / "adapter_model.safetensors"
    save_file({"prompt_embeddings": torch.full((3, 32), float("inf"))}, str(weights))
    with pytest.raises(PromptFileError, match="prompt_embeddings holds 96 NaN or infinite"):
        softprompt.import_peft(tiny_llama(), tmp_path / "peft")


# ---------------------------------------------------------------------------------------
# export --overwrite replaces only what softprompt wrote


@pytest.fixture
def run_dir(tmp_path):
    train(config(tmp_path, max_steps=1), tiny_llama(), tiny_tokenizer())
    return tmp_path / "run"


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_export_into_the_run_itself_is_refused(run_dir, capsys):
    before = listing(run_dir)
    assert main(["export", str(run_dir / "prompt"), str(run_dir), "--overwrite"]) == 2
    assert "contains the source directory" in one_line(capsys)
    assert listing(run_dir) == before


def test_export_overwrite_replaces_its_own_output_only(run_dir, tmp_path, capsys):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(run_dir / "prompt"), str(out), "--overwrite"]) == 2
    assert f"{out} is not a PEFT adapter softprompt exported (it holds notes.txt)" in one_line(capsys)
    assert (out / "notes.txt").read_text() == "mine"

    (out / "notes.txt").unlink()  # empty: fine
    assert main(["export", str(run_dir / "prompt"), str(out), "--overwrite"]) == 0
    assert main(["export", str(run_dir / "prompt"), str(out), "--overwrite"]) == 0  # its own output: replaced
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    (out / "README.md").write_text("a model card")  # the user's card, not softprompt's: no longer only what softprompt wrote
    assert main(["export", str(run_dir / "prompt"), str(out), "--overwrite"]) == 2
    assert (out / "README.md").exists()


def test_import_overwrite_replaces_a_prompt_directory_only(run_dir, tiny_dir, tmp_path, capsys):
    assert main(["export", str(run_dir / "prompt"), str(tmp_path / "adapter")]) == 0
    back = ["export", str(tmp_path / "adapter"), "--from", "peft", "--model", str(tiny_dir / "tiny")]
    capsys.readouterr()
    assert main([*back, str(run_dir), "--overwrite"]) == 2  # a run directory is not a prompt directory
    assert "is not a softprompt prompt directory" in capsys.readouterr().err
    assert (run_dir / "config.json").exists()
    softprompt.attach(tiny_llama(), "prompt", length=3).save(tmp_path / "old")
    assert main([*back, str(tmp_path / "old"), "--overwrite"]) == 0
    assert softprompt.load(tiny_llama(), tmp_path / "old").method == "prompt"


@pytest.mark.parametrize("which", ["source", "output"])
def test_symlink_loop_given_to_export_is_one_line(tmp_path, capsys, which):
    softprompt.attach(tiny_llama(), "prompt", length=3).save(tmp_path / "p")
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    argv = ["export", str(loop), str(tmp_path / "out")] if which == "source" else ["export", str(tmp_path / "p"), str(loop), "--overwrite"]
    assert main(argv) == 2
    assert f"{loop}: symlink loop" in one_line(capsys)


# ---------------------------------------------------------------------------------------
# Messages that were tracebacks


def test_non_integer_embed_dim_in_a_prompt_config_names_the_field(tmp_path, capsys):
    softprompt.attach(tiny_llama(), "prompt", length=3).save(tmp_path / "p")
    file = tmp_path / "p" / "prompt_config.json"
    record = json.loads(file.read_text())
    record["backbone"]["embed_dim"] = "abc"
    file.write_text(json.dumps(record))
    assert main(["inspect", str(tmp_path / "p")]) == 2
    assert one_line(capsys) == f"softprompt inspect: error: {file}: field 'backbone.embed_dim' must be a positive integer, got 'abc'"


def test_max_length_with_no_room_for_the_input_is_one_line_and_leaves_nothing(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", str(tiny_dir / "tiny"), "--task", "sst2", "--label-words", "names", "--data-dir",
            str(tiny_dir / "data"), "--method", "prompt", "--length", "3", "--batch-size", "4", "--max-steps", "2",
            "--max-length", "2", "--eval-mode", "generate", "--output-dir", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the model's loading bar
    assert err.startswith("softprompt train: error: max_length 2 leaves no room for the input") and "--max-length" in err
    assert not out.exists()


def test_eval_output_that_cannot_be_written_fails_first_or_keeps_the_metrics(tiny_dir, tmp_path, capsys, monkeypatch):
    softprompt.attach(tiny_llama(), "prompt", length=3).save(tmp_path / "p")
    base = ["eval", str(tmp_path / "p"), "--task", "sst2", "--label-words", "names", "--model", str(tiny_dir / "tiny"),
            "--data-dir", str(tiny_dir / "data")]
    (tmp_path / "afile").write_text("x")
    assert main([*base, "--output", str(tmp_path / "afile" / "m.json")]) == 2  # before evaluating
    assert one_line(capsys) == f"softprompt eval: error: --output {tmp_path / 'afile' / 'm.json'}: {tmp_path / 'afile'} is not a directory"

    def refuse(path, data):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("softprompt.io.write_json_atomically", refuse)  # fails only once the metrics exist
    assert main([*base, "--output", str(tmp_path / "m.json")]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["n"] == 6  # the metrics are not lost
    last = captured.err.strip().splitlines()[-1]
    assert last == f"softprompt eval: error: --output {tmp_path / 'm.json'}: cannot write the metrics (Permission denied); they are printed above"


def test_truncation_warning_counts_examples_not_choices(tmp_path, caplog):
    from softprompt.evaluate import evaluate
    from softprompt.tasks import get_task

    data = write_sst2(tmp_path / "data")
    dev = data / "SST-2" / "dev.tsv"
    long = " ".join(["very good film"] * 30)
    dev.write_text(dev.read_text() + f"{long}\t1\n")  # 7 examples, one of them long
    task = get_task("sst2", label_words="names")
    examples = task.load("validation", data_dir=str(data))
    model = softprompt.attach(tiny_llama(), "prompt", length=3)
    with caplog.at_level(logging.WARNING, logger="softprompt"):
        evaluate(model, tiny_tokenizer(bos=True), task, examples, mode="rank", max_length=40)
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert warnings and all(w.startswith("1 of 7 examples") for w in warnings), warnings


def test_non_utf8_data_names_the_file_and_line(tmp_path):
    data = write_sst2(tmp_path / "data")
    train_file = data / "SST-2" / "train.tsv"
    lines = train_file.read_bytes().split(b"\n")
    lines[2] = b"caf\xe9 good\t1"
    train_file.write_bytes(b"\n".join(lines))
    from softprompt.tasks import get_task

    task = get_task("sst2", label_words="names")
    with pytest.raises(ValueError, match=rf"{train_file}:3: .*UTF-8"):
        task.load("train", data_dir=str(data))


def test_a_byte_order_mark_is_not_part_of_the_first_field(tmp_path):
    """GLUE's MRPC dev.tsv as distributed starts with a UTF-8 byte-order mark."""
    data = write_sst2(tmp_path / "data")
    dev = data / "SST-2" / "dev.tsv"
    dev.write_bytes(b"\xef\xbb\xbf" + dev.read_bytes())
    from softprompt.tasks import get_task

    rows = get_task("sst2", label_words="names").load("validation", data_dir=str(data))
    assert len(rows) == 6 and rows[0].input_text == "sentence: great fun"
