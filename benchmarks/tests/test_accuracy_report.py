"""The accuracy benchmark's report over several results files: runs measured in separate launches
pair by seed in one table, a renamed variant counts as its method, and a run given twice is an
error instead of a silent choice between two figures."""

from __future__ import annotations

import json

import pytest

from benchmarks import accuracy


def softprompt_run(method, seed, test, validation=0.8):
    return {"library": "softprompt", "method": method, "task": "sst2", "seed": seed, "lr": 0.1, "metric": "accuracy",
            "test": test, "validation": validation, "trainable_parameters": 1192, "test_n": 872}


def peft_run(seed, lr, test, validation):
    return {"library": "peft", "method": "peft-prompt", "task": "sst2", "seed": seed, "lr": lr, "metric": "accuracy",
            "test": test, "validation": validation, "trainable_parameters": 11520, "test_n": 872}


def write(path, runs, zero=None):
    path.write_text(json.dumps({"runs": runs, "zero_shot": zero or {}}))
    return str(path)


def test_runs_of_several_files_pair_by_seed(tmp_path, capsys):
    # PEFT: lr 0.01 wins on validation (0.9 against 0.7) though 0.03 scores higher on test
    main = write(tmp_path / "peft.json", [peft_run(0, 0.01, 0.80, 0.9), peft_run(1, 0.01, 0.84, 0.9),
                                          peft_run(0, 0.03, 0.95, 0.7), peft_run(1, 0.03, 0.95, 0.7)], {"sst2": 0.5})
    other = write(tmp_path / "sink.json", [softprompt_run("ulpt@sink=bos", 0, 0.83), softprompt_run("ulpt@sink=bos", 1, 0.85)])
    before = (tmp_path / "peft.json").read_text()
    assert accuracy.main(["--report", "--tasks", "sst2", "--seeds", "0,1", "--output", main,
                          "--include", other, "--rename", "ulpt@sink=bos:ulpt"]) == 0
    out = capsys.readouterr()
    assert "| ulpt | 1,192 | 84.0 ± 1.4 |" in out.out  # (83 + 85) / 2, std of {83, 85}
    assert "| ulpt | +2.0 ± 1.0 (n=2) |" in out.out  # diffs +3 and +1 against lr 0.01's 80 and 84
    assert "ulpt@sink=bos" not in out.out
    assert "PEFT on sst2: lr 0.01" in out.err
    assert (tmp_path / "peft.json").read_text() == before  # a merged report writes no file

    # --peft-lrs narrows the grid the choice is made among: lr 0.03 alone, 95 on both seeds
    accuracy.main(["--report", "--tasks", "sst2", "--seeds", "0,1", "--output", main, "--include", other,
                   "--rename", "ulpt@sink=bos:ulpt", "--peft-lrs", "3e-2"])
    assert "| ulpt | -11.0 ± 1.0 (n=2) |" in capsys.readouterr().out


def test_a_run_given_twice_names_both_files(tmp_path):
    first = write(tmp_path / "a.json", [softprompt_run("ulpt", 0, 0.83)])
    second = write(tmp_path / "b.json", [softprompt_run("ulpt@sink=bos", 0, 0.87)])
    with pytest.raises(SystemExit, match=r"b\.json: ulpt on sst2, seed 0 is also in .*a\.json"):
        accuracy.main(["--report", "--tasks", "sst2", "--seeds", "0", "--output", first, "--include", second,
                       "--rename", "ulpt@sink=bos:ulpt"])


def test_peft_runs_differ_by_learning_rate(tmp_path):
    first = write(tmp_path / "a.json", [peft_run(0, 0.01, 0.8, 0.9)])
    second = write(tmp_path / "b.json", [peft_run(0, 0.03, 0.8, 0.9)])
    merged = accuracy.merge_results([(tmp_path / "a.json", json.loads(open(first).read())),
                                     (tmp_path / "b.json", json.loads(open(second).read()))], {})
    assert sorted(r["lr"] for r in merged["runs"]) == [0.01, 0.03]
    with pytest.raises(SystemExit, match=r"b\.json: peft-prompt on sst2, seed 0, lr 0\.01 is also in"):
        accuracy.merge_results([(tmp_path / "a.json", json.loads(open(first).read())),
                                (tmp_path / "b.json", json.loads(open(first).read()))], {})


@pytest.mark.parametrize("argv", [["--include", "x.json"], ["--rename", "a:b"]])
def test_merging_options_need_report(argv, tmp_path):
    with pytest.raises(SystemExit):
        accuracy.main(["--tasks", "sst2", "--output", str(tmp_path / "o.json"), *argv])
    assert not (tmp_path / "o.json").exists()


def test_a_rename_needs_a_colon():
    assert accuracy.parse_rename("ulpt@sink=bos:ulpt") == ("ulpt@sink=bos", "ulpt")
    with pytest.raises(SystemExit, match="expected VARIANT:NAME"):
        accuracy.parse_rename("ulpt@sink=bos")
