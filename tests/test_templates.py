"""Templates per backbone kind: the papers' text-to-text templates stay byte-identical, decoder-only
models get an instruction style with real label words, user overrides win, a chat template wraps
the input, and preview shows exactly that text."""

from __future__ import annotations

from pathlib import Path

import pytest

from softprompt.batching import apply_chat_template, encode_pairs
from softprompt.cli import main
from softprompt.tasks import Example, get_task
from conftest import DATA_DIR
from helpers import tiny_tokenizer

GLUE = DATA_DIR / "glue"
SUPERGLUE = DATA_DIR / "superglue"


def test_text_to_text_is_the_papers_template_and_the_default():
    for style in (None, "text-to-text"):
        task = get_task("rte", style=style)
        assert task.template == "premise: {premise} hypothesis: {hypothesis}" and task.label_words == ("0", "1")
    assert get_task("sst2").template == "sentence: {sentence}"


@pytest.mark.parametrize("name, words", [("sst2", ("negative", "positive")), ("rte", ("yes", "no")),
                                         ("cb", ("yes", "no", "maybe")), ("boolq", ("no", "yes")), ("mrpc", ("no", "yes"))])
def test_instruction_style_has_real_words_in_class_order(name, words):
    task = get_task(name, style="instruction")
    assert task.label_words == words and task.template.endswith(":") and "\n" in task.template


def test_every_classification_task_has_distinct_instruction_words():
    from softprompt.tasks import list_tasks

    for name in list_tasks():
        task = get_task(name, style="instruction")
        if task.kind == "classification":
            assert len(set(task.label_words)) == len(task.label_words)
            assert not any(w.isdigit() for w in task.label_words), name


def test_user_overrides_beat_the_style():
    task = get_task("sst2", style="instruction", template="Text: {sentence}\nMood:", label_words="bad,good")
    assert (task.template, task.label_words) == ("Text: {sentence}\nMood:", ("bad", "good"))
    with pytest.raises(ValueError, match="style must be"):
        get_task("sst2", style="chat")


def test_real_rows_in_the_instruction_style():
    if not (SUPERGLUE / "CB" / "val.jsonl").is_file() or not (GLUE / "SST-2" / "dev.tsv").is_file():
        pytest.skip(f"real benchmark files not found in {DATA_DIR}")
    sst2 = get_task("sst2", style="instruction").load("validation", data_dir=str(GLUE))[0]
    assert sst2.input_text == "Review: it 's a charming and often affecting journey . \nSentiment:"
    assert sst2.target_text == "positive"
    cb = get_task("cb", style="instruction").load("validation", data_dir=str(SUPERGLUE))[0]
    assert cb.input_text.endswith("True, False or Neither?\nAnswer:") and cb.target_text in ("yes", "no", "maybe")


CHAT = "{% for m in messages %}<s>[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"


def test_chat_template_wraps_the_input_and_drops_a_doubled_bos():
    tok = tiny_tokenizer(bos=True)
    tok.chat_template = CHAT
    [wrapped] = apply_chat_template([Example("great fun", "positive", 1)], tok)
    assert wrapped.input_text == "[user] great fun\n[assistant]"  # the tokenizer adds <s> itself
    ids = encode_pairs([wrapped.input_text], [wrapped.target_text], tok, "decoder-only", 64, separator="")[0].input_ids
    assert ids.tolist().count(1) == 1
    plain = tiny_tokenizer()
    with pytest.raises(ValueError, match="no chat template"):
        apply_chat_template([Example("x", "y", 0)], plain)


def test_preview_defaults_to_the_backbones_style_and_counts_tokens(capsys, monkeypatch):
    if not (GLUE / "SST-2" / "dev.tsv").is_file():
        pytest.skip(f"real benchmark files not found in {DATA_DIR}")
    assert main(["preview", "sst2", "--data-dir", str(GLUE), "--n", "1"]) == 0  # the default model is decoder-only
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["Review: it 's a charming and often affecting journey . ", "Sentiment: → positive", "872 examples"]

    import softprompt.backbones as backbones

    monkeypatch.setattr(backbones, "load_backbone", lambda spec=None: (None, tiny_tokenizer()))
    assert main(["preview", "sst2", "--data-dir", str(GLUE), "--n", "1", "--tokens", "--max-length", "8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("Sentiment: → positive    [") and "input +" in out[1]
    assert out[-2].endswith("rows exceed --max-length 8 (their input is cut)") and out[-1] == "872 examples"


def test_train_cli_template_escapes_and_records_the_resolved_recipe(tmp_path):
    import json

    from conftest import tiny_llama
    from helpers import write_sst2

    tiny_llama().save_pretrained(tmp_path / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(tmp_path / "tiny")
    out = tmp_path / "run"
    argv = ["train", "--model", str(tmp_path / "tiny"), "--task", "sst2", "--data-dir", str(write_sst2(tmp_path / "data")),
            "--method", "prompt", "--length", "2", "--max-steps", "1", "--batch-size", "4", "--no-zero-shot",
            "--template", "sentence : {sentence}\\nfilm", "--label-words", "bad,good", "--output-dir", str(out)]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["template"] == "sentence : {sentence}\nfilm" and config["label_words"] == "bad,good"
    # unset settings resolved for the decoder-only backbone, as the run used them (its tokenizer
    # has no chat template: a base model, the base style; sst2's is the instruction style's)
    assert (config["style"], config["objective"], config["lr"], config["warmup_steps"]) == ("base", "class", 0.03, 10)
    assert (config["init"], config["init_text"]) == ("text", "Answer with bad or good.")
