"""Stopping a verb that writes a run: SIGTERM or SIGINT become an exception, so nothing half-written stays.

SIGTERM's default ends the process where it stands, leaving the run's temporary folder beside
`--out`; Ctrl-C printed a traceback through SimPy. Inside `Stop.armed()` the first of either
raises `StopSignalError`, which leaves the `RunDirectory` block (its exit removes the temporary
folder) and reaches the command line, which says so in one line and exits 128 + the signal.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class StopSignalError(BaseException):  # as KeyboardInterrupt: no `except Exception` on the way swallows it
    """SIGTERM or SIGINT arrived while a run was being written."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def describe(self, out: str) -> str:
        return f"stopped by {signal.Signals(self.signum).name}: nothing written to {out}"


class Stop:
    """Turns the first SIGTERM or SIGINT into `StopSignalError` while `armed`; `disarm` once
    only the commit is left (its renames must not be cut in two)."""

    def __init__(self) -> None:
        self._raising = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._raising:
            self._raising = False  # a second signal must not cut the clean-up short
            raise StopSignalError(signum)

    def disarm(self) -> None:
        """From now on signals are ignored until the block ends (the run is finished, only its commit is left)."""
        self._raising = False

    @contextmanager
    def armed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            yield
            return
        previous = {signum: signal.signal(signum, self._handle) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
