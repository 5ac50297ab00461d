"""Progress on long work: a tqdm bar on a terminal; otherwise (a log file, CI, a notebook's
captured output) one plain line at most every ``every`` seconds, so a long run never goes
silent and never fills a log with carriage returns."""

from __future__ import annotations

import sys
import time
from typing import Any

from .distributed import is_main

EVERY_SECONDS = 30.0


class Progress:
    """``update(n, **postfix)`` after each unit of work, ``close()`` at the end.

    Args:
        total: units of work (steps, batches).
        desc: what is being done, e.g. ``"ulpt sst2"``.
        initial: units already done (a resumed run).
        enabled: False prints nothing. Only the main process of a distributed launch ever
            prints (``distributed.is_main``): the others' bars would repeat it.
        every: seconds between plain lines when the output is not a terminal.
    """

    def __init__(self, total: int, desc: str, initial: int = 0, enabled: bool = True, every: float = EVERY_SECONDS,
                 leave: bool = True):
        self.total, self.desc, self.done, self.every = total, desc, initial, every
        self.enabled = enabled and is_main()
        self.bar = None
        self.postfix: dict[str, Any] = {}
        self.started = self.last = time.time()
        if enabled and sys.stdout.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=leave)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.done += n
        self.postfix.update(postfix)
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(**postfix)
            self.bar.update(n)
        elif self.enabled and time.time() - self.last >= self.every:
            self.last = time.time()
            extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
            print(f"{self.desc}: {self.done}/{self.total}{extra} ({self.last - self.started:.0f} s)", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
