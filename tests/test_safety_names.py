"""Names that become file names (softprompt.filenames): a task's, a method's or a
diagnostic's name from a user's file becomes one plain path component (``safe_filename``), and
every report and plot file is checked to lie in its folder (``inside``). The repro: a task file
with ``name: "../../../../tmp/x/pwn"`` (method rank_probe) made ``sweep report`` write outside
the sweep, creating folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from softprompt.cli import main
from softprompt.filenames import MAX_LENGTH, inside, safe_filename
from softprompt.plots import plot_run
from conftest import tiny_llama
from helpers import sweep_assets, write_sweep_spec

EVIL = "../../../../tmp/x/pwn"


@pytest.mark.parametrize("name", ["sst2", "lr-dpt", "positive-sigma-cb", "lr=0.1", "rank_probe", "café", "a.b+c"])
def test_plain_names_stay_as_they_are(name):
    assert safe_filename(name) == name


@pytest.mark.parametrize("name", [EVIL, "..", ".", "", "/etc/passwd", "a/b", "a\\b", "x\x00y", ".hidden", "a b", "~root",
                                  "C:\\x", "n" * 300, "../" * 60 + "x"])
def test_any_name_becomes_one_plain_component(name, tmp_path):
    safe = safe_filename(name)
    assert safe and "/" not in safe and "\\" not in safe and "\x00" not in safe and not safe.startswith(".")
    assert len(safe) <= MAX_LENGTH + 9 and safe not in (".", "..")
    assert (tmp_path / safe).parent == tmp_path
    (tmp_path / f"{safe}.png").write_text("x")  # a file the file system takes, right here


def test_names_that_differ_never_share_a_file():
    names = ["a/b", "a_b", "a b", "a\\b", "a//b", EVIL, EVIL + "2"]
    assert len({safe_filename(n) for n in names}) == len(names)


def test_inside_refuses_a_path_out_of_its_folder(tmp_path):
    (tmp_path / "out").mkdir()
    assert inside(tmp_path / "out", tmp_path / "out" / "a.png") == tmp_path / "out" / "a.png"
    for escape in (tmp_path / "out" / ".." / "a.png", tmp_path / "a.png", Path("/tmp/x/pwn.png")):
        with pytest.raises(ValueError, match="outside"):
            inside(tmp_path / "out", escape)
    (tmp_path / "out" / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="outside"):
        inside(tmp_path / "out", tmp_path / "out" / "link" / "a.png")


def test_a_run_s_diagnostic_names_from_its_log_stay_in_plots(tmp_path):
    run = tmp_path / "deep" / "run"
    run.mkdir(parents=True)
    records = [{"step": s, "loss": 1.0 / s, EVIL: s, "../evil": 2 * s} for s in (1, 2)]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_run(run)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".png") == sorted(
        ["loss.png", "validation.png", f"{safe_filename(EVIL)}.png", f"{safe_filename('../evil')}.png"])
    assert all(p.parent == run / "plots" for p in tmp_path.rglob("*.png"))


@pytest.mark.parametrize("name", ["../../escaped", "..", ".hidden", "a/b"])
def test_a_sweep_name_like_a_path_is_refused(tmp_path, capsys, name):
    """The spec's name is its default directory's (runs/sweeps/NAME): sweep/spec.py refuses one
    that is not a plain name, before anything is written."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"name": name, "base": {"task": "sst2"}, "grid": {"seed": [0]}}))
    assert main(["sweep", str(spec), "--dir", str(tmp_path / "s")]) == 2
    assert "name must be letters, digits" in capsys.readouterr().err and not (tmp_path / "s").exists()


def everything(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def test_sweep_report_with_a_task_named_like_a_path_writes_only_in_its_report(tmp_path, monkeypatch, capsys):
    """The issue's repro, a real (tiny) sweep: rank_probe on a task file named EVIL, at two
    learning rates (so both report plots are drawn), and a spec named like a path as well."""
    assets = sweep_assets(tmp_path / "assets", tiny_llama())
    task = tmp_path / "assets" / "evil.yaml"
    train_rows = assets / "data" / "SST-2" / "train.tsv"
    task.write_text(json.dumps({"name": EVIL, "data": {"train": str(train_rows), "validation": str(assets / "data" / "SST-2" / "dev.tsv")},
                                "template": "{sentence}", "label_field": "label", "labels": [0, 1], "label_words": ["no", "yes"]}))
    spec = write_sweep_spec(assets, tmp_path / "spec", grid={"method": ["rank_probe"], "task": [str(task)], "lr": [0.1, 0.3]},
                            base={"max_steps": 2, "eval_every": 2, "checkpoint_every": 2, "log_every": 1}, name="escaped")
    work = tmp_path / "cwd" / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert main(["sweep", str(spec)]) == 0
    directory = work / "runs" / "sweeps" / "escaped"  # the default --dir
    metrics = json.loads(next((directory / "trials").glob("*/metrics.json")).read_text())
    assert metrics["task"] == EVIL  # the name did reach the report

    before = everything(tmp_path)
    capsys.readouterr()
    assert main(["sweep", "report", str(directory)]) == 0
    assert_only_in_report(directory, everything(tmp_path) - before)
    plots = sorted(p.name for p in (directory / "report" / "plots").iterdir())
    assert plots == sorted(["lr-rank_probe.png", f"{safe_filename('positive-sigma-' + EVIL)}.png"])

    # a method's name, hand-edited into every trial's files, too
    for trial in (directory / "trials").iterdir():
        for name in ("metrics.json", "config.json"):
            record = json.loads((trial / name).read_text())
            (trial / name).write_text(json.dumps({**record, "method": "../../../../tmp/x/evil-method"}))
    before = everything(tmp_path)
    assert main(["sweep", "report", str(directory)]) == 0
    assert_only_in_report(directory, everything(tmp_path) - before)
    assert (directory / "report" / "plots" / f"{safe_filename('lr-../../../../tmp/x/evil-method')}.png").is_file()


def assert_only_in_report(directory: Path, new: set[Path]) -> None:
    assert all(p.parent in (directory / "report", directory / "report" / "plots") for p in new), sorted(new)
