"""Task files (tasks/taskfile.py) and ``--task`` resolution (tasks/resolve.py): every built-in
task printed by `softprompt tasks --show` reads back equal; a user's task file and the quick
options give the exact examples; bad files are one line naming file:field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from softprompt.cli import main
from softprompt.tasks import (Example, get_task, list_tasks, read_task_file, resolve_task,
                              task_from_dict, task_to_dict)
from softprompt.yamlfile import dump_yaml, load_yaml

FIXTURES = Path(__file__).parent / "fixtures"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("style, protocol", [(None, None), ("instruction", None), (None, "dpt"), (None, "dept"),
                                             (None, "ulpt"), ("instruction", "ulpt")])
@pytest.mark.parametrize("name", list_tasks())
def test_show_prints_a_file_that_reads_back_equal(name, style, protocol, tmp_path, capsys):
    argv = ["tasks", "--show", name] + (["--style", style] if style else []) + (["--protocol", protocol] if protocol else [])
    assert main(argv) == 0
    printed = capsys.readouterr().out
    details = f", {protocol} protocol's details" if protocol else ""
    assert printed.startswith(f"# softprompt task file ({name}, {style or 'text-to-text'} style{details})")
    expected = get_task(name, style=style, protocol=protocol)
    path = _write(tmp_path / f"{name}.yaml", printed)
    assert read_task_file(path) == expected
    # and as JSON, through the same reader
    as_json = _write(tmp_path / f"{name}.json", json.dumps(task_to_dict(expected)))
    assert read_task_file(as_json) == expected


def test_show_writes_a_papers_details():
    # DPT's WSC: validated on its label-1 rows; Yelp: 100k training rows (protocols.dpt in the task files)
    assert task_to_dict(get_task("wsc", protocol="dpt"))["eval_filter"] == "label_true"
    assert task_to_dict(get_task("yelp2", protocol="dpt"))["max_train_rows"] == 100000
    assert "eval_filter" not in task_to_dict(get_task("wsc")) and "max_train_rows" not in task_to_dict(get_task("yelp2"))


def test_show_keeps_label_value_types(capsys):
    # BoolQ's JSON labels are booleans, COPA's integers, SST-2's TSV labels text: each reads
    # back as written, so the file maps the same rows to the same classes.
    assert task_to_dict(get_task("boolq"))["labels"] == [False, True]
    assert task_to_dict(get_task("copa"))["labels"] == [0, 1]
    assert task_to_dict(get_task("sst2"))["labels"] == ["0", "1"]
    assert load_yaml(dump_yaml({"w": ["0.0", "1e-3", "true", "yes"]})) == {"w": ["0.0", "1e-3", "true", "yes"]}
    assert main(["tasks", "--show", "stsb"]) == 0
    assert "label_words: ['0.0', '0.2', " in capsys.readouterr().out


def test_a_printed_task_file_loads_the_same_examples(tmp_path, capsys):
    assert main(["tasks", "--show", "mrpc"]) == 0
    path = _write(tmp_path / "mrpc.yaml", capsys.readouterr().out)
    examples = resolve_task(str(path)).load("validation", data_dir=FIXTURES / "glue")
    assert examples == get_task("mrpc").load("validation", data_dir=FIXTURES / "glue")
    assert len(examples) == 2 and examples[0].target_text in ("0", "1")


# ----------------------------------------------------------------------------- a user's task file
def _reviews(tmp_path: Path) -> Path:
    _write(tmp_path / "data/train.csv", 'text,stars\n"Great, really great",5\nawful,1\n"two\nlines",5\n')
    _write(tmp_path / "data/dev.jsonl", '{"text": "fine", "stars": 5}\n{"text": "meh", "stars": 1}\n')
    return tmp_path


def test_user_task_file_yaml(tmp_path):
    _reviews(tmp_path)
    path = _write(tmp_path / "reviews.yaml", (
        "name: reviews\n"
        "data: {train: data/train.csv, validation: data/dev.jsonl}\n"
        "template: \"Review: {text}\\nSentiment:\"\n"
        "label_field: stars\n"
        "labels: [1, 5]\n"
        "label_words: [negative, positive]\n"
        "metrics: [macro_f1, accuracy]\n"))
    task = read_task_file(path)
    assert (task.name, task.kind, task.metrics, task.raw_labels) == ("reviews", "classification", ("macro_f1", "accuracy"), (1, 5))
    assert task.local.files["train"] == (str((tmp_path / "data/train.csv").resolve()),)
    choices = ("negative", "positive")
    # CSV's "5" and JSON's 5 are the same label value
    assert task.load("train") == [Example("Review: Great, really great\nSentiment:", "positive", 1, choices),
                                  Example("Review: awful\nSentiment:", "negative", 0, choices),
                                  Example("Review: two\nlines\nSentiment:", "positive", 1, choices)]
    assert [e.label for e in task.load("validation")] == [1, 0]
    # printed again, the file reads back equal
    assert task_from_dict(load_yaml(dump_yaml(task_to_dict(task)))) == task


def test_a_split_may_be_a_folder_of_shards_read_in_name_order(tmp_path):
    _write(tmp_path / "train/part-01.csv", "text,label\nb,x\n")
    _write(tmp_path / "train/part-00.jsonl.gz", "")
    (tmp_path / "train/part-00.jsonl.gz").write_bytes(__import__("gzip").compress(b'{"text": "a", "label": "y"}\n'))
    _write(tmp_path / "train/.DS_Store", "ignored")
    task = read_task_file(_write(tmp_path / "t.yaml", "data: {train: train}\ntemplate: '{text}'\nlabels: [x, y]\n"))
    assert [(e.input_text, e.label) for e in task.load("train")] == [("a", 1), ("b", 0)]
    assert resolve_task(None, train_file=str(tmp_path / "train"), template="{text}").load("train") == task.load("train")
    _write(tmp_path / "train/notes.md", "not rows")
    with pytest.raises(ValueError, match=r"train/notes.md: unknown file type '.md' \(expected .jsonl, .csv or .tsv\)$"):
        task.load("train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: the folder is empty$"):
        resolve_task(None, train_file=str(tmp_path / "empty"), template="{text}")


def test_user_task_file_generation_regression_folder_and_hub_forms(tmp_path):
    _write(tmp_path / "qa/train.jsonl", '{"q": "2+2?", "a": "4"}\n')
    _write(tmp_path / "qa/val.jsonl", '{"q": "3+3?", "a": "6"}\n')
    gen = read_task_file(_write(tmp_path / "qa.json", json.dumps({"data": "qa", "template": "Q: {q} A:", "target_field": "a"})))
    assert (gen.name, gen.kind, gen.metrics, gen.label_field) == ("qa", "generation", ("em", "f1"), None)
    assert gen.load("validation") == [Example("Q: 3+3? A:", "6", "6", None, ("6",))]

    _write(tmp_path / "sim.tsv", "a\tb\tscore\nx\ty\t3.7\n")
    reg = read_task_file(_write(tmp_path / "sim.yaml", "kind: regression\ndata: {train: sim.tsv}\n"
                                                          "template: '{a} / {b}'\nlabel_field: score\nround_step: 0.2\n"))
    assert reg.metrics == ("pearson", "spearman")
    assert reg.load("train") == [Example("x / y", "3.6", 3.6, None)]

    hub = read_task_file(_write(tmp_path / "h.yaml", "hub: {path: nyu-mll/glue, config: sst2, splits: {test: validation}}\n"
                                                        "template: '{sentence}'\nlabel_words: [bad, good]\n"))
    assert (hub.hub.path, hub.hub.config, dict(hub.hub.splits), hub.local) == ("nyu-mll/glue", "sst2", {"test": "validation"}, None)
    assert hub.label_words == ("bad", "good") and hub.label_names is None


@pytest.mark.parametrize("text, error", [
    ("data: {train: t.csv}\n", "bad.yaml:template: missing"),
    ("data: {train: t.csv}\ntemplate: '{x}'\nlabels: [a, b]\nlabel_words: [one]\n", "bad.yaml:label_words: 1 words for 2 classes ['a', 'b']"),
    ("data: {train: t.csv}\ntemplate: '{x}'\nlabel_words: [a]\nmetrics: [bleu]\n", "bad.yaml:metrics: unknown metric 'bleu'"),
    ("data: {train: t.csv}\ntemplate: '{x}'\nlabel_words: [a]\nlabel_wrods: [b]\n", "bad.yaml:label_wrods: unknown field"),
    ("data: {train: missing.csv}\ntemplate: '{x}'\nlabel_words: [a]\n", "bad.yaml:data.train: "),
    ("template: '{x}'\nlabel_words: [a]\n", "bad.yaml:data: missing; give data"),
    ("data: {train: t.csv}\ntemplate: '{x}'\nkind: ranking\n", "bad.yaml:kind: must be one of"),
    ("data: {train: t.csv}\ntemplate: '{x}'\ntarget_field: y\nlabel_words: [a]\nkind: classification\n", "bad.yaml:target_field: only for generation"),
    ("data: {train: t.csv}\ntemplate: '{x}'\nkind: regression\nround_step: 0.3\n", "bad.yaml:round_step: expected a fraction 1/n"),
    ("data: {train: t.csv}\ntemplate: '{0}'\nlabel_words: [a]\n", "bad.yaml:template: template '{0}': fields must be named, like {premise}"),
    ("data: {train: t.csv}\ntemplate: '{x}'\nlabel_words: [a]\ntrain_filter: positives\n", "bad.yaml: task bad: train_filter must be None or 'label_true', got 'positives'"),
    ("data: {train: t.csv}\ntemplate: '{x}'\nlabel_words: [a]\npreprocess: lower\n", "bad.yaml:preprocess: unknown 'lower'"),
    ("data: {train: t.csv}\ntemplate: '{x}'\nlabel_words: [a]\nlocal: {files: {train: [t.csv]}}\n", "bad.yaml:data: give data (your files) or local"),
    ("hub: {path: ./nowhere}\ntemplate: '{x}'\nlabel_words: [a]\n", "bad.yaml:hub.path: "),
    ("data: [oops\n", "bad.yaml:2: invalid YAML"),
    ("- a\n", "bad.yaml: expected a mapping of field: value, got list"),
])
def test_bad_task_files_are_one_line_naming_file_and_field(tmp_path, text, error):
    _write(tmp_path / "t.csv", "x,label\na,a\n")
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        read_task_file(_write(tmp_path / "bad.yaml", text))
    message = str(err.value)
    assert "\n" not in message and f"{tmp_path}/{error}" in message


# ----------------------------------------------------------------------------- quick options
def test_quick_options_build_the_same_task_as_a_file(tmp_path):
    _reviews(tmp_path)
    flags = resolve_task(None, train_file=str(tmp_path / "data/train.csv"), validation_file=str(tmp_path / "data/dev.jsonl"),
                         template="Review: {text}\nSentiment:", label_field="stars", label_words="1=negative,5=positive")
    assert (flags.name, flags.raw_labels, flags.label_words) == ("custom", ("1", "5"), ("negative", "positive"))
    path = _write(tmp_path / "reviews.yaml", "data: {train: data/train.csv, validation: data/dev.jsonl}\n"
                                             "template: \"Review: {text}\\nSentiment:\"\nlabel_field: stars\n"
                                             "labels: [1, 5]\nlabel_words: [negative, positive]\n")
    for split in ("train", "validation"):
        assert flags.load(split) == read_task_file(path).load(split)
    # inferred values (sorted, numbers numerically), words in that order
    inferred = resolve_task("custom", train_file=str(tmp_path / "data/train.csv"), template="{text}",
                            label_field="stars", label_words="bad,good")
    assert inferred.raw_labels == ("1", "5") and [e.target_text for e in inferred.load("train")] == ["good", "bad", "good"]


def test_quick_options_errors(tmp_path):
    _reviews(tmp_path)
    train = str(tmp_path / "data/train.csv")
    with pytest.raises(ValueError, match=r"^give --template over the fields of your rows \(text, stars\)"):
        resolve_task(None, train_file=train)
    with pytest.raises(ValueError, match=r"^2 label words for the 3 values of 'stars' in the files: '1' \(1 rows, first .*train.csv:3\), "
                                         r"'5' \(2 rows, first .*train.csv:2\), '9' \(1 rows, first .*train.csv:6\)$"):
        _write(tmp_path / "data/train.csv", 'text,stars\n"Great, really great",5\nawful,1\n"two\nlines",5\nodd,9\n')
        resolve_task(None, train_file=train, template="{text}", label_field="stars", label_words="bad,good")
    task = resolve_task(None, train_file=train, template="{text}", label_field="stars", label_words="1=bad,5=good")
    with pytest.raises(ValueError, match=r"train.csv:6: field 'stars': unknown label '9' \(expected one of '1', '5'\)$"):
        task.load("train")
    with pytest.raises(FileNotFoundError, match=r"^task custom has no validation file \(--validation-file\)$"):
        task.load("validation")
    with pytest.raises(ValueError, match="give --task NAME or FILE, or your data with --train-file"):
        resolve_task(None)
    with pytest.raises(ValueError, match="not both"):
        resolve_task(None, train_file=train, template="{text}", label_field="stars", target_field="text")
    with pytest.raises(ValueError, match=r"--target-field: task sst2 is a classification task"):
        resolve_task("sst2", target_field="x")
    with pytest.raises(ValueError, match=r"^--task data/train.csv: a task file's name ends in .yaml, .yml or .json"):
        resolve_task("data/train.csv")


def test_a_built_in_task_on_your_files(tmp_path):
    # sst2's template, labels and words over a file of its format elsewhere; MNLI's validation
    # file is filed under the official split the protocol reads
    dev = _write(tmp_path / "mine/dev.tsv", "sentence\tlabel\ngreat fun\t1\ndull\t0\n")
    task = resolve_task("sst2", validation_file=str(dev), template="Text: {sentence}", label_words="bad,good")
    assert task.hub is None and task.load("validation") == [Example("Text: great fun", "good", 1, ("bad", "good")),
                                                            Example("Text: dull", "bad", 0, ("bad", "good"))]
    mnli = resolve_task("mnli", validation_file=str(FIXTURES / "glue/MNLI/dev_matched.tsv"))
    assert list(mnli.local.files) == ["validation_matched"]
    assert mnli.load("validation") == get_task("mnli").load("validation", data_dir=FIXTURES / "glue")
