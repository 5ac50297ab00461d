"""Model cards: the ``README.md`` the Hub shows for a prompt folder or a PEFT export.

Written through ``huggingface_hub``'s ``ModelCard`` and ``ModelCardData``, so the YAML front
matter is the Hub's (``base_model``, ``library_name``, ``tags``, ``pipeline_tag``) and the rest,
under ``softprompt:``, is the prompt's own: method, sink, length, trainable parameters, task,
template, label words and, where the caller knows them, metrics. Everything comes from the
prompt's record (``prompt_config.json``), the one place those facts are decided; the card only
shows them. Torch-free.
"""

from __future__ import annotations

import json
from typing import Any

CARD_NAME = "README.md"
PIPELINES = {"decoder-only": "text-generation", "encoder-decoder": "text2text-generation"}


def hub_id(name: Any) -> str | None:
    """``name`` when it reads as a Hub repository id (``owner/name``), else None: a local path or
    the embedded model's bare name is no ``base_model`` the Hub could link."""
    name = str(name or "")
    if name.count("/") != 1 or name.startswith((".", "/", "~")) or any(c.isspace() for c in name):
        return None
    return name


def card_text(record: dict[str, Any], kind: str, metrics: dict[str, Any] | None = None) -> str:
    """The card of a prompt folder (``kind="prompt"``) or of a PEFT adapter exported from one
    (``kind="peft"``), from the folder's ``record``; ``metrics``: name -> value, where known."""
    from huggingface_hub import ModelCard, ModelCardData

    backbone, usage, config = record.get("backbone", {}), record.get("usage") or {}, record.get("config", {})
    base = hub_id(backbone.get("name"))
    facts = {
        "method": record.get("method"),
        "sink": config.get("sink", "none"),
        "length": config.get("length"),
        "trainable_parameters": record.get("num_trainable"),
        "backbone": backbone.get("name"),
        **{key: usage[key] for key in ("task", "style", "template", "label_words") if usage.get(key) is not None},
    }
    if metrics:
        facts["metrics"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    data = ModelCardData(
        base_model=base, library_name="peft" if kind == "peft" else "softprompt",
        tags=["softprompt", "prompt-tuning", str(record.get("method"))], pipeline_tag=PIPELINES.get(backbone.get("kind")),
        softprompt={k: v for k, v in facts.items() if v is not None},
    )
    model = base or backbone.get("name") or "BACKBONE"
    if kind == "peft":
        title = f"A {facts['method']} soft prompt as a PEFT prompt-tuning adapter"
        how = ("```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
               f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({model!r}), \"THIS_REPO_OR_DIR\")\n```\n\n"
               "or `lm_eval --model hf --model_args pretrained=BASE,peft=THIS_REPO_OR_DIR`.")
        if facts["sink"] == "bos":
            how += ("\n\nThe adapter's first virtual token is the model's BOS embedding, frozen in training: the prompt "
                    "was trained to be read after it (`sink: bos`).")
    else:
        title = f"A {facts['method']} soft prompt (softprompt)"
        how = ("```python\nimport softprompt\nfrom softprompt.backbones import load_backbone\n\n"
               f"backbone, tokenizer = load_backbone({model!r})\nmodel = softprompt.load(backbone, \"THIS_REPO_OR_DIR\")\n```\n\n"
               "or `softprompt eval THIS_REPO_OR_DIR`, `softprompt predict`, `softprompt serve`, "
               "`softprompt export THIS_REPO_OR_DIR --to peft OUT` (a Hub id works wherever a folder does).")
    body = (f"# {title}\n\nA soft prompt of {facts['length']} tokens ({facts['trainable_parameters']} trainable parameters) "
            f"for the frozen `{backbone.get('name')}`.\n\n")
    if usage.get("template") is not None:
        body += f"It was trained to read inputs written as `{json.dumps(usage['template'])[1:-1]}`.\n\n"
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}## How to load\n\n{how}\n"))


def is_own_card(file: Any) -> bool:
    """Whether ``file`` is a card ``card_text`` wrote (its front matter's ``softprompt`` facts and
    tag), not a user's README.md that ``--overwrite`` must never replace."""
    from huggingface_hub import metadata_load

    try:
        meta = metadata_load(file) or {}
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(meta.get("softprompt"), dict) and "softprompt" in (meta.get("tags") or [])
