"""A sweep spec: a base run, the axes to vary, how to choose among them. YAML, validated in full
(every trial's config is built once) before anything runs.

    name: rte-lr                     # default: the file's name
    config: base.yaml                # optional: a `softprompt train --config` file (relative to this one)
    base: {task: rte, max_steps: 150, data_dir: ../shared/data}   # any `softprompt train` option
    per_method: {dpt: {bottleneck: 10}, ulpt: {rank: 2}}         # options for one method only
    per_task: {cb: {max_steps: 100}}                              # options for one task only
    grid: {method: [prompt, dpt, ulpt], seed: [1, 2, 3]}          # run exhaustively; a list of
                                                                  # such mappings runs each one
    search: {lr: log(1e-3, 1)}       # ranges: log(a, b), uniform(a, b), int(a, b), choice(x, y, ...)
    sampler: tpe                     # grid (without search), tpe or random (with search)
    trials: 12                       # trials per grid point of a search
    objective: auto                  # the validation metric maximized; auto: each task's own first
    select: [lr]                     # the report chooses these per (row, task) on validation

A trial's options are, later ones winning: ``config``, ``base``, ``per_method[method]``,
``per_task[task]``, then the trial's own values; ``softprompt.settings`` resolves them as the
explicit options of the run, exactly as ``softprompt train`` does its command line (a recipe,
``$SOFTPROMPT_DATA_DIR``, the backbone's kind fill what they leave unset, and each trial's
config.json names where every value came from). Relative ``data_dir`` and ``model`` paths are
read from the current directory and stored absolute, so every worker and restart agrees.

Without ``search``, each grid mapping is one Optuna study run by the ``GridSampler``; with it, each
point of the grid is one study that the sampler searches with ``trials`` trials.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softprompt.config import TrainConfig, load_yaml, read_config_file
from softprompt.settings import resolve

KEYS = ("name", "config", "base", "per_method", "per_task", "grid", "search", "sampler", "trials",
        "objective", "select", "heartbeat", "retries", "seed", "slurm")
SAMPLERS = ("grid", "tpe", "random")
# Grid axes the report chooses on validation by default (besides every searched range).
SELECTED_BY_DEFAULT = ("lr", "lr_update")
# Options holding a path: stored absolute when the relative path exists here.
PATH_OPTIONS = ("data_dir", "model")

_RANGE = re.compile(r"^\s*(log|uniform|int|choice)\s*\((.*)\)\s*$")


@dataclass(frozen=True)
class Range:
    """A searched axis: ``log(a, b)`` (float, log scale), ``uniform(a, b)``, ``int(a, b)`` or
    ``choice(x, y, ...)``."""

    kind: str
    values: tuple

    @classmethod
    def parse(cls, text: Any, where: str) -> "Range":
        match = _RANGE.match(text) if isinstance(text, str) else None
        if not match:
            raise ValueError(f"{where}: expected log(a, b), uniform(a, b), int(a, b) or choice(x, ...), got {text!r}")
        kind, inner = match.groups()
        values = tuple(_number(v) for v in _split(inner))
        if kind == "choice":
            if not values:
                raise ValueError(f"{where}: choice() needs at least one value")
            return cls(kind, values)
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"{where}: {kind}(a, b) needs two numbers, got {text!r}")
        low, high = values
        if not low < high or (kind == "log" and low <= 0) or (kind == "int" and not all(isinstance(v, int) for v in values)):
            raise ValueError(f"{where}: {text!r} is not a valid range ({kind} needs {'0 < ' if kind == 'log' else ''}a < b{', integers' if kind == 'int' else ''})")
        return cls(kind, (float(low), float(high)) if kind != "int" else (low, high))

    def text(self) -> str:
        return f"{self.kind}({', '.join(json.dumps(v) for v in self.values)})"

    def suggest(self, trial, name: str) -> Any:
        """The value of this axis for an Optuna ``trial``."""
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(name, *self.values)
        return trial.suggest_float(name, *self.values, log=self.kind == "log")

    def corners(self) -> list:
        """Values to validate a config with (the range's ends, or every choice)."""
        return list(self.values)


@dataclass(frozen=True)
class StudyPlan:
    """One Optuna study of the sweep: a grid (``grid``, run by the GridSampler) or a search at a
    fixed grid point (``fixed``), ``budget`` trials."""

    index: int
    name: str
    grid: dict[str, list] | None
    fixed: dict[str, Any]
    budget: int

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) if self.grid is not None else self.budget


