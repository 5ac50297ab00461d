"""One resolver for a run's settings: every value a run uses is decided here, once, and recorded
with where it came from (``TrainConfig.sources``, saved in config.json; ``softprompt train
--explain`` prints the table).

The layers, in the order they are applied. Each fills only the options still unset (absent or
None) after the layers before it, except the explicit options, which are applied last and win:

    1. config file           "config file run.yaml"; for --resume the run's config.json
    2. paper recipe          "recipe dpt-paper", "recipe dept-paper (task cb)" (recipes.py's tables)
    3. method recipe         "method recipe ulpt/decoder-only" (``prompts.recipe_for(method, kind)``);
                             on a base model, "method recipe ulpt/decoder-only base" over it
    4. kind defaults         "kind default decoder-only" (``config.KIND_DEFAULTS``); on a base
                             model (``backbones.is_base_model``), ``config.BASE_MODEL_DEFAULTS`` over it
    5. environment           "environment SOFTPROMPT_DATA_DIR" (data_dir), "default runs/<task>-<method>"
    6. explicit options      "command line", "python argument", "sweep NAME trial", "softprompt demo"
    then the fields' plain defaults ("default"; the method's own defaults for its options).

So the precedence is 6 > 1 > 2 > 3 > 4 > 5 > defaults. Layers 1 and 6 are the caller's ("user
layers"): between them a later one simply wins, and giving both of a pair below is an error.
Layers 2-4 are defaults with rules:

* ``EXCLUSIVE`` pairs are one setting: an option of a pair given by a layer above drops the other
  from the layer below (``--warmup-steps`` drops a recipe's ``warmup_ratio``; a recipe's
  ``warmup_ratio`` drops the kind's ``warmup_steps``; ``--epochs`` drops a recipe's ``max_steps``).
* ``INTERVALS``: an ``eval_every``/``checkpoint_every`` the user gives without ``eval_unit``
  counts steps (the recipe's ``eval_unit`` is dropped).
* A paper recipe's method options apply only when the run keeps the recipe's method; a method
  option named like a field (DePT's ``max_length``) lives under ``method_options``.
* Layers 3-4 name only settings whose plain default is None (lr, warmup_steps, objective, style)
  and method options; they fill a method option only where no layer above set it.
* The class objective is for classification tasks only (else lm); a recipe's ``sink`` needs a
  BOS token; a text init without a text starts from "Answer with <word> or <word>." over the
  task's label words (vocabulary init when there are none).
* The task defaults to ``custom`` when training files are given; the separator to a space, or
  nothing after a chat template (the answer starts the assistant's turn).
* ``dtype: auto`` is made concrete with the backbone's facts (the checkpoint's own dtype on a
  GPU, float32 on a CPU: ``backbones.backbone_dtype``), so config.json records the dtype the
  backbone loaded in and ``--resume`` and ``eval`` rebuild the same backbone anywhere.

Two calls, because layers 3-4 need the backbone's kind and the task: ``resolve`` applies
everything else (the CLI, the sweep's trials and the demo call it; ``train()`` calls
``from_python`` for a record built in Python, whose named options are the explicit layer), then
``train()`` calls ``for_backbone`` once the kind is known. Each fills only what is unset, so a
resolved record passes through both unchanged.

A resumed run is the saved run: its config.json is layer 1 and is not rewritten, so its record of
sources stands (None for a run saved before sources existed).

The learning rate. Its sources, highest first: the explicit ``lr`` (--lr, ``TrainConfig(lr=)``, a
sweep axis), the config file's ``lr``, the paper recipe's (per task where the authors' logs give
one: DePT's cb 0.4), the method's recipe for the kind (ulpt 0.1 on decoder-only), the kind's
default (0.3 encoder-decoder, 0.03 decoder-only). It is decided here once and never re-derived.
The optimizer then gives each of the method's parameter groups its own peak,
``group.peak(config.lr)`` in train.py (``PromptMethod.param_groups``: DePT's ``lr_update``, ULPT's
``lr_align`` are fixed peaks of their own group, the rest follow ``lr``), and the schedule
(``optim.lr_at``: warmup, then linear decay or constant) scales every peak by the same step.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import BASE_MODEL, BASE_MODEL_DEFAULTS, KIND_DEFAULTS, TrainConfig
from .prompts import init_without_text, method_fields, recipe_for
from .recipes import RECIPES

DATA_ENV = "SOFTPROMPT_DATA_DIR"
# Options that are one setting: a layer giving either drops the other from the layers below it.
EXCLUSIVE = (("warmup_steps", "warmup_ratio"), ("max_steps", "epochs"))
# An interval the user gives is in the default unit (steps) unless they name the unit too.
INTERVALS = ("eval_every", "checkpoint_every")
FIELDS = tuple(f.name for f in fields(TrainConfig))
DEFAULT = "default"
PYTHON = "python argument"
COMMAND_LINE = "command line"

Layer = tuple[str, Mapping[str, Any]]  # (source, options): flat options, method_options nested


# ---------------------------------------------------------------------------------------
# Layers 1, 2, 5, 6 and the plain defaults


def resolve(layers: Sequence[Layer], where: str = "options", keep_record: bool = True) -> TrainConfig:
    """The validated config of the user ``layers`` (lowest first: config file, then explicit
    options) with the paper recipe, the environment and the defaults below them; layers 3-4 are
    left to ``for_backbone``. Errors are one line naming ``where``. A resumed run keeps its
    config.json's sources unless ``keep_record`` is False (``--explain`` shows them computed)."""
    options, sources = _merge(layers)
    given = {k for k, v in options.items() if v is not None}
    if options.get("task") is None:  # named first: the recipe's per-task values need it
        files = any(options.get(name) for name in _file_options())
        options["task"] = "custom" if files else _field_default("task")
        sources["task"] = "default (training files given)" if files else DEFAULT
    if options.get("recipe") in RECIPES:  # an unknown name is TrainConfig's error
        _apply_recipe(options, sources, given)
    if options.get("separator") is None:
        options["separator"] = "" if options.get("chat_template") else " "
        sources["separator"] = "default (none after a chat template)" if options.get("chat_template") else DEFAULT
    if options.get("data_dir") is None and data_dir(None) is not None:
        options["data_dir"], sources["data_dir"] = data_dir(None), f"environment {DATA_ENV}"
    if options.get("output_dir") is None:
        method = options.get("method") or _field_default("method")
        options["output_dir"] = str(Path("runs") / f"{_task_label(options['task'])}-{method}")
        sources["output_dir"] = "default runs/<task>-<method>"
    config = _build(options, where)
    if options.get("resume") and keep_record:
        return _build({**config.to_dict(), "sources": _saved_sources(config.output_dir)}, where)
    return _recorded(config, sources, where)


