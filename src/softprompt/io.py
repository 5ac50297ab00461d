"""Files written whole or not at all, and JSON read with one-line errors. Torch-free: the run
log, the lock's users and the sweep's launcher need it without the model code.

* the one atomic writer: ``atomic_file`` (a file), ``write_dir_atomically`` (a directory),
  ``write_json_atomically``, ``write_jsonl_atomically``; ``clear_leftovers`` removes what an
  interrupted one left. Everything softprompt writes atomically goes through here.
* ``read_json``, the one JSON file reader, and ``PromptFileError``, what it (and every reader of
  a saved prompt or checkpoint) raises for a bad file.

The prompt directory (``prompt_files.py``: ``save_prompt``, ``load_prompt_module`` ...) and the
exports (``exports.py``: PEFT adapters, embeddings files) need torch; their names are importable
from here too, where callers have always found them, and are loaded on first use (PEP 562) so
that importing this module imports no torch.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


class PromptFileError(ValueError):
    """A saved file (a prompt's, a checkpoint's, a run's JSON) cannot be loaded; the message says
    which file and why."""


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


# ---------------------------------------------------------------------------------------
# The names that moved to prompt_files.py and exports.py, loaded on first use

_MOVED = {
    "prompt_files": ("WEIGHTS_NAME", "CONFIG_NAME", "FORMAT", "FORMAT_VERSION", "prompt_record", "trainable_tensors",
                     "save_prompt", "copy_into_prompt", "check_finite", "read_record", "read_tensors", "read_safetensors",
                     "load_prompt_module"),
    "exports": ("PEFT_CONFIG_NAME", "PEFT_WEIGHTS_NAME", "PEFT_TASK_TYPES", "EMBEDS_TENSOR", "EMBEDS_FORMAT", "OWN_FILES",
                "export_peft", "export_embeds", "read_embeds", "read_peft_prompt", "check_replaceable",
                "check_replaceable_file"),
}
_HOME = {name: module for module, names in _MOVED.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"softprompt.{module}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
