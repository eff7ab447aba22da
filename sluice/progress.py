"""How far a long run has got, told as it goes to whoever in this process listens (``sluice totesys``,
``analytics``, ``customers``, ``backfill`` and the demo show it on a terminal: ``sluice.cli.output.showing``).

What is told is one short line, the run's stage and its rows so far (``load fact_payment: 200,000 of 450,000
rows``). It is told from the edges of a run (its tasks, and the engine's reads and writes), never from a pure
transform; nobody listening costs nothing, and a listener that fails never fails the run. ``sluice.ingest.progress``
is a second ``Channel``, for the rows one file's pass has read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Generic, ParamSpec, Protocol, TypeVar


class Sized(Protocol):
    def __len__(self) -> int: ...


F = TypeVar("F", bound=Sized)
P = ParamSpec("P")


class Channel(Generic[P]):
    """Who hears what a run in this process tells on one subject, while inside ``listening``: the run's stage
    (this module's ``tell``) or the rows one file's pass has read (``sluice.ingest.progress``)."""

    def __init__(self) -> None:
        self._listeners: list[Callable[P, None]] = []

    @contextmanager
    def listening(self, listener: Callable[P, None]) -> Iterator[None]:
        """Call ``listener`` with what is told, while inside."""
        self._listeners.append(listener)
        try:
            yield
        finally:
            self._listeners.remove(listener)

    def tell(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Tell every listener (nothing happens when nobody listens). Where a run tells how far it got, it may also
        stop: ``checkpoint`` first."""
        checkpoint()
        for listener in list(self._listeners):
            try:
                listener(*args, **kwargs)
            except Exception:  # a progress display never fails a run
                logging.getLogger(__name__).debug("progress listener failed", exc_info=True)


#: What stops the run in this context at a checkpoint (``stoppable``): its cancellation's check.
_STOP: ContextVar[Callable[[], None] | None] = ContextVar("sluice_stop", default=None)


@contextmanager
def stoppable(check: Callable[[], None]) -> Iterator[None]:
    """Call ``check`` at every checkpoint of the run in this context (and the threads it copies its context to, as
    the COPY's encoder thread does): it raises to stop the run (a cancellation from Prefect)."""
    token = _STOP.set(check)
    try:
        yield
    finally:
        _STOP.reset(token)


def settle() -> None:
    """From here on, nothing stops the run in this context (until ``stoppable`` ends): its load committed, and what
    follows publishes what it loaded."""
    _STOP.set(None)


def checkpoint() -> None:
    """A place where a run may stop: each told stage, each chunk counted, each chunk COPYed, and before a load
    commits. Nothing happens outside ``stoppable``."""
    check = _STOP.get()
    if check is not None:
        check()


_stages: Channel[[str]] = Channel()

#: ``listening(listener)``: call ``listener(line)`` for each line a run in this process tells, while inside.
listening = _stages.listening
#: ``tell(line)``: tell every listener how far the run has got (nothing happens when nobody listens).
tell = _stages.tell


def counted(frames: Iterable[F], what: str, total: int | None = None, then: str | None = None) -> Iterator[F]:
    """``frames`` as they are, telling ``what: N rows`` (``N of TOTAL rows``) first and after each one is used,
    and ``then`` once the last was (what the caller does with them all, e.g. one statement that merges them).

    Holds no frame while the caller uses it: a chunk the caller drops is freed before the next is read."""
    done = 0

    def say() -> None:
        of = f" of {total:,}" if total is not None else ""
        tell(f"{what}: {done:,}{of} row{'' if (done if total is None else total) == 1 else 's'}")

    if total is not None:
        say()
    iterator = iter(frames)
    held: list[F] = []
    for frame in iterator:
        held.append(frame)
        del frame
        rows = len(held[0])
        yield held.pop()
        done += rows
        say()
    if then is not None:
        tell(then)
