"""benchmarks/sweep_table.py: a sweep's committed trial records give the table the library's
report gives (the lr chosen on held-out rows, the dev figure at it), and every trial by lr."""

from __future__ import annotations

import json

import pytest

from benchmarks import sweep_table


def test_records_give_the_reports_table(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s\nbase: {holdout: 200}\ngrid: {method: [ulpt], task: [sst2], seed: [0]}\n"
                    "search:\n  lr: log(1e-3, 1)\ntrials: 3\n")
    trials = [  # held-out picks lr 0.0443 (0.9), though 0.145 scores higher on dev
        {"trial": "00-0000", "method": "ulpt", "task": "sst2", "seed": 0, "lr": 0.14486833887239342,
         "validation": 0.80, "test": 0.95, "metric": "accuracy", "best_step": 100, "wall_seconds": 300.0},
        {"trial": "00-0001", "method": "ulpt", "task": "sst2", "seed": 0, "lr": 0.044303752452182654,
         "validation": 0.90, "test": 0.85, "metric": "accuracy", "best_step": 50, "wall_seconds": 500.0},
        {"trial": "00-0002", "method": "ulpt", "task": "sst2", "seed": 0, "lr": 0.001,
         "validation": 0.70, "test": 0.75, "metric": "accuracy", "best_step": 100, "wall_seconds": 400.0},
    ]
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"sweep": str(spec), "trials": trials}))
    assert sweep_table.main([str(results)]) == 0
    out = capsys.readouterr().out
    assert "lr chosen per cell on held-out training rows" in out
    assert "| ulpt | 85.00 ± 0.00 | 85.00 |" in out and "| ulpt | lr=0.0443 (90.00) |" in out
    assert "| `ulpt`, sst2 (3) | 0.001: 70.0 / 75.0; 0.0443: 90.0 / 85.0; 0.145: 80.0 / 95.0 | 300-500 s |" in out
    assert "3 trials, 0.3 h of trial time in all (median 400 s a trial)." in out
