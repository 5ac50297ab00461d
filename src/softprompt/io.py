"""Saving and loading prompts: safetensors + JSON, atomic, no pickle anywhere.

A prompt directory holds

* ``prompt.safetensors``: the method's trainable tensors only (so training can resume;
  ULPT's projection is not stored, it is rebuilt from its seed);
* ``prompt_config.json``: the method and its config, the backbone's name, kind, embedding
  and vocabulary size, the library version, and the method's own metadata (ULPT: seed and
  checksum of the projection).

Also: export of the materialized prompt as one safetensors file for serving engines that take
input embeddings (``export_embeds``, ``read_embeds``); export to / read from a Hugging Face PEFT prompt-tuning adapter (``check_replaceable``
says whether a directory is softprompt's own output, which alone ``--overwrite`` may replace),
the one atomic writer (``atomic_file``, ``write_dir_atomically``; ``clear_leftovers`` for what
an interrupted one left) and the one "copy saved tensors into a prompt" (``copy_into_prompt``,
which refuses NaN/inf: every prompt read from a file passes there or through ``check_finite``). This module knows prompt modules and files, never the wrapper model
(``model.py`` imports this, not the reverse).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .version import __version__
from .prompts import BackboneInfo, PromptMethod, build_method, config_from_dict

WEIGHTS_NAME = "prompt.safetensors"
CONFIG_NAME = "prompt_config.json"
FORMAT = "softprompt-prompt"
FORMAT_VERSION = 1

PEFT_CONFIG_NAME = "adapter_config.json"
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_TASK_TYPES = {"decoder-only": "CAUSAL_LM", "encoder-decoder": "SEQ_2_SEQ_LM"}


class PromptFileError(ValueError):
    """A saved prompt cannot be loaded; the message says which file and why."""


# ---------------------------------------------------------------------------------------
# Atomic directory writes


def write_dir_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)``, then move ``tmp_dir`` to ``path`` (the old ``path`` aside first).

    A crash leaves either the old directory or the new one, never a half-written one: between
    the two renames the old one is ``.NAME.old-PID`` beside ``path`` (an error there puts it
    back). Once the new one is in place, every ``.NAME.old-*`` beside it is obsolete and removed,
    whichever process left it. Permissions follow the umask, like any file the user creates
    (``mkdtemp`` makes 0700 and safetensors 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    old = None
    try:
        write(tmp)
        _follow_umask(tmp)
        for file in tmp.iterdir():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        if os.path.lexists(path):
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            if os.path.lexists(old):
                _remove(old)
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        if old is not None and not os.path.lexists(path):
            try:
                os.replace(old, path)  # interrupted between the renames: the old one goes back
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prefix = f".{path.name}.old-"
    for leftover in path.parent.iterdir():
        if leftover.name.startswith(prefix):
            _remove(leftover)
    return path


def clear_leftovers(folder: str | Path, keep_old: bool = False) -> None:
    """Remove what interrupted atomic writes left in ``folder``: ``.*.tmp-*`` (and, unless
    ``keep_old``, ``.*.old-*``). Only for a folder no other process is writing to (a run
    directory under its lock)."""
    folder = Path(folder)
    patterns = [".*.tmp-*"] + ([] if keep_old else [".*.old-*"])
    for pattern in patterns:
        for leftover in folder.glob(pattern):
            _remove(leftover)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _follow_umask(folder: Path) -> None:
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for item in folder.rglob("*"):
        if not item.is_symlink():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename,
    on error it is removed. Readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")  # keeps the suffix (matplotlib reads it)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomically(path: str | Path, data: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_jsonl_atomically(path: str | Path, records: list[dict[str, Any]]) -> None:
    """One JSON object per line (non-ASCII kept as is)."""
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------
# Save / load


def prompt_record(prompt: PromptMethod, backbone: dict[str, Any]) -> dict[str, Any]:
    """Everything ``prompt_config.json`` holds; ``backbone`` is ``backbones.backbone_record``."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "softprompt_version": __version__,
        "method": prompt.config.method,
        "config": prompt.config.to_dict(),
        "backbone": backbone,
        "num_trainable": prompt.num_trainable(),
        "metadata": prompt.metadata(),
    }


