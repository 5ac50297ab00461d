"""``TrainConfig``: everything a training run needs, validated on construction, saved as JSON.

    config = TrainConfig(task="sst2", method="ulpt", length=20, rank=2, max_steps=150, lr=0.05,
                         data_dir="../shared/data/glue", output_dir="runs/x")

A field is a command-line option (``max_steps`` <-> ``--max-steps``); its help text lives in the
field's metadata, so the CLI is generated from this file. A ``TrainConfig`` is a plain record:
it validates what it holds and fills nothing in but the fields' plain defaults. Which value an
unset setting takes (a paper recipe, the backbone's kind, ``$SOFTPROMPT_DATA_DIR``...) is decided
once, by ``softprompt.settings``, which also records in ``sources`` where each value came from. The prompt method's own options
(``length``, ``rank``, ``bottleneck``...) are not fields here: they are whatever the chosen
method's config has (``prompts/registry.py``), given as keywords like the fields and kept in
``method_options``. ``config.json`` writes them flat beside the fields, except an option that
shares a field's name (DePT's ``max_length``), which stays under ``method_options``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .placement_options import DTYPES, OPTIONS as LOAD_OPTIONS, check_spelling
from .prompts import PromptConfig, make_config, method_fields, methods
from .recipes import RECIPES
from .tasks.resolve import CUSTOM, FILE_OPTIONS, OPTIONS as TASK_OPTIONS
from .tasks.taskfile import STYLES
from .yamlfile import load_yaml  # noqa: F401 - softprompt.config.load_yaml, as the sweep specs import it
from .tasks.splits import PROTOCOLS

MIXED_PRECISION = ("no", "bf16", "fp16")
EVAL_MODES = ("auto", "rank", "generate")
OBJECTIVES = ("lm", "class")
OPTIMIZERS = ("adamw", "adafactor")
LR_SCHEDULES = ("linear", "constant", "linear-hf")
EVAL_UNITS = ("steps", "epochs")
TRUNCATION_SIDES = ("right", "left")
# Experiment trackers ``report_to`` names (accelerate's tracker names; "all" is every one)
TRACKERS = ("tensorboard", "mlflow", "wandb")

# What a run uses for the settings left unset (None), by backbone kind, below the method's own
# recipe (``PromptConfig.recipes``); ``softprompt.settings`` applies them. Encoder-decoder: the papers' T5 setting, exact.
# Decoder-only: measured on SmolLM2-135M-Instruct (benchmarks/README.md has the sweep).
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "encoder-decoder": {"lr": 0.3, "warmup_steps": 0, "objective": "lm", "style": "text-to-text"},
    "decoder-only": {"lr": 0.03, "warmup_steps": 10, "objective": "class", "style": "instruction"},
}
# What changes for a base (pretrained only) decoder-only model (``backbones.is_base_model``): its
# template style, and each method's ``recipes["base"]``. Measured on Gemma 3 270M (benchmarks/README.md).
BASE_MODEL = "base"
BASE_MODEL_DEFAULTS: dict[str, Any] = {"style": "base"}


# The groups `softprompt train --help` shows the options in, in this order (a field's ``group``).
GROUPS = ("model", "data and task", "method", "optimization", "evaluation and checkpoints", "output and logging")


def _opt(default: Any = None, help: str = "", metavar: str | None = None, cli: bool = True, factory: Any = None,
         group: str = "") -> Any:
    """A field with its command-line help and help group; ``cli=False`` for fields a command
    handles itself."""
    if group not in GROUPS:
        raise ValueError(f"_opt: group must be one of {GROUPS}, got {group!r}")
    metadata = {"help": help, "metavar": metavar, "cli": cli, "group": group}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(init=False)
class TrainConfig:
    """See the module docstring. ``None`` means "the default of that component"."""

    # what to train
    recipe: str | None = _opt(None, f"a paper's setup as defaults ({', '.join(RECIPES)}; see `softprompt recipes`); every other option overrides it", "NAME", group='method')
    task: str = _opt("sst2", "task name (see `softprompt tasks`) or task file (.yaml/.json; `softprompt tasks --show NAME` prints one to start from); default with --train-file: your files", "NAME|FILE", group='data and task')
    model: str | None = _opt(None, "backbone: gemma-3-270m (Gemma 3 270M, from its PyPI package), a hub name, a local directory or a .gguf file (default: the embedded SmolLM2-135M-Instruct)", "NAME|DIR|GGUF", group='model')
    method: str = _opt("ulpt", "prompt method (see `softprompt params --help`)", "METHOD", group='method')
    method_options: dict[str, Any] = _opt(help="the method's own options", cli=False, factory=dict, group='method')
    label_words: str | None = _opt(None, "label words: names, digits, comma-separated words (one per class), or VALUE=WORD pairs naming your files' label values (default: the style's)", "WORDS", group='data and task')
    template: str | None = _opt(None, "the input template over the task's fields, e.g. 'Review: {sentence}\\nSentiment:' (default: the style's)", "TEXT", group='data and task')
    style: str | None = _opt(None, f"task template style: {', '.join(STYLES)} (default: instruction on decoder-only models, base on base models (no chat template), text-to-text, the papers', on encoder-decoder)", "STYLE", group='data and task')
    chat_template: bool = _opt(False, "wrap each input in the tokenizer's chat template (instruction-tuned models)", group='data and task')
    # your own data, no task file needed (tasks/resolve.py)
    train_file: str | None = _opt(None, "training rows: a .jsonl, .json, .csv or .tsv file, optionally .gz, or a folder of them (with no --task: a task over your files; give --template)", "FILE", group='data and task')
    validation_file: str | None = _opt(None, "validation rows (same formats)", "FILE", group='data and task')
    test_file: str | None = _opt(None, "test rows (same formats)", "FILE", group='data and task')
    label_field: str | None = _opt(None, "the field holding the class or number (default: label); label words may name its values: --label-words neg=negative,pos=positive", "FIELD", group='data and task')
    target_field: str | None = _opt(None, "the field holding the answer text: a generation task", "FIELD", group='data and task')
    # data
    data_dir: str | None = _opt(None, "local benchmark folder (default: $SOFTPROMPT_DATA_DIR, else the hub)", "DIR", group='data and task')
    protocol: str = _opt("paper", f"splits and task details: {', '.join(PROTOCOLS)} (paper/attempt: official or ATTEMPT splits with T5's details; dpt: official splits, dept/ulpt: ATTEMPT splits, with that paper's details)", "NAME", group='data and task')
    split_seed: int = _opt(42, "shuffle seed of the attempt protocol", "S", group='data and task')
    shots: int | None = _opt(None, "train on K examples (few-shot)", "K", group='data and task')
    shots_per_class: int | None = _opt(None, "train on K examples per class", "K", group='data and task')
    holdout: int | None = _opt(None, "hold out N training rows to choose the checkpoint on; the official validation split is then only reported", "N", group='data and task')
    max_length: int = _opt(256, "max tokens per example; a longer input loses the end of its passage (or of the text before the template's closing cue), never the target", "T", group='data and task')
    truncation_side: str = _opt("right", "which end of that part is cut: right (all four papers' code) or left", "SIDE", group='data and task')
    separator: str | None = _opt(None, "text between the input and the target (default: a space; none after a chat template)", "TEXT", group='data and task')
    # optimization
    seed: int = _opt(0, "random seed", "S", group='optimization')
    seeds: list[int] | None = _opt(None, "one run per seed into OUTPUT/seed-N; summary.json has mean ± std", "S,S,...", group='optimization')
    max_steps: int | None = _opt(None, "optimizer steps (wins over --epochs)", "N", group='optimization')
    epochs: float | None = _opt(None, "epochs (default 1 when --max-steps is not given)", "E", group='optimization')
    batch_size: int = _opt(16, "examples per micro-batch", "B", group='optimization')
    grad_accum: int = _opt(1, "micro-batches per optimizer step", "K", group='optimization')
    objective: str | None = _opt(None, "training loss: lm (the target text's tokens) or class (cross-entropy over the choices' scores, what rank evaluation compares; classification tasks); default: the recipe", "NAME", group='optimization')
    lr: float | None = _opt(None, "peak learning rate (default: the recipe; 0.3 on encoder-decoder models, as in the papers)", "LR", group='optimization')
    lr_schedule: str = _opt("linear", f"{', '.join(LR_SCHEDULES)}: after warmup, decay linearly to 0, or stay at the peak (Lester et al., Residual PT); linear-hf: transformers' linear schedule exactly (its first warmup step at lr 0: DPT, DePT, ULPT)", "NAME", group='optimization')
    warmup_steps: int | None = _opt(None, "linear warmup steps (default: the recipe)", "N", group='optimization')
    warmup_ratio: float | None = _opt(None, "warmup as a fraction of the run's steps (DPT: 0.1); excludes --warmup-steps", "F", group='optimization')
    optimizer: str = _opt("adamw", f"{' or '.join(OPTIMIZERS)} (Adafactor as Lester et al.'s T5X ran it: decay 0.8, no parameter scaling, lr given)", "NAME", group='optimization')
    adam_eps: float = _opt(1e-8, "AdamW epsilon (torch's 1e-8; DePT and ULPT use transformers.AdamW's 1e-6)", "E", group='optimization')
    weight_decay: float = _opt(1e-5, "weight decay (AdamW's decoupled one; Adafactor's)", "W", group='optimization')
    max_grad_norm: float = _opt(1.0, "gradient clipping norm; 0: no clipping", "X", group='optimization')
    patience: int | None = _opt(None, "early stopping after N evaluations without improvement", "N", group='evaluation and checkpoints')
    # evaluation
    eval_every: int = _opt(100, "evaluate every N steps (or epochs, see --eval-unit)", "N", group='evaluation and checkpoints')
    eval_unit: str = _opt("steps", f"what --eval-every and --checkpoint-every count: {' or '.join(EVAL_UNITS)}", "UNIT", group='evaluation and checkpoints')
    selection_metric: str | None = _opt(None, "the validation metric that chooses the checkpoint (default: the task's first under the protocol)", "NAME", group='evaluation and checkpoints')
    eval_mode: str = _opt("auto", "auto, rank or generate (auto: rank when there are label words)", "MODE", group='evaluation and checkpoints')
    eval_batch_size: int = _opt(32, "evaluation batch size", "B", group='evaluation and checkpoints')
    max_eval_examples: int | None = _opt(None, "cap the validation set at its first N examples", "N", group='evaluation and checkpoints')
    max_test_examples: int | None = _opt(None, "cap the test set at its first N examples", "N", group='evaluation and checkpoints')
    max_new_tokens: int = _opt(16, "generation length in generate mode", "N", group='evaluation and checkpoints')
    zero_shot: bool = _opt(True, "evaluate the backbone without a prompt first", group='evaluation and checkpoints')
    # bookkeeping
    output_dir: str | None = _opt(None, "where the run goes (default: runs/<task>-<method>)", "DIR", group='output and logging')
    overwrite: bool = _opt(False, "replace the run in --output-dir", cli=False, group='output and logging')
    resume: bool = _opt(False, "continue the run in --output-dir from its last checkpoint", cli=False, group='output and logging')
    checkpoint_every: int | None = _opt(None, "checkpoint every N steps or epochs (default: --eval-every)", "N", group='evaluation and checkpoints')
    log_every: int = _opt(10, "log every N steps", "N", group='output and logging')
    mixed_precision: str = _opt("no", f"{', '.join(MIXED_PRECISION)}", "P", group='model')
    gradient_checkpointing: bool = _opt(False, "trade compute for memory", group='model')
    report_to: str | None = _opt(None, f"also send log.jsonl's records and the resolved config to experiment trackers: {', '.join(TRACKERS)} (comma-separated) or all; written under OUTPUT/trackers/ (pip install 'softprompt[trackers]')", "NAMES", group='output and logging')
    # how the backbone's frozen weights load (backbones/placement.py; docs/large-models.md)
    dtype: str = _opt("float32", f"the frozen weights' dtype: {', '.join(DTYPES)} (auto: the checkpoint's own on a GPU, float32 on a CPU); the prompt and its optimizer stay float32", "DTYPE", group='model')
    device_map: str | None = _opt(None, "spread the backbone over devices: auto, balanced or a .json file of module name -> device (0, cuda:1, cpu, disk)", "MAP", group='model')
    max_memory: str | None = _opt(None, "per-device caps with --device-map, e.g. 0=20GiB,cpu=64GiB (what does not fit goes to disk)", "CAPS", group='model')
    quantize: str | None = _opt(None, "4bit (NF4, bf16 compute: QLoRA's) or 8bit backbone through bitsandbytes (a CUDA GPU; pip install 'softprompt[quantize]')", "BITS", group='model')
    fsdp: bool = _opt(False, "shard the frozen backbone's layers across the processes of a distributed launch (FSDP2; docs/distributed.md)", group='model')
    # where each option's value came from (option -> source; softprompt.settings); None: not resolved yet
    sources: dict[str, str] | None = _opt(None, "where each option's value came from", cli=False, group='output and logging')

    def __init__(self, **options: Any) -> None:
        """Keyword options: the fields above plus the chosen method's own options. Nothing is
        resolved here (``softprompt.settings`` does that); the names given are kept in ``given``."""
        self._given = frozenset(k for k, v in options.items() if v is not None and k != "sources")
        own = {f.name: f for f in fields(self)}
        if "task" not in options and any(options.get(name) for name in FILE_OPTIONS):
            options["task"] = CUSTOM  # the task is the user's files
        for name, f in own.items():
            if name in options:
                value = options.pop(name)
            else:
                value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            setattr(self, name, value)
        if not isinstance(self.method_options, dict):
            raise ValueError(f"TrainConfig: method_options must be a mapping, got {self.method_options!r}")
        if self.method not in methods():  # first: the options below are the method's
            raise ValueError(f"TrainConfig: method must be one of {', '.join(methods())}; got {self.method!r}")
        if options:  # the rest must be options of the method
            allowed = method_fields(self.method)
            unknown = sorted(set(options) - set(allowed))
            if unknown:
                raise ValueError(f"TrainConfig: unknown option(s) {', '.join(unknown)}; method {self.method} has {', '.join(allowed)}")
            clash = sorted(set(options) & set(self.method_options))
            if clash:
                raise ValueError(f"TrainConfig: {', '.join(clash)} given both as option and in method_options")
            self.method_options = {**self.method_options, **options}
        self.validate()

    @property
    def given(self) -> frozenset[str]:
        """The options named (not None) when this record was made: what ``softprompt.settings``
        counts as the caller's own when it resolves a record built in Python."""
        return self._given

    def validate(self) -> None:
        def positive(name: str, kind=int, optional: bool = False) -> None:
            value = getattr(self, name)
            if value is None and optional:
                return
            ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int) and 0 < value < math.inf
            if not ok:
                raise ValueError(f"TrainConfig: {name} must be a positive {'finite number' if kind is float else 'integer'}, got {value!r}")

        def choice(name: str, choices: tuple) -> None:
            if getattr(self, name) not in choices:
                raise ValueError(f"TrainConfig: {name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")

        if self.recipe is not None and self.recipe not in RECIPES:
            raise ValueError(f"TrainConfig: recipe must be one of {', '.join(RECIPES)}; got {self.recipe!r}")
        if not isinstance(self.task, str) or not self.task:
            raise ValueError(f"TrainConfig: task must be a task name or file, got {self.task!r}")
        for name in TASK_OPTIONS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"TrainConfig: {name} must be text, got {value!r}")
        if self.label_field is not None and self.target_field is not None:
            raise ValueError("TrainConfig: give label_field (classification, regression) or target_field (generation), not both")
        if self.task == CUSTOM and not any(getattr(self, name) for name in FILE_OPTIONS):
            raise ValueError("TrainConfig: task custom reads your files: give train_file (and validation_file, test_file)")
        choice("method", methods())
        choice("protocol", PROTOCOLS)
        choice("eval_mode", EVAL_MODES)
        for name, choices in (("objective", OBJECTIVES), ("style", STYLES)):
            if getattr(self, name) is not None:
                choice(name, choices)
        choice("mixed_precision", MIXED_PRECISION)
        choice("optimizer", OPTIMIZERS)
        choice("lr_schedule", LR_SCHEDULES)
        choice("eval_unit", EVAL_UNITS)
        choice("truncation_side", TRUNCATION_SIDES)
        try:
            check_spelling(self.dtype, self.device_map, self.max_memory, self.quantize)
        except ValueError as err:
            raise ValueError(f"TrainConfig: {err}") from None
        tracker_names(self.report_to)  # a one-line error for an unknown tracker
        if self.output_dir is not None and (not isinstance(self.output_dir, str) or not self.output_dir):
            raise ValueError(f"TrainConfig: output_dir must be a directory path, got {self.output_dir!r}")
        if self.sources is not None and (not isinstance(self.sources, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.sources.items())):
            raise ValueError("TrainConfig: sources must be a mapping of option: source text")
        if self.selection_metric is not None and (not isinstance(self.selection_metric, str) or not self.selection_metric):
            raise ValueError(f"TrainConfig: selection_metric must be a metric name, got {self.selection_metric!r}")
        for name in ("batch_size", "grad_accum", "eval_every", "eval_batch_size", "log_every", "max_new_tokens"):
            positive(name)
        for name in ("max_steps", "shots", "shots_per_class", "patience", "max_eval_examples", "max_test_examples", "checkpoint_every", "holdout"):
            positive(name, optional=True)
        positive("epochs", float, optional=True)
        positive("lr", float, optional=True)
        positive("adam_eps", float)
        if isinstance(self.max_grad_norm, bool) or not isinstance(self.max_grad_norm, (int, float)) or not 0 <= self.max_grad_norm < math.inf:
            raise ValueError(f"TrainConfig: max_grad_norm must be a non-negative finite number (0: no clipping), got {self.max_grad_norm!r}")
        if self.warmup_ratio is not None:
            if isinstance(self.warmup_ratio, bool) or not isinstance(self.warmup_ratio, (int, float)) or not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"TrainConfig: warmup_ratio must be a number in [0, 1), got {self.warmup_ratio!r}")
            if self.warmup_steps is not None:
                raise ValueError("TrainConfig: give warmup_steps or warmup_ratio, not both")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 2:
            raise ValueError(f"TrainConfig: max_length must be an integer >= 2, got {self.max_length!r}")
        for name in ("warmup_steps", "seed", "split_seed"):
            value = getattr(self, name)
            if value is None and name == "warmup_steps":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig: {name} must be a non-negative integer, got {value!r}")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) or not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"TrainConfig: weight_decay must be a non-negative finite number, got {self.weight_decay!r}")
        if self.shots is not None and self.shots_per_class is not None:
            raise ValueError("TrainConfig: give shots or shots_per_class, not both")
        if self.overwrite and self.resume:
            raise ValueError("TrainConfig: overwrite and resume exclude each other")
        if self.seeds is not None:
            if not isinstance(self.seeds, (list, tuple)) or not self.seeds or any(
                isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds
            ):
                raise ValueError(f"TrainConfig: seeds must be a non-empty list of non-negative integers, got {self.seeds!r}")
            if len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"TrainConfig: seeds must be distinct, got {self.seeds!r}")
            self.seeds = [int(s) for s in self.seeds]
        self.prompt_config()  # the method's own validation (unknown option, bad value), early

    def build_task(self, style: str | None = None):
        """The run's ``Task``: ``task`` (a name or a task file) with the task options
        (template, label words, files, fields) applied; ``style`` for a named task's template,
        ``protocol`` for a named task's paper details."""
        from .tasks import resolve_task

        return resolve_task(self.task, style=style, protocol=self.protocol,
                            **{name: getattr(self, name) for name in TASK_OPTIONS})

    def load_options(self) -> dict[str, Any]:
        """``load_backbone``'s keywords for this run's backbone: dtype, device map, memory caps,
        quantization."""
        return {name: getattr(self, name) for name in LOAD_OPTIONS}

    def prompt_config(self) -> PromptConfig:
        """The method's validated config from ``method_options``."""
        try:
            return make_config(self.method, **self.method_options)
        except ValueError as err:
            raise ValueError(f"TrainConfig: {err}") from None

    def replace(self, **changes: Any) -> "TrainConfig":
        """A validated copy with ``changes`` (fields or method options). The names given stay
        given; in a resolved record the changed options' source becomes "python argument"."""
        data = {**self.to_dict(), **changes}
        if self.sources is not None and "sources" not in changes:
            data["sources"] = {**self.sources, **{key: "python argument" for key in self.option_keys(changes)}}
        new = TrainConfig.from_dict(data)
        new._given = self._given | {k for k, v in changes.items() if v is not None and k != "sources"}
        return new

    def option_keys(self, options: dict[str, Any]) -> list[str]:
        """The ``sources`` keys of ``options`` (flat options, ``method_options`` nested): a
        field's or method option's name, ``method_options.NAME`` for one named like a field."""
        keys = [k for k in options if k not in ("method_options", "sources")]
        return keys + [f"method_options.{k}" for k in options.get("method_options") or {}]

    def to_dict(self) -> dict[str, Any]:
        """Flat: the fields, then the method's options beside them (those named like a field
        stay under ``method_options``)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        nested = {k: v for k, v in self.method_options.items() if k in data}
        data["method_options"] = nested
        data.update({k: v for k, v in self.method_options.items() if k not in nested})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "TrainConfig") -> "TrainConfig":
        """Build from a mapping (a parsed YAML/JSON file, ``-`` or ``_`` in keys); unknown keys
        are an error naming them and ``where``."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping of option: value, got {type(data).__name__}")
        data = {k.replace("-", "_"): v for k, v in data.items()}
        try:
            return cls(**data)
        except ValueError as err:
            raise ValueError(f"{where}: {str(err).removeprefix('TrainConfig: ')}") from None
        except TypeError as err:
            raise ValueError(f"{where}: {err}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_config_file(path), where=str(path))


def tracker_names(report_to: str | None) -> list[str]:
    """The trackers ``report_to`` names, in ``TRACKERS`` order ("all": every one; None: none)."""
    if report_to is None:
        return []
    words = {w.strip() for w in report_to.split(",") if w.strip()} if isinstance(report_to, str) else set()
    if not words or words - {*TRACKERS, "all"}:
        raise ValueError(f"TrainConfig: report_to must be comma-separated names among {', '.join(TRACKERS)} or all; got {report_to!r}")
    return list(TRACKERS) if "all" in words else [t for t in TRACKERS if t in words]


def cli_fields() -> list[dataclasses.Field]:
    """The fields a command line offers as ``--name`` options, in declaration order."""
    return [f for f in fields(TrainConfig) if f.metadata.get("cli", True)]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON config file as a dict; one-line errors naming the file (and line)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: invalid YAML ({getattr(err, 'problem', None) or err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option: value at the top level")
    return data
