"""Engine construction for PostgreSQL (production) and the embedded SQLite default, and the
bounds on every wait for PostgreSQL: connects, statements, COMMITs and pool checkouts end by
the request's deadline (ticketboss.deadline), whatever the server does."""

from __future__ import annotations

import re
import select
import time
from functools import partial
from pathlib import Path

import psycopg2
from psycopg2 import extensions
from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import queue as sqla_queue

from ticketboss import deadline
from ticketboss.config import Settings

# After the server refused an overflow connection, checkouts wait for the pool's own
# connections this long before one tries to open another.
_REFUSED_SECONDS = 1.0
# A statement's server-side timeout ends this long before the request's deadline.
_SERVER_FIRST_MS = 50


def make_engine(settings: Settings, *, durable: bool = True) -> Engine:
    """An engine with a bounded pool; call it after fork so each worker has its own.
    `durable` False: its commits return before they are flushed (synchronous_commit off),
    for work that is simply done again if a crash loses it (webhook dispatch)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings)
    engine = create_engine(
        url,
        # The compare-and-swap relies on it (a lost swap re-reads the latest commit in the
        # same transaction), whatever the server's default is.
        isolation_level="READ COMMITTED",
        poolclass=PatientPool,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        connect_args={
            "connect_timeout": 3,
            # A dead peer (half-open TCP) surfaces as an error within seconds instead of
            # stalling the group commit's leader, and everyone queued behind it, forever.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": 10_000,
            "application_name": "ticketboss",
        },
    )
    longest_ms = int(settings.db_statement_timeout_ms)
    flush = "" if durable else "; SET LOCAL synchronous_commit = off"

    @event.listens_for(engine, "handle_error")
    def _one_connection_timed_out(context):
        # A connection that missed the deadline is closed, as psycopg2 closes it, and the
        # dialect calls that a disconnect; but it says nothing of the pool's other
        # connections: only that one goes (SQLAlchemy would recycle them all).
        if isinstance(context.original_exception, DatabaseTimeout):
            context.invalidate_pool_on_disconnect = False

    @event.listens_for(engine, "begin")
    def _statement_timeout(conn):
        # A stuck statement becomes a 503 instead of a hung worker. Set in each transaction,
        # not per connection (a startup `options` parameter or a session SET): behind
        # pgbouncer in transaction mode, consecutive transactions of one client connection
        # run on different server connections, and pgbouncer refuses `options`. Never past
        # the request's deadline: a request queued behind a batch that waited on a row lock
        # has only what is left of its own time, not a fresh DB_STATEMENT_TIMEOUT_MS. A
        # server that answers cancels it a little before the client would give up, keeping
        # the connection.
        left = deadline.remaining()
        ms = longest_ms if left is None else min(longest_ms, int(left * 1000) - _SERVER_FIRST_MS)
        ms = max(ms, 1)
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}{flush}")

    return engine


class PatientPool(QueuePool):
    """SQLAlchemy's QueuePool, patient with a database under pressure:

    - a checkout waits at most DB_POOL_TIMEOUT, and never past the request's deadline;
    - an overflow connection the server refuses ("too many clients already": another
      client took the free slots) is not an error while this pool's own connections are
      busy: the checkout waits for one of them to come back, and for a second after, no
      checkout tries to open another (no storm of refused connects).
    """

    _refused_until = 0.0

    def _do_get(self):
        timeout = min(self._timeout, deadline.remaining(self._timeout) or 0.0)
        refused = time.monotonic() < self._refused_until and self.checkedout() > 0
        full = self._overflow >= self._max_overflow > -1 or refused
        try:
            return self._pool.get(full, timeout)  # waits only when it may not open one
        except sqla_queue.Empty:
            if full:
                raise sa_exc.TimeoutError(
                    f"no pooled connection came free within {timeout:.2f} s "
                    f"(pool {self.size()}, overflow {self.overflow()})"
                ) from None
        if not self._inc_overflow():
            return self._do_get()
        started = time.monotonic()
        try:
            return self._create_connection()
        except psycopg2.OperationalError as exc:
            self._dec_overflow()
            if not _TOO_MANY_CLIENTS.search(str(exc)) or self.checkedout() == 0:
                raise  # the database is away, or nobody's connection will come back
            self._refused_until = time.monotonic() + _REFUSED_SECONDS
            refusal = exc
        except BaseException:
            self._dec_overflow()
            raise
        try:
            return self._pool.get(True, max(timeout - (time.monotonic() - started), 0.0))
        except sqla_queue.Empty:
            raise refusal from None


# What PostgreSQL says when max_connections is reached (SQLSTATE 53300, which libpq does not
# report for a connection it could not open).
_TOO_MANY_CLIENTS = re.compile(r"too many clients|remaining connection slots are reserved")


class DatabaseTimeout(psycopg2.OperationalError):
    """PostgreSQL did not answer before the deadline; libpq's connection is closed (psycopg2
    closes it when a wait fails), so the pool discards it."""


def install_bounded_waits(default_seconds: float, *, green: bool) -> None:
    """Every wait of this process for PostgreSQL (connect, statement, COMMIT) ends by the
    current request's deadline, or after `default_seconds` for work no request made.

    psycopg2 then runs each call asynchronously and asks this callback to wait for the
    socket: cooperatively under gevent (what psycogreen does, plus the bound: libpq's own
    connect_timeout is not honoured there, and a stopped server never fires the server's
    statement_timeout), with poll(2) in threads.
    """
    wait_for = _green_wait if green else _poll_wait
    extensions.set_wait_callback(partial(_bounded_wait, wait_for, default_seconds))


def _bounded_wait(wait_for, default_seconds: float, conn) -> None:
    while True:
        state = conn.poll()
        if state == extensions.POLL_OK:
            return
        if state not in (extensions.POLL_READ, extensions.POLL_WRITE):
            raise psycopg2.OperationalError(f"bad result from poll: {state!r}")
        left = deadline.remaining(default_seconds) or 0.0
        if left <= 0 or not wait_for(conn.fileno(), state == extensions.POLL_READ, left):
            raise DatabaseTimeout("PostgreSQL did not answer before the request's deadline")


def _green_wait(fd: int, read: bool, seconds: float) -> bool:
    from gevent.socket import wait_read, wait_write

    try:
        (wait_read if read else wait_write)(fd, timeout=seconds)
    except TimeoutError:  # gevent's default timeout_exc, socket.timeout
        return False
    except OSError as exc:  # the wait was cancelled (the socket closed under it)
        raise psycopg2.OperationalError(f"the wait for PostgreSQL was cancelled: {exc}") from exc
    return True


def _poll_wait(fd: int, read: bool, seconds: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN if read else select.POLLOUT)
    return bool(poller.poll(seconds * 1000))


def _sqlite_engine(url, settings: Settings) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        connect_args={"timeout": settings.db_statement_timeout_ms / 1000},
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        # WAL lets readers run beside the single writer; busy_timeout makes the several
        # gunicorn workers queue for the write lock instead of failing at once.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={settings.db_statement_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
