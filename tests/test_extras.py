"""The lean install: with every optional package hidden from the import system (as on a machine
with only the core install), `softprompt train` trains on a CSV with a local model, skipping its
plots with one line, and each command that needs an extra says, in one line, which
`pip install 'softprompt[...]'` to run. pyproject's extras are the ones `softprompt.extras` names."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import tiny_llama
from helpers import NEGATIVE, POSITIVE, sweep_env, tiny_tokenizer, write_sweep_spec
from softprompt.extras import EXTRAS, MissingExtra, require

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = sorted({*EXTRAS, "tensorboardX", "submitit", "sentencepiece"})


def core_only(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``softprompt ARGS`` in a fresh process that cannot import any optional package."""
    env = {**sweep_env(), "SOFTPROMPT_TEST_HIDE": ",".join(OPTIONAL),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "fixtures" / "hide_packages"), str(ROOT / "src")])}
    return subprocess.run([sys.executable, "-m", "softprompt", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_core_install_trains_on_a_csv_and_names_each_missing_extra(tmp_path):
    model = tmp_path / "tiny"
    tiny_llama().save_pretrained(model)
    tiny_tokenizer(bos=True).save_pretrained(model)
    rows = [(POSITIVE[i % 6], "pos") if i % 2 else (NEGATIVE[i % 6], "neg") for i in range(12)]
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in rows))
    (tmp_path / "dev.csv").write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in rows[:4]))
    done = core_only("train", "--model", str(model), "--train-file", "train.csv", "--validation-file", "dev.csv",
                     "--template", "{text} :", "--label-words", "neg=bad,pos=good", "--method", "prompt", "--length", "3",
                     "--max-steps", "2", "--batch-size", "4", "--eval-every", "2", "--output-dir", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "metrics.json").is_file() and (tmp_path / "run" / "prompt" / "prompt.safetensors").is_file()
    assert not (tmp_path / "run" / "plots").exists()
    skipped = [line for line in done.stderr.splitlines() if "plots" in line]
    assert skipped == ["softprompt: could not draw plots (plots needs matplotlib, which is not installed: pip install 'softprompt[plots]')"]

    spec = write_sweep_spec(tmp_path, tmp_path / "sweep", grid={"method": ["prompt"], "task": ["sst2"], "seed": [0]})
    done = core_only("sweep", str(spec), "--output-dir", "sweep-out", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "softprompt sweep: error: softprompt sweep needs optuna, which is not installed: pip install 'softprompt[sweep]'"]

    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    done = core_only("train", "--model", str(tmp_path / "model.gguf"), "--train-file", "train.csv", "--validation-file", "dev.csv",
                     "--template", "{text} :",
                     "--label-words", "neg=bad,pos=good", "--output-dir", "run2", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == ("softprompt train: error: a .gguf backbone (the embedded SmolLM2 too) needs gguf, "
                                                    "which is not installed: pip install 'softprompt[gguf]'")


def test_require_names_the_extra_and_passes_a_broken_package_through(tmp_path, monkeypatch):
    monkeypatch.setitem(EXTRAS, "not_installed_here", "sweep")
    monkeypatch.setitem(EXTRAS, "optuna_like", "sweep")
    with pytest.raises(MissingExtra) as err:
        require("not_installed_here.sub", "a sweep")
    assert str(err.value) == "a sweep needs not_installed_here, which is not installed: pip install 'softprompt[sweep]'"
    assert isinstance(err.value, ImportError) and isinstance(err.value, ValueError)  # the CLI prints ValueErrors as one line
    (tmp_path / "optuna_like").mkdir()
    (tmp_path / "optuna_like" / "__init__.py").write_text("import a_dependency_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_missing"):  # not "install softprompt[...]"
        require("optuna_like", "x")


def test_pyproject_extras_match_the_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    core = " ".join(project["dependencies"])
    for module, extra in EXTRAS.items():
        assert any(module in requirement for requirement in extras[extra]), (module, extra)
        assert module not in core, module
    assert extras["all"] == ["softprompt[sweep,gguf,peft,plots,trackers]"] and "softprompt[all]" in extras["test"]
    assert any(r.startswith("transformers>=") and "<" in r for r in project["dependencies"])  # the tested upper bound