@dataclass
class SweepSpec:
    """See the module docstring."""

    name: str
    base: dict[str, Any]
    per_method: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_task: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: list[dict[str, list]] = field(default_factory=lambda: [{}])
    search: dict[str, Range] = field(default_factory=dict)
    sampler: str = "grid"
    trials: int | None = None
    objective: str = "auto"
    select: list[str] = field(default_factory=list)
    heartbeat: int = 30
    retries: int = 3
    seed: int = 0
    slurm: dict[str, Any] = field(default_factory=dict)

    # -- reading -----------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path) -> "SweepSpec":
        path = Path(path)
        data = read_config_file(path)
        if "config" in data and isinstance(data["config"], str):
            file = Path(data["config"])
            data["config"] = read_config_file(file if file.is_absolute() else path.parent / file)
        data.setdefault("name", path.stem)
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "sweep") -> "SweepSpec":
        """From a parsed spec (``config`` may be a mapping already); one-line errors naming
        ``where`` and the key."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping at the top level")
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; a spec has {', '.join(KEYS)}")
        name = data.get("name") or "sweep"
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"{where}: name must be letters, digits, '.', '_' or '-', got {name!r}")
        base = {**_options(data.get("config") or {}, f"{where}: config"), **_options(data.get("base") or {}, f"{where}: base")}
        for key in ("output_dir", "seeds", "resume", "overwrite"):
            if key in base:
                raise ValueError(f"{where}: base: {key} is the sweep's to set (each trial is one run in its own directory; seeds go in the grid)")
        per_method = {str(k): _options(v, f"{where}: per_method: {k}") for k, v in (data.get("per_method") or {}).items()}
        per_task = {str(k): _options(v, f"{where}: per_task: {k}") for k, v in (data.get("per_task") or {}).items()}
        grid = _grid(data.get("grid"), f"{where}: grid")
        search = {}
        for key, text in _mapping(data.get("search") or {}, f"{where}: search").items():
            search[_key(key)] = Range.parse(text, f"{where}: search: {key}")
        axes = {k for block in grid for k in block}
        both = sorted(axes & set(search))
        if both:
            raise ValueError(f"{where}: {', '.join(both)} is both a grid axis and searched")
        for key in ("output_dir", "seeds", "resume", "overwrite"):
            if key in axes or key in search:
                raise ValueError(f"{where}: {key} cannot be an axis")
        sampler = data.get("sampler") or ("tpe" if search else "grid")
        if sampler not in SAMPLERS:
            raise ValueError(f"{where}: sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if search and sampler == "grid":
            raise ValueError(f"{where}: the grid sampler runs grids only; search ranges need sampler tpe or random")
        if not search and sampler != "grid":
            raise ValueError(f"{where}: sampler {sampler} needs ranges under search")
        trials = data.get("trials")
        if search:
            trials = 20 if trials is None else trials
            _check_int(trials, 1, f"{where}: trials")
        elif trials is not None:
            raise ValueError(f"{where}: trials is the budget of a search; a grid runs every point once")
        objective = data.get("objective") or "auto"
        if not isinstance(objective, str):
            raise ValueError(f"{where}: objective must be a metric name or auto, got {objective!r}")
        section, _, metric = objective.rpartition(".")
        if section not in ("", "validation", "best_validation"):
            raise ValueError(f"{where}: objective must be a validation metric ({objective!r}); the test split is never used to choose")
        select = data.get("select")
        if select is None:
            select = list(search) + [k for k in SELECTED_BY_DEFAULT if k in axes]
        if not isinstance(select, list) or not all(isinstance(s, str) for s in select):
            raise ValueError(f"{where}: select must be a list of axis names, got {select!r}")
        select = [_key(s) for s in select]
        missing = [s for s in select if s not in axes and s not in search]
        if missing:
            raise ValueError(f"{where}: select names {', '.join(missing)}, not an axis of the sweep")
        for key in ("task", "seed"):
            if key in select:
                raise ValueError(f"{where}: select cannot hold {key} (tasks are the columns, seeds are averaged)")
        heartbeat, retries, seed = data.get("heartbeat", 30), data.get("retries", 3), data.get("seed", 0)
        _check_int(heartbeat, 1, f"{where}: heartbeat")
        _check_int(retries, 0, f"{where}: retries")
        _check_int(seed, 0, f"{where}: seed")
        slurm = _mapping(data.get("slurm") or {}, f"{where}: slurm")
        spec = cls(name, base, per_method, per_task, grid, search, sampler, trials, metric, select,
                   heartbeat, retries, seed, dict(slurm))
        spec.check(where)
        return spec

    def check(self, where: str) -> None:
        """Build every trial's config once (a search's at its ranges' ends): a bad option fails
        here, naming the point, before any trial runs."""
        for plan in self.studies():
            points = [dict(zip(plan.grid, values)) for values in itertools.product(*plan.grid.values())] if plan.grid is not None else [{}]
            for point in points:
                corners = [dict(zip(self.search, values)) for values in itertools.product(*(r.corners() for r in self.search.values()))]
                for searched in corners or [{}]:
                    params = {**plan.fixed, **point, **searched}
                    try:
                        self.trial_config(params, output_dir="unused")
                    except ValueError as err:
                        shown = ", ".join(f"{k}={v}" for k, v in {**plan.fixed, **point}.items()) or "the base"
                        raise ValueError(f"{where}: {shown}: {str(err).removeprefix('options: ')}") from None

    # -- what runs ---------------------------------------------------------------------------

    def axes(self) -> list[str]:
        """Every axis, in the spec's order (grid axes, then searched ones)."""
        names = list(dict.fromkeys(k for block in self.grid for k in block))
        return names + [k for k in self.search if k not in names]

    def identity(self) -> str:
        """A hash of what defines the sweep's trials (not its name, workers or SLURM options)."""
        data = {k: v for k, v in self.to_dict().items() if k not in ("name", "slurm", "heartbeat", "retries")}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]

    def studies(self) -> list[StudyPlan]:
        """The Optuna studies: one per grid mapping (grid sampler), or one per grid point
        (search), in the spec's order."""
        stem = f"{self.name}-{self.identity()}"
        if not self.search:
            many = len(self.grid) > 1
            return [StudyPlan(i, f"{stem}/{i}" if many else stem, block, {}, 0) for i, block in enumerate(self.grid)]
        plans = []
        for block in self.grid:
            for values in itertools.product(*block.values()):
                fixed = dict(zip(block, values))
                key = ",".join(f"{k}={v}" for k, v in fixed.items())
                plans.append(StudyPlan(len(plans), f"{stem}/{key}" if key else stem, None, fixed, self.trials))
        return plans

    def trial_layers(self, params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The trial's options as ``softprompt.settings`` layers (source, options), lowest first."""
        method = params.get("method", self.base.get("method", TrainConfig.__dataclass_fields__["method"].default))
        task = params.get("task", self.base.get("task", TrainConfig.__dataclass_fields__["task"].default))
        return [(f"sweep {self.name} base", self.base),
                (f"sweep {self.name} per_method {method}", self.per_method.get(method, {})),
                (f"sweep {self.name} per_task {task}", self.per_task.get(task, {})),
                (f"sweep {self.name} trial", params)]

    def trial_config(self, params: dict[str, Any], output_dir: str | Path, resume: bool = False) -> TrainConfig:
        """The trial's resolved config (the settings that depend on the backbone's kind are
        left to ``train()``)."""
        where = {"output_dir": str(output_dir), "resume": resume}
        return resolve([*self.trial_layers(params), (f"sweep {self.name}", where)], where="options")

    # -- saving ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "base": self.base, "per_method": self.per_method, "per_task": self.per_task,
            "grid": self.grid, "search": {k: r.text() for k, r in self.search.items()}, "sampler": self.sampler,
            "trials": self.trials, "objective": self.objective, "select": self.select,
            "heartbeat": self.heartbeat, "retries": self.retries, "seed": self.seed, "slurm": self.slurm,
        }


