"""What every subcommand shares: one-line errors, option types, the data-dir default, and the
options generated from ``TrainConfig`` and from the registered methods' configs."""

from __future__ import annotations

import argparse
import difflib
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

from softprompt.settings import DATA_ENV  # noqa: F401 - the commands' help texts name it


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


class WrappingFormatter(argparse.RawDescriptionHelpFormatter):
    """A description's own line breaks kept, an indented line (a spec format, an example) as it
    is, each other line longer than the terminal wrapped, as the options' help is."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(indent + line if line[:1].isspace() or not line else textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
                         for line in text.splitlines())


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (not the usage block), exit code 2, named by
    the subcommand they belong to (``softprompt train: error: ...``), with "did you mean" for a
    mistyped option. Options are never abbreviated: ``--embed`` is not ``--embed-dim``, so a
    typo is an error, not another option."""

    def __init__(self, *args: typing.Any, **kwargs: typing.Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        if kwargs.get("formatter_class") is argparse.RawDescriptionHelpFormatter:
            kwargs["formatter_class"] = WrappingFormatter  # its line breaks kept, its long lines wrapped
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:  # argparse reports a subcommand's leftovers from the top parser: name the subcommand
            owner = self._subcommand_parser(parsed) or self
            owner.error(owner.unrecognized(extra))
        return parsed

    def _subcommand_parser(self, parsed: argparse.Namespace) -> "Parser | None":
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(getattr(parsed, action.dest, None) or "")
        return None

    def unrecognized(self, extra: list[str]) -> str:
        """``unrecognized arguments: --lenght 20 (did you mean --length?)``."""
        known = [flag for flag in self._option_string_actions if flag.startswith("--")]
        hints = []
        for word in extra:
            flag = word.split("=", 1)[0]
            if flag.startswith("--"):
                hints += [f"{flag} -> {m[0]}" for m in [difflib.get_close_matches(flag, known, n=1, cutoff=0.7)] if m]
        if len(hints) == 1:
            hint = f" (did you mean {hints[0].split(' -> ')[1]}?)"
        else:
            hint = f" (did you mean: {', '.join(hints)}?)" if hints else ""
        return f"unrecognized arguments: {' '.join(extra)}{hint}"

    def error(self, message: str) -> typing.NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def int_list(text: str, flag: str) -> list[int]:
    """Comma-separated integers (``--seeds 1,2,3``); a one-line error naming ``flag``."""
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag} is empty")
    return values


def unescape(text: str | None) -> str | None:
    """``\\n`` and ``\\t`` typed on a command line (a template) become a newline and a tab."""
    return None if text is None else text.replace("\\n", "\n").replace("\\t", "\t")


def data_dir(given: str | None) -> str | None:
    """``--data-dir``, else ``$SOFTPROMPT_DATA_DIR``, else None (the hub): the settings
    resolver's environment layer (``softprompt.settings.data_dir``)."""
    from softprompt.settings import data_dir as environment_default

    return environment_default(given)


def _scalar_type(annotation: Any) -> Any:
    """``int`` for ``int | None`` and so on: the type argparse converts with."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else str
    return annotation if annotation in (int, float, str, bool) else str


def add_config_options(parser: argparse.ArgumentParser) -> list[str]:
    """``--name`` for every command-line field of ``TrainConfig``, in the help groups its fields
    name (``config.GROUPS``: model, data and task, ...); returns their names."""
    from softprompt.config import GROUPS, cli_fields

    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    names = []
    for f in sorted(cli_fields(), key=lambda f: GROUPS.index(f.metadata["group"])):  # stable: declaration order within a group
        _add_field_option(groups[f.metadata["group"]], f)
        names.append(f.name)
    return names


def add_task_options(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> list[str]:
    """The task options (``--template``, ``--label-words``, ``--train-file``, ...) for a command
    that is not ``train``, defined by the same ``TrainConfig`` fields as train's; returns their
    names. ``names``: a subset of ``softprompt.tasks.resolve.OPTIONS`` (default all)."""
    from softprompt.config import cli_fields
    from softprompt.tasks.resolve import OPTIONS

    wanted = names or OPTIONS
    group = parser.add_argument_group("task options (your own data, another template or label words)")
    for f in cli_fields():
        if f.name in wanted:
            _add_field_option(group, f)
    return list(wanted)


def add_task_argument(parser: argparse.ArgumentParser, note: str = "", dest: str = "task") -> None:
    """``--task NAME|FILE`` for a command that is not ``train``, with train's help (``note``
    appended)."""
    from softprompt.config import cli_fields

    f = next(f for f in cli_fields() if f.name == "task")
    parser.add_argument("--task", dest=dest, metavar=f.metadata["metavar"], default=None,
                        help=f.metadata["help"] + note)


def add_backbone_options(parser: argparse.ArgumentParser, default: str = "train's") -> None:
    """``--dtype``, ``--device-map``, ``--max-memory``, ``--quantize`` for a command that loads a
    backbone and is not ``train``, defined by the same ``TrainConfig`` fields as train's."""
    from softprompt.config import cli_fields
    from softprompt.placement_options import OPTIONS

    group = parser.add_argument_group(f"how the backbone loads (default: {default}; docs/large-models.md)")
    for f in cli_fields():
        if f.name in OPTIONS:
            _add_field_option(group, f)


