"""Issue 36: counts that disagree with their tensors, cues a short --max-length would cut, and
input that blows up (sizes past any model, a disk that fills during a save, a reader racing a
save's swap, rows no model can score) are each one line, in bounded time and memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import softprompt
from softprompt.batching import encode_examples
from softprompt.cli import main
from softprompt.config import TrainConfig
from softprompt.evaluate import NoPrompt, evaluate
from softprompt.io import PromptFileError
from softprompt.prompt_files import SaveError
from softprompt.prompts import ConfigError, make_config
from softprompt.tasks import Example, get_task
from softprompt.tasks.build import row_to_examples
from softprompt.train import train
from conftest import tiny_llama
from helpers import tiny_tokenizer, write_sst2

TESTS = str(Path(__file__).parent)


# ---------------------------------------------------------------------------------------
# Imports that disagree with their tensors


def _export(tmp_path: Path, rows: int = 6) -> Path:
    """A 6-row prompt exported as a PEFT adapter."""
    from softprompt.exports import export_peft

    softprompt.attach(tiny_llama(), "prompt", length=rows).save(tmp_path / "p")
    return export_peft(tmp_path / "p", tmp_path / "peft")


@pytest.mark.parametrize("count", [3, -1, 7, 0, "6", True])
def test_peft_count_that_disagrees_with_the_tensor_is_refused(tmp_path, count):
    adapter = _export(tmp_path)
    file = adapter / "adapter_config.json"
    config = json.loads(file.read_text())
    config["num_virtual_tokens"] = count
    file.write_text(json.dumps(config))
    with pytest.raises(PromptFileError) as err:
        softprompt.import_peft(tiny_llama(), adapter)
    assert str(err.value).startswith(f"{file}: field 'num_virtual_tokens'") and "\n" not in str(err.value)


def test_peft_import_keeps_every_row_and_checks_token_dim(tmp_path):
    adapter = _export(tmp_path)
    assert softprompt.import_peft(tiny_llama(), adapter).prompt_embeddings().shape[0] == 6
    file = adapter / "adapter_config.json"
    config = json.loads(file.read_text())
    config["token_dim"] = 31
    file.write_text(json.dumps(config))
    with pytest.raises(PromptFileError, match=r"field 'token_dim' is 31; adapter_model.safetensors holds prompt_embeddings of shape \(6, 32\)"):
        softprompt.import_peft(tiny_llama(), adapter)


def test_peft_seq2seq_adapter_holds_n_rows_per_submodule(tmp_path):
    """PEFT stores 2n rows for a seq2seq adapter (it uses the first n): that agrees."""
    table = torch.randn(8, 32)
    (tmp_path / "a").mkdir()
    save_file({"prompt_embeddings": table}, str(tmp_path / "a" / "adapter_model.safetensors"))
    config = {"peft_type": "PROMPT_TUNING", "task_type": "SEQ_2_SEQ_LM", "num_virtual_tokens": 4, "token_dim": 32,
              "num_transformer_submodules": 2}
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(config))
    from softprompt.exports import read_peft_prompt

    assert torch.equal(read_peft_prompt(tmp_path / "a"), table[:4])


@pytest.mark.parametrize("field, value, expected", [
    ("num_trainable", 5, "field 'num_trainable' is 5; the tensors hold 96 values"),
    ("config.length", 5, "tensor embedding has shape (3, 32), expected (5, 32)"),
])
def test_prompt_folder_sizes_are_checked_against_the_tensors(tmp_path, field, value, expected):
    softprompt.attach(tiny_llama(), "prompt", length=3).save(tmp_path / "p")
    file = tmp_path / "p" / "prompt_config.json"
    record = json.loads(file.read_text())
    if "." in field:
        record["config"]["length"] = value
    else:
        record[field] = value
    file.write_text(json.dumps(record))
    with pytest.raises(PromptFileError) as err:
        softprompt.load(tiny_llama(), tmp_path / "p")
    assert expected in str(err.value) and str(file) in str(err.value) and "\n" not in str(err.value)
    if "." in field:
        assert "config.length 5" in str(err.value)


# ---------------------------------------------------------------------------------------
# Cut cues


def _sst2_instruction(sentence: str = "a very very dull plot and bad acting") -> Example:
    return row_to_examples(get_task("sst2", style="instruction"), {"sentence": sentence, "label": 0}, True)[0]


def test_a_max_length_that_would_cut_the_cue_is_refused_with_the_length_needed():
    tok = tiny_tokenizer(bos=True)
    example = _sst2_instruction()
    with pytest.raises(ValueError) as err:  # BOS + target + EOS take 3: 1 left, the cue needs more
        encode_examples([example], tok, "decoder-only", max_length=4, report=False)
    message = str(err.value)
    assert message.startswith("--max-length 4 needs at least ") and "'\\nSentiment:'" in message and "example 1" in message
    need = int(message.split("needs at least ")[1].split()[0])
    with pytest.raises(ValueError, match=f"--max-length {need - 1} needs at least {need} tokens"):
        encode_examples([example], tok, "decoder-only", max_length=need - 1, report=False)
    enc = encode_examples([example], tok, "decoder-only", max_length=need, report=False)[0]  # the least that fits
    cue = tok("\nSentiment:", add_special_tokens=False)["input_ids"]
    target_at = next(i for i, label in enumerate(enc.labels.tolist()) if label != -100)
    assert len(enc.input_ids) == need and enc.input_ids.tolist()[target_at - len(cue) : target_at] == cue


def test_encoder_decoder_question_and_cue_are_never_cut():
    tok = tiny_tokenizer(eos_suffix=True)
    row = {"question": "was the film good", "passage": "the plot was dull and the acting was bad but fun", "label": 1}
    example = row_to_examples(get_task("boolq"), row, is_train=True)[0]
    with pytest.raises(ValueError, match=r"^--max-length 4 needs at least \d+ tokens for example 1: the template's text"):
        encode_examples([example], tok, "encoder-decoder", max_length=4, report=False)


def test_train_with_max_length_3_is_one_line_and_writes_nothing(tmp_path, capsys):
    tiny_llama().save_pretrained(tmp_path / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(tmp_path / "tiny")
    argv = ["train", "--model", str(tmp_path / "tiny"), "--task", "sst2", "--data-dir", str(write_sst2(tmp_path / "data")),
            "--method", "prompt", "--length", "3", "--max-steps", "1", "--max-length", "3", "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("softprompt train: error: --max-length 3 needs at least ") and "Sentiment" in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------
# Sizes past any model


@pytest.mark.parametrize("length", [2_000_000_000, 10**20, 100_001, 0])
def test_absurd_lengths_are_refused_by_the_config(length):
    with pytest.raises(ConfigError, match="prompt: length must be a positive integer at most 100,000, got"):
        make_config("prompt", length=length)


def test_absurd_length_on_the_command_line_is_one_line(tmp_path, capsys):
    argv = ["train", "--task", "sst2", "--data-dir", str(write_sst2(tmp_path / "data")), "--method", "ulpt",
            "--length", str(10**20), "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("softprompt train: error:") and "length must be a positive integer at most 100,000" in err
    assert "\n" not in err and not (tmp_path / "run").exists()


def _gpt2(positions: int = 64):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=positions,
                                      pad_token_id=0, bos_token_id=1, eos_token_id=2)).eval()


def test_a_prompt_longer_than_the_positions_is_refused_by_attach():
    with pytest.raises(ValueError) as err:
        softprompt.attach(_gpt2(), "prompt", length=100)
    assert str(err.value).startswith("a prompt of 100 positions and 1 text token(s) exceed the 64 positions of GPT2LMHeadModel")
    assert "--length (at most 63)" in str(err.value)
    with pytest.raises(ValueError, match="a prompt of 64 positions"):  # the sink counts
        softprompt.attach(_gpt2(), "prompt", length=63, sink="bos")


def test_rows_past_the_positions_are_one_line_not_an_index_error():
    model = softprompt.attach(_gpt2(), "prompt", length=10)
    ids = torch.randint(3, 100, (2, 60))
    with pytest.raises(ValueError, match=r"a prompt of 10 positions and 60 text token\(s\) exceed the 64 positions.*--max-length \(at most 54\)"):
        model(input_ids=ids)
    assert model(input_ids=ids[:, :54]).logits.shape == (2, 54, 128)


def test_train_with_a_prompt_past_the_positions_is_one_line(tmp_path, capsys):
    _gpt2().save_pretrained(tmp_path / "g")
    tiny_tokenizer().save_pretrained(tmp_path / "g")
    argv = ["train", "--model", str(tmp_path / "g"), "--task", "sst2", "--data-dir", str(write_sst2(tmp_path / "data")),
            "--method", "prompt", "--length", "100", "--max-steps", "1", "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("softprompt train: error: a prompt of 100 positions and 1 text token(s) exceed the 64 positions")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------
# A disk that fills during a save


FULL = "Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left on device\" })"


def test_a_full_disk_during_model_save_is_one_line_and_keeps_the_old_prompt(tmp_path, monkeypatch):
    model = softprompt.attach(tiny_llama(), "prompt", length=3)
    model.save(tmp_path / "p")
    before = load_file(str(tmp_path / "p" / "prompt.safetensors"))

    def full(*args, **kwargs):
        raise SafetensorError(FULL)

    monkeypatch.setattr("softprompt.prompt_files.save_file", full)
    with torch.no_grad():
        model.prompt.embedding.add_(1.0)
    with pytest.raises(SaveError) as err:
        model.save(tmp_path / "p")
    assert str(err.value) == f"no space left writing {tmp_path / 'p' / 'prompt.safetensors'}; the previous prompt in {tmp_path / 'p'} is intact"
    assert torch.equal(load_file(str(tmp_path / "p" / "prompt.safetensors"))["embedding"], before["embedding"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]  # no temporary folder left


def test_a_full_disk_during_a_checkpoint_says_how_to_resume(tmp_path, monkeypatch, capsys):
    data = write_sst2(tmp_path / "data")
    config = TrainConfig(task="sst2", label_words="names", method="prompt", length=3, data_dir=str(data), max_steps=4,
                         batch_size=4, eval_every=2, checkpoint_every=2, zero_shot=False, output_dir=str(tmp_path / "run"))
    calls = {"n": 0}
    real = __import__("softprompt.rundir", fromlist=["save_file"]).save_file

    def fill_at_the_second_checkpoint(tensors, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint's two files are written
            raise OSError(28, "No space left on device")
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr("softprompt.rundir.save_file", fill_at_the_second_checkpoint)
    with pytest.raises(SaveError) as err:
        train(config, model=tiny_llama(), tokenizer=tiny_tokenizer(bos=True))
    run = tmp_path / "run"
    assert str(err.value) == (f"no space left writing {run / 'checkpoint'}; the previous checkpoint is intact; "
                              f"free space and resume with softprompt train --resume {run}")
    assert json.loads((run / "checkpoint" / "state.json").read_text())["step"] == 2  # the data held
    monkeypatch.undo()
    assert train(TrainConfig.from_dict({**config.to_dict(), "resume": True}), model=tiny_llama(),
                 tokenizer=tiny_tokenizer(bos=True))["steps"] == 4


def test_a_file_size_limit_during_save_is_one_line(tmp_path):
    """A real ``ulimit -f``: the kernel refuses the write (Python ignores SIGXFSZ)."""
    script = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {TESTS!r})
        import softprompt
        from conftest import tiny_llama
        model = softprompt.attach(tiny_llama(), "prompt", length=200)  # 25,600 bytes of tensor
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
        try:
            model.save({str(tmp_path / 'p')!r})
        except OSError as err:
            print(err)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"file size limit reached (ulimit -f) writing {tmp_path / 'p' / 'prompt.safetensors'}; " \
                                 f"the previous prompt in {tmp_path / 'p'} is intact"
    assert not (tmp_path / "p").exists()


# ---------------------------------------------------------------------------------------
# A reader racing a save's swap


def test_a_load_that_meets_a_swap_is_tried_once_more(tmp_path, monkeypatch):
    import softprompt.prompt_files as prompt_files

    softprompt.attach(tiny_llama(), "prompt", length=3).save(tmp_path / "p")
    real, calls = prompt_files.read_tensors, {"n": 0}

    def racing(path):
        calls["n"] += 1
        if calls["n"] == 1:  # the first read lands between save's two renames
            (tmp_path / ".p.old-1").mkdir()
            raise FileNotFoundError(f"{path}/prompt.safetensors: unable to open file")
        return real(path)

    monkeypatch.setattr(prompt_files, "read_tensors", racing)
    assert softprompt.load(tiny_llama(), tmp_path / "p").prompt_embeddings().shape == (3, 32)
    assert calls["n"] == 2


def test_a_prompt_that_stays_missing_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path / 'nope'}: no such prompt directory$"):
        softprompt.load(tiny_llama(), tmp_path / "nope")


# ---------------------------------------------------------------------------------------
# Clear messages


def test_an_empty_input_in_the_zero_shot_baseline_names_the_row():
    task = get_task("sst2", label_words="names")
    examples = [Example("fine film", "positive", 1, choices=task.label_words), Example("", "negative", 0, choices=task.label_words)]
    with pytest.raises(ValueError) as err:
        evaluate(NoPrompt(tiny_llama()), tiny_tokenizer(), task, examples, mode="rank")
    assert str(err.value).startswith("example 2 has an empty input (''): with no prompt (the zero-shot baseline)")
    # with a prompt ahead there is a position to score from
    result = evaluate(softprompt.attach(tiny_llama(), "prompt", length=3), tiny_tokenizer(), task, examples, mode="rank")
    assert result["n"] == 2


def test_eval_of_a_run_whose_train_file_moved_says_which_and_how(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    rows = "".join(f"{s},{l}\n" for s, l in [("great fun", 1), ("awful", 0)] * 4)
    (tmp_path / "r" / "train.csv").write_text("text,label\n" + rows)
    (tmp_path / "r" / "dev.csv").write_text("text,label\n" + rows)
    tiny_llama().save_pretrained(tmp_path / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(tmp_path / "tiny")
    argv = ["train", "--model", str(tmp_path / "tiny"), "--train-file", str(tmp_path / "r/train.csv"), "--validation-file",
            str(tmp_path / "r/dev.csv"), "--template", "Text: {text}\\nAnswer:", "--method", "prompt", "--length", "3",
            "--max-steps", "1", "--batch-size", "4", "--no-zero-shot", "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    (tmp_path / "r").rename(tmp_path / "moved")
    argv = ["eval", str(tmp_path / "run" / "prompt"), "--validation-file", str(tmp_path / "moved" / "dev.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"softprompt eval: error: --train-file {tmp_path / 'r' / 'train.csv'}: no such file")
    assert "pass --train-file with its new place" in err
    capsys.readouterr()
    argv += ["--train-file", str(tmp_path / "moved" / "train.csv"), "--model", str(tmp_path / "tiny")]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 8


def test_predict_with_a_task_file_that_names_no_data(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(tmp_path / "tiny")
    softprompt.attach(tiny_llama(), "prompt", length=3).save(tmp_path / "p")
    (tmp_path / "t.yaml").write_text('template: "Text: {text}\\nAnswer:"\nlabels: [0, 1]\nlabel_words: [bad, good]\nmetrics: [accuracy]\n')
    (tmp_path / "in.jsonl").write_text('{"text": "great fun"}\n')
    argv = ["predict", str(tmp_path / "p"), "--model", str(tmp_path / "tiny"), "--input", str(tmp_path / "in.jsonl"),
            "--task", str(tmp_path / "t.yaml"), "--mode", "rank", "--output", str(tmp_path / "out.jsonl")]
    assert main(argv) == 0
    out = json.loads((tmp_path / "out.jsonl").read_text())
    assert out["input"] == "Text: great fun\nAnswer:" and out["prediction"] in ("0", "1")  # the class names: the labels as text
