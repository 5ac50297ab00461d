"""`softprompt export`: convert between softprompt prompt directories, PEFT adapters and
prompt embeddings for serving engines.

    softprompt export PROMPT_DIR --to peft OUT_DIR            # materialized prompt as a PEFT prompt-tuning adapter
    softprompt export PEFT_DIR --from peft --model M OUT_DIR  # a PEFT prompt-tuning adapter as a softprompt prompt
    softprompt export PROMPT_DIR --to embeds OUT.safetensors  # the prompt [n, d] alone, as input embeddings (README: Serving)

The PEFT adapter holds the materialized prompt ``P [n, d]`` only (the method's factors are not
kept), so ``peft.PeftModel.from_pretrained`` gives the same logits as softprompt; a prompt
trained with ``sink=bos`` gets the BOS token's embedding as its first virtual token, taken from
``--model`` (the backbone it was trained on). Importing gives a vanilla ``prompt`` of the same
values (``sink=bos`` again for such an export). Every output folder gets its model card
(README.md), and SOURCE_DIR may be a Hub repository id (``user/repo``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import add_backbone_options, backbone_options


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write a prompt as a PEFT adapter or as prompt embeddings (or import a PEFT adapter)",
        description="Convert a softprompt prompt directory to a Hugging Face PEFT prompt-tuning adapter "
                    "(--to peft), to one safetensors file holding the materialized prompt [n, d] for "
                    "engines that take input embeddings (--to embeds), or a PEFT prompt-tuning adapter to a "
                    "softprompt prompt directory (--from peft, needs --model for the embedding size).")
    parser.add_argument("source", metavar="SOURCE_DIR", help="a softprompt prompt directory (or, with --from peft, a PEFT adapter)")
    parser.add_argument("output", metavar="OUT", help="where to write (atomically): a directory, or the .safetensors file of --to embeds")
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument("--to", choices=["peft", "embeds"], help="export format (default: peft)")
    direction.add_argument("--from", dest="from_format", choices=["peft"], help="import from this format")
    parser.add_argument("--model", help="backbone for --from peft, and for --to peft of a sink=bos prompt (hub name, local directory or .gguf; default: the embedded model)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT_DIR if it holds softprompt's own output (an adapter it exported, or a prompt directory)")
    add_backbone_options(parser, "train's; with --from peft only")
    parser.set_defaults(func=run)


def run(args) -> int:
    import softprompt
    from softprompt.io import check_replaceable, check_replaceable_file, read_embeds, read_record

    from .common import CLIError

    out = Path(args.output)
    from softprompt.paths import real_path

    from softprompt.prompt_files import resolve_prompt_dir

    args.source = str(resolve_prompt_dir(args.source))  # a Hub id: its snapshot in the local cache
    source, target = real_path(args.source, "SOURCE_DIR"), real_path(args.output, "OUT_DIR")
    if source == target:
        raise ValueError(f"OUT_DIR {out} is the source directory; choose another")
    if target in source.parents:
        raise ValueError(f"OUT_DIR {out} contains the source directory; choose another")
    if os.path.lexists(out) and not args.overwrite:
        raise CLIError(f"{out} exists; pass --overwrite to replace it")
    placement = backbone_options(args)
    loading = [f"--{k.replace('_', '-')}" for k in placement if getattr(args, k, None) is not None]
    if loading and args.from_format != "peft":  # only --from peft loads a backbone
        raise ValueError(f"{loading[0]} is only used with --from peft")
    if args.to == "embeds":
        if args.model:
            raise ValueError("--model is only used with --from peft")
        if out.suffix != ".safetensors":
            raise ValueError(f"OUT {out}: --to embeds writes one file; name it *.safetensors")
        check_replaceable_file(out)  # never a user's other file
        softprompt.export_embeds(args.source, out)
        prompt, meta = read_embeds(out)
        print(f"exported the {meta['length']}-token prompt of {args.source} as prompt embeddings "
              f"[{prompt.shape[0]}, {prompt.shape[1]}] for {meta['name'] or 'its backbone'}: {out}")
        if meta.get("sink_token_ids", "[]") != "[]":  # older files have no such key
            print(f"feed it after the embeddings of token ids {meta['sink_token_ids']} (the prompt's sink; README: Serving)")
        return 0
    check_replaceable(out, "prompt" if args.from_format == "peft" else "peft")  # never a user's other files
    if args.from_format == "peft":
        from softprompt.backbones import load_backbone

        backbone, _ = load_backbone(args.model, **placement)
        model = softprompt.import_peft(backbone, args.source)
        model.save(out)
        print(f"imported PEFT adapter {args.source} as a {model.num_trainable():,}-parameter prompt: {out}")
        return 0
    backbone = None
    if read_record(args.source)["config"].get("sink", "none") != "none":
        from softprompt.backbones import load_backbone

        backbone, _ = load_backbone(args.model)  # the sink token's embedding is the backbone's
    elif args.model:
        raise ValueError("--model is only used with --from peft, or --to peft of a sink=bos prompt")
    softprompt.export_peft(args.source, out, backbone)
    print(f"exported {args.source} as a PEFT prompt-tuning adapter: {out}")
    return 0
