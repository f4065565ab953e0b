"""The one way a write runs: a transaction that commits when its block ends, rolls back when
it raises, and reports a failed COMMIT as OutcomeUnknown (the changes may or may not have
landed, so nothing may retry it blindly)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from ticketboss.domain import OutcomeUnknown


@contextmanager
def transaction(engine: Engine, subject: str) -> Iterator[Connection]:
    """`with transaction(engine, "event 'gala'") as conn:` — one transaction on `conn`."""
    with engine.connect() as conn:  # closing without a commit rolls back
        yield conn
        try:
            conn.commit()
        except DBAPIError as exc:
            raise OutcomeUnknown(subject) from exc
