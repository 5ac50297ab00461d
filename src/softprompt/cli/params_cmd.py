"""`softprompt params`: the exact trainable-parameter count of a method, without a model.

The count comes from the method's own config (``PromptConfig.num_parameters``), the same
formula the tests pin to the papers' figures. The method options are generated from the
registry, so a new method's options appear here with no edit. The last line printed is the bare
number, so scripts can read it with ``tail -n 1``.
"""

from __future__ import annotations

from .common import add_method_options, given, positive_int


def register(subparsers) -> None:
    from softprompt.prompts import methods

    parser = subparsers.add_parser(
        "params", help="print a method's exact trainable-parameter count",
        description="Print the exact number of trainable parameters of a prompt method for an "
                    "embedding size. The last line is the bare count. An option the method does "
                    "not have is an error naming the method's options.")
    parser.add_argument("--method", required=True, choices=methods(), help="the prompt method")
    parser.add_argument("--embed-dim", type=positive_int, required=True, metavar="D", help="the model's embedding size d")
    options = add_method_options(parser.add_argument_group("method options"))
    parser.set_defaults(func=run, option_names=options)


def run(args) -> int:
    from softprompt.prompts import make_config

    config = make_config(args.method, **given(args, args.option_names))
    count = config.num_parameters(args.embed_dim)
    settings = ", ".join(f"{k}={v}" for k, v in config.to_dict().items() if isinstance(v, int) and not isinstance(v, bool))
    print(f"{args.method} ({settings}) on embedding size {args.embed_dim}: {count:,} trainable parameters")
    print(count)
    return 0
