"""A saved prompt out to other tools and back: a Hugging Face PEFT prompt-tuning adapter
(``export_peft``, ``read_peft_prompt``), and the materialized prompt alone as one safetensors file
for serving engines that take input embeddings (``export_embeds``, ``read_embeds``).
``check_replaceable`` and ``check_replaceable_file`` say whether an output is softprompt's own,
which alone ``--overwrite`` may replace. Its names are also importable from ``softprompt.io``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from .cards import CARD_NAME, card_text, is_own_card
from .io import PromptFileError, atomic_file, read_json, write_dir_atomically
from .prompt_files import CONFIG_NAME, FORMAT, WEIGHTS_NAME, check_finite, load_prompt_module, read_safetensors
from .prompts import PromptMethod
from .runlog import read_metrics
from .version import __version__

PEFT_CONFIG_NAME = "adapter_config.json"
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_TASK_TYPES = {"decoder-only": "CAUSAL_LM", "encoder-decoder": "SEQ_2_SEQ_LM"}


def _materialized_prompt(prompt_dir: str | Path, why_not: str) -> tuple[torch.Tensor, dict]:
    """The saved prompt ``[n, d]`` (float32) and its record, for exports that carry the prompt
    alone; a method that also changes the input token embeddings (DePT) is refused with ``why_not``."""
    module, record = load_prompt_module(prompt_dir)
    if type(module).adjust_input_embeds is not PromptMethod.adjust_input_embeds:
        raise PromptFileError(
            f"{prompt_dir}: method {record['method']} also changes the input token embeddings; {why_not}"
        )
    with torch.no_grad():
        return module().detach().float().contiguous(), record


def sink_token_ids(prompt_dir: str | Path, record: dict) -> list[int]:
    """The tokens the prompt of ``prompt_dir`` (its ``record``) is read after: ``[]`` for
    ``sink="none"``, ``[BOS]`` (the recorded backbone's) for ``sink="bos"``."""
    sink = record["config"].get("sink", "none")
    if sink == "none":
        return []
    if record["backbone"].get("bos_token_id") is None:
        raise PromptFileError(f"{Path(prompt_dir) / CONFIG_NAME}: sink={sink!r} but the backbone record names no bos_token_id")
    return [int(record["backbone"]["bos_token_id"])]


PEFT_SINK_KEY = "softprompt_sink"  # adapter_model.safetensors metadata: "bos" when row 0 is the frozen BOS


def export_peft(prompt_dir: str | Path, out_dir: str | Path, backbone=None) -> Path:
    """Write a PEFT prompt-tuning adapter holding the materialized prompt of ``prompt_dir``, and
    its model card.

    PEFT reads ``[virtual tokens, input ids]``; softprompt reads ``[sink, prompt, text]`` where the
    text starts with the tokenizer's own prefix (Llama's BOS) in both. So a ``sink="bos"`` prompt
    ``[n, d]`` becomes an ``n + 1``-token adapter whose row 0 is the BOS token as the backbone's
    embedding module gives it, the rest the prompt: the same rows, the same logits. That row is
    the backbone's, so ``backbone`` (the transformers model the prompt was trained on) is needed
    then; its sizes and BOS id must be the recorded ones. The weights' metadata marks the row
    (``softprompt_sink: bos``) so ``import_peft`` gives the sink=bos prompt back."""
    from .extras import require

    PromptTuningConfig = require("peft", "a PEFT export (softprompt export --to peft)").PromptTuningConfig

    prompt, record = _materialized_prompt(prompt_dir, "a PEFT prompt-tuning adapter can only hold a prompt")
    ahead = sink_token_ids(prompt_dir, record)
    if ahead:
        prompt = torch.cat([_embedded(prompt_dir, record, backbone, ahead), prompt])  # [1 + n, d]
    kind = record["backbone"].get("kind", "decoder-only")
    config = PromptTuningConfig(
        task_type=PEFT_TASK_TYPES[kind],
        num_virtual_tokens=prompt.shape[0],
        token_dim=prompt.shape[1],
        # PEFT would allocate 2n rows for seq2seq and use the first n; one copy is what it uses.
        num_transformer_submodules=1,
        base_model_name_or_path=record["backbone"].get("name"),
    )
    metadata = {"format": "pt", PEFT_SINK_KEY: record["config"].get("sink", "none")}
    card = card_text(record, "peft", read_metrics(Path(prompt_dir).parent) if Path(prompt_dir).name == "prompt" else None)

    def write(tmp: Path) -> None:
        config.save_pretrained(str(tmp))
        save_file({"prompt_embeddings": prompt.contiguous()}, str(tmp / PEFT_WEIGHTS_NAME), metadata=metadata)
        (tmp / CARD_NAME).write_text(card)

    return write_dir_atomically(out_dir, write)


def _embedded(prompt_dir: str | Path, record: dict, backbone, ids: list[int]) -> torch.Tensor:
    """The tokens ``ids`` through ``backbone``'s embedding module, ``[s, d]`` float32, after
    checking ``backbone`` is the one ``record`` names (sizes and BOS id)."""
    if backbone is None:
        raise PromptFileError(f"{prompt_dir}: the prompt is read after the model's BOS token (sink='bos'); "
                              "give the backbone it was trained on (--model) to put that token's embedding in the adapter")
    table = backbone.get_input_embeddings().weight
    recorded = record["backbone"]
    found = {"embed_dim": table.shape[1], "vocab_size": table.shape[0], "bos_token_id": getattr(backbone.config, "bos_token_id", None)}
    for key, value in found.items():
        if value != recorded.get(key):
            raise PromptFileError(f"{prompt_dir}: the prompt was trained on a backbone with {key} {recorded.get(key)}; "
                                  f"this one has {value}")
    with torch.no_grad():
        return backbone.get_input_embeddings()(torch.tensor(ids, device=table.device)).detach().float().cpu()


def peft_sink(adapter_dir: str | Path) -> str:
    """``"bos"`` when ``export_peft`` wrote the adapter ``adapter_dir`` from a ``sink="bos"``
    prompt (its row 0 is then the BOS embedding), else ``"none"``."""
    from safetensors import safe_open

    file = Path(adapter_dir) / PEFT_WEIGHTS_NAME
    try:
        with safe_open(str(file), framework="pt") as handle:
            return (handle.metadata() or {}).get(PEFT_SINK_KEY, "none")
    except (SafetensorError, OSError) as err:
        raise PromptFileError(f"{file}: corrupted or truncated safetensors file ({err})") from None


# ---------------------------------------------------------------------------------------
# The materialized prompt alone, for engines that take input embeddings


EMBEDS_TENSOR = "prompt_embeds"
EMBEDS_FORMAT = "softprompt-embeds"


def export_embeds(prompt_dir: str | Path, out_file: str | Path) -> Path:
    """Write the materialized prompt of ``prompt_dir`` as ``out_file`` (safetensors, atomically):
    one float32 tensor ``prompt_embeds [n, d]`` and, in the file's metadata, the backbone's name,
    kind, embedding and vocabulary size, the method, the prompt's length and ``sink_token_ids``
    (JSON: the tokens read before the prompt, ``[]`` or ``[BOS]``). Fed as input embeddings right
    before a row's first token, after those tokens' embeddings, it gives softprompt's outputs
    (README: Serving)."""
    prompt, record = _materialized_prompt(prompt_dir, "prompt embeddings alone cannot reproduce it")
    backbone = record["backbone"]
    ahead = sink_token_ids(prompt_dir, record)
    metadata = {
        "format": EMBEDS_FORMAT,
        "name": str(backbone.get("name") or ""),
        "kind": str(backbone.get("kind") or ""),
        "embed_dim": str(prompt.shape[1]),
        "vocab_size": str(backbone["vocab_size"]),
        "length": str(prompt.shape[0]),
        "method": record["method"],
        "sink_token_ids": json.dumps(ahead),
        "softprompt_version": __version__,
    }
    out_file = Path(out_file)
    with atomic_file(out_file) as tmp:
        save_file({EMBEDS_TENSOR: prompt}, str(tmp), metadata=metadata)
    return out_file


def read_embeds(file: str | Path) -> tuple[torch.Tensor, dict[str, str]]:
    """``(prompt [n, d] float32, metadata)`` of a file ``export_embeds`` wrote."""
    from safetensors import safe_open

    file = Path(file)
    tensors = read_safetensors(file)
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise PromptFileError(f"{file}: corrupted or truncated safetensors file ({err})") from None
    if metadata.get("format") != EMBEDS_FORMAT or EMBEDS_TENSOR not in tensors:
        raise PromptFileError(f"{file}: not a prompt embeddings file softprompt exported")
    check_finite(EMBEDS_TENSOR, tensors[EMBEDS_TENSOR], file)
    return tensors[EMBEDS_TENSOR], metadata


def check_replaceable_file(path: str | Path) -> None:
    """Refuse to replace ``path`` unless it is missing or a prompt embeddings file softprompt wrote."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_file():
        raise PromptFileError(f"{path} exists and is not a regular file")
    try:
        read_embeds(path)
    except (OSError, ValueError):
        raise PromptFileError(f"{path} is not a prompt embeddings file softprompt exported; --overwrite only replaces "
                              "softprompt's own output, choose another OUT") from None


# What softprompt writes as each kind of folder: an older folder has no README.md card, so a
# folder is ours when it holds these names only and at least REQUIRED_FILES.
OWN_FILES = {"prompt": {WEIGHTS_NAME, CONFIG_NAME, CARD_NAME}, "peft": {PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME, CARD_NAME}}
REQUIRED_FILES = {kind: names - {CARD_NAME} for kind, names in OWN_FILES.items()}


def check_replaceable(path: str | Path, kind: str) -> None:
    """Refuse to replace ``path`` unless it is missing, an empty directory, or what softprompt
    itself writes as ``kind``: a prompt directory (``"prompt"``) or a PEFT adapter that
    ``export_peft`` wrote (``"peft"``: its files, the card optional). Replacing swaps the whole
    directory, so anything else there (a run, a user's files) must never be taken for it."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink():
        raise PromptFileError(f"{path} is a symbolic link; give the directory itself")
    if not path.is_dir():
        raise PromptFileError(f"{path} exists and is not a directory")
    names = sorted(p.name for p in path.iterdir())
    if not names:
        return
    what = {"prompt": "a softprompt prompt directory", "peft": "a PEFT adapter softprompt exported"}[kind]
    ours = REQUIRED_FILES[kind] <= set(names) <= OWN_FILES[kind]
    if ours:
        try:
            if kind == "prompt":
                ours = read_json(path / CONFIG_NAME).get("format") == FORMAT
            else:
                ours = read_json(path / PEFT_CONFIG_NAME).get("peft_type") == "PROMPT_TUNING"
            ours = ours and (CARD_NAME not in names or is_own_card(path / CARD_NAME))  # a user's own card stays
        except (OSError, ValueError, AttributeError):
            ours = False
    if not ours:
        shown = ", ".join(names[:4]) + (f", ... ({len(names)} entries)" if len(names) > 4 else "")
        raise PromptFileError(f"{path} is not {what} (it holds {shown}); --overwrite only replaces softprompt's own output, choose another OUT_DIR")


def read_peft_prompt(adapter_dir: str | Path) -> torch.Tensor:
    """The prompt ``[n, d]`` (float32) of a PEFT prompt-tuning adapter directory."""
    adapter_dir = Path(adapter_dir)
    config_file = adapter_dir / PEFT_CONFIG_NAME
    config = read_json(config_file, f"is {adapter_dir} a PEFT adapter?")
    if config.get("peft_type") != "PROMPT_TUNING":
        raise PromptFileError(f"{config_file}: peft_type is {config.get('peft_type')!r}; only PROMPT_TUNING adapters hold a soft prompt")
    weights = adapter_dir / PEFT_WEIGHTS_NAME
    if not weights.is_file() and (adapter_dir / "adapter_model.bin").is_file():
        raise PromptFileError(f"{adapter_dir}/adapter_model.bin is a pickle file; softprompt loads safetensors only")
    tensors = read_safetensors(weights)
    if "prompt_embeddings" not in tensors:
        raise PromptFileError(f"{weights}: missing tensor prompt_embeddings")
    table = tensors["prompt_embeddings"]
    check_finite("prompt_embeddings", table, weights)
    # Every count the config states must agree with the tensor: a count that does not is a
    # damaged or hand-edited adapter, never a prompt to cut or pad silently. PEFT stores n rows
    # per transformer submodule (2n for seq2seq, of which it uses the first n).
    n = config.get("num_virtual_tokens")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PromptFileError(f"{config_file}: field 'num_virtual_tokens' must be a positive integer, got {n!r}")
    copies = config.get("num_transformer_submodules") or (2 if config.get("task_type") == "SEQ_2_SEQ_LM" else 1)
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise PromptFileError(f"{config_file}: field 'num_transformer_submodules' must be a positive integer, got {copies!r}")
    if table.dim() != 2 or table.shape[0] != n * copies:
        raise PromptFileError(f"{config_file}: field 'num_virtual_tokens' is {n} ({n * copies} rows for {copies} submodule(s)); "
                              f"{weights.name} holds prompt_embeddings of shape {tuple(table.shape)}")
    dim = config.get("token_dim")
    if dim is not None and dim != table.shape[1]:
        raise PromptFileError(f"{config_file}: field 'token_dim' is {dim!r}; {weights.name} holds prompt_embeddings of shape {tuple(table.shape)}")
    return table[:n].float()
