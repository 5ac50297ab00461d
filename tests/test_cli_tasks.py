"""`softprompt tasks` and `softprompt preview`."""

from pathlib import Path

import pytest

from softprompt.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


def test_tasks_lists_every_task_with_metrics(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert len(lines) == 25
    assert "accuracy,macro_f1" in lines["cb"] and "f1a,em" in lines["multirc"]
    assert "pearson,spearman" in lines["stsb"] and "generation" in lines["record"]


def test_preview_prints_examples_then_count(capsys):
    # the papers' text-to-text style (the default on encoder-decoder models)
    assert main(["preview", "wsc", "--data-dir", str(FIXTURES), "--split", "train", "--n", "1", "--style", "text-to-text"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["wsc: Mark told Pete many lies about himself, which Pete included in his book. "
                     "*He* should have been more truthful. → Mark", "2 examples"]


def test_preview_protocol_and_label_words(capsys):
    args = ["preview", "MNLI", "--data-dir", str(FIXTURES / "glue"), "--protocol", "attempt",
            "--label-words", "names", "--n", "5", "--style", "text-to-text"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["premise: Mismatched premise. hypothesis: Mismatched hypothesis. → contradiction",
                     "1 examples"]


def test_preview_user_errors_exit_2(capsys):
    assert main(["preview", "nope", "--data-dir", str(FIXTURES)]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert main(["preview", "cb", "--data-dir", str(FIXTURES)]) == 2
    err = capsys.readouterr().err
    assert "no validation file for task cb" in err and len(err.strip().splitlines()) == 1


def test_preview_real_data_last_line(capsys):
    data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (data / "glue" / "SST-2" / "dev.tsv").is_file():
        pytest.skip(f"real benchmark files not found in {data}")
    assert main(["preview", "SST-2", "--data-dir", str(data), "--n", "2", "--style", "text-to-text"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "sentence: it 's a charming and often affecting journey .  → 1"
    assert lines[-1] == "872 examples" and len(lines) == 3
