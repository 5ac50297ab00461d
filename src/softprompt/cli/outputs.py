"""The one check every command-line option that writes a file goes through (``predict --output``,
``eval --output``, ``inspect --plot``), before any slow work:

* an existing file is replaced only with ``--overwrite``;
* never the command's own input (``predict --input v.jsonl --output v.jsonl`` would have
  replaced the rows it was reading), whatever ``--overwrite`` says;
* never a file of a softprompt run or prompt folder (``eval R/prompt --output R/config.json``
  would have destroyed the run's config): those belong to the command that wrote them;
* never a directory, and never through a symlink loop.

Each refusal is one line naming the option and the path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from softprompt.paths import real_path as _resolve

# What marks a folder as softprompt's own: a run directory (its config.json beside a log or
# metrics) or a prompt folder. The names are what those folders hold (rundir.py, io.py).
RUN_FILES = ("config.json", "log.jsonl", "metrics.json", "summary.json", "state.json")
PROMPT_FILES = ("prompt_config.json", "prompt.safetensors")


def softprompt_folder(folder: Path) -> str | None:
    """``"run"`` or ``"prompt"`` when ``folder`` is one softprompt wrote, else None."""
    if any((folder / name).is_file() for name in PROMPT_FILES):
        return "prompt"
    if (folder / "config.json").is_file() and any((folder / name).exists() for name in RUN_FILES[1:] + ("prompt",)):
        return "run"
    return None


def output_file(path: str | os.PathLike, option: str, overwrite: bool = False,
                inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """``path``, checked as the file ``option`` will write (see the module docstring); a
    ``ValueError`` of one line otherwise. ``inputs``: the files and folders the command reads."""
    target = _resolve(path, option)
    for given in inputs:
        if given is None:
            continue
        source = _resolve(given, option)
        if target == source or source in target.parents and softprompt_folder(source):
            raise ValueError(f"{option} {path} is this command's input {given}; write the output elsewhere")
    if target.is_dir():
        raise ValueError(f"{option} {path} is a directory; give a file name")
    owner = softprompt_folder(target.parent)
    if owner and (target.exists() or target.name in RUN_FILES + PROMPT_FILES + ("README.md",)):
        raise ValueError(f"{option} {path} is a file of the softprompt {owner} folder {target.parent}; write the output elsewhere")
    if os.path.lexists(path) and not overwrite:
        raise ValueError(f"{option} {path} exists; pass --overwrite to replace it")
    return Path(path)
