"""`softprompt train`: train a prompt from a YAML config file plus command-line overrides.

    softprompt train --task sst2 --method ulpt --length 20 --rank 2 --max-steps 150 --lr 0.05 \\
        --data-dir ../shared/data/glue --output-dir runs/sst2-ulpt
    softprompt train --config run.yaml --seeds 1,2,3
    softprompt train --resume runs/sst2-ulpt        # after a crash: continues bit-identically

Every option is a field of ``softprompt.train.TrainConfig`` (``--max-steps`` <-> ``max_steps``);
the config is validated in full before anything is loaded or written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DATA_ENV = "SOFTPROMPT_DATA_DIR"

# (field, type, metavar, help). Types are applied by the config's own validation where
# argparse cannot give a one-line message; choices are checked there too.
OPTIONS: list[tuple[str, Any, str, str]] = [
    ("model", str, "NAME|DIR|GGUF", "backbone: hub name, local directory or .gguf file (default: embedded SmolLM2-135M-Instruct)"),
    ("task", str, "TASK", "task name (see `softprompt tasks`; default sst2)"),
    ("label_words", str, "WORDS", "label words: names, digits, or comma-separated words"),
    ("method", str, "METHOD", "prompt, residual, dpt, ulpt, dept or rank_probe (default ulpt)"),
    ("length", int, "N", "prompt length"),
    ("bottleneck", int, "N", "bottleneck size (residual, dpt)"),
    ("rank", int, "R", "rank (ulpt, dept)"),
    ("init", str, "INIT", "initialization (prompt/residual: vocab|text|normal; dpt: uniform|normal)"),
    ("data_dir", str, "DIR", f"local benchmark folder (default: ${DATA_ENV}, else the hub)"),
    ("protocol", str, "NAME", "split protocol: paper or attempt (default paper)"),
    ("shots", int, "K", "train on K examples (few-shot)"),
    ("shots_per_class", int, "K", "train on K examples per class"),
    ("seed", int, "S", "random seed (default 0)"),
    ("max_steps", int, "N", "optimizer steps (wins over --epochs)"),
    ("epochs", float, "E", "epochs (default 1 when --max-steps is not given)"),
    ("batch_size", int, "B", "examples per micro-batch (default 16)"),
    ("grad_accum", int, "K", "micro-batches per optimizer step (default 1)"),
    ("lr", float, "LR", "peak learning rate (default 0.3, as in the papers)"),
    ("warmup_steps", int, "N", "linear warmup steps (default 0)"),
    ("weight_decay", float, "W", "AdamW weight decay (default 1e-5)"),
    ("max_grad_norm", float, "X", "gradient clipping norm (default 1.0)"),
    ("patience", int, "N", "early stopping after N evaluations without improvement"),
    ("eval_every", int, "N", "evaluate every N steps (default 100)"),
    ("eval_mode", str, "MODE", "auto, rank or generate (default auto: rank when there are label words)"),
    ("eval_batch_size", int, "B", "evaluation batch size (default 32)"),
    ("max_eval_examples", int, "N", "cap the validation set at its first N examples"),
    ("max_test_examples", int, "N", "cap the test set at its first N examples"),
    ("max_length", int, "T", "max tokens per example; longer inputs are cut from the left (default 256)"),
    ("max_new_tokens", int, "N", "generation length in generate mode (default 16)"),
    ("checkpoint_every", int, "N", "checkpoint every N steps (default: --eval-every)"),
    ("log_every", int, "N", "log every N steps (default 10)"),
    ("mixed_precision", str, "P", "no, bf16 or fp16 (default no)"),
    ("output_dir", str, "DIR", "where the run goes (default runs/<task>-<method>)"),
]


def one_line_errors(parser: argparse.ArgumentParser, command: str) -> None:
    """Bad option values give one line (not the usage block) and exit code 2."""

    def error(message: str):
        print(f"softprompt {command}: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    parser.error = error


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a soft prompt",
        description="Train a soft prompt on a frozen model. Options override the --config file; "
                    "see softprompt.train.TrainConfig for every field.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    one_line_errors(parser, "train")
    parser.add_argument("--config", metavar="FILE", help="YAML (or JSON) file of options")
    for name, kind, metavar, help_text in OPTIONS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, metavar=metavar, default=None, help=help_text)
    parser.add_argument("--seeds", metavar="S,S,...", help="one run per seed into OUTPUT/seed-N; summary.json has mean ± std")
    parser.add_argument("--method-option", metavar="KEY=VALUE", action="append", default=[],
                        help="another method option, e.g. projection=normal or alpha=8 (repeatable)")
    parser.add_argument("--zero-shot", action=argparse.BooleanOptionalAction, default=None,
                        help="evaluate the backbone without a prompt first (default on)")
    parser.add_argument("--gradient-checkpointing", action="store_true", default=None, help="trade compute for memory")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --output-dir")
    parser.add_argument("--resume", metavar="OUTPUT", help="continue the run in OUTPUT from its last checkpoint")
    parser.set_defaults(func=run)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise ValueError("--seeds is empty")
    return seeds


def _method_options(pairs: list[str]) -> dict[str, Any]:
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--method-option must look like KEY=VALUE, got {pair!r}")
        options[key.strip()] = yaml.safe_load(value)  # "8" -> 8, "normal" -> "normal"
    return options


def build_config(args):
    """The resolved ``TrainConfig`` from --resume / --config / overrides (validated, nothing written)."""
    from softprompt.train import TrainConfig, read_config_file

    overrides = {name: getattr(args, name) for name, *_ in OPTIONS if getattr(args, name) is not None}
    for name in ("zero_shot", "gradient_checkpointing"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.seeds is not None:
        overrides["seeds"] = _seeds(args.seeds)
    if args.method_option:
        overrides["method_options"] = _method_options(args.method_option)

    if args.resume:
        saved = Path(args.resume) / "config.json"
        if not saved.is_file():
            raise FileNotFoundError(f"{args.resume}: nothing to resume (no config.json)")
        if args.config or args.overwrite:
            raise ValueError("--resume takes the run's own config; drop --config/--overwrite")
        data = {**json.loads(saved.read_text()), **overrides, "output_dir": str(args.resume), "resume": True, "overwrite": False}
        return TrainConfig.from_dict(data, where=str(saved))

    data = read_config_file(args.config) if args.config else {}
    data = {k.replace("-", "_"): v for k, v in data.items()}
    data.update(overrides)
    if args.overwrite:
        data["overwrite"] = True
    if data.get("data_dir") is None and os.environ.get(DATA_ENV):
        data["data_dir"] = os.environ[DATA_ENV]
    if data.get("output_dir") is None:
        data["output_dir"] = str(Path("runs") / f"{data.get('task', 'sst2')}-{data.get('method', 'ulpt')}")
    return TrainConfig.from_dict(data, where=args.config or "options")


def run(args) -> int:
    from softprompt.cli import CLIError
    from softprompt.train import TrainingDiverged, check_output_dir, train

    config = build_config(args)
    check_output_dir(config)  # refuse another run's directory before the slow model load
    try:
        metrics = train(config)
    except TrainingDiverged as err:
        raise CLIError(str(err)) from None
    print(format_metrics(metrics, config.output_dir))
    return 0


def _fmt(section: dict | None) -> str:
    if not section:
        return "-"
    parts = []
    for name, value in section.items():
        if name in ("invalid", "n"):
            continue
        if isinstance(value, dict):  # summary: mean ± std
            parts.append(f"{name} {value['mean']:.4f} ± {value['std']:.4f}")
        else:
            parts.append(f"{name} {value:.4f}")
    return ", ".join(parts)


def format_metrics(metrics: dict, output_dir: str) -> str:
    lines = [
        f"zero-shot:       {_fmt(metrics.get('zero_shot'))}",
        f"best validation: {_fmt(metrics.get('best_validation'))}",
        f"test:            {_fmt(metrics.get('test'))}",
        f"trainable parameters: {metrics.get('trainable_parameters')}, wall time {metrics.get('wall_seconds', 0):.1f} s",
        f"wrote {output_dir}",
    ]
    return "\n".join(lines)
