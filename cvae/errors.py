"""Errors a user can fix: bad spec, data folder, checkpoint, run folder or flag.

The CLI turns every ``UserError`` into one message and exit code 2; anything else is a
failure of the run (exit code 1). A run stopped by SIGTERM or ctrl-c (``Stopped``) saves its
checkpoint and exits 143 or 130, as a shell reports those signals.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Bad input. The message names the file, key or value and what is allowed."""


class SpecError(UserError):
    """An experiment spec, sweep file or override is invalid."""


class DataError(UserError):
    """A dataset folder does not follow the Lab4 layout or holds an unreadable file."""


class CheckpointError(UserError):
    """A checkpoint is missing, truncated, or not written by cvae."""


class RunDirError(UserError):
    """A run folder is missing, or already holds a run that would be overwritten."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite. The message names the step and the last values."""


class Stopped(KeyboardInterrupt):
    """The run was asked to stop: SIGTERM (W&B's early termination, its stop button, a scheduler) or
    Ctrl-C. It ends with status ``stopped`` and resumes with ``cvae train --resume RUN``."""

    def __init__(self, how: str = "Ctrl-C") -> None:
        super().__init__(how)
        self.how = how

    @property
    def exit_code(self) -> int:
        return 143 if self.how == "SIGTERM" else 130  # 128 + the signal's number, as a shell reports it


class Pruned(Exception):
    """A sweep's pruner ended the run early: a normal end for a trial (status ``pruned``)."""


@contextmanager
def sigterm_stops() -> Iterator[None]:
    """SIGTERM raises ``Stopped("SIGTERM")`` as Ctrl-C raises KeyboardInterrupt, so one cleanup path
    serves both: a run saves its checkpoint (W&B's early termination and its stop button send
    SIGTERM), a process that runs others passes the stop on to them. A second SIGTERM waits for the
    first one's cleanup. The main thread only (where Python runs signal handlers); elsewhere nothing
    changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup runs once
        raise Stopped("SIGTERM")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block ends, then arrive as they would have: for writes that
    must not stop halfway (a trial's record in a shared Optuna storage, whose file lock an interrupt
    can leave half released). The main thread only; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(held):  # each once, in the order they came, to the handlers they missed
            signal.raise_signal(s)
