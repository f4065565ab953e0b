"""SQL of the outbox (notifications): written by the batches, read in commit-safe order.

The order is (xid, id): on PostgreSQL a row is served only once its transaction id is below
the reading snapshot's xmin, when every transaction that could still commit a row before it
has ended, so a cursor never passes a row that commits late. Ids alone would: they are taken
before commit. On SQLite one writer commits at a time, in id order, and xid is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    insert,
    literal_column,
    or_,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.sql.elements import ColumnElement

from ticketboss.store.tables import notifications

_INSERT = insert(notifications)
# Every transaction below this has committed or rolled back (PostgreSQL 13+).
_SAFE_XID: ColumnElement[int] = literal_column(
    "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
)
_COLUMNS = (
    notifications.c.id,
    notifications.c.xid,
    notifications.c.type,
    notifications.c.event_id,
    notifications.c.partner_id,
    notifications.c.version,
    notifications.c.created_at,
    notifications.c.data,
)
_AFTER = tuple_(notifications.c.xid, notifications.c.id) > tuple_(bindparam("xid"), bindparam("id"))


# PostgreSQL: the batch's rows as arrays, one statement whatever their number (SQLAlchemy's
# multi-row VALUES renders and binds every row's parameters in Python).
_INSERT_ARRAYS = text(
    "INSERT INTO notifications (type, event_id, partner_id, version, created_at, data) "
    "SELECT n.type, :event_id, n.partner_id, n.version, :created_at, n.data "
    "FROM unnest(CAST(:types AS varchar[]), CAST(:partners AS varchar[]), "
    "CAST(:versions AS integer[]), CAST(:data AS text[])) "
    "WITH ORDINALITY AS n(type, partner_id, version, data, position) ORDER BY n.position"
)


def insert_notifications(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """One INSERT of a batch's notifications (all of one event, made at one time), in its
    transaction, in their order."""
    if conn.dialect.name != "postgresql":
        conn.execute(_INSERT, list(rows))
        return
    conn.execute(
        _INSERT_ARRAYS,
        {
            "event_id": rows[0]["event_id"],
            "created_at": rows[0]["created_at"],
            "types": [r["type"] for r in rows],
            "partners": [r["partner_id"] for r in rows],
            "versions": [r["version"] for r in rows],
            "data": [r["data"] for r in rows],
        },
    )


def settled(conn: Connection):
    """The condition that a row's transaction has ended (always true on SQLite)."""
    if conn.dialect.name == "postgresql":
        return notifications.c.xid < _SAFE_XID
    return true()


def read_after(
    conn: Connection,
    after: tuple[int, int],
    limit: int,
    *,
    partner_id: str | None = None,
    every_partner: bool = True,
    event_id: str | None = None,
) -> list:
    """Up to `limit` notifications after the cursor (xid, id), in commit-safe order: every
    one (operators), or a partner's own and the events' updates."""
    conditions = [_AFTER, settled(conn)]
    if not every_partner:
        conditions.append(
            or_(notifications.c.partner_id == partner_id, notifications.c.partner_id.is_(None))
        )
    if event_id is not None:
        conditions.append(notifications.c.event_id == event_id)
    query = (
        select(*_COLUMNS)
        .where(and_(*conditions))
        .order_by(notifications.c.xid, notifications.c.id)
        .limit(limit)
    )
    return list(conn.execute(query, {"xid": after[0], "id": after[1]}))


def prune_notifications(conn: Connection, before: datetime) -> int:
    """Delete the notifications made before `before` (their deliveries go with them)."""
    result = conn.execute(delete(notifications).where(notifications.c.created_at < before))
    return result.rowcount
