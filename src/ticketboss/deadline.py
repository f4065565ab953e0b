"""The request deadline: one moment per request after which nothing waits on a dependency.

A request is given REQUEST_DEADLINE_SECONDS from the moment it arrived whole (its headers,
then once more its body, which has a bound of its own). Every wait it makes on PostgreSQL
(a connect, a statement, a COMMIT, a pool checkout, a place in its event's group commit)
ends by then; the request then answers 503 with Retry-After instead of waiting on. Work no
request made (the hold sweep, the CLI) waits at most the default bound its caller gives.

The deadline lives in a context variable: each gevent greenlet and each thread has its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

_DEADLINE: ContextVar[float | None] = ContextVar("ticketboss_deadline", default=None)


def start(seconds: float) -> Token:
    """Give the current request `seconds` from now; returns the token that `end` takes."""
    return _DEADLINE.set(time.monotonic() + seconds)


def end(token: Token) -> None:
    _DEADLINE.reset(token)


def remaining(default: float | None = None) -> float | None:
    """Seconds left before the deadline (0 once it passed); `default` when none is set."""
    moment = _DEADLINE.get()
    if moment is None:
        return default
    return max(moment - time.monotonic(), 0.0)


@contextmanager
def at_least(seconds: float) -> Iterator[None]:
    """At least `seconds` from now, even if the deadline has passed: for tidying up after
    it (a ROLLBACK that a live server answers at once), never for new work. Without a
    deadline, nothing changes."""
    left = remaining()
    if left is None:
        yield
        return
    token = start(max(seconds, left))
    try:
        yield
    finally:
        end(token)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """At most `seconds` from now, and never past a deadline already set (a health probe)."""
    left = remaining()
    token = start(seconds if left is None else min(seconds, left))
    try:
        yield
    finally:
        end(token)