def from_python(config: TrainConfig, files: Mapping[str, str] | None = None) -> TrainConfig:
    """A record built in Python (``sources`` None) resolved with the options it was given as
    the explicit layer ("python argument"), below them the run's config.json when it resumes;
    a resolved record as it is. ``files``: file options ``train()`` adds to the given ones (the
    rows it was given, written into the run), so the task is the user's files unless named."""
    if config.sources is not None:
        return config.replace(**files) if files else config
    data = config.to_dict()  # method options flat, those named like a field under method_options
    layer = {k: v for k, v in data.items() if k in config.given or k not in FIELDS} | dict(files or {})
    layer["method_options"] = data["method_options"]  # every method option was given
    saved = Path(config.output_dir or "") / "config.json"
    if config.resume and config.output_dir and saved.is_file():
        return resume(config.output_dir, [(PYTHON, layer)], where="TrainConfig")
    return resolve([(PYTHON, layer)], where="TrainConfig")


def resume(run_dir: str | Path, layers: Sequence[Layer] = (), where: str | None = None,
           keep_record: bool = True) -> TrainConfig:
    """The run in ``run_dir`` to continue: its config.json as layer 1, ``layers`` above it, and
    ``output_dir``/``resume``/``overwrite`` set for resuming."""
    from .io import read_json

    saved = Path(run_dir) / "config.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{run_dir}: nothing to resume (no config.json)")
    forced = {"output_dir": str(run_dir), "resume": True, "overwrite": False}
    layers = [(f"config file {saved}", read_json(saved)), *layers, (f"resume {run_dir}", forced)]
    return resolve(layers, where=where or str(saved), keep_record=keep_record)