def trainable_tensors(prompt: PromptMethod) -> dict[str, torch.Tensor]:
    """The prompt's trainable tensors, detached on the CPU: what prompt files hold."""
    return {name: p.detach().cpu().contiguous() for name, p in prompt.trainable_named_parameters().items()}


def save_prompt(prompt: PromptMethod, backbone: dict[str, Any], path: str | Path) -> Path:
    """Write ``prompt.safetensors`` and ``prompt_config.json`` to the directory ``path``, atomically."""
    record = prompt_record(prompt, backbone)
    tensors = trainable_tensors(prompt)

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "method": prompt.config.method})
        (tmp / CONFIG_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    return write_dir_atomically(path, write)


def copy_into_prompt(prompt: PromptMethod, tensors: dict[str, torch.Tensor], where: str | Path) -> None:
    """Set the prompt's trainable tensors to ``tensors`` (a prompt file's or a checkpoint's),
    checking names and shapes first; ``where`` names the file in the one-line errors."""
    expected = prompt.trainable_named_parameters()
    method = prompt.config.method
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise PromptFileError(f"{where}: missing tensor(s) {', '.join(missing)} for method {method}")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise PromptFileError(f"{where}: unexpected tensor(s) {', '.join(unexpected)} for method {method}")
    for name, param in expected.items():
        if tuple(tensors[name].shape) != tuple(param.shape):
            raise PromptFileError(f"{where}: tensor {name} has shape {tuple(tensors[name].shape)}, expected {tuple(param.shape)}")
        check_finite(name, tensors[name], where)
    with torch.no_grad():
        for name, param in expected.items():
            param.copy_(tensors[name])


def check_finite(name: str, tensor: torch.Tensor, where: str | Path) -> None:
    """Refuse a prompt tensor holding NaN or inf (a diverged run's): every prompt read from a
    file passes here, so ``load``, ``eval``, ``inspect``, ``export`` and resume all refuse it."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise PromptFileError(f"{where}: tensor {name} holds {bad} NaN or infinite value(s) of {tensor.numel()}; refusing to use it")


def read_record(path: str | Path) -> dict[str, Any]:
    """Read and check ``prompt_config.json`` of the prompt directory ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such prompt directory")
    file = path / CONFIG_NAME
    record = read_json(file, f"is {path} a softprompt prompt directory?")
    if not isinstance(record, dict):
        raise PromptFileError(f"{file}: expected a JSON object, got {type(record).__name__}")
    for key in ("method", "config", "backbone"):
        if key not in record:
            raise PromptFileError(f"{file}: missing field {key!r}")
    for key, kind in (("config", dict), ("backbone", dict)):
        if not isinstance(record[key], kind):
            raise PromptFileError(f"{file}: field {key!r} must be a JSON object, got {record[key]!r}")
    for key in ("embed_dim", "vocab_size"):
        if key not in record["backbone"]:
            raise PromptFileError(f"{file}: missing field 'backbone.{key}'")
        value = record["backbone"][key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PromptFileError(f"{file}: field 'backbone.{key}' must be a positive integer, got {value!r}")
    return record


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    return read_safetensors(Path(path) / WEIGHTS_NAME)


def read_json(file: str | Path, hint: str = "") -> Any:
    """A JSON file's content; one-line errors naming the file (and the line of a syntax error:
    a truncated file reads as one)."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing" + (f" ({hint})" if hint else ""))
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PromptFileError(f"{file}: invalid JSON at line {err.lineno}: {err.msg} (truncated or edited?)") from None
    except UnicodeDecodeError as err:
        raise PromptFileError(f"{file}: not UTF-8 text (byte {err.object[err.start]:#x} at offset {err.start})") from None


def read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PromptFileError(f"{file}: corrupted or truncated safetensors file ({detail})") from None


def load_prompt_module(path: str | Path, info: BackboneInfo | None = None) -> tuple[PromptMethod, dict[str, Any]]:
    """Rebuild the prompt module saved in ``path`` (no backbone needed) and load its tensors."""
    record = read_record(path)
    file = Path(path) / CONFIG_NAME
    try:
        config = config_from_dict(record["method"], record["config"])
    except ValueError as err:
        raise PromptFileError(f"{file}: {err}") from None
    saved_dim = record["backbone"]["embed_dim"]
    if info is None:
        info = BackboneInfo(embed_dim=saved_dim, vocab_size=record["backbone"]["vocab_size"])
    elif info.embed_dim != saved_dim:
        raise PromptFileError(
            f"{path}: the prompt was trained for embedding size {saved_dim} "
            f"({record['backbone'].get('name') or 'unknown model'}); this backbone has {info.embed_dim}"
        )
    info = BackboneInfo(embed_dim=info.embed_dim, vocab_size=info.vocab_size, skip_init=True)
    module = build_method(config, info)
    copy_into_prompt(module, read_tensors(path), Path(path) / WEIGHTS_NAME)
    try:
        module.check_metadata(record.get("metadata", {}))
    except ValueError as err:
        raise PromptFileError(f"{file}: {err}") from None
    return module, record


# ---------------------------------------------------------------------------------------
# PEFT interop


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


def export_peft(prompt_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a PEFT prompt-tuning adapter holding the materialized prompt of ``prompt_dir``."""
    from peft import PromptTuningConfig

    prompt, record = _materialized_prompt(prompt_dir, "a PEFT prompt-tuning adapter can only hold a prompt")
    if record["config"].get("sink", "none") != "none":
        raise PromptFileError(
            f"{prompt_dir}: the prompt was trained after the model's BOS token (sink={record['config']['sink']!r}); "
            "a PEFT prompt-tuning adapter puts its prompt first (export --to embeds keeps the token)"
        )
    kind = record["backbone"].get("kind", "decoder-only")
    config = PromptTuningConfig(
        task_type=PEFT_TASK_TYPES[kind],
        num_virtual_tokens=prompt.shape[0],
        token_dim=prompt.shape[1],
        # PEFT would allocate 2n rows for seq2seq and use the first n; one copy is what it uses.
        num_transformer_submodules=1,
        base_model_name_or_path=record["backbone"].get("name"),
    )

    def write(tmp: Path) -> None:
        config.save_pretrained(str(tmp))
        save_file({"prompt_embeddings": prompt}, str(tmp / PEFT_WEIGHTS_NAME), metadata={"format": "pt"})

    return write_dir_atomically(out_dir, write)


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
    sink = record["config"].get("sink", "none")
    if sink == "none":
        ahead = []
    elif backbone.get("bos_token_id") is not None:
        ahead = [int(backbone["bos_token_id"])]
    else:
        raise PromptFileError(f"{Path(prompt_dir) / CONFIG_NAME}: sink={sink!r} but the backbone record names no bos_token_id")
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


OWN_FILES = {"prompt": {WEIGHTS_NAME, CONFIG_NAME}, "peft": {PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME}}


def check_replaceable(path: str | Path, kind: str) -> None:
    """Refuse to replace ``path`` unless it is missing, an empty directory, or what softprompt
    itself writes as ``kind``: a prompt directory (``"prompt"``) or a PEFT adapter that
    ``export_peft`` wrote (``"peft"``: exactly its two files). Replacing swaps the whole
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
    ours = set(names) == OWN_FILES[kind]
    if ours:
        try:
            if kind == "prompt":
                ours = read_json(path / CONFIG_NAME).get("format") == FORMAT
            else:
                ours = read_json(path / PEFT_CONFIG_NAME).get("peft_type") == "PROMPT_TUNING"
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
    check_finite("prompt_embeddings", tensors["prompt_embeddings"], weights)
    return tensors["prompt_embeddings"][: int(config["num_virtual_tokens"])].float()
