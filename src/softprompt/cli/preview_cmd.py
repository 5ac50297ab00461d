"""`softprompt preview TASK`: the first examples exactly as the model sees them.

The template style follows the backbone as in `softprompt train`: instruction-style on a
decoder-only model (the default, the embedded SmolLM2), text-to-text on an encoder-decoder one;
`--style`, `--template` and `--label-words` override it. The task is a name, a task file, or your
own files (`--train-file`, `--validation-file`, `--test-file` with `--template`). With `--tokens` (or `--chat-template`,
which needs the tokenizer) the model's tokenizer is loaded: each row then shows its token
counts, and the last lines say how many rows of the split exceed `--max-length`.
"""

from __future__ import annotations

from .common import add_task_argument, add_task_options, data_dir, positive_int, task_argument, task_options

ARROW = " → "


def register(subparsers) -> None:
    from softprompt.config import STYLES
    from softprompt.tasks import PROTOCOLS

    parser = subparsers.add_parser(
        "preview", help="print a task's first examples as the model sees them",
        description="Print the first examples of a split as 'input text → target' and, as the "
                    "last line, 'N examples' for that split.")
    parser.add_argument("task", nargs="?", metavar="TASK", help="task name (see `softprompt tasks`), e.g. cb, sst2, or a task "
                                                             "file (.yaml/.json); none with --train-file etc.: your files")
    add_task_argument(parser, "; the same as TASK", dest="task_option")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="folder holding the benchmark's task folders (BoolQ/, CB/, ... or "
                             "SST-2/, MRPC/, ...) or their parent; default: $SOFTPROMPT_DATA_DIR, else the hub via `datasets`")
    parser.add_argument("--split", default="validation",
                        help="train | validation | test (default: validation)")
    parser.add_argument("--n", type=positive_int, default=3, metavar="N", help="how many examples to print (default 3)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="paper",
                        help="paper: official splits; attempt: DePT/ULPT's re-split; dpt, dept, ulpt: a paper's splits and task details (default paper)")
    parser.add_argument("--seed", type=int, default=42, metavar="S",
                        help="shuffle seed of the attempt protocol (default 42)")
    parser.add_argument("--style", choices=STYLES, default=None,
                        help="template style (default: by the backbone's kind, as train picks it)")
    parser.add_argument("--model", default=None, metavar="NAME|DIR|GGUF", help="the backbone whose kind picks the style and whose tokenizer counts tokens "
                                                      "(default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--chat-template", action="store_true", help="wrap each input in the tokenizer's chat template")
    parser.add_argument("--tokens", action="store_true", help="load the tokenizer: token counts per row and rows over --max-length")
    parser.add_argument("--max-length", type=positive_int, default=256, metavar="T", help="for --tokens (default 256)")
    add_task_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from softprompt.backbones import backbone_facts
    from softprompt.settings import default_style
    from softprompt.tasks import resolve_task
    from softprompt.tasks.resolve import OPTIONS

    if args.n < 0:
        raise ValueError(f"--n must be >= 0, got {args.n}")
    facts = backbone_facts(args.model)
    kind = facts.kind
    style = args.style or default_style(kind, facts.base)
    if args.task and args.task_option and args.task != args.task_option:
        raise ValueError(f"two tasks: {args.task} and --task {args.task_option}")
    task = resolve_task(task_argument(args.task or args.task_option), style=style, protocol=args.protocol,
                        **task_options(args, list(OPTIONS)))
    examples = task.load(split=args.split, data_dir=data_dir(args.data_dir), protocol=args.protocol, seed=args.seed)
    tokenizer = None
    if args.tokens or args.chat_template:
        from softprompt.backbones import load_backbone

        _, tokenizer = load_backbone(args.model)
    if args.chat_template:
        from softprompt.batching import apply_chat_template

        examples = apply_chat_template(examples, tokenizer)
    separator = "" if args.chat_template else " "
    counts = _token_counts(examples, tokenizer, kind, args.max_length, separator) if tokenizer is not None else None
    for i, example in enumerate(examples[: args.n]):
        line = f"{example.input_text}{ARROW}{example.target_text}"
        if counts is not None:
            line += f"    [{counts[0][i]} input + {counts[1][i]} target tokens]"
        print(line)
    if counts is not None:
        over = sum(c[2] for c in zip(*counts))
        print(f"{over} of {len(examples)} rows exceed --max-length {args.max_length} (their input is cut)")
    print(f"{len(examples)} examples")
    return 0


def _token_counts(examples, tokenizer, kind, max_length, separator):
    """Per example: input tokens, target tokens (with EOS) and whether the row is cut."""
    from softprompt.batching import encode_pairs

    rows = encode_pairs([e.input_text for e in examples], [e.target_text for e in examples], tokenizer, kind, 10**9, separator)
    targets = [int((r.labels != -100).sum()) if len(r.labels) == len(r.input_ids) else len(r.labels) for r in rows]
    inputs = [len(r.input_ids) - (t if len(r.labels) == len(r.input_ids) else 0) for r, t in zip(rows, targets)]
    return inputs, targets, [len(r) > max_length for r in rows]

