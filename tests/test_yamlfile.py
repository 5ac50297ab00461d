"""YAML as softprompt reads it: YAML 1.2's scalars, and the documents it refuses with one line
naming the file and line (duplicate keys, alias bombs, self-reference, deep nesting)."""

from __future__ import annotations

import time

import pytest
import yaml

from softprompt.config import read_config_file
from softprompt.yamlfile import MAX_NODES, YAMLInputError, dump_yaml, load_yaml


def test_yaml_1_2_scalars():
    data = load_yaml("w: [yes, no, on, off, y, n, true, False, TRUE]\nlr: 1e-3\noct: 010\nsex: 1:30\n"
                     "hex: 0x1F\no: 0o17\nneg: -5\nu: 30_000\nf: 1.5\nnothing: ~\n")
    assert data == {"w": ["yes", "no", "on", "off", "y", "n", True, False, True], "lr": 0.001, "oct": 10,
                    "sex": "1:30", "hex": 31, "o": 15, "neg": -5, "u": 30000, "f": 1.5, "nothing": None}
    assert type(data["oct"]) is int and type(data["w"][6]) is bool


def test_what_dump_writes_reads_back_equal():
    data = {"a": ["yes", "no", "on", "1e-3", "010", "1:30", "true", "0x1F"], "b": 3, "c": 0.5, "d": True, "e": None}
    assert load_yaml(dump_yaml(data)) == data


def test_merge_keys_still_work_and_are_no_duplicates():
    assert load_yaml("base: &b {lr: 0.1, seed: 1}\nrun:\n  <<: *b\n  seed: 2\n")["run"] == {"lr": 0.1, "seed": 2}


def _bomb(levels: int = 9, fan: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, problem, line", [
    ("lr: 0.1\nseed: 1\nlr: 100\n", "duplicate key 'lr' (first on line 1)", 3),
    (_bomb(), f"aliases expand to more than {MAX_NODES:,} values", None),
    ("a: &a\n  b: *a\n", "an alias refers to the value that contains it", 1),
    ("[" * 50_000 + "]" * 50_000, "nested too deeply", None),
])
def test_refused_documents(text, problem, line):
    start = time.monotonic()
    with pytest.raises(YAMLInputError) as err:
        load_yaml(text)
    assert time.monotonic() - start < 10
    assert problem in err.value.problem
    if line is not None:
        assert err.value.problem_mark.line + 1 == line
    assert isinstance(err.value, yaml.YAMLError)  # every reader's "invalid YAML" handler catches it


def test_a_small_alias_graph_is_fine():
    data = load_yaml(_bomb(levels=3, fan=3))  # 1 + 3 * (1 + 3 * 10) values in a2
    assert data["a1"] == [["lol"] * 9] * 3 and data["a2"] == [data["a1"]] * 3


def test_config_and_task_files_name_file_and_line(tmp_path):
    from softprompt.tasks.taskfile import read_task_file

    config = tmp_path / "run.yaml"
    config.write_text("method: ulpt\nlr: 0.1\nlr: 100\n")
    with pytest.raises(ValueError, match=r"run\.yaml:3: invalid YAML \(duplicate key 'lr'"):
        read_config_file(config)
    task = tmp_path / "t.yaml"
    task.write_text("template: '{text}'\n" + _bomb().replace("a8:", "labels:"))
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"t\.yaml:\d+: invalid YAML \(aliases expand"):
        read_task_file(task)
    assert time.monotonic() - start < 10


def test_yes_no_label_words_are_words(tmp_path):
    from softprompt.tasks.taskfile import read_task_file

    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "yes"}\n')
    task = tmp_path / "t.yaml"
    task.write_text("data: {train: train.jsonl}\ntemplate: '{text}'\nlabels: [yes, no, maybe]\nlabel_words: [yes, no, maybe]\n")
    assert read_task_file(task).label_words == ("yes", "no", "maybe")
