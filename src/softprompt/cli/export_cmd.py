"""`softprompt export`: convert between softprompt prompt directories and PEFT adapters.

    softprompt export PROMPT_DIR --to peft OUT_DIR            # materialized prompt as a PEFT prompt-tuning adapter
    softprompt export PEFT_DIR --from peft --model M OUT_DIR  # a PEFT prompt-tuning adapter as a softprompt prompt

The PEFT adapter holds the materialized prompt ``P [n, d]`` only (the method's factors are not
kept), so ``peft.PeftModel.from_pretrained`` gives the same logits as softprompt. Importing
gives a vanilla ``prompt`` of the same values.
"""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write a prompt as a PEFT adapter (or import one)",
        description="Convert a softprompt prompt directory to a Hugging Face PEFT prompt-tuning adapter "
                    "(--to peft), or a PEFT prompt-tuning adapter to a softprompt prompt directory "
                    "(--from peft, needs --model for the embedding size).")
    parser.add_argument("source", metavar="SOURCE_DIR", help="a softprompt prompt directory (or, with --from peft, a PEFT adapter)")
    parser.add_argument("output", metavar="OUT_DIR", help="where to write (atomically)")
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument("--to", choices=["peft"], help="export format (default: peft)")
    direction.add_argument("--from", dest="from_format", choices=["peft"], help="import from this format")
    parser.add_argument("--model", help="backbone for --from peft (hub name, local directory or .gguf; default: the embedded model)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    parser.set_defaults(func=run)


def run(args) -> int:
    import softprompt

    from .common import CLIError

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    if Path(args.source).resolve() == out.resolve():
        raise ValueError(f"OUT_DIR {out} is the source directory; choose another")
    if args.from_format == "peft":
        from softprompt.backbones import load_backbone

        backbone, _ = load_backbone(args.model)
        model = softprompt.import_peft(backbone, args.source)
        model.save(out)
        print(f"imported PEFT adapter {args.source} as a {model.num_trainable():,}-parameter prompt: {out}")
        return 0
    if args.model:
        raise ValueError("--model is only used with --from peft")
    softprompt.export_peft(args.source, out)
    print(f"exported {args.source} as a PEFT prompt-tuning adapter: {out}")
    return 0
