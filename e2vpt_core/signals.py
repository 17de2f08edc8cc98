"""Signal handlers installed for the length of a block (training's SIGTERM, pretraining's stop)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any]


@contextmanager
def handling(signums: Iterable[signal.Signals], handler: Handler) -> Iterator[None]:
    """Handle `signums` with `handler` while the block runs, then restore the previous
    handlers. Outside the main thread nothing changes: Python delivers signals there only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