def data_dir(given: str | None) -> str | None:
    """The environment layer's data folder: ``given``, else ``$SOFTPROMPT_DATA_DIR``, else None
    (the hub). ``softprompt eval`` and ``demo`` take their default from here too."""
    return given or os.environ.get(DATA_ENV) or None


def _merge(layers: Sequence[Layer]) -> tuple[dict[str, Any], dict[str, str]]:
    """The user layers merged, a later one winning per option (method options too); the source
    of each option named. A saved config.json's ``sources`` is its record, not an option."""
    options: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        for key, value in layer.items():
            key = key.replace("-", "_")
            if key == "sources":
                continue
            if key == "method_options" and isinstance(value, dict):
                options["method_options"] = {**options.get("method_options", {}), **value}
                sources.update({f"method_options.{k}": source for k in value})
            else:
                options[key], sources[key] = value, source
    return options, sources


def _apply_recipe(options: dict[str, Any], sources: dict[str, str], given: set[str]) -> None:
    """Layer 2: the paper recipe fills what the user layers left unset (module docstring)."""
    name = options["recipe"]
    recipe, label = RECIPES[name], f"recipe {name}"
    if options.get("method") is None:
        options["method"], sources["method"] = recipe.method, label
    method = options["method"]
    own = set(method_fields(method)) if method == recipe.method else set()  # another method: none of the recipe's
    settings = {k: (v, label) for k, v in recipe.settings.items()}
    method_options = {k: (v, label) for k, v in recipe.method_options.items() if k in own}
    task = _canonical_task(options["task"])
    for key, value in recipe.per_task.get(task or "", {}).items():
        if key in settings:
            settings[key] = (value, f"{label} (task {task})")
        if key in own:  # DePT's max_length is both: the input length and the update's positions
            method_options[key] = (value, f"{label} (task {task})")
    _drop_exclusive(settings, given, user=True)
    for key, (value, source) in settings.items():
        if options.get(key) is None:
            options[key], sources[key] = value, source
    nested = dict(options.get("method_options") or {})
    for key, (value, source) in method_options.items():
        if key in FIELDS:  # named like a run field: it lives under method_options
            if key not in nested:
                nested[key], sources[f"method_options.{key}"] = value, source
        elif options.get(key) is None and nested.get(key) is None:
            options[key], sources[key] = value, source
    if nested:
        options["method_options"] = nested


def _drop_exclusive(layer: dict[str, Any], given: set[str], user: bool) -> None:
    """Drop from a defaulting ``layer`` the other option of each ``EXCLUSIVE`` pair ``given``
    names, and (``user``: ``given`` are the user's options) the unit of a given interval."""
    for a, b in EXCLUSIVE:
        if a in given:
            layer.pop(b, None)
        if b in given:
            layer.pop(a, None)
    if user and any(k in given for k in INTERVALS) and "eval_unit" not in given:
        layer.pop("eval_unit", None)


# ---------------------------------------------------------------------------------------
# Layers 3 and 4: the backbone's kind and the task


