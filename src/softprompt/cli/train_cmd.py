"""`softprompt train`: train a prompt from a YAML config file plus command-line overrides.

    softprompt train --task sst2 --method ulpt --length 20 --rank 2 --max-steps 150 --lr 0.05 \\
        --data-dir ../shared/data/glue --output-dir runs/sst2-ulpt
    softprompt train --config run.yaml --seeds 1,2,3
    softprompt train --recipe dpt-paper --model t5-base --task cb   # the DPT paper's run (softprompt recipes)
    softprompt train --resume runs/sst2-ulpt        # after a crash: continues bit-identically
    softprompt train --recipe dpt-paper --task cb --explain   # each option's value and where it came from

The options are generated: one per field of ``softprompt.config.TrainConfig`` and one per
option of the registered methods; ``softprompt.settings`` resolves them with the --config file
and the recipes (its docstring has the order), validated in full before anything is loaded.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..config import load_yaml
from .common import CLIError, absolute, add_config_options, add_method_options, given, task_argument, unescape


def register(subparsers) -> None:
    import argparse

    parser = subparsers.add_parser(
        "train", help="train a soft prompt",
        description="Train a soft prompt on a frozen model. Options override the --config file, which "
                    "overrides a --recipe (a paper's setup, see `softprompt recipes`); "
                    "the method's own options (--length, --rank, ...) are listed after the run's.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="YAML (or JSON) file of options")
    fields = add_config_options(parser)
    method = parser.add_argument_group("method options (each applies to the methods named in its help)")
    options = add_method_options(method, skip=set(fields))
    method.add_argument("--method-option", metavar="KEY=VALUE", action="append", default=[],
                        help="any method option, e.g. projection=normal or alpha=8 (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --output-dir")
    parser.add_argument("--resume", metavar="OUTPUT", help="continue the run in OUTPUT from its last checkpoint")
    parser.add_argument("--explain", action="store_true",
                        help="print every option's value and where it came from (option, value, source), then exit: "
                             "nothing is trained or written")
    parser.set_defaults(func=run, option_names=fields + options)


def _method_option_pairs(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--method-option must look like KEY=VALUE, got {pair!r}")
        options[key.strip()] = load_yaml(value)  # "8" -> 8, "1e-3" -> 0.001, "normal" -> "normal"
    return options


def build_config(args):
    """The ``TrainConfig`` of --resume / --config / the command line, resolved by
    ``softprompt.settings`` (validated, nothing written); the settings that depend on the
    backbone's kind are left to ``train()``."""
    from softprompt.config import TrainConfig, read_config_file
    from softprompt.settings import COMMAND_LINE, resolve, resume

    overrides = _with_absolute_paths(given(args, args.option_names))
    if "template" in overrides:
        overrides["template"] = unescape(overrides["template"])
    for key, value in _method_option_pairs(args.method_option).items():
        if key in TrainConfig.__dataclass_fields__:  # a method option named like a run field (DePT's max_length)
            overrides.setdefault("method_options", {})[key] = value
        else:
            overrides[key] = value
    explain = getattr(args, "explain", False)

    if args.resume:
        if args.config or args.overwrite:
            raise ValueError("--resume takes the run's own config; drop --config/--overwrite")
        return resume(args.resume, [(COMMAND_LINE, overrides)], keep_record=not explain)

    layers = []
    if args.config:
        data = read_config_file(args.config)
        layers.append((f"config file {args.config}", _with_absolute_paths({k.replace("-", "_"): v for k, v in data.items()})))
    if args.overwrite:
        overrides["overwrite"] = True
    layers.append((COMMAND_LINE, overrides))
    return resolve(layers, where=args.config or "options")


def _with_absolute_paths(data: dict[str, Any]) -> dict[str, Any]:
    """Task files and data files as absolute paths, so config.json serves --resume and eval
    from any folder."""
    from softprompt.tasks.resolve import FILE_OPTIONS

    out = {k: absolute(v, "--" + k.replace("_", "-")) if k in FILE_OPTIONS and isinstance(v, str) else v for k, v in data.items()}
    if isinstance(out.get("task"), str):
        out["task"] = task_argument(out["task"])
    return out


def run(args) -> int:
    from softprompt.distributed import is_main
    from softprompt.train import TrainingDiverged, train

    config = build_config(args)
    if getattr(args, "explain", False):
        from softprompt.settings import explain_run

        print(explain_run(config))
        return 0
    try:
        with _sigterm_as_interrupt():
            metrics = train(config)
    except TrainingDiverged as err:
        raise CLIError(str(err)) from None
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP: every write is atomic, so the run resumes cleanly
        resumable = (Path(config.output_dir) / "config.json").is_file()
        hint = f"; continue with: softprompt train --resume {config.output_dir}" if resumable else ""
        raise KeyboardInterrupt(f"interrupted{hint}") from None
    if is_main():  # the other processes of a distributed launch hold the same metrics
        print(format_metrics(metrics, config.output_dir))
    return 0


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler's stop) and SIGHUP (the terminal or ssh session closed) raise
    KeyboardInterrupt, as Ctrl-C does: the run stops cleanly and says how to resume."""
    import signal

    from softprompt.signals import handling

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    with handling((signal.SIGTERM, signal.SIGHUP), interrupt):
        yield


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
