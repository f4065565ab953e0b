"""The changes feed: a caller's notifications after a cursor, in an order no late commit
can be skipped in (store/queries/notifications.py says why)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from ticketboss.services.unit_of_work import connection, transaction
from ticketboss.store import queries

Cursor = tuple[int, int]  # (transaction id, notification id) of the last row read
START: Cursor = (0, 0)


def changes(
    engine: Engine, after: Cursor, limit: int, *, viewer: str | None, event_id: str | None
) -> tuple[list, Cursor]:
    """Up to `limit` outbox rows after the cursor that `viewer` may see (None: an operator,
    every row; a partner: its own and the events' updates), and the cursor after them."""
    with connection(engine) as conn:
        rows = queries.read_after(
            conn,
            after,
            limit,
            partner_id=viewer,
            every_partner=viewer is None,
            event_id=event_id,
        )
    return rows, ((rows[-1].xid, rows[-1].id) if rows else after)


def prune(engine: Engine, retention_days: int) -> int:
    """Delete the notifications older than `retention_days` (by the database's clock), and
    their deliveries with them; how many."""
    with transaction(engine, "prune notifications") as conn:
        before = queries.read_database_now(conn) - timedelta(days=retention_days)
        return queries.prune_notifications(conn, before)
