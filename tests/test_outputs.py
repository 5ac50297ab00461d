"""Every option that writes a file goes through one guard (cli/outputs.py): an existing file only
with --overwrite, never the command's own input, never a run's or prompt folder's files, and
nothing written when it refuses."""

from __future__ import annotations

import pytest

import softprompt
from softprompt.cli import main
from softprompt.cli.outputs import output_file
from conftest import tiny_llama


@pytest.fixture
def prompt_dir(tmp_path):
    run = tmp_path / "run"
    softprompt.attach(tiny_llama(), "prompt", length=3).save(run / "prompt")
    (run / "config.json").write_text('{"method": "prompt"}')
    (run / "log.jsonl").write_text("")
    return run / "prompt"


def _refused(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err
    return err


def test_predict_never_writes_over_its_input(tmp_path, prompt_dir, capsys):
    rows = tmp_path / "v.jsonl"
    rows.write_text('{"text": "great fun"}\n')
    for extra in ([], ["--overwrite"]):
        _refused(capsys, ["predict", str(prompt_dir), "--input", str(rows), "--template", "{text}", "--output", str(rows), *extra],
                 "--output", "is this command's input")
        assert rows.read_text() == '{"text": "great fun"}\n'


def test_predict_refuses_an_existing_output_without_overwrite(tmp_path, prompt_dir, capsys):
    rows, out = tmp_path / "v.jsonl", tmp_path / "preds.jsonl"
    rows.write_text('{"text": "great fun"}\n')
    out.write_text("mine\n")
    _refused(capsys, ["predict", str(prompt_dir), "--input", str(rows), "--template", "{text}", "--output", str(out)],
             f"--output {out} exists; pass --overwrite")
    assert out.read_text() == "mine\n"


@pytest.mark.parametrize("name", ["config.json", "log.jsonl", "metrics.json"])
def test_a_run_s_files_are_never_an_output(tmp_path, prompt_dir, name, capsys):
    target = prompt_dir.parent / name
    before = target.read_bytes() if target.exists() else None
    rows = tmp_path / "v.jsonl"
    rows.write_text('{"text": "great fun"}\n')
    _refused(capsys, ["predict", str(prompt_dir), "--input", str(rows), "--template", "{text}", "--output", str(target), "--overwrite"],
             "is a file of the softprompt run folder")
    assert (target.read_bytes() if target.exists() else None) == before


def test_inspect_plot_guarded(tmp_path, prompt_dir, capsys):
    plot = tmp_path / "figure1.png"
    plot.write_bytes(b"user's figure")
    _refused(capsys, ["inspect", str(prompt_dir), "--plot", str(plot)], "--plot", "exists; pass --overwrite")
    assert plot.read_bytes() == b"user's figure"
    _refused(capsys, ["inspect", str(prompt_dir), "--plot", str(prompt_dir / "prompt_config.json"), "--overwrite"],
             "is this command's input")
    assert main(["inspect", str(prompt_dir), "--plot", str(plot), "--overwrite"]) == 0
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_the_guard_itself(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        output_file(tmp_path / "d", "--output", overwrite=True)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ValueError, match="symlink loop|exists"):
        output_file(loop, "--output", overwrite=False)
    assert output_file(tmp_path / "new.json", "--output") == tmp_path / "new.json"
    (tmp_path / "new.json").write_text("{}")
    assert output_file(tmp_path / "new.json", "--output", overwrite=True) == tmp_path / "new.json"
