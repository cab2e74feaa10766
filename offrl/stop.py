"""Stopping a long job cleanly: the first SIGINT (Ctrl-C) or SIGTERM (a scheduler's stop, `kill`) only asks.

`StopSignals` is a context manager that, while open, replaces the handlers of SIGINT and SIGTERM with one that
records the signal; the job looks at `requested` between two units of work (the trainer: between two updates),
writes its checkpoint of that point and ends. So a run stopped this way loses no updates, and resuming it gives
what an uninterrupted run gives (the checkpoint holds a whole step, never half an update). A second SIGINT
interrupts at once with KeyboardInterrupt (the last checkpoint is kept), for a user who will not wait. A
SIGKILL cannot be caught: then the periodic checkpoints are what is left.

Python lets only the main thread install handlers; elsewhere (a job run from a worker thread) the context
manager installs nothing and the signals keep their usual effect.
"""
from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    def __init__(self):
        self.signum: int | None = None  # the first signal received, None while none came
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
