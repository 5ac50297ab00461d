"""Experiment trackers (``--report-to tensorboard,mlflow,wandb`` or ``all``): every record the run
writes to ``log.jsonl`` also goes to TensorBoard, MLflow or W&B through accelerate's trackers
(``accelerate.tracking``), and the resolved config is logged as the run's hyperparameters.

What a tracker receives is ``scalars(record)`` at the record's step: the record's numbers, a
section's metrics as ``section/metric`` (``validation/accuracy``, ``test/f1``,
``zero_shot/accuracy``); text fields (``split``, ``error``) stay in ``log.jsonl`` only. The
output goes under ``OUTPUT/trackers/`` (``rundir.RUN_FILES``, so ``--overwrite`` replaces it):
TensorBoard's event files in ``trackers/tensorboard/``, W&B's offline runs in
``trackers/wandb/``, MLflow's runs in the SQLite store ``trackers/mlflow.db`` unless
``$MLFLOW_TRACKING_URI`` names another store (a server, a database, a ``file:`` folder).

The trackers are accelerate's classes, started, fed and finished as ``Accelerator.init_trackers``,
``log`` and ``end_training`` do, but held here: the run's ``Accelerator`` is shared by every run of
the process (``distributed.accelerator``), and ``end_training`` would also destroy the process
group a multi-seed or a sweep run still needs. Only the main process logs.

A resumed run continues its TensorBoard files: the events after the checkpoint's step are dropped
(``purge_step``), as ``log.jsonl``'s records are (one exception: a run killed after its last
checkpoint but before ``metrics.json`` logs its test metrics twice at that step); MLflow and W&B
start a new run for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import distributed
from .config import TrainConfig, tracker_names
from .extras import require

FOLDER = "trackers"
# The Python package each tracker imports (accelerate's tracker names are the keys).
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers a tracker gets from one ``log.jsonl`` record (its step aside): top-level
    numbers as they are, a section's (``validation``, ``test``, ``zero_shot``) as
    ``section/name``; booleans count as 0/1 (``early_stopping``); text is left out."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "step":
            continue
        if isinstance(value, dict):
            out.update({f"{key}/{name}": float(v) for name, v in value.items() if _number(v)})
        elif _number(value):
            out[key] = float(value)
    return out


def hyperparameters(config: TrainConfig) -> dict[str, Any]:
    """The resolved config as flat hyperparameters: scalars as they are, the rest (lists, the
    method's nested options, the sources) as JSON text, which every tracker stores."""
    return {key: value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value, sort_keys=True)
            for key, value in config.to_dict().items()}


class Trackers:
    """The run's trackers; empty (a no-op) without ``report_to`` and on the other processes."""

    def __init__(self, trackers: list[Any]):
        self.trackers = trackers

    @staticmethod
    def check(config: TrainConfig) -> None:
        """One line naming the extra when a tracker's package is missing (before any slow loading)."""
        for name in tracker_names(config.report_to):
            require(PACKAGES[name], f"--report-to {name}")

    @classmethod
    def start(cls, config: TrainConfig, run_dir: str | Path, resumed_step: int | None = None) -> "Trackers":
        names = tracker_names(config.report_to)
        if not names or not distributed.is_main():
            return cls([])
        cls.check(config)  # every package checked before any tracker writes
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        folder = Path(run_dir) / FOLDER
        folder.mkdir(exist_ok=True)
        project = f"{Path(config.task).stem}-{config.method}"  # the experiment's name: runs/<task>-<method>
        made = []
        for name in names:
            kind = LOGGER_TYPE_TO_CLASS[name]
            if name == "tensorboard":
                purge = {} if resumed_step is None else {"purge_step": resumed_step + 1}
                made.append(kind("tensorboard", folder, **purge))
            elif name == "mlflow":
                # set each run (MLflow's URI is process-wide: another run's must not stick): the
                # user's store, else a SQLite one in the run (MLflow's file store is deprecated)
                default = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
                require("mlflow").set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or default)
                made.append(kind(experiment_name=project, run_name=Path(run_dir).name))
            else:
                made.append(kind(project, dir=str(folder), name=Path(run_dir).name))
        for tracker in made:
            tracker.start()
        values = hyperparameters(config)
        for tracker in made:
            tracker.store_init_configuration(values)
        return cls(made)

    def log(self, record: dict[str, Any]) -> None:
        values = scalars(record)
        if values:
            for tracker in self.trackers:
                tracker.log(values, step=int(record.get("step", 0)))

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def _number(value: Any) -> bool:
    return isinstance(value, (bool, int, float))
