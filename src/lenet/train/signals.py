"""Ctrl-C during training: the first signal stops at the next step with a checkpoint, a second at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interrupted(KeyboardInterrupt):
    """A run stopped at once (a second Ctrl-C); its message says what was kept."""


@contextmanager
def stop_signals(ignore_after_stop: bool = False) -> Iterator[list[int]]:
    """SIGINT and SIGTERM noted in the yielded list (training ends the epoch there, with a checkpoint); a
    second signal stops at once. The previous handlers come back on exit, unless a signal came and
    `ignore_after_stop` (a program on its way out: further presses are ignored). Outside the main thread,
    where Python cannot take signals, the list stays empty."""
    signals: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return

    def on_signal(signum, frame):
        if signals:
            raise KeyboardInterrupt
        signals.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield signals
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_IGN if signals and ignore_after_stop else handler)
