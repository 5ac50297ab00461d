"""A user's path made absolute, the one way every command and loader does it.

``Path.resolve`` raises ``RuntimeError`` (Python < 3.13) or ``OSError`` on a symlink loop, which
reached users as a traceback (``--train-file loop.jsonl``); here it is one line naming the option.
"""

from __future__ import annotations

import os
from pathlib import Path


def real_path(path: str | os.PathLike, what: str = "path") -> Path:
    """``path`` with ``~`` expanded, made absolute, symlinks followed; ``ValueError`` naming
    ``what`` and the path on a symlink loop."""
    try:
        return Path(path).expanduser().resolve(strict=False)
    except (RuntimeError, OSError) as err:
        reason = "symlink loop" if "loop" in str(err).lower() else str(err)
        raise ValueError(f"{what} {path}: {reason}") from None
