"""Sweeps: grids and searches of ordinary training runs on Optuna, and the papers' tables.

    spec.py    the YAML spec: base run, grid axes, searched ranges, sampler, objective, budget
    engine.py  the sweep directory, its Optuna studies and storage, what a worker does
    storage.py what the SQL storage needs beyond Optuna's defaults
    launch.py  workers in this process, as local processes, or as a SLURM array (submitit);
               the signals that stop them
    report.py  the table (rows methods, columns tasks, mean ± std over seeds), CSV and plots

    softprompt sweep sweeps/smollm2-lr.yaml --workers 2 --dir runs/sweeps/smollm2-lr
    softprompt sweep report runs/sweeps/smollm2-lr
"""

from .engine import Sweep, work
from .report import write_report
from .spec import Range, SweepSpec

__all__ = ["Range", "Sweep", "SweepSpec", "work", "write_report"]
