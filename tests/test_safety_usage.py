"""Issue 36, silent wrong results: a prompt is read as it was trained wherever its folder goes
(the usage record), a run resumes only on its own backbone, and an option that would do nothing
(fp16 on a CPU) is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import softprompt
from softprompt.checkpoint import backbone_fingerprint
from softprompt.cli import main
from softprompt.config import TrainConfig
from softprompt.io import PromptFileError, read_record
from softprompt.train import train
from conftest import tiny_llama
from helpers import saved_tiny_run_inputs, tiny_tokenizer, write_sst2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A decoder-only run trained by the CLI with the kind's default template (the tiny tokenizer has
    no chat template: a base model, the base style, which for sst2 is the instruction template)."""
    root = tmp_path_factory.mktemp("usage")
    saved_tiny_run_inputs(root)
    argv = ["train", "--model", str(root / "tiny"), "--task", "sst2", "--label-words", "names", "--data-dir", str(root / "data"),
            "--method", "prompt", "--length", "3", "--batch-size", "4", "--max-steps", "2", "--eval-every", "2",
            "--max-length", "64", "--no-zero-shot", "--output-dir", str(root / "run")]
    assert main(argv) == 0
    shutil.copytree(root / "run" / "prompt", root / "copied")  # a prompt folder out of its run
    (root / "in.csv").write_text("sentence,idx\ngreat fun,7\nawful acting,8\n")
    return root


def test_train_records_how_the_prompt_is_read(trained):
    usage = read_record(trained / "copied")["usage"]
    assert usage["style"] == "base" and usage["template"] == "Review: {sentence}\nSentiment:"
    assert usage["label_words"] == ["negative", "positive"] and usage["task"] == "sst2"
    assert usage["chat_template"] is False and usage["separator"] == " " and usage["max_length"] == 64
    assert usage["truncation_side"] == "right" and usage["protocol"] == "paper"


def _predict(root: Path, *extra: str, out: str = "preds.jsonl") -> list[dict]:
    argv = ["predict", str(root / "copied"), "--model", str(root / "tiny"), "--input", str(root / "in.csv"),
            "--mode", "rank", "--output", str(root / out), "--overwrite", *extra]
    assert main(argv) == 0
    return [json.loads(line) for line in (root / out).read_text().splitlines()]


def test_predict_outside_the_run_uses_the_trained_template(trained, capsys):
    """The reproduction: `predict PROMPT --task sst2 --mode rank` fed `sentence: ...` (the
    text-to-text template, digits) to a prompt trained on the instruction template."""
    out = _predict(trained, "--task", "sst2")
    assert [r["input"] for r in out] == ["Review: great fun\nSentiment:", "Review: awful acting\nSentiment:"]
    assert all(r["prediction"] in ("negative", "positive") for r in out)
    assert "overrides" not in capsys.readouterr().err  # nothing given differs from the record
    # no --task at all: the recorded one
    assert [r["input"] for r in _predict(trained, out="bare.jsonl")] == [r["input"] for r in out]


def test_an_explicit_option_wins_and_says_so_in_one_line(trained, capsys):
    out = _predict(trained, "--task", "sst2", "--template", "sentence: {sentence}", "--label-words", "digits")
    assert out[0]["input"] == "sentence: great fun" and out[0]["prediction"] in ("negative", "positive")
    err = [line for line in capsys.readouterr().err.splitlines() if "overrides" in line]
    assert len(err) == 2
    assert err[0] == ("softprompt predict: --template 'sentence: {sentence}' overrides 'Review: {sentence}\\nSentiment:', "
                      "which the prompt was trained with")
    assert err[1].startswith("softprompt predict: --label-words 'digits' overrides 'negative,positive'")


def test_predict_has_chat_template(trained, capsys):
    argv = ["predict", str(trained / "copied"), "--model", str(trained / "tiny"), "--input", str(trained / "in.csv"),
            "--mode", "rank", "--output", str(trained / "chat.jsonl"), "--chat-template"]
    assert main(argv) == 2  # the tiny tokenizer has none: the option reached the reading
    err = capsys.readouterr().err.strip().splitlines()
    assert "--chat-template True overrides False" in err[0]
    assert err[-1].startswith("softprompt predict: error: chat_template:") and "has no chat template" in err[-1]
    assert not (trained / "chat.jsonl").exists()


@pytest.mark.parametrize("where", ["copied", "saved", "run"])
def test_eval_reads_the_prompt_as_trained_wherever_it_is(trained, monkeypatch, where):
    seen = {}

    def spy(model, tokenizer, task, examples, **kw):
        seen.update(template=task.template, words=task.label_words, max_length=kw["max_length"], separator=kw["separator"])
        return {"accuracy": 0.5, "invalid": 0, "n": len(examples)}

    monkeypatch.setattr("softprompt.evaluate.evaluate", spy)
    folder = {"copied": trained / "copied", "run": trained / "run" / "prompt", "saved": trained / "saved"}[where]
    if where == "saved":  # load + model.save keeps the record
        softprompt.load(tiny_llama(), trained / "copied").save(folder)
    argv = ["eval", str(folder), "--model", str(trained / "tiny"), "--data-dir", str(trained / "data")]
    assert main(argv) == 0
    assert seen == {"template": "Review: {sentence}\nSentiment:", "words": ("negative", "positive"), "max_length": 64, "separator": " "}


def test_older_folders_without_a_record_still_load(trained, tmp_path):
    shutil.copytree(trained / "copied", tmp_path / "old")
    file = tmp_path / "old" / "prompt_config.json"
    record = json.loads(file.read_text())
    del record["usage"]
    file.write_text(json.dumps(record))
    model = softprompt.load(tiny_llama(), tmp_path / "old")
    assert model.usage is None and read_record(tmp_path / "old").get("usage") is None
    model.save(tmp_path / "again")
    assert "usage" not in json.loads((tmp_path / "again" / "prompt_config.json").read_text())


