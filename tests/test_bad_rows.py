"""Rows and templates that used to blow up or go silently wrong: each is one line naming the
file, row or template, within a bounded time."""

from __future__ import annotations

import gzip
import time

import pytest

from softprompt.tasks import resolve_task
from softprompt.tasks.local import read_file


def _task(tmp_path, template="Review: {text}\nSentiment:", **files):
    for name, text in files.items():
        (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return resolve_task(None, train_file=str(tmp_path / next(iter(files))), template=template, label_words="negative,positive")


@pytest.mark.parametrize("template", ["{text:>99999999999}", "{text[999]}", "{text!r}", "{text.upper}"])
def test_templates_take_plain_fields_only(template, tmp_path):
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"write plain fields like \{text\}"):
        _task(tmp_path, template, **{"train.jsonl": '{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n'}).load("train")
    assert time.monotonic() - start < 5


def test_a_null_field_is_an_error_naming_the_row(tmp_path):
    task = _task(tmp_path, **{"train.jsonl": '{"text": "fine", "label": 0}\n{"text": null, "label": 1}\n'})
    with pytest.raises(ValueError, match=r"train\.jsonl:2: field 'text' is null"):
        task.load("train")


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_gzip_is_one_line(damage, tmp_path):
    data = gzip.compress(b"".join(b'{"text": "row %d", "label": %d}\n' % (i, i % 2) for i in range(2000)))
    data = data[: len(data) // 2] if damage == "truncated" else data[:20] + bytes(200) + data[220:]
    with pytest.raises(ValueError, match=r"train\.jsonl\.gz: a damaged gzip file"):
        _task(tmp_path, **{"train.jsonl.gz": data}).load("train")
    with pytest.raises(ValueError, match=r"train\.jsonl\.gz: a damaged gzip file"):
        read_file(tmp_path / "train.jsonl.gz")


def test_json_nested_deeply_is_one_line(tmp_path):
    deep = '{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": 0}\n'
    (tmp_path / "rows.jsonl").write_text(deep)
    with pytest.raises(ValueError, match=r"rows\.jsonl:1: JSON nested too deeply"):
        read_file(tmp_path / "rows.jsonl")
    (tmp_path / "rows.json").write_text("[" + deep + "]")
    with pytest.raises(ValueError, match=r"rows\.json(:1)?: JSON nested too deeply"):
        read_file(tmp_path / "rows.json")


def test_duplicate_json_keys_are_errors(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 0, "label": 1}\n')
    with pytest.raises(ValueError, match=r"rows\.jsonl:2: field 'label' appears twice in one object"):
        read_file(tmp_path / "rows.jsonl")
    (tmp_path / "rows.json").write_text('[\n{"text": "a"},\n{"text": "b",\n "text": "c"}\n]\n')
    with pytest.raises(ValueError, match=r"rows\.json:3: field 'text' appears twice"):
        read_file(tmp_path / "rows.json")


def test_json_lines_still_refuse_trailing_data(tmp_path):
    (tmp_path / "rows.jsonl").write_text('  {"text": "a"} x\n')
    with pytest.raises(ValueError, match=r"rows\.jsonl:1: malformed JSON \(Extra data"):
        read_file(tmp_path / "rows.jsonl")


def test_a_5_mb_csv_field_is_legitimate(tmp_path):
    passage = "word " * 1_000_000
    (tmp_path / "rows.csv").write_text(f'text,label\n"{passage}",0\n')
    assert read_file(tmp_path / "rows.csv")[0][1]["text"] == passage


@pytest.mark.parametrize("command", ["train", "preview"])
def test_a_symlink_loop_as_a_data_file_is_one_line(command, tmp_path, capsys):
    from softprompt.cli import main

    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    argv = [command, "--train-file", str(loop), "--template", "{text}", "--label-words", "a,b"]
    if command == "train":
        argv += ["--output-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"--train-file {loop}: symlink loop"), err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
