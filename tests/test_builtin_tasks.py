"""The built-in tasks are task files (src/softprompt/tasks/builtin/NAME.yaml): each loads through
the user's task-file loader in every style and protocol, reads back equal when written out,
is what `softprompt tasks --show NAME` prints, and works as a user's --task FILE; the files'
styles: and protocols: variants are checked like any field, with one-line errors naming
file:section.name.field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from softprompt.cli import main
from softprompt.tasks import get_task, list_tasks, read_task_file, resolve_task, task_from_dict, task_to_dict
from softprompt.tasks.registry import FOLDER, task_file
from softprompt.tasks.splits import PROTOCOLS
from softprompt.tasks.taskfile import STYLES
from softprompt.yamlfile import dump_yaml, load_yaml

VARIANTS = [(style, protocol) for style in (None, *STYLES) for protocol in (None, *PROTOCOLS)]


def test_the_folder_is_the_list_of_built_in_tasks():
    files = sorted(path.stem for path in FOLDER.iterdir())
    assert files == list_tasks() and len(files) == 25
    assert all(path.suffix == ".yaml" for path in FOLDER.iterdir())
    # the package ships them (a non-editable install reads them from the wheel)
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert 'softprompt = ["tasks/builtin/*.yaml"]' in pyproject


@pytest.mark.parametrize("name", list_tasks())
def test_every_built_in_file_loads_and_round_trips_in_every_style_and_protocol(name):
    for style, protocol in VARIANTS:
        task = read_task_file(FOLDER / f"{name}.yaml", style=style, protocol=protocol)
        assert task == get_task(name, style=style, protocol=protocol), (style, protocol)
        assert task.name == name
        assert task_from_dict(load_yaml(dump_yaml(task_to_dict(task)))) == task, (style, protocol)
    # text-to-text is the file's top level: no style and the named one are the same task
    assert get_task(name, style="text-to-text") == get_task(name)


@pytest.mark.parametrize("name", list_tasks())
def test_show_prints_the_built_in_file_as_it_is(name, capsys):
    assert main(["tasks", "--show", name]) == 0
    assert capsys.readouterr().out == (FOLDER / f"{name}.yaml").read_text(encoding="utf-8")


def test_show_finds_the_file_by_alias(capsys):
    assert task_file("SST-2") == task_file("sst") == FOLDER / "sst2.yaml"
    assert main(["tasks", "--show", "superglue-rte", "--style", "text-to-text"]) == 0
    assert capsys.readouterr().out == (FOLDER / "rte.yaml").read_text(encoding="utf-8")


def test_a_copied_built_in_file_keeps_its_styles_and_protocols(tmp_path):
    for name in ("copa", "wsc", "stsb", "yelp2"):
        copy = Path(shutil.copy(FOLDER / f"{name}.yaml", tmp_path / f"my_{name}.yaml"))
        for style, protocol in (("instruction", None), (None, "dpt"), ("instruction", "dpt"), (None, "ulpt")):
            assert resolve_task(str(copy), style=style, protocol=protocol) == get_task(name, style=style, protocol=protocol)


def test_a_variant_changes_only_the_fields_it_names():
    copa, dpt = get_task("copa"), get_task("copa", protocol="dpt")
    assert dpt.template == "premise: {premise} choice1: {choice1} choice2: {choice2}"
    assert task_to_dict(dpt) == {**task_to_dict(copa), "template": dpt.template}
    # the style's changes come after the protocol's: the instruction template wins
    both = get_task("copa", style="instruction", protocol="dpt")
    assert both == get_task("copa", style="instruction") and both.choice_fields == ("choice1", "choice2")
    # explicit words replace the style's words and its per-row choices
    assert get_task("copa", style="instruction", label_words="names").choice_fields == ()


BASE = "hub: {path: x}\ntemplate: '{a}'\nlabel_words: [bad, good]\n"


@pytest.mark.parametrize("text, error", [
    (BASE + "styles: {instruction: {template: '{a'}}\n", r"t\.yaml:styles\.instruction\.template: malformed template"),
    (BASE + "styles: {chat: {template: '{a}'}}\n", r"t\.yaml:styles\.chat: unknown name \(known: instruction, base\)$"),
    (BASE + "styles: {text-to-text: {template: '{a}'}}\n", r"t\.yaml:styles\.text-to-text: unknown name"),
    (BASE + "protocols: {dpt: {hub: y}}\n", r"t\.yaml:protocols\.dpt\.hub: not a field a variant changes"),
    (BASE + "protocols: {t5: {metrics: [f1]}}\n", r"t\.yaml:protocols\.t5: unknown name \(known: paper, attempt, dpt, dept, ulpt, lester\)$"),
    (BASE + "protocols: {dpt: {metrics: [bleu]}}\n", r"t\.yaml:protocols\.dpt\.metrics: unknown metric 'bleu'"),
    (BASE + "protocols: {dpt: []}\n", r"t\.yaml:protocols\.dpt: expected a mapping of the fields it changes"),
    (BASE + "protocols: [dpt]\n", r"t\.yaml:protocols: expected a mapping of name: changed fields"),
])
def test_variant_errors_name_the_file_and_the_field(text, error, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=error):
        read_task_file(path, style="instruction", protocol="dpt")


def test_style_and_protocol_names_are_checked_for_files_too(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(BASE, encoding="utf-8")
    with pytest.raises(ValueError, match="style must be text-to-text, instruction or base, got 'chat'"):
        read_task_file(path, style="chat")
    with pytest.raises(ValueError, match="unknown protocol 't5'"):
        read_task_file(path, protocol="t5")
    # a file without variants is its own task in every style and protocol
    assert read_task_file(path, style="instruction", protocol="dpt") == read_task_file(path)