def kind_layers(method: str, kind: str, base: bool = False) -> dict[str, tuple[Any, str]]:
    """Layers 3 over 4 for ``method`` on a backbone of ``kind``: option -> (value, source). A
    base model (``backbones.is_base_model``) has ``BASE_MODEL_DEFAULTS`` over the kind's and the
    method's ``recipes["base"]`` over its recipe for the kind."""
    layer = {k: (v, f"kind default {kind}") for k, v in KIND_DEFAULTS[kind].items()}
    if base:
        layer.update({k: (v, f"kind default {kind} {BASE_MODEL}") for k, v in BASE_MODEL_DEFAULTS.items()})
    layer.update({k: (v, f"method recipe {method}/{kind}") for k, v in recipe_for(method, kind).items()})
    if base:
        layer.update({k: (v, f"method recipe {method}/{kind} {BASE_MODEL}") for k, v in recipe_for(method, BASE_MODEL).items()})
    return layer


def style_for(config: TrainConfig, kind: str, base: bool = False) -> str:
    """The template style a run of ``config`` on ``kind`` uses (what ``for_backbone`` sets), for
    building its task before the rest of layers 3-4, which need the task."""
    return config.style or default_style(kind, base, config.method)


def default_style(kind: str, base: bool = False, method: str = "prompt") -> str:
    """The template style of a backbone of ``kind`` (a base model: ``base``) when none is given:
    the one ``for_backbone`` sets, from the same layers (``method``'s recipe included)."""
    return kind_layers(method, kind, base)["style"][0]


def for_backbone(config: TrainConfig, kind: str, *, bos: bool = True, base: bool = False, task: Any = None,
                 classification: bool = True, label_words: Sequence[str] | None = None) -> TrainConfig:
    """``config`` with layers 3-4 for a backbone of ``kind`` filling what is unset. ``bos``:
    whether the backbone names a BOS token (a recipe's ``sink`` needs one); ``base``: whether it
    is a base model (``backbones.is_base_model``). ``task`` (or
    ``classification`` and ``label_words``): the class objective is for classification tasks
    only; a text init without a text starts from the label words."""
    if task is not None:
        classification = task.kind == "classification"
        label_words = None if task.choice_fields else task.label_words  # per-row choices (COPA's): no fixed words
    layer = kind_layers(config.method, kind, base)
    _drop_exclusive(layer, {f for f in FIELDS if getattr(config, f) is not None}, user=False)
    changes: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, (value, source) in layer.items():
        if key == "sink" and value != "none" and not bos:
            continue  # the prompt then comes first, the papers' layout
        unset = getattr(config, key) is None if key in FIELDS else key not in config.method_options
        if unset:
            changes[key], sources[key] = value, source
    if config.dtype == "auto":
        changes["dtype"], sources["dtype"] = _concrete_dtype(config)
    if changes.get("objective") == "class" and not classification:
        changes["objective"], sources["objective"] = "lm", sources["objective"] + " (lm: not a classification task)"
    options = {**config.method_options, **{k: v for k, v in changes.items() if k not in FIELDS}}
    if options.get("init") == "text" and options.get("init_text") is None and "init_text" in method_fields(config.method):
        if label_words:
            changes["init_text"], sources["init_text"] = f"Answer with {' or '.join(label_words)}.", "the task's label words (text init)"
        elif "init" not in config.method_options:
            fallback = init_without_text(config.method)
            changes["init"], sources["init"] = fallback, sources["init"] + f" ({fallback}: the task has no label words)"
    if not changes:
        return config
    record = None if config.sources is None else {**config.sources, **sources}
    return _build({**config.to_dict(), **changes, "sources": record}, "TrainConfig")


def _concrete_dtype(config: TrainConfig) -> tuple[str, str]:
    """``dtype: auto`` as the dtype ``config.model`` loads in, and its source."""
    import torch

    from .backbones import backbone_dtype

    name = backbone_dtype(config.model, "auto")
    given = (config.sources or {}).get("dtype", DEFAULT)
    where = "the checkpoint's own, on a GPU" if torch.cuda.is_available() else "on a CPU"
    return name, f"{given} (auto: {name}, {where})"


def resolved(config: TrainConfig, kind: str, **facts: Any) -> TrainConfig:
    """Every layer for a run of ``config`` on a backbone of ``kind`` (``facts``: ``for_backbone``'s
    keywords): ``from_python`` then ``for_backbone``, as ``train()`` calls them."""
    return for_backbone(from_python(config), kind, **facts)


