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
    assert "| ulpt | 1,192 | 84.0 ± 1.4 (n=2) |" in out.out  # (83 + 85) / 2, std of {83, 85}, two seeds
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


def test_the_report_groups_by_model(tmp_path, capsys):
    # SmolLM2's rows from before rows named their model, Gemma's named; each model its own PEFT choice
    gemma = {"model": "gemma-3-270m"}
    runs = [softprompt_run("prompt", 0, 0.80), softprompt_run("prompt", 1, 0.82), softprompt_run("prompt", 2, 0.84),
            peft_run(0, 0.01, 0.79, 0.9), peft_run(1, 0.01, 0.81, 0.9), peft_run(2, 0.01, 0.83, 0.9),
            {**softprompt_run("prompt", 0, 0.70), **gemma, "wall_seconds": 100.0, "load_average": {"start": [1.0, 1, 1], "end": [1, 1, 1]}},
            {**softprompt_run("prompt", 1, 0.74), **gemma, "wall_seconds": 300.0, "load_average": {"start": [2.0, 1, 1], "end": [1, 1, 1]}},
            {**peft_run(0, 0.03, 0.75, 0.8), **gemma}, {**peft_run(1, 0.03, 0.77, 0.8), **gemma},
            {**peft_run(0, 0.01, 0.99, 0.1), **gemma}, {**peft_run(1, 0.01, 0.99, 0.1), **gemma},
            {"library": "zero-shot", "method": "zero-shot", "model": "gemma-3-270m", "task": "sst2", "seed": None,
             "lr": None, "test": 0.6, "wall_seconds": 20.0}]
    output = write(tmp_path / "both.json", runs, {"sst2": 0.787})
    assert accuracy.main(["--report", "--output", output]) == 0  # every task, seed and method in the file
    out = capsys.readouterr()
    smollm2, gemma_part = out.out.split("### gemma-3-270m")
    assert smollm2.startswith("### SmolLM2-135M-Instruct")
    assert "| zero-shot (template only) | 0 | 78.7 |" in smollm2
    assert "| prompt | 1,192 | 82.0 ± 2.0 (n=3) |" in smollm2
    assert "| PEFT prompt tuning (lr: best on validation) | 11,520 | 81.0 ± 2.0 (n=3) |" in smollm2
    assert "| prompt | +1.0 vs PEFT, +3.3 vs zero-shot: met |" in smollm2
    assert "| zero-shot (template only) | 0 | 60.0 |" in gemma_part
    assert "| prompt | 1,192 | 72.0 ± 2.8 (n=2) |" in gemma_part
    assert "| PEFT prompt tuning (lr: best on validation) | 11,520 | 76.0 ± 1.4 (n=2) |" in gemma_part  # lr 0.03: its validation
    assert "| prompt | -4.0 vs PEFT, +12.0 vs zero-shot: MISSED |" in gemma_part
    assert "| prompt | 200 s (load 1.5) |" in gemma_part  # mean wall time per run, mean 1-minute load at the starts
    assert "| zero-shot | 20 s |" in gemma_part
    assert "PEFT on sst2: lr 0.01 (SmolLM2-135M-Instruct;" in out.err and "PEFT on sst2: lr 0.03 (gemma-3-270m;" in out.err
    chosen = json.loads((tmp_path / "both.json").read_text())["peft_best_lr"]
    assert chosen == {"SmolLM2-135M-Instruct": {"sst2": 0.01}, "gemma-3-270m": {"sst2": 0.03}}

    accuracy.main(["--report", "--output", output, "--methods", "prompt"])  # no peft: no PEFT row, no comparison
    out = capsys.readouterr().out
    assert "PEFT" not in out and "| prompt | 1,192 | 82.0 ± 2.0 (n=3) |" in out


def test_legacy_best_lrs_become_the_default_models():
    from benchmarks.accuracy_report import chosen_lrs

    assert chosen_lrs({"sst2": 0.01, "cb": 0.03}, {"gemma-3-270m": {"sst2": 0.003}}) == {
        "SmolLM2-135M-Instruct": {"sst2": 0.01, "cb": 0.03}, "gemma-3-270m": {"sst2": 0.003}}


def test_peft_lr_is_chosen_on_the_seeds_every_lr_ran(capsys):
    # the grid ran on seed 0 only, then the lr it chose (0.03) on seeds 1 and 2, whose held-out
    # scores came out lower: over its own seeds 0.03's mean (0.8) is below 0.01's seed-0 0.85, but
    # on the seed both ran 0.03 wins (0.9 against 0.85), so the choice stays 0.03 with all its runs
    from benchmarks.accuracy_report import choose_peft

    runs = [peft_run(0, 0.03, 0.88, 0.9), peft_run(1, 0.03, 0.86, 0.75), peft_run(2, 0.03, 0.87, 0.75),
            peft_run(0, 0.01, 0.80, 0.85), peft_run(0, 0.003, 0.79, 0.6)]
    lr, rows = choose_peft(runs, "SmolLM2-135M-Instruct", "sst2", [0.003, 0.01, 0.03])
    assert lr == 0.03 and sorted(r["seed"] for r in rows) == [0, 1, 2]
    assert "on seeds 0: 0.003 60.0 (n=1), 0.01 85.0 (n=1), 0.03 90.0 (n=1)" in capsys.readouterr().err

    # no seed in common: each lr is read over its own seeds (0.01's 0.85 beats 0.03's 0.75)
    lr, rows = choose_peft(runs[1:4], "SmolLM2-135M-Instruct", "sst2", [0.01, 0.03])
    assert lr == 0.01 and [r["seed"] for r in rows] == [0]
