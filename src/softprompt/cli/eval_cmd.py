"""`softprompt eval PROMPT_DIR`: score a saved prompt on a task split.

    softprompt eval runs/sst2-ulpt/prompt                 # task, model, data from the run's config.json
    softprompt eval my-prompt --task cb --data-dir ../shared/data/superglue --split validation

When PROMPT_DIR sits in a training run (``OUTPUT/prompt``), the run's ``config.json`` supplies
the defaults for every option below; elsewhere (a folder copied out of its run, ``model.save``)
what the prompt's own record says it was trained with (``usage.py``: task, template, label
words, style, chat template...), else ``TrainConfig``'s defaults. Command-line options win, and
one line on stderr says when one overrides.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .common import (DATA_ENV, add_backbone_options, add_task_argument, add_task_options, backbone_options, data_dir,
                     positive_int, prompt_usage, task_argument, task_options)


# what a prompt's usage record sets when the prompt is evaluated outside its run
READING = ("protocol", "style", "chat_template", "separator", "max_length", "truncation_side")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a saved prompt",
        description="Evaluate a saved prompt on a task split (rank classification or greedy generation).")
    parser.add_argument("prompt_dir", metavar="PROMPT_DIR", help="a prompt directory (prompt.safetensors + prompt_config.json)")
    add_task_argument(parser, "; default: the run's")
    parser.add_argument("--model", metavar="NAME|DIR|GGUF", help="backbone (default: the run's, else the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--data-dir", metavar="DIR", help=f"local benchmark folder (default: the run's, ${DATA_ENV}, else the hub)")
    parser.add_argument("--protocol", metavar="NAME", help="paper, attempt, dpt, dept or ulpt (default: the run's, else paper)")
    parser.add_argument("--split", default="validation", metavar="SPLIT", help="train, validation or test (default validation)")
    parser.add_argument("--eval-mode", metavar="MODE", help="rank or generate (default: rank when the task has label words)")
    parser.add_argument("--batch-size", type=positive_int, default=None, metavar="B", help="evaluation batch size (default: the run's)")
    parser.add_argument("--max-examples", type=positive_int, default=None, metavar="N", help="evaluate the first N examples only")
    parser.add_argument("--max-length", type=positive_int, default=None, metavar="T", help="max tokens per example (default: the run's)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None, metavar="N", help="generation length (default: the run's)")
    parser.add_argument("--output", metavar="FILE", help="also write the metrics as JSON here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
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
    from softprompt.usage import choose

    from .outputs import output_file

    prompt_dir = Path(args.prompt_dir)
    _, record = load_prompt_module(prompt_dir)  # fail on a bad prompt directory (a NaN prompt too) before loading anything
    if args.output:  # before the evaluation, not after it; never the run's own files
        output_file(args.output, "--output", args.overwrite, inputs=[prompt_dir])
    given = task_options(args, list(OPTIONS))
    name = task_argument(args.task)
    # How the prompt was trained to be read (its folder's usage record), wherever it was copied
    usage = prompt_usage(record, args.model)
    default_task = usage.get("task") or (CUSTOM if any(k in given for k in FILE_OPTIONS) else None)
    saved, from_run = run_config(prompt_dir, name or default_task, **given)
    if not from_run:  # outside its run: the record says what the run's config.json would
        saved = saved.replace(**{k: usage[k] for k in READING if k in usage})
    if args.eval_mode is not None and args.eval_mode not in MODES:
        raise ValueError(f"--eval-mode must be one of {', '.join(MODES)}; got {args.eval_mode!r}")
    placement = backbone_options(args, saved)  # the run's backbone: the dtype it trained in
    # The run's task as it trained (its template, label words, files), the options given here
    # winning (one line says so); another --task starts from that task's own defaults.
    same_task = not name or name == saved.task
    recorded = {k: getattr(saved, k) for k in OPTIONS} if same_task else {}
    words = None
    if same_task and not from_run:
        recorded["template"] = usage.get("template")
        words = usage.get("label_words")  # resolved words, applied below (a word may hold a comma)
    for key, value in given.items():
        choose("--" + key.replace("_", "-"), value, recorded.get(key), "eval")
    options = {**recorded, **given}
    for key in FILE_OPTIONS:
        if key not in given and options.get(key) and not os.path.exists(options[key]):
            flag = "--" + key.replace("_", "-")
            raise FileNotFoundError(f"{flag} {options[key]}: no such file (the run's config.json names it; the file has moved?); "
                                    f"pass {flag} with its new place")
    protocol = args.protocol or saved.protocol
    task = resolve_task(name or saved.task, style=saved.style, protocol=protocol, **options)
    if words and "label_words" not in given:
        task = task.with_overrides(label_words=words)
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
        max_length=choose("--max-length", args.max_length, saved.max_length, "eval"), max_new_tokens=args.max_new_tokens or saved.max_new_tokens,
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

