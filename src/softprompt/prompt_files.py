"""A prompt directory: saving and loading it; safetensors + JSON, no pickle anywhere.

A prompt directory holds

* ``prompt.safetensors``: the method's trainable tensors only (so training can resume;
  ULPT's projection is not stored, it is rebuilt from its seed);
* ``prompt_config.json``: the method and its config, the backbone's name, kind, embedding
  and vocabulary size, the library version, the method's own metadata (ULPT: seed and
  checksum of the projection) and, for a prompt ``softprompt train`` saved, how it was trained
  to be read (``usage``: template, label words...; ``usage.py``; older folders have none);
* ``README.md``: its model card (``cards.py``; older folders have none).

Wherever a prompt directory is read, a Hub repository id (``user/repo``) that names no local
path is one too: ``resolve_prompt_dir`` fetches it through ``huggingface_hub`` (its cache, and
``HF_HUB_OFFLINE``, as every Hugging Face library).

Every size the record states is checked against the tensors (``load_prompt_module``), and a
load that meets the directory in the middle of ``save``'s atomic swap (a file there a moment
ago, gone now) is tried once more before it fails. A save that cannot be written (disk full, a
file size limit) is one line saying so; the directory it replaces is left as it was.

Also the one "copy saved tensors into a prompt" (``copy_into_prompt``, which refuses NaN/inf:
every prompt read from a file passes there or through ``check_finite``) and the one safetensors
reader with one-line errors (``read_safetensors``). This module knows prompt modules and files,
never the wrapper model (``model.py`` imports this, not the reverse). Its names are also
importable from ``softprompt.io``, where callers have always found them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .cards import CARD_NAME, card_text, hub_id
from .io import PromptFileError, read_json, write_dir_atomically
from .prompts import BackboneInfo, PromptMethod, build_method, config_from_dict
from .usage import check_usage
from .version import __version__

WEIGHTS_NAME = "prompt.safetensors"
CONFIG_NAME = "prompt_config.json"
FORMAT = "softprompt-prompt"
FORMAT_VERSION = 1


RETRY_SECONDS = 0.2  # how long a load waits before its one retry (a swap is two renames)


class SaveError(OSError):
    """A prompt or checkpoint could not be written (disk full, a file size limit); what it
    replaces is intact. The message is one line naming the file."""


def save_error(err: BaseException, target: str | Path, kept: str) -> SaveError:
    """``err`` (an ``OSError`` or ``SafetensorError`` raised while writing ``target``) as one
    line: what failed, why, and ``kept`` (what is still intact and what to do)."""
    errno = getattr(err, "errno", None)
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if errno == 28 or "No space left" in text:
        why = "no space left"
    elif errno == 27 or "File too large" in text:
        why = "file size limit reached (ulimit -f)"
    else:
        why = getattr(err, "strerror", None) or text
    return SaveError(f"{why} writing {target}; {kept}")


def prompt_record(prompt: PromptMethod, backbone: dict[str, Any], usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything ``prompt_config.json`` holds; ``backbone`` is ``backbones.backbone_record``,
    ``usage`` how the prompt was trained to be read (``usage.usage_record``; None: unknown)."""
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "softprompt_version": __version__,
        "method": prompt.config.method,
        "config": prompt.config.to_dict(),
        "backbone": backbone,
        "num_trainable": prompt.num_trainable(),
        "metadata": prompt.metadata(),
    }
    if usage is not None:
        record["usage"] = usage
    return record


def trainable_tensors(prompt: PromptMethod) -> dict[str, torch.Tensor]:
    """The prompt's trainable tensors, detached on the CPU: what prompt files hold."""
    return {name: p.detach().cpu().contiguous() for name, p in prompt.trainable_named_parameters().items()}