def test_a_bad_usage_field_is_one_line_naming_file_and_field(trained, tmp_path):
    shutil.copytree(trained / "copied", tmp_path / "bad")
    file = tmp_path / "bad" / "prompt_config.json"
    record = json.loads(file.read_text())
    record["usage"]["label_words"] = "negative"
    file.write_text(json.dumps(record))
    with pytest.raises(PromptFileError) as err:
        softprompt.load(tiny_llama(), tmp_path / "bad")
    assert str(err.value) == f"{file}: field 'usage.label_words' has the wrong type or value: 'negative'"


# ---------------------------------------------------------------------------------------
# Resume on another backbone


def _config(tmp_path: Path, **over) -> TrainConfig:
    base = dict(task="sst2", label_words="names", method="prompt", length=3, data_dir=str(write_sst2(tmp_path / "data")),
                max_steps=4, batch_size=4, lr=0.1, eval_every=2, checkpoint_every=2, eval_batch_size=8, log_every=1,
                zero_shot=False, output_dir=str(tmp_path / "run"))
    return TrainConfig(**{**base, **over})


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_on_another_backbone_of_the_same_size_is_refused_and_writes_nothing(tmp_path):
    tok = tiny_tokenizer(bos=True)
    train(_config(tmp_path), model=tiny_llama(0), tokenizer=tok)
    run = tmp_path / "run"
    (run / "metrics.json").unlink()  # as if killed after its last checkpoint
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["backbone"]["sha256"] == backbone_fingerprint(tiny_llama(0))["sha256"]
    before = _listing(run)
    with pytest.raises(ValueError) as err:
        train(_config(tmp_path, resume=True), model=tiny_llama(1), tokenizer=tok)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{run}: the run was trained on") and "resume with the run's --model" in message
    assert _listing(run) == before  # nothing written
    # the same weights (also loaded in bf16) resume
    assert backbone_fingerprint(tiny_llama(0).to(torch.bfloat16)) == backbone_fingerprint(tiny_llama(0))
    assert train(_config(tmp_path, resume=True), model=tiny_llama(0), tokenizer=tok)["steps"] == 4


def test_resume_on_another_backbone_through_the_cli_is_one_line(tmp_path, capsys):
    for seed in (0, 1):
        tiny_llama(seed).save_pretrained(tmp_path / f"m{seed}")
        tiny_tokenizer(bos=True).save_pretrained(tmp_path / f"m{seed}")
    c = _config(tmp_path)
    argv = ["train", "--task", "sst2", "--label-words", "names", "--method", "prompt", "--length", "3", "--data-dir", c.data_dir,
            "--max-steps", "2", "--batch-size", "4", "--eval-every", "2", "--no-zero-shot", "--output-dir", str(tmp_path / "run")]
    assert main([*argv, "--model", str(tmp_path / "m0")]) == 0
    (tmp_path / "run" / "metrics.json").unlink()
    before = _listing(tmp_path / "run")
    assert main(["train", "--resume", str(tmp_path / "run"), "--model", str(tmp_path / "m1")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"softprompt train: error: {tmp_path / 'run'}: the run was trained on {tmp_path / 'm0'}")
    assert _listing(tmp_path / "run") == before


# ---------------------------------------------------------------------------------------
# Options that do nothing


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs on a GPU")
def test_fp16_on_a_cpu_is_refused_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(ValueError, match="--mixed-precision fp16 needs a CUDA GPU"):
        train(_config(tmp_path, mixed_precision="fp16"), model=tiny_llama(), tokenizer=tiny_tokenizer(bos=True))
    assert not (tmp_path / "run").exists()
    argv = ["train", "--task", "sst2", "--data-dir", str(tmp_path / "data"), "--mixed-precision", "fp16",
            "--output-dir", str(tmp_path / "cli")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == ("softprompt train: error: --mixed-precision fp16 needs a CUDA GPU; "
                                               "on the CPU the run would be float32 (use bf16 or no)")
    assert not (tmp_path / "cli").exists()


def test_a_folder_without_a_record_is_read_in_the_style_train_picks_on_its_backbone(trained, tmp_path):
    # model.save from Python records no usage; the style then comes from the backbone it is read
    # with, as train picks it: the tiny tokenizer has no chat template (a base model: "base"), the
    # same model with a chat template is instruction-tuned ("instruction"), T5 gets its own
    from softprompt.cli.common import prompt_usage

    record = read_record(trained / "copied")
    del record["usage"]
    assert record["backbone"]["kind"] == "decoder-only"
    assert prompt_usage(record, str(trained / "tiny")) == {"style": "base"}
    chat = tmp_path / "chat"
    shutil.copytree(trained / "tiny", chat)
    config = json.loads((chat / "tokenizer_config.json").read_text())
    (chat / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": "{{ messages }}"}))
    assert prompt_usage(record, str(chat)) == {"style": "instruction"}
    assert prompt_usage({**record, "backbone": {**record["backbone"], "name": str(chat)}}) == {"style": "instruction"}
    assert prompt_usage(record, str(tmp_path / "nowhere")) == {"style": "instruction"}  # unknown: never taken for base
    assert prompt_usage({**record, "backbone": {**record["backbone"], "kind": "encoder-decoder"}}) == {"style": "text-to-text"}
    assert prompt_usage({**record, "usage": {"style": "plain"}}) == {"style": "plain"}  # a record wins
