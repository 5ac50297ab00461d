"""The one file lock: an ``flock`` on a file, held until ``close`` or the process's end.

Three users, one mechanism:

* a run directory (``OUTPUT/.lock``, exclusive): one process runs a run at a time;
* a sweep (``DIR/.sweep.lock``, shared): every live launcher and worker holds it, so a launcher
  that gets it exclusively knows no other is alive;
* the accuracy benchmark (``.NAME.lock`` beside its results file, exclusive): one writer per file.

The OS drops an flock when its process dies, so a killed holder never leaves a stale lock. An
exclusive holder writes its pid into the file (a refused process names it) and removes the file
as it lets go, so a finished run leaves nothing behind; a process that locked the file just
before its removal sees it is gone and locks the new one, so a removed file never counts as held.
Torch-free. On a system without ``fcntl`` (not POSIX) nothing is locked.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock
    fcntl = None


class LockHeld(OSError):
    """Another process holds the lock; ``holder`` is the pid its last exclusive holder wrote in
    the file ("unknown" if none did: shared holders write nothing)."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path}: locked by another process (pid {holder})")
        self.path, self.holder = path, holder


class FileLock:
    """A held lock on ``path``: ``FileLock.take(path)``, then ``close()``."""

    def __init__(self, path: Path, fd: int | None, shared: bool):
        self.path, self._fd, self.shared = path, fd, shared

    @classmethod
    def take(cls, path: str | Path, shared: bool = False, wait: bool = False) -> "FileLock":
        """Lock ``path`` (created if missing; its folder must exist), exclusively unless
        ``shared``. Without ``wait``, raise ``LockHeld`` at once if another process holds it
        in a conflicting mode."""
        path = Path(path)
        if fcntl is None:
            return cls(path, None, shared)
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, mode)
            except OSError as err:
                holder = _read_pid(fd)
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise LockHeld(path, holder) from None
            if _is_current(path, fd):
                break
            os.close(fd)  # the holder removed the file as it let go: a lock on it is no lock
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd, shared)

    def share(self) -> None:
        """Turn an exclusive lock into a shared one (waiting for nothing: no one else holds it).
        The file is then kept at ``close``: other processes may hold it too."""
        if self._fd is not None and not self.shared:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
        self.shared = True

    def close(self) -> None:
        """Let go (an exclusive holder removes the file first, while still holding it, so no one
        can take the old file). Closing twice does nothing."""
        if self._fd is None:
            return
        try:
            if not self.shared:
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        """A lock no one refers to any more is let go, as an open file is closed (the accuracy
        benchmark's ``main`` holds its lock in a local variable until it returns)."""
        self.close()


def _is_current(path: Path, fd: int) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not one its holder removed)."""
    try:
        current, mine = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino)


def _read_pid(fd: int) -> str:
    """The pid the lock's holder wrote (it may be an instant late)."""
    for _ in range(50):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "unknown"
