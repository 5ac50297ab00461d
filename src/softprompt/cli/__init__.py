"""The `softprompt` command.

Each subcommand lives in its own module in this folder and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to the function
that runs it. This file only lists the modules and dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# One module per subcommand, in the order `softprompt --help` lists them.
SUBCOMMANDS = [
    "demo",
    "train",
    "eval",
    "predict",
    "inspect",
    "export",
    "params",
    "tasks",
    "preview",
]


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    from softprompt import __version__

    parser = argparse.ArgumentParser(
        prog="softprompt",
        description="Soft prompt tuning (vanilla, Residual, DPT, ULPT, DePT) of frozen Hugging Face models.",
    )
    parser.add_argument("--version", action="version", version=f"softprompt {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"softprompt.cli.{name}_cmd")
        except ModuleNotFoundError as err:
            # A subcommand still being written must not break the others.
            if err.name == f"softprompt.cli.{name}_cmd":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except (CLIError, ValueError, OSError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"softprompt {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"softprompt {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
