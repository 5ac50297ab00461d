"""A user's own data from the command line: docs/your-data.md's three lines (the README's one), run as
written on a tiny saved model; task files through train, eval, predict and preview; the quick
options recorded in config.json so --resume and eval rebuild the task from any folder."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from conftest import tiny_llama
from softprompt.cli import main
from helpers import tiny_tokenizer

README = Path(__file__).resolve().parents[1] / "docs" / "your-data.md"  # the "your own data" page
POSITIVE = ["great fun", "a really good film", "very good acting", "fun and great", "good plot", "really great movie"]
NEGATIVE = ["awful plot", "a very dull film", "boring and bad", "bad acting", "not good", "dull boring movie"]


def readme_lines() -> list[str]:
    """The shell lines of the first bash block of docs/your-data.md."""
    section = README.read_text()
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    tiny_llama().save_pretrained(root)
    tiny_tokenizer(bos=True).save_pretrained(root)
    return root


def write_reviews(folder: Path, n_train: int = 12) -> None:
    """reviews/{train,dev,test}.csv with columns text,label (neg/pos), CRLF as Excel writes."""
    folder.mkdir(parents=True, exist_ok=True)

    def csv(rows):
        return "text,label\r\n" + "".join(f'"{t}",{y}\r\n' for t, y in rows)

    train = [(POSITIVE[i % 6], "pos") if i % 2 else (NEGATIVE[i % 6], "neg") for i in range(n_train)]
    (folder / "train.csv").write_text(csv(train), newline="")
    (folder / "dev.csv").write_text(csv([(POSITIVE[0], "pos"), (NEGATIVE[1], "neg"), (POSITIVE[2], "pos"), (NEGATIVE[3], "neg")]), newline="")
    (folder / "test.csv").write_text(csv([(POSITIVE[4], "pos"), (NEGATIVE[5], "neg"), (NEGATIVE[0], "neg")]), newline="")


def run(line: str, *extra: str) -> int:
    argv = shlex.split(line)
    assert argv[0] == "softprompt"
    return main(argv[1:] + list(extra))


def test_readme_your_own_data_lines_run_as_written(tiny, tmp_path, monkeypatch, capsys):
    lines = readme_lines()
    assert len(lines) == 3 and [shlex.split(l)[1] for l in lines] == ["preview", "train", "eval"]
    monkeypatch.chdir(tmp_path)
    write_reviews(tmp_path / "reviews")
    preview, train, evaluate = lines

    # the lines as written, with the tiny model instead of the embedded default (preview
    # --tokens and train load a model; eval takes the run's)
    assert run(preview, "--model", str(tiny)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["Review: great fun", "Sentiment: → positive    [5 input + 2 target tokens]"]
    assert out[-2:] == ["0 of 4 rows exceed --max-length 256 (their input is cut)", "4 examples"]

    assert run(train, "--model", str(tiny)) == 0
    capsys.readouterr()
    run_dir = tmp_path / "runs" / "reviews"
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["task"], config["label_words"], config["template"]) == ("custom", "neg=negative,pos=positive", "Review: {text}\nSentiment:")
    assert config["train_file"] == str(tmp_path / "reviews" / "train.csv") and config["test_file"] is None
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 1 and metrics["test"]["n"] == 4  # no test file: reported on validation

    assert run(evaluate) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["task"], result["split"], result["n"]) == ("custom", "test", 3)
    # eval rebuilds the run's task from config.json: the validation score is the run's
    assert main(["eval", str(run_dir / "prompt")]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["n"] == 4 and again["accuracy"] == metrics["best_validation"]["accuracy"]


def test_task_file_through_train_resume_eval_predict_preview(tiny, tmp_path, monkeypatch, capsys):
    write_reviews(tmp_path / "data")
    (tmp_path / "reviews.yaml").write_text(
        "name: reviews\ndata: {train: data/train.csv, validation: data/dev.csv, test: data/test.csv}\n"
        "template: \"Review: {text}\\nSentiment:\"\nlabels: [neg, pos]\nlabel_words: [negative, positive]\n"
        "metrics: [macro_f1, accuracy]\n")
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--task", "reviews.yaml", "--model", str(tiny), "--method", "prompt", "--length", "2",
            "--max-steps", "2", "--eval-every", "1", "--batch-size", "4", "--no-zero-shot"]
    assert main(argv) == 0
    capsys.readouterr()
    run_dir = tmp_path / "runs" / "reviews-prompt"  # named by the file's stem
    config = json.loads((run_dir / "config.json").read_text())
    assert config["task"] == str(tmp_path / "reviews.yaml")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["best_validation"]) >= {"macro_f1", "accuracy"} and metrics["test"]["n"] == 3

    # from another folder: eval and --resume find the task file and its data
    monkeypatch.chdir(tmp_path / "data")
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert "test:" in capsys.readouterr().out
    assert main(["eval", str(run_dir / "prompt"), "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["macro_f1"] == metrics["test"]["macro_f1"] and result["n"] == 3

    (tmp_path / "in.jsonl").write_text('{"id": 1, "text": "great fun"}\n{"id": 2, "text": "dull"}\n')
    assert main(["predict", str(run_dir / "prompt"), "--model", str(tiny), "--task", str(tmp_path / "reviews.yaml"),
                 "--mode", "rank", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "p.jsonl")]) == 0
    preds = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [p["input"] for p in preds] == ["Review: great fun\nSentiment:", "Review: dull\nSentiment:"]
    assert all(p["prediction"] in ("neg", "pos") for p in preds)

    capsys.readouterr()
    assert main(["preview", str(tmp_path / "reviews.yaml"), "--split", "test", "--n", "1", "--tokens",
                 "--model", str(tiny), "--max-length", "7"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Review: good plot", "Sentiment: → positive    [5 input + 2 target tokens]",
        "1 of 3 rows exceed --max-length 7 (their input is cut)", "3 examples"]


def test_quick_options_on_eval_preview_and_their_errors(tiny, tmp_path, capsys):
    write_reviews(tmp_path / "r")
    base = ["--train-file", str(tmp_path / "r/train.csv"), "--validation-file", str(tmp_path / "r/dev.csv")]
    assert main(["preview", *base, "--template", "{text} ->", "--label-words", "bad,good", "--split", "train", "--n", "2",
                 "--style", "text-to-text"]) == 0
    assert capsys.readouterr().out.splitlines() == ["awful plot -> → bad", "a really good film -> → good", "12 examples"]

    assert main(["preview", *base]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("softprompt preview: error: give --template over the fields of your rows (text, label), "
                   "e.g. --template 'Text: {text}\\nAnswer:'")
    (tmp_path / "r/dev.csv").write_text("text,label\nfine,pos\nodd,postive\n")
    assert main(["preview", *base, "--template", "{text}", "--label-words", "neg=bad,pos=good"]) == 2
    assert capsys.readouterr().err.strip() == (f"softprompt preview: error: {tmp_path}/r/dev.csv:3: field 'label': "
                                                "unknown label 'postive' (expected one of 'neg', 'pos')")
    assert main(["train", *base, "--template", "{text}", "--target-field", "text", "--label-field", "label"]) == 2
    assert "give label_field (classification, regression) or target_field (generation), not both" in capsys.readouterr().err
    assert main(["tasks", "--show", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"softprompt tasks: error: {tmp_path}/nope.yaml: no such task file"


def test_one_file_and_holdout_then_a_test_file(tmp_path):
    # a user with one training file: --holdout rows choose the checkpoint, the test file is reported
    from softprompt.config import TrainConfig
    from softprompt.train import load_data

    write_reviews(tmp_path / "r")
    options = dict(train_file=str(tmp_path / "r/train.csv"), template="{text}", label_words="neg=bad,pos=good", holdout=4)
    config = TrainConfig(test_file=str(tmp_path / "r/test.csv"), **options)
    task = config.build_task()
    train_rows, validation, test, split = load_data(config, task)
    assert (config.task, len(train_rows), len(validation), split) == ("custom", 8, 4, "test")
    assert [e.input_text for e in test] == ["good plot", "dull boring movie", "awful plot"]
    with pytest.raises(FileNotFoundError, match=r"^task custom has no test file \(--test-file\): with --holdout and no "
                                                r"validation split, give a labeled test split to report on$"):
        load_data(TrainConfig(**options), TrainConfig(**options).build_task())
    with pytest.raises(FileNotFoundError, match=r"^task custom has no validation file \(--validation-file\)$"):
        load_data(TrainConfig(**{**options, "holdout": None}), task)


def test_readme_task_file_example_reads(tmp_path):
    import gzip

    from softprompt.tasks import read_task_file

    section = README.read_text()
    text = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    (tmp_path / "reviews.yaml").write_text(text)
    (tmp_path / "train.csv").write_text("text,stars\nlovely,5\nawful,1\n")
    (tmp_path / "dev.jsonl.gz").write_bytes(gzip.compress(b'{"text": "fine", "stars": 5}\n'))
    task = read_task_file(tmp_path / "reviews.yaml")
    assert (task.name, task.metrics, task.raw_labels, task.label_words) == ("reviews", ("macro_f1", "accuracy"), (1, 5), ("negative", "positive"))
    assert [(e.input_text, e.target_text) for e in task.load("validation")] == [("Review: fine\nSentiment:", "positive")]
