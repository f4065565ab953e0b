"""The one way a write runs: a transaction that commits when its block ends, rolls back when
it raises, and reports a failed COMMIT as OutcomeUnknown (the changes may or may not have
landed, so nothing may retry it blindly). Every transaction and read starts on a connection
that has answered its first statement: a pooled connection the server dropped is replaced
there by a fresh one, whatever the transaction is for."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from tenacity import Retrying, retry, retry_if_exception, stop_after_attempt

from ticketboss import deadline
from ticketboss.domain import OutcomeUnknown
from ticketboss.outages import outage
from ticketboss.store.db import DatabaseTimeout

log = logging.getLogger(__name__)

# A restart or pg_terminate_backend drops every pooled connection at once; SQLAlchemy then
# recycles the whole pool, so the second try is on a fresh connection.
_BEGIN_ATTEMPTS = 3
_CLOSE_GRACE_SECONDS = 0.1


@contextmanager
def transaction(engine: Engine, subject: str) -> Iterator[Connection]:
    """`with transaction(engine, "event 'gala'") as conn:` — one transaction on `conn`."""
    with connection(engine) as conn:  # closing without a commit rolls back
        yield conn
        notices = _notices(conn)
        try:
            conn.commit()
        except DBAPIError as exc:
            raise OutcomeUnknown(subject) from exc
        if notices and any(UNREPLICATED in notice for notice in notices):
            # The wait for the synchronous standby was cancelled (our statement timeout, a
            # cancel, a restart): committed here, perhaps not on the standby, so a failover
            # could lose it. Not a success to answer: the Idempotency-Key's retry finds out.
            log.warning("COMMIT of %s not confirmed by the synchronous standby", subject)
            raise OutcomeUnknown(subject)
        outage.over()


# PostgreSQL's WARNING when a COMMIT's wait for synchronous replication was cancelled: "The
# transaction has already committed locally, but might not have been replicated to the
# standby." (src/backend/replication/syncrep.c)
UNREPLICATED = "might not have been replicated"


def _notices(conn: Connection) -> list[str] | None:
    """The driver's list of the server's notices (psycopg2), emptied so that what the COMMIT
    says is all it will hold; None on drivers without one (SQLite)."""
    notices = getattr(conn.connection.dbapi_connection, "notices", None)
    if notices is not None:
        del notices[:]
    return notices


@contextmanager
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection whose transaction has begun (on PostgreSQL its first statement, SET LOCAL
    statement_timeout, has answered); reads use it as they are, writes through
    `transaction`."""
    try:
        conn = _begun(engine)
    except DBAPIError as exc:
        if not dropped(exc):
            raise
        retrying = Retrying(
            retry=retry_if_exception(dropped),
            stop=stop_after_attempt(_BEGIN_ATTEMPTS - 1),
            reraise=True,
        )
        conn = retrying(_begun, engine)
    try:
        yield conn
    finally:
        _close(conn)


def dropped(exc: BaseException) -> bool:
    """A pooled connection the server closed (a restart, a terminated backend), or one
    handed out still inside a failed transaction (`_begun` invalidates it): nothing was
    asked of it, so a fresh one may be tried. Not a database that stopped answering (the
    deadline passed: trying again would wait past it)."""
    return (
        isinstance(exc, DBAPIError)
        and (exc.connection_invalidated or _aborted(exc))
        and not isinstance(exc.orig, DatabaseTimeout)
    )


def _aborted(exc: DBAPIError) -> bool:
    """PostgreSQL's "current transaction is aborted" (SQLSTATE 25P02) on a transaction's
    first statement: the connection came back from the pool inside a failed transaction."""
    return getattr(exc.orig, "pgcode", None) == "25P02"


# Decorates a use case made of whole transactions (an Idempotency-Key's claim, its release):
# a connection the server dropped before a COMMIT was asked for wrote nothing, so the use
# case runs again, on a fresh connection. (The batch has its own retries: services/retry.py.)
retry_when_dropped = retry(
    retry=retry_if_exception(dropped),
    stop=stop_after_attempt(_BEGIN_ATTEMPTS),
    reraise=True,
)


def _close(conn: Connection) -> None:
    """Roll back what is left and give the connection back. Past the deadline, a live server
    still gets a moment to answer the ROLLBACK (the connection then stays pooled); a silent
    one costs only this connection: what the block did, or raised, stands."""
    with deadline.at_least(_CLOSE_GRACE_SECONDS):
        try:
            conn.close()
        except DBAPIError as exc:
            if not isinstance(exc.orig, DatabaseTimeout):
                raise


def _begun(engine: Engine) -> Connection:
    conn = engine.connect()
    try:
        conn.begin()
    except DBAPIError as exc:
        if _aborted(exc):
            # Under heavy load (tests/e2e/test_hangs.py beside a busy machine) a pooled
            # connection has come back still inside a failed transaction: it is never used
            # again, and `connection` tries a fresh one.
            log.warning("a pooled connection was inside a failed transaction: replaced")
            conn.invalidate()
        conn.close()
        raise
    except BaseException:
        conn.close()
        raise
    return conn
