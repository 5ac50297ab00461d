"""`softprompt eval PROMPT_DIR`: score a saved prompt on a task split.

    softprompt eval runs/sst2-ulpt/prompt                 # task, model, data from the run's config.json
    softprompt eval my-prompt --task cb --data-dir ../shared/data/superglue --split validation

When PROMPT_DIR sits in a training run (``OUTPUT/prompt``), the run's ``config.json`` supplies
the defaults for every option below, else ``TrainConfig``'s defaults do; command-line options win.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .common import (DATA_ENV, add_backbone_options, add_task_argument, add_task_options, backbone_options, data_dir,
                     positive_int, task_argument, task_options)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a saved prompt",
        description="Evaluate a saved prompt on a task split (rank classification or greedy generation).")
    parser.add_argument("prompt_dir", metavar="PROMPT_DIR", help="a prompt directory (prompt.safetensors + prompt_config.json)")
    add_task_argument(parser, "; default: the run's")
    parser.add_argument("--model", help="backbone (default: the run's, else the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--data-dir", help=f"local benchmark folder (default: the run's, ${DATA_ENV}, else the hub)")
    parser.add_argument("--protocol", help="paper, attempt, dpt, dept or ulpt (default: the run's, else paper)")
    parser.add_argument("--split", default="validation", help="train, validation or test (default validation)")
    parser.add_argument("--eval-mode", help="rank or generate (default: rank when the task has label words)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="evaluation batch size (default: the run's)")
    parser.add_argument("--max-examples", type=positive_int, default=None, help="evaluate the first N examples only")
    parser.add_argument("--max-length", type=positive_int, default=None, help="max tokens per example (default: the run's)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None, help="generation length (default: the run's)")
    parser.add_argument("--output", metavar="FILE", help="also write the metrics as JSON here")
    add_task_options(parser)  # default: the run's
    add_backbone_options(parser, "the run's dtype and quantization")
    parser.set_defaults(func=run)


def run_config(prompt_dir: Path, task: str | None, **task_options):
    """The training run's ``TrainConfig`` next to the prompt, or the defaults for ``task`` (and
    the task options given)."""
    from softprompt.config import TrainConfig
    from softprompt.io import read_json

    unreadable = ""
    for candidate in (prompt_dir.parent / "config.json", prompt_dir / "config.json"):
        if candidate.is_file():
            try:
                return TrainConfig.from_dict(read_json(candidate), where=str(candidate)), True
            except ValueError as err:  # a broken or foreign config.json: the defaults, but say why
                unreadable = f" ({err})"
                break
    if not task:
        raise ValueError(f"{prompt_dir} is not inside a readable training run{unreadable}; give --task")
    return TrainConfig(task=task, **task_options), False


def run(args) -> int:
    import softprompt
    from softprompt.backbones import load_backbone
    from softprompt.evaluate import MODES, default_mode, evaluate
    from softprompt.io import load_prompt_module, write_json_atomically
    from softprompt.tasks import resolve_task
    from softprompt.tasks.resolve import CUSTOM, FILE_OPTIONS, OPTIONS

    prompt_dir = Path(args.prompt_dir)
    load_prompt_module(prompt_dir)  # fail on a bad prompt directory (a NaN prompt too) before loading anything
    if args.output:
        check_writable(Path(args.output))  # before the evaluation, not after it
    given = task_options(args, list(OPTIONS))
    name = task_argument(args.task)
    saved, from_run = run_config(prompt_dir, name or (CUSTOM if any(k in given for k in FILE_OPTIONS) else None), **given)
    if args.eval_mode is not None and args.eval_mode not in MODES:
        raise ValueError(f"--eval-mode must be one of {', '.join(MODES)}; got {args.eval_mode!r}")
    placement = backbone_options(args, saved)  # the run's backbone: the dtype it trained in
    # The run's task as it trained (its template, label words, files), the options given here
    # winning; another --task starts from that task's own defaults.
    same_task = not name or name == saved.task
    options = {**({k: getattr(saved, k) for k in OPTIONS} if same_task else {}), **given}
    protocol = args.protocol or saved.protocol
    task = resolve_task(name or saved.task, style=saved.style, protocol=protocol, **options)
    # --data-dir, else the run's, else the settings' environment layer ($SOFTPROMPT_DATA_DIR)
    examples = task.load(args.split, data_dir=data_dir(args.data_dir or saved.data_dir),
                         protocol=protocol, seed=saved.split_seed)
    if args.max_examples:
        examples = examples[: args.max_examples]

    backbone, tokenizer = load_backbone(args.model or saved.model, **placement)
    model = softprompt.load(backbone, prompt_dir)
    if saved.chat_template:
        from softprompt.batching import apply_chat_template

        examples = apply_chat_template(examples, tokenizer)
    mode = args.eval_mode or (saved.eval_mode if from_run and saved.eval_mode != "auto" else None) or default_mode(task, examples)
    metrics = evaluate(
        model, tokenizer, task, examples, mode=mode, batch_size=args.batch_size or saved.eval_batch_size,
        max_length=args.max_length or saved.max_length, max_new_tokens=args.max_new_tokens or saved.max_new_tokens,
        separator=saved.separator if saved.separator is not None else " ", truncation_side=saved.truncation_side,
    )
    record = {"task": task.name, "split": args.split, "eval_mode": mode, "prompt_dir": str(prompt_dir), **metrics}
    print(json.dumps(record, sort_keys=True))  # first: a failing --output must not lose the metrics
    if args.output:
        try:
            write_json_atomically(args.output, record)
        except OSError as err:
            raise OSError(f"--output {args.output}: cannot write the metrics ({err.strerror or err}); they are printed above") from None
    return 0


def check_writable(path: Path) -> None:
    """A one-line error unless a file can be written at ``path``: not a directory, and the
    nearest existing ancestor a writable directory (the missing ones are created)."""
    if path.is_dir():
        raise IsADirectoryError(f"--output {path} is a directory")
    parent = path.absolute().parent
    while not os.path.lexists(parent):
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"--output {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"--output {path}: {parent} is not writable")
