"""`softprompt params`: the exact trainable-parameter count of a method, without a model.

The count comes from the method's own config (``PromptConfig.num_parameters``), the same
formula the tests pin to the papers' figures. The last line printed is the bare number,
so scripts can read it with ``tail -n 1``.
"""

from __future__ import annotations

# CLI flag -> config field. Only flags the user gives are passed on, so a flag that a
# method does not have (e.g. --bottleneck for ulpt) is an error naming the method's options.
OPTIONS = {"length": "length", "bottleneck": "bottleneck", "rank": "rank", "max_length": "max_length"}


def register(subparsers) -> None:
    import softprompt

    parser = subparsers.add_parser(
        "params", help="print a method's exact trainable-parameter count",
        description="Print the exact number of trainable parameters of a prompt method for an "
                    "embedding size. The last line is the bare count.")
    parser.add_argument("--method", required=True, choices=softprompt.METHODS, help="the prompt method")
    parser.add_argument("--embed-dim", type=int, required=True, metavar="D", help="the model's embedding size d")
    parser.add_argument("--length", type=int, metavar="N", help="prompt length n (for dept, the prompt part m)")
    parser.add_argument("--bottleneck", type=int, metavar="B", help="residual's MLP width m or dpt's inner dimension b")
    parser.add_argument("--rank", type=int, metavar="R", help="ulpt's rank r or dept's low-rank r")
    parser.add_argument("--max-length", type=int, metavar="L", help="dept's maximum input length L")
    parser.set_defaults(func=run)


def run(args) -> int:
    import softprompt

    if args.embed_dim < 1:
        raise ValueError(f"--embed-dim must be a positive integer, got {args.embed_dim}")
    options = {field: getattr(args, flag) for flag, field in OPTIONS.items() if getattr(args, flag) is not None}
    config = softprompt.make_config(args.method, **options)
    count = config.num_parameters(args.embed_dim)
    settings = ", ".join(f"{k}={v}" for k, v in config.to_dict().items() if isinstance(v, int) and not isinstance(v, bool))
    print(f"{args.method} ({settings}) on embedding size {args.embed_dim}: {count:,} trainable parameters")
    print(count)
    return 0
