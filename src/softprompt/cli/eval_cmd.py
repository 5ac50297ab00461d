"""`softprompt eval PROMPT_DIR`: score a saved prompt on a task split.

    softprompt eval runs/sst2-ulpt/prompt                 # task, model, data from the run's config.json
    softprompt eval my-prompt --task cb --data-dir ../shared/data/superglue --split validation

When PROMPT_DIR sits in a training run (``OUTPUT/prompt``), the run's ``config.json`` supplies
the defaults for every option below; command-line options win.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from softprompt.cli.train_cmd import DATA_ENV, one_line_errors


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a saved prompt",
        description="Evaluate a saved prompt on a task split (rank classification or greedy generation).")
    one_line_errors(parser, "eval")
    parser.add_argument("prompt_dir", metavar="PROMPT_DIR", help="a prompt directory (prompt.safetensors + prompt_config.json)")
    parser.add_argument("--task", help="task name (default: the run's)")
    parser.add_argument("--label-words", help="label words: names, digits, or comma-separated words (default: the run's)")
    parser.add_argument("--model", help="backbone (default: the run's, else the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--data-dir", help=f"local benchmark folder (default: the run's, ${DATA_ENV}, else the hub)")
    parser.add_argument("--protocol", help="paper or attempt (default: the run's, else paper)")
    parser.add_argument("--split", default="validation", help="train, validation or test (default validation)")
    parser.add_argument("--eval-mode", help="rank or generate (default: rank when the task has label words)")
    parser.add_argument("--batch-size", type=int, default=None, help="evaluation batch size (default 32)")
    parser.add_argument("--max-examples", type=int, default=None, help="evaluate the first N examples only")
    parser.add_argument("--max-length", type=int, default=None, help="max tokens per example (default: the run's, else 256)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="generation length (default 16)")
    parser.add_argument("--output", metavar="FILE", help="also write the metrics as JSON here")
    parser.set_defaults(func=run)


def _run_config(prompt_dir: Path) -> dict:
    """The training run's config.json next to the prompt, if there is one."""
    for candidate in (prompt_dir.parent / "config.json", prompt_dir / "config.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except json.JSONDecodeError:
                return {}
    return {}


def run(args) -> int:
    import softprompt
    from softprompt.evaluate import MODES, default_mode, evaluate
    from softprompt.io import read_record, write_json_atomically
    from softprompt.loading import load_backbone
    from softprompt.tasks import get_task

    prompt_dir = Path(args.prompt_dir)
    read_record(prompt_dir)  # fail on a non-prompt directory before loading anything
    saved = _run_config(prompt_dir)
    task_name = args.task or saved.get("task")
    if not task_name:
        raise ValueError(f"{prompt_dir} is not inside a training run; give --task")
    if args.eval_mode is not None and args.eval_mode not in MODES:
        raise ValueError(f"--eval-mode must be one of {', '.join(MODES)}; got {args.eval_mode!r}")
    for name in ("batch_size", "max_examples", "max_length", "max_new_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    label_words = args.label_words or (saved.get("label_words") if not args.task or args.task == saved.get("task") else None)
    task = get_task(task_name, label_words=label_words)
    data_dir = args.data_dir or saved.get("data_dir") or os.environ.get(DATA_ENV) or None
    protocol = args.protocol or saved.get("protocol") or "paper"
    examples = task.load(args.split, data_dir=data_dir, protocol=protocol, seed=saved.get("split_seed", 42))
    if args.max_examples:
        examples = examples[: args.max_examples]

    backbone, tokenizer = load_backbone(args.model or saved.get("model"))
    model = softprompt.load(backbone, prompt_dir)
    mode = args.eval_mode or (saved.get("eval_mode") if saved.get("eval_mode") not in (None, "auto") else None) or default_mode(task, examples)
    metrics = evaluate(
        model, tokenizer, task, examples, mode=mode, batch_size=args.batch_size or saved.get("eval_batch_size", 32),
        max_length=args.max_length or saved.get("max_length", 256), max_new_tokens=args.max_new_tokens or saved.get("max_new_tokens", 16),
        separator=saved.get("separator", " "),
    )
    record = {"task": task.name, "split": args.split, "eval_mode": mode, "prompt_dir": str(prompt_dir), **metrics}
    if args.output:
        write_json_atomically(args.output, record)
    print(json.dumps(record, sort_keys=True))
    return 0
