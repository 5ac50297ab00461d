"""Signal handlers for the length of a block, the previous ones put back after it: the one way
`softprompt train` (SIGTERM/SIGHUP as Ctrl-C, a resume hint) and the sweep launcher (stop the
workers) take over signals."""

from __future__ import annotations

import contextlib
import signal
from typing import Any, Callable, Iterable, Iterator


@contextlib.contextmanager
def handling(signals: Iterable[signal.Signals], handler: Callable[[int, Any], Any]) -> Iterator[None]:
    """``handler`` for ``signals`` inside the block, the previous handlers after it; outside the
    main thread, where Python cannot set them, the signals are left alone."""
    try:
        previous = {sig: signal.signal(sig, handler) for sig in signals}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
