"""The `softprompt` command.

Each subcommand lives in its own module in this folder and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to the function that runs it. This file lists the
modules and dispatches; ``common.py`` holds what they share.
"""

from __future__ import annotations

import sys

from . import demo_cmd, eval_cmd, export_cmd, inspect_cmd, params_cmd, predict_cmd, preview_cmd, recipes_cmd, serve_cmd, sweep_cmd, tasks_cmd, train_cmd
from .common import CLIError, Parser

# One module per subcommand, in the order `softprompt --help` lists them.
SUBCOMMANDS = (demo_cmd, train_cmd, recipes_cmd, sweep_cmd, eval_cmd, predict_cmd, serve_cmd, inspect_cmd, export_cmd, params_cmd, tasks_cmd, preview_cmd)

__all__ = ["CLIError", "build_parser", "main"]


def build_parser() -> Parser:
    from softprompt import __version__

    parser = Parser(
        prog="softprompt",
        description="Soft prompt tuning (vanilla, Residual, DPT, ULPT, DePT) of frozen Hugging Face models.",
    )
    parser.add_argument("--version", action="version", version=f"softprompt {__version__}")
    # parser_class: every subcommand's bad option is one line too
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in SUBCOMMANDS:
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
    except KeyboardInterrupt as err:  # a command may say how to continue (train: --resume DIR)
        print(f"softprompt {args.command}: {err.args[0] if err.args else 'interrupted'}", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
