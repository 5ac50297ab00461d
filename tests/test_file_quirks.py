"""Files as they come (tasks/local.py): a byte-order mark, CRLF line ends, quoted CSV fields,
TSV as GLUE writes it, gzip, JSON arrays. Each quirk applied to a real benchmark file (skipped
when ../shared/data is absent) gives exactly the examples of the file as distributed, row for
row; small written fixtures cover the rest. Bad rows give one line naming file:line:field and
are never dropped or relabelled."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest

from conftest import DATA_DIR
from softprompt.tasks import Example, get_task, resolve_task
from softprompt.tasks.local import read_file

SST2_DEV = DATA_DIR / "glue" / "SST-2" / "dev.tsv"
CB_VAL = DATA_DIR / "superglue" / "CB" / "val.jsonl"
needs_real = pytest.mark.skipif(not (SST2_DEV.is_file() and CB_VAL.is_file()),
                                reason=f"real benchmark files not found in {DATA_DIR} (set SOFTPROMPT_TEST_DATA)")


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


QUIRKS = {
    "bom": lambda b: b"\xef\xbb\xbf" + b,
    "crlf": lambda b: b.replace(b"\n", b"\r\n"),
    "bom+crlf": lambda b: b"\xef\xbb\xbf" + b.replace(b"\n", b"\r\n"),
    "gzip": lambda b: gzip.compress(b, mtime=0),
    "bom+crlf+gzip": lambda b: gzip.compress(b"\xef\xbb\xbf" + b.replace(b"\n", b"\r\n"), mtime=0),
}


# ----------------------------------------------------------------------------- real files
@needs_real
@pytest.mark.parametrize("quirk", sorted(QUIRKS))
def test_real_sst2_dev_with_each_quirk_gives_the_same_872_examples(quirk, tmp_path):
    task = get_task("sst2")
    expected = task.load("validation", data_dir=DATA_DIR)
    assert len(expected) == 872 and expected[0].input_text == "sentence: it 's a charming and often affecting journey . "
    name = "dev.tsv.gz" if "gzip" in quirk else "dev.tsv"
    path = _write(tmp_path / name, QUIRKS[quirk](SST2_DEV.read_bytes()))
    assert resolve_task("sst2", validation_file=str(path)).load("validation") == expected


@needs_real
@pytest.mark.parametrize("quirk", sorted(QUIRKS))
def test_real_cb_val_with_each_quirk_gives_the_same_56_examples(quirk, tmp_path):
    expected = get_task("cb").load("validation", data_dir=DATA_DIR)
    assert len(expected) == 56
    name = "val.jsonl.gz" if "gzip" in quirk else "val.jsonl"
    path = _write(tmp_path / name, QUIRKS[quirk](CB_VAL.read_bytes()))
    assert resolve_task("cb", validation_file=str(path)).load("validation") == expected


@needs_real
def test_real_sst2_as_quoted_csv_and_as_json_array(tmp_path):
    # SST-2 sentences hold commas: written by csv.writer they are quoted, and read back equal
    rows = [row for _, row in read_file(SST2_DEV)]
    assert len(rows) == 872 and sum("," in r["sentence"] for r in rows) == 481
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # as Excel and pandas write it
    writer.writerow(["sentence", "label"])
    writer.writerows([r["sentence"], r["label"]] for r in rows)
    as_csv = _write(tmp_path / "dev.csv", buffer.getvalue())
    as_json = _write(tmp_path / "dev.json", json.dumps(rows, indent=2))
    expected = get_task("sst2").load("validation", data_dir=DATA_DIR)
    for path in (as_csv, as_json):
        assert resolve_task("sst2", validation_file=str(path)).load("validation") == expected
    # a user's task over the same file: labels inferred ("0" < "1"), words given
    mine = resolve_task(None, validation_file=str(as_csv), template="{sentence}", label_words="bad,good")
    assert [e.label for e in mine.load("validation")] == [e.label for e in expected]


# ----------------------------------------------------------------------------- written fixtures
def test_quoted_csv_fields_with_commas_quotes_and_line_breaks(tmp_path):
    path = _write(tmp_path / "train.csv", 'text,label\r\n"Good, not great",pos\r\n"He said ""wow""\r\nthen left",neg\r\nplain,pos\r\n')
    task = resolve_task(None, train_file=str(path), template="{text}", label_words="neg=bad,pos=good")
    assert task.load("train") == [Example("Good, not great", "good", 1, ("bad", "good")),
                                  Example('He said "wow"\r\nthen left', "bad", 0, ("bad", "good")),
                                  Example("plain", "good", 1, ("bad", "good"))]
    # each row is named by the line it starts on
    assert [where.rsplit(":", 1)[1] for where, _ in read_file(path)] == ["2", "3", "5"]


def test_tsv_as_glue_writes_it_quotes_are_ordinary_characters(tmp_path):
    # GLUE's TSVs are unquoted: a stray quote must not swallow the following rows
    path = _write(tmp_path / "dev.tsv", 'sentence\tlabel\n"a quote opens\t1\nand never closes\t0\n" lone\t1\n')
    examples = resolve_task("sst2", validation_file=str(path)).load("validation")
    assert [(e.input_text, e.label) for e in examples] == [
        ('sentence: "a quote opens', 1), ("sentence: and never closes", 0), ('sentence: " lone', 1)]


def test_gzip_of_every_type(tmp_path):
    rows = [{"text": "a, b", "label": "x"}, {"text": "c", "label": "y"}]
    texts = {"csv": 'text,label\n"a, b",x\nc,y\n', "tsv": "text\tlabel\na, b\tx\nc\ty\n",
             "jsonl": "".join(json.dumps(r) + "\n" for r in rows), "json": json.dumps(rows)}
    for ext, text in texts.items():
        path = _write(tmp_path / f"train.{ext}.gz", gzip.compress(text.encode(), mtime=0))
        assert [row for _, row in read_file(path)] == rows, ext
    # a folder of train.*.gz / dev.*.gz files is found by split name
    _write(tmp_path / "folder/dev.tsv.gz", gzip.compress(texts["tsv"].encode()))
    _write(tmp_path / "folder/train.csv.gz", gzip.compress(texts["csv"].encode()))
    from softprompt.tasks import custom_task

    task = custom_task(tmp_path / "folder", "{text}", label_field="label")
    assert [e.target_text for e in task.load("validation")] == ["x", "y"]


@pytest.mark.parametrize("name, text, error", [
    # malformed lines
    ("t.tsv", "text\tlabel\nok\tx\nbroken line\n", "t.tsv:3: expected 2 fields (text, label), found 1"),
    ("t.csv", 'text,label\nok,x\n"never closed,x\nok,y\n', "t.csv:3: malformed CSV (unexpected end of data)"),
    ("t.csv", 'text,label\nok,x\n"closed"early,x\n', "t.csv:3: malformed CSV (',' expected after '\"')"),
    ("t.csv", "text,label\nok,x\na,b,c\n", "t.csv:3: expected 2 fields (text, label), found 3"),
    ("t.jsonl", '{"text": "ok", "label": "x"}\n{"text": "no', "t.jsonl:2: malformed JSON (Unterminated string starting at column 10)"),
    ("t.json", '[{"text": "ok", "label": "x"},\n 3]', "t.json:2: expected a JSON object, got int"),
    ("t.json", '[{"text": "ok", "label": "x"},\n {"text": ]', "t.json:2: malformed JSON (Expecting value"),
    ("t.csv", "text,\nok,x\n", "t.csv:1: header column 2 has no name"),
    ("t.tsv", "text\tlabel\ttext\nok\tx\tagain\n", "t.tsv:1: field 'text': named twice in the header"),
    # a missing field
    ("t.csv", "text,label\nok,x\nempty,\n", "t.csv:3: missing field 'label'"),
    ("t.jsonl", '{"text": "ok", "label": "x"}\n{"text": "no label"}\n', "t.jsonl:2: missing field 'label'"),
    ("t.csv", "words,label\nok,x\n", "t.csv:2: template field 'text' not in the row (fields: words, label)"),
    # an unknown label value (the task's values are x and y)
    ("t.csv", "text,label\nok,x\nodd,z\n", "t.csv:3: field 'label': unknown label 'z' (expected one of 'x', 'y')"),
    ("t.jsonl", '{"text": "ok", "label": ["x"]}\n', "t.jsonl:1: field 'label': unknown label ['x']"),
    # an empty split
    ("t.csv", "text,label\n", "t.csv: the train split is empty (no rows)"),
    ("t.jsonl", "\n\n", "t.jsonl: the train split is empty (no rows)"),
])
def test_bad_rows_are_one_line_naming_file_line_field(tmp_path, name, text, error):
    path = _write(tmp_path / name, text)
    task = resolve_task(None, train_file=str(path), template="{text}", label_words="x=no,y=yes")
    with pytest.raises(ValueError) as err:
        task.load("train")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{tmp_path}/{error}"), message


def test_no_row_is_dropped_or_relabelled(tmp_path):
    # blank lines are the only thing skipped; a label written as 1, "1" or "1 " is not the same
    path = _write(tmp_path / "t.jsonl", '{"t": "a", "y": 1}\n\n{"t": "b", "y": "1"}\n{"t": "c", "y": 0}\n')
    task = resolve_task(None, train_file=str(path), template="{t}", label_field="y", label_words="0=no,1=yes")
    assert [(e.input_text, e.label) for e in task.load("train")] == [("a", 1), ("b", 1), ("c", 0)]
    _write(tmp_path / "t.jsonl", '{"t": "a", "y": 1}\n{"t": "b", "y": "1 "}\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2: field 'y': unknown label '1 '"):
        task.load("train")
    _write(tmp_path / "t.jsonl", '{"t": "a", "y": 1}\n{"t": "b", "y": 1.0}\n')
    with pytest.raises(ValueError, match=r"t.jsonl:2: field 'y': unknown label 1.0"):
        task.load("train")
