"""The database's clock: the one clock every worker and host judges hold expiry by."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from ticketboss.store.tables import UtcDateTime


class database_now(FunctionElement):  # named as the SQL function it is
    """The server's current time, zone-aware, to the microsecond where it has them."""

    type = UtcDateTime()
    inherit_cache = True


@compiles(database_now, "postgresql")
def _postgresql_now(element, compiler, **kw):
    # The time of the statement, not of the transaction's start (now()): the batch reads it
    # with the event, and stamps its rows with it.
    return "clock_timestamp()"


@compiles(database_now, "sqlite")
def _sqlite_now(element, compiler, **kw):
    # Milliseconds, padded to the microseconds SQLAlchemy writes, so stored times compare.
    return "strftime('%Y-%m-%d %H:%M:%f000', 'now')"


_NOW = select(database_now())


def read_database_now(conn: Connection) -> datetime:
    return conn.scalar(_NOW)