def save_prompt(prompt: PromptMethod, backbone: dict[str, Any], path: str | Path,
                usage: dict[str, Any] | None = None) -> Path:
    """Write ``prompt.safetensors``, ``prompt_config.json`` and the model card ``README.md`` to
    the directory ``path``, atomically; a write that fails is a ``SaveError`` and leaves ``path``
    as it was."""
    record = prompt_record(prompt, backbone, usage)
    tensors = trainable_tensors(prompt)

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "method": prompt.config.method})
        (tmp / CONFIG_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        (tmp / CARD_NAME).write_text(card_text(record, "prompt"))

    try:
        return write_dir_atomically(path, write)
    except (OSError, SafetensorError) as err:
        if isinstance(err, SaveError):
            raise
        raise save_error(err, Path(path) / WEIGHTS_NAME, f"the previous prompt in {path} is intact") from None


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


def resolve_prompt_dir(path: str | Path) -> Path:
    """The local folder of ``path``: itself when it exists, else, when it reads as a Hub id
    (``user/repo``), the repository's snapshot through ``huggingface_hub.snapshot_download``
    (cached; offline under ``HF_HUB_OFFLINE`` from the cache alone). One-line errors."""
    if Path(path).exists() or hub_id(path) is None:
        return Path(path)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(path)))
    except LocalEntryNotFoundError:
        raise FileNotFoundError(f"{path}: no such prompt directory, and no Hub repository of that name in the local Hub "
                                "cache (offline, or the Hub cannot be reached)") from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FileNotFoundError(f"{path}: no such prompt directory, and the Hub gave no repository of that name ({detail})") from None


def read_record(path: str | Path) -> dict[str, Any]:
    """Read and check ``prompt_config.json`` of the prompt directory ``path`` (or Hub id)."""
    path = resolve_prompt_dir(path)
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
    try:
        record["usage"] = check_usage(record.get("usage"), str(file))
    except ValueError as err:
        raise PromptFileError(str(err)) from None
    return record


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    return read_safetensors(Path(path) / WEIGHTS_NAME)


def read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        if not file.is_file():  # gone while being read: a directory swapped under the reader
            raise FileNotFoundError(f"{file}: missing (it was removed while being read)") from None
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PromptFileError(f"{file}: corrupted or truncated safetensors file ({detail})") from None


def load_prompt_module(path: str | Path, info: BackboneInfo | None = None) -> tuple[PromptMethod, dict[str, Any]]:
    """Rebuild the prompt module saved in ``path`` (no backbone needed) and load its tensors.

    A file missing mid-read is tried once more: ``save`` replaces a prompt directory by two
    renames, and a reader racing them finds no directory (or no file) for a moment."""
    try:
        return _load_prompt_module(path, info)
    except FileNotFoundError:
        if not _swapping(Path(path)):
            raise
    time.sleep(RETRY_SECONDS)
    return _load_prompt_module(path, info)


def _swapping(path: Path) -> bool:
    """Whether a directory swap of ``path`` is (or was just) going on: ``write_dir_atomically``'s
    temporary or set-aside folder is beside it, or the prompt is there again."""
    if path.is_dir():
        return True  # it vanished and came back: the second rename has happened
    try:
        return any(p.name.startswith((f".{path.name}.tmp-", f".{path.name}.old-")) for p in path.parent.iterdir())
    except OSError:
        return False


def _load_prompt_module(path: str | Path, info: BackboneInfo | None) -> tuple[PromptMethod, dict[str, Any]]:
    path = resolve_prompt_dir(path)
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
    try:
        copy_into_prompt(module, read_tensors(path), Path(path) / WEIGHTS_NAME)
    except PromptFileError as err:
        if "has shape" not in str(err):
            raise
        sizes = ", ".join(f"config.{k} {v}" for k, v in record["config"].items() if isinstance(v, int) and not isinstance(v, bool))
        raise PromptFileError(f"{err}: it disagrees with {file} ({sizes}, backbone.embed_dim {saved_dim})") from None
    stated = record.get("num_trainable")
    if stated is not None and stated != module.num_trainable():  # every recorded size agrees with the tensors
        raise PromptFileError(f"{file}: field 'num_trainable' is {stated!r}; the tensors hold {module.num_trainable()} values")
    try:
        module.check_metadata(record.get("metadata", {}))
    except ValueError as err:
        raise PromptFileError(f"{file}: {err}") from None
    return module, record
