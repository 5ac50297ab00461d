"""`softprompt preview TASK`: the first examples exactly as the model sees them."""

from __future__ import annotations

from .common import data_dir

ARROW = " → "


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "preview", help="print a task's first examples as the model sees them",
        description="Print the first examples of a split as 'input text → target' and, as the "
                    "last line, 'N examples' for that split.")
    parser.add_argument("task", help="task name (see `softprompt tasks`), e.g. cb, sst2")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding the benchmark's task folders (BoolQ/, CB/, ... or "
                             "SST-2/, MRPC/, ...) or their parent; default: the hub via `datasets`")
    parser.add_argument("--split", default="validation",
                        help="train | validation | test (default: validation)")
    parser.add_argument("--n", type=int, default=3, help="how many examples to print (default 3)")
    from softprompt.tasks import PROTOCOLS

    parser.add_argument("--protocol", choices=PROTOCOLS, default="paper",
                        help="paper: official splits; attempt: DePT/ULPT's re-split (default paper)")
    parser.add_argument("--seed", type=int, default=42,
                        help="shuffle seed of the attempt protocol (default 42)")
    parser.add_argument("--label-words", default=None,
                        help="comma-separated label words, or 'names' / 'digits'")
    parser.set_defaults(func=run)


def run(args) -> int:
    from softprompt.tasks import get_task

    if args.n < 0:
        raise ValueError(f"--n must be >= 0, got {args.n}")
    task = get_task(args.task, label_words=args.label_words)
    examples = task.load(split=args.split, data_dir=data_dir(args.data_dir), protocol=args.protocol,
                         seed=args.seed)
    for example in examples[: args.n]:
        print(f"{example.input_text}{ARROW}{example.target_text}")
    print(f"{len(examples)} examples")
    return 0
