"""A clean stop on Ctrl-C (SIGINT): finish the batch in flight, save, then stop.

Training and evaluation run `with stop_on_sigint(...) as stop:` and look at
`stop.requested` between batches. The first SIGINT only sets that flag (and says so on
stderr); the work in flight finishes, its results are saved, and the loop raises
`Interrupted`, whose message says how to resume. A second SIGINT raises `KeyboardInterrupt`
at once, as usual.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Interrupted", "StopRequest", "stop_on_sigint"]


class Interrupted(KeyboardInterrupt):
    """Raised after a clean stop on SIGINT: everything up to the last batch is saved.

    A `KeyboardInterrupt`, so code that does not know about it stops as on any Ctrl-C.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass
class StopRequest:
    """Set by the first SIGINT inside `stop_on_sigint`."""

    requested: bool = False


@contextlib.contextmanager
def stop_on_sigint(what: str) -> Iterator[StopRequest]:
    """Turn the first SIGINT into ``stop.requested = True`` while inside.

    ``what`` finishes the sentence "SIGINT: stopping after ..." on stderr (e.g. "the update
    in flight"). Outside the main thread, where Python cannot catch signals, the request is
    never set and Ctrl-C behaves as usual.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        print(
            f"\nSIGINT: stopping after {what} (Ctrl-C again to stop at once, losing it)",
            file=sys.stderr,
            flush=True,
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
