"""The one check every command-line option that writes a file goes through (``predict --output``,
``eval --output``, ``inspect --plot``), before any slow work. (Options that write a folder have
their own one check each, by what they replace: ``train --output-dir``/``demo --output-dir``
``softprompt.rundir.owned``, ``export OUT`` ``softprompt.io.check_replaceable``, ``sweep --dir``
``Sweep.create``.)

* an existing file is replaced only with ``--overwrite``;
* never the command's own input (``predict --input v.jsonl --output v.jsonl`` would have
  replaced the rows it was reading), whatever ``--overwrite`` says;
* never a file of a softprompt run or prompt folder (``eval R/prompt --output R/config.json``
  would have destroyed the run's config): those belong to the command that wrote them;
* never a directory, never through a symlink loop, and only where a file can be written (the
  nearest existing ancestor a writable directory: the missing ones are created).

Each refusal is one line naming the option and the path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from softprompt.paths import real_path as _resolve
from softprompt.prompt_files import CONFIG_NAME, WEIGHTS_NAME
from softprompt.rundir import OWN_FOLDERS, RUN_FILES, is_run

PROMPT_FILES = (CONFIG_NAME, WEIGHTS_NAME)


def softprompt_folder(folder: Path) -> str | None:
    """``"run"`` or ``"prompt"`` when ``folder`` is one softprompt wrote (a run directory as
    ``rundir.is_run`` tells it, or one of the folders a run writes whole), else None."""
    if any((folder / name).is_file() for name in PROMPT_FILES):
        return "prompt"
    if is_run(folder) or folder.name in OWN_FOLDERS and is_run(folder.parent):
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
    parent = Path(path).expanduser().absolute().parent
    while not os.path.lexists(parent):
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {parent} is not writable")
    owner = softprompt_folder(target.parent)
    if owner and (target.exists() or target.name in RUN_FILES + PROMPT_FILES + ("README.md",)):
        raise ValueError(f"{option} {path} is a file of the softprompt {owner} folder {target.parent}; write the output elsewhere")
    if os.path.lexists(path) and not overwrite:
        raise ValueError(f"{option} {path} exists; pass --overwrite to replace it")
    return Path(path)