# ---------------------------------------------------------------------------------------
# Pieces


def _key(name: Any) -> str:
    return str(name).replace("-", "_")


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _options(value: Any, where: str) -> dict[str, Any]:
    """Train options with ``-`` or ``_`` in their names; relative paths made absolute."""
    options = {_key(k): _number(v) for k, v in _mapping(value, where).items()}
    for key in PATH_OPTIONS:
        text = options.get(key)
        if isinstance(text, str) and text and not os.path.isabs(text) and os.path.exists(text):
            options[key] = os.path.abspath(text)
    return options


def _grid(value: Any, where: str) -> list[dict[str, list]]:
    """``grid``: a mapping of axis -> values, or a list of them (each run as its own grid)."""
    if value is None:
        return [{}]
    blocks = value if isinstance(value, list) else [value]
    if not blocks:
        raise ValueError(f"{where}: an empty list")
    out = []
    for i, block in enumerate(blocks):
        here = f"{where}[{i}]" if isinstance(value, list) else where
        block = _mapping(block, here)
        axes = {}
        for key, values in block.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{here}: {key} needs a non-empty list of values, got {values!r}")
            if any(not (v is None or isinstance(v, (str, int, float, bool))) for v in values):
                raise ValueError(f"{here}: {key}: grid values must be strings, numbers, booleans or null")
            if len({json.dumps(v) for v in values}) != len(values):
                raise ValueError(f"{here}: {key} repeats a value")
            axes[_key(key)] = [_absolute(key, _number(v)) for v in values]
        out.append(axes)
    return out


def _absolute(key: str, value: Any) -> Any:
    if _key(key) in PATH_OPTIONS and isinstance(value, str) and not os.path.isabs(value) and os.path.exists(value):
        return os.path.abspath(value)
    return value


# PyYAML reads YAML 1.1, where 1e-3 (no dot) is a string, not a number: such strings become floats.
_EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _number(value: Any) -> Any:
    if isinstance(value, str) and _EXPONENT.match(value.strip()):
        return float(value)
    return value


def _split(inner: str) -> list[Any]:
    """The comma-separated values inside ``log(...)`` and the like, read as YAML scalars."""
    import yaml

    out = []
    for part in inner.split(","):
        part = part.strip()
        try:
            out.append(load_yaml(part) if part else None)
        except yaml.YAMLError:
            out.append(part)
    return [v for v in out if v is not None]


def _check_int(value: Any, low: int, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where} must be an integer >= {low}, got {value!r}")