def backbone_options(args: argparse.Namespace, run: Any = None) -> dict[str, Any]:
    """``load_backbone``'s keywords from ``add_backbone_options``: each option given, else the
    run's dtype and quantization (``run``, a ``TrainConfig``: the backbone it trained on; its
    device map was another machine's), else train's defaults. Checked, one line naming the option."""
    from softprompt.config import TrainConfig
    from softprompt.placement_options import OPTIONS, check_spelling

    defaults = TrainConfig.__dataclass_fields__
    options = {name: getattr(args, name, None) for name in OPTIONS}
    for name in ("dtype", "quantize"):
        if options[name] is None:
            options[name] = getattr(run, name) if run is not None else defaults[name].default
    check_spelling(**options)
    return options


def task_options(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The task options among ``names`` the user gave: a template's ``\\n`` unescaped, file
    paths made absolute (a run's config.json then works from any folder)."""
    from softprompt.tasks.resolve import FILE_OPTIONS

    options = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if "template" in options:
        options["template"] = unescape(options["template"])
    return {k: absolute(v, "--" + k.replace("_", "-")) if k in FILE_OPTIONS else v for k, v in options.items()}


def absolute(path: str, what: str = "path") -> str:
    """A path made absolute (``~`` expanded), for what a run records."""
    from softprompt.paths import real_path

    return str(real_path(path, what))


def task_argument(name: str | None) -> str | None:
    """``--task``: a task file's path made absolute, a task name as it is."""
    from softprompt.tasks.taskfile import is_task_file

    return absolute(name, "--task") if name and is_task_file(name) else name


def _add_field_option(parser: Any, f: Any) -> None:
    """One ``--name`` option from a ``TrainConfig`` field: its type, metavar and help."""
    from softprompt.config import TrainConfig

    kind = _scalar_type(typing.get_type_hints(TrainConfig)[f.name])
    flag = "--" + f.name.replace("_", "-")
    shown = f.default not in (None, "", [], {}) and "default" not in f.metadata.get("help", "")
    default = f" (default {f.default})" if shown else ""
    help_text = f.metadata.get("help", "") + default
    if kind is bool:
        parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    else:
        parser.add_argument(flag, dest=f.name, type=kind, metavar=f.metadata.get("metavar"), default=None, help=help_text)


def add_method_options(parser: argparse.ArgumentParser, skip: set[str] = frozenset()) -> list[str]:
    """``--name`` for every option of any registered method (from the registry's config
    fields and their help), except names in ``skip``; returns their names."""
    from softprompt.prompts import method_options

    names = []
    for name, entry in method_options().items():
        if name in skip:
            continue
        by_help: dict[str, list[str]] = {}
        for method, text in entry["help"].items():
            by_help.setdefault(text, []).append(method)
        help_text = "; ".join(f"{', '.join(ms)}: {text}" for text, ms in by_help.items())
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=_scalar_type(entry["type"]),
                            metavar=entry["metavar"], default=None, help=help_text)
        names.append(name)
    return names


def given(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The options among ``names`` the user gave (not None); list fields (``--seeds 1,2``)
    parsed from their comma-separated text."""
    from softprompt.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    options = {}
    for name in names:
        value = getattr(args, name)
        if value is None:
            continue
        if name in hints and "list" in str(hints[name]):
            value = int_list(value, "--" + name.replace("_", "-"))
        options[name] = value
    return options


def prompt_usage(record: dict, model: str | None = None) -> dict:
    """How a prompt folder says it is read (``usage``, written by ``softprompt train``); for a
    folder that records nothing (``model.save``, an import, a folder from before records), the
    template style ``train`` would pick on the backbone it is read with (``model``, else the one
    it was trained on): its kind's, and a base model's where that backbone's tokenizer files
    say it is one (``backbones.backbone_facts``), never the T5 one by accident."""
    from softprompt.backbones import backbone_facts
    from softprompt.backbones.facts import KINDS
    from softprompt.settings import default_style

    if record.get("usage"):
        return record["usage"]
    backbone = record.get("backbone") or {}
    kind, spec = backbone.get("kind"), model or backbone.get("name")
    if kind not in KINDS:
        return {}
    try:  # a peek at the tokenizer's files; a backbone that cannot be found here is not a base model
        facts = backbone_facts(spec) if spec is not None else None
    except (OSError, ValueError):
        facts = None
    base = facts is not None and facts.kind == kind and facts.base  # a base model is one of the record's kind
    return {"style": default_style(kind, base)}
