"""The one way a name becomes a file name, and the one check that a file lands where it belongs.

Names that end up in file names come from users' files: a task file's ``name``, a method or
a diagnostic recorded in a run's log (a sweep's own name is checked by its spec). ``name: "../../../../tmp/x/pwn"``
in a task file made ``sweep report`` write ``/tmp/x/pwn.png``. ``safe_filename`` makes any name
one plain path component; ``inside`` refuses a path that leaves the folder a command writes to.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

# Letters, digits and these keep their place; anything else (a separator, "..", a control
# character, a space) becomes "_". Readable names stay as they are.
_UNSAFE = re.compile(r"[^\w.+=-]+")
MAX_LENGTH = 100  # well under any file system's limit of a component, with room for a suffix


def safe_filename(name: object) -> str:
    """``name`` as one file name component: unchanged when it is already a plain one (``sst2``,
    ``lr-dpt``, ``lr=0.1``), else with every unsafe run of characters turned into ``_``, no
    leading dot, at most ``MAX_LENGTH`` characters, and a short hash of the original name
    appended, so that two names never share a file (``a/b`` and ``a_b``)."""
    text = str(name)
    safe = _UNSAFE.sub("_", text).lstrip(".")
    if safe == text and 0 < len(safe) <= MAX_LENGTH:
        return safe
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe[:MAX_LENGTH] or 'name'}-{digest}"


def inside(folder: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` when it lies in ``folder`` (symlinks followed), else a ``ValueError`` naming both:
    every report and plot file is checked here before it is written."""
    root = Path(os.path.realpath(folder))
    target = Path(os.path.realpath(path))
    if root not in target.parents:
        raise ValueError(f"refusing to write {path}: it is outside {folder}")
    return Path(path)