def per_seed(config: TrainConfig, seed: int, output_dir: str | Path, resume: bool) -> TrainConfig:
    """One run of a multi-seed ``config``: its seed, in its own folder."""
    changes = {"seed": seed, "seeds": None, "output_dir": str(output_dir), "overwrite": False, "resume": resume}
    record = None if config.sources is None else {**config.sources, **{k: "seeds (one run per seed)" for k in changes}}
    return _build({**config.to_dict(), **changes, "sources": record}, "TrainConfig")


# ---------------------------------------------------------------------------------------
# The record and the table


def option_keys(config: TrainConfig) -> list[str]:
    """Every option of ``config`` as ``sources`` names it: the fields, then the method's options
    (``method_options.NAME`` for one named like a field)."""
    keys = [name for name in FIELDS if name not in ("method_options", "sources")]
    return keys + [f"method_options.{n}" if n in FIELDS else n for n in method_fields(config.method)]


def option_value(config: TrainConfig, key: str) -> Any:
    """The value ``config`` runs with for ``key`` (a method option unset: the method's default)."""
    if key in FIELDS:
        return getattr(config, key)
    return getattr(config.prompt_config(), key.removeprefix("method_options."))


def explain(config: TrainConfig) -> str:
    """The table ``option  value  source`` of every option (``softprompt train --explain``)."""
    recorded = config.sources or {}
    rows = [("option", "value", "source")]
    rows += [(key, _shown(option_value(config, key)), recorded.get(key, "-")) for key in option_keys(config)]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{a.ljust(widths[0])}  {b.ljust(widths[1])}  {c}" for a, b, c in rows)


def explain_run(config: TrainConfig) -> str:
    """``explain`` after layers 3-4 for ``config.model``'s kind, read from the model's config
    (no weights) and the task (built, no data loaded)."""
    from .backbones import backbone_facts

    kind, bos, base = backbone_facts(config.model)
    task = config.build_task(style_for(config, kind, base))
    return explain(for_backbone(config, kind, bos=bos, base=base, task=task))


def _recorded(config: TrainConfig, sources: dict[str, str], where: str) -> TrainConfig:
    """``config`` with a source for every option: the layers' where they set it, else default."""
    record = {key: sources.get(key, DEFAULT) for key in option_keys(config)}
    return _build({**config.to_dict(), "sources": record}, where)


def _build(options: dict[str, Any], where: str) -> TrainConfig:
    return TrainConfig.from_dict(options, where=where)


def _saved_sources(output_dir: str) -> dict[str, str] | None:
    """The record in a run's config.json (None: none yet, or a run saved before sources)."""
    saved = Path(output_dir) / "config.json"
    try:
        return json.loads(saved.read_text()).get("sources")
    except (OSError, ValueError, AttributeError):
        return None


def _field_default(name: str) -> Any:
    return TrainConfig.__dataclass_fields__[name].default


def _file_options() -> tuple[str, ...]:
    from .tasks.resolve import FILE_OPTIONS

    return tuple(FILE_OPTIONS)


def _canonical_task(name: Any) -> str | None:
    """A task name as the recipes' per-task tables spell it (None: a task file or custom task)."""
    from .tasks import get_task

    try:
        return get_task(str(name)).name
    except ValueError:
        return None


def _task_label(task: str) -> str:
    """What names the default output folder: the task's name, a task file's stem, or custom; one
    path component whatever the name holds (``filenames.safe_filename``)."""
    from .filenames import safe_filename
    from .tasks.taskfile import is_task_file

    return safe_filename(Path(str(task)).name.split(".")[0] if is_task_file(str(task)) else str(task))


def _shown(value: Any) -> str:
    """A value for the table: text as it is (quoted when empty or holding a newline or tab)."""
    if isinstance(value, str) and value and not any(c in value for c in "\n\t"):
        return value
    return json.dumps(value)
