"""SQL of the reservations table (confirmed reservations and holds)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)

from ticketboss.domain import Reservation, Status
from ticketboss.domain.batch import Lapsed, Usage
from ticketboss.store.queries.clock import database_now
from ticketboss.store.tables import reservations

_HELD = reservations.c.status == Status.HELD.value

_INSERT_RESERVATIONS = insert(reservations)

_RESERVATION_COLUMNS = (
    reservations.c.id,
    reservations.c.event_id,
    reservations.c.partner_id,
    reservations.c.seats,
    reservations.c.status,
    reservations.c.created_at,
    reservations.c.cancelled_at,
    reservations.c.expires_at,
    reservations.c.allocated_seats,
)
_LOAD_RESERVATION = select(*_RESERVATION_COLUMNS).where(reservations.c.id == bindparam("id"))

_NAMED = select(*_RESERVATION_COLUMNS).where(
    reservations.c.id.in_(bindparam("ids", expanding=True)),
    reservations.c.event_id == bindparam("event_id"),
)

# An event's holds that lapsed by `now`, and the earliest expiry of those still alive: both
# read through the partial index of held rows.
_LAPSED = select(*_RESERVATION_COLUMNS).where(
    reservations.c.event_id == bindparam("event_id"),
    _HELD,
    reservations.c.expires_at <= bindparam("now"),
)
_NEXT_EXPIRY = select(func.min(reservations.c.expires_at)).where(
    reservations.c.event_id == bindparam("event_id"),
    _HELD,
    reservations.c.expires_at > bindparam("now"),
)


def _set_status(status: Status, from_statuses: Sequence[Status], **values):
    return (
        update(reservations)
        .where(reservations.c.id.in_(bindparam("ids", expanding=True)))
        .where(reservations.c.status.in_([s.value for s in from_statuses]))
        .values(status=status.value, **values)
    )


_MARK_CANCELLED = _set_status(
    Status.CANCELLED,
    [Status.CONFIRMED, Status.HELD],
    cancelled_at=bindparam("cancelled_at_"),
    expires_at=None,
)
# A hold judged alive at the batch's read must still be alive when the write runs (it may
# have waited on the event's row lock): else the row count says so and the batch re-runs,
# and a GET that said "expired" in between is never contradicted.
_STILL_ALIVE = reservations.c.expires_at > database_now()
_MARK_CONFIRMED = _set_status(Status.CONFIRMED, [Status.HELD], expires_at=None).where(_STILL_ALIVE)
_MARK_EXPIRED = _set_status(Status.EXPIRED, [Status.HELD])
_EXTEND = (
    update(reservations)
    .where(reservations.c.id == bindparam("id_"), _HELD, _STILL_ALIVE)
    .values(expires_at=bindparam("expires_at_"))
)


def insert_reservations(conn: Connection, rows: Sequence[Reservation]) -> None:
    """One multi-row INSERT (SQLAlchemy's insertmanyvalues) for the whole batch."""
    conn.execute(
        _INSERT_RESERVATIONS,
        [
            {
                "id": r.reservation_id,
                "event_id": r.event_id,
                "partner_id": r.partner_id,
                "seats": r.seats,
                "status": r.status.value,
                "created_at": r.created_at,
                "expires_at": r.expires_at,
                "allocated_seats": r.allocated_seats,
            }
            for r in rows
        ],
    )


def load_reservation(conn: Connection, reservation_id: UUID) -> Reservation | None:
    row = conn.execute(_LOAD_RESERVATION, {"id": reservation_id}).first()
    return _reservation(row) if row else None


def _reservation(row) -> Reservation:
    return Reservation(
        reservation_id=row.id,
        event_id=row.event_id,
        partner_id=row.partner_id,
        seats=row.seats,
        status=Status(row.status),
        created_at=row.created_at,
        cancelled_at=row.cancelled_at,
        expires_at=row.expires_at,
        allocated_seats=row.allocated_seats,
    )


def load_named(
    conn: Connection, event_id: str, reservation_ids: Sequence[UUID]
) -> dict[UUID, Reservation]:
    """Those of the event's reservations, whatever their status, by id."""
    if not reservation_ids:
        return {}
    rows = conn.execute(_NAMED, {"ids": list(reservation_ids), "event_id": event_id})
    return {row.id: _reservation(row) for row in rows}


def load_lapsed(conn: Connection, event_id: str, now: datetime) -> Lapsed:
    """The event's holds that lapsed by `now`, and the earliest expiry of the others."""
    params = {"event_id": event_id, "now": now}
    holds: dict[UUID, int] = {}
    allocated: dict[str, int] = {}
    rows = [_reservation(row) for row in conn.execute(_LAPSED, params)]
    for hold in rows:
        holds[hold.reservation_id] = hold.seats
        if hold.allocated_seats:
            allocated[hold.partner_id] = allocated.get(hold.partner_id, 0) + hold.allocated_seats
    return Lapsed(holds, conn.scalar(_NEXT_EXPIRY, params), allocated, tuple(rows))


_OF_PARTNERS = reservations.c.partner_id.in_(bindparam("partners", expanding=True))
_LIVE = and_(_HELD, reservations.c.expires_at > bindparam("now"))
# Seats of the partners' live holds of the event; and their seats of the open pool, in
# their live holds and confirmed reservations: each an index range (event, status, partner).
_HELD_BY = (
    select(reservations.c.partner_id, func.sum(reservations.c.seats))
    .where(reservations.c.event_id == bindparam("event_id"), _OF_PARTNERS, _LIVE)
    .group_by(reservations.c.partner_id)
)
_POOL_BY = (
    select(
        reservations.c.partner_id,
        func.sum(reservations.c.seats - reservations.c.allocated_seats),
    )
    .where(
        reservations.c.event_id == bindparam("event_id"),
        _OF_PARTNERS,
        or_(reservations.c.status == Status.CONFIRMED.value, _LIVE),
    )
    .group_by(reservations.c.partner_id)
)


def load_usage(
    conn: Connection, event_id: str, partners: Sequence[str], now: datetime, *, pool: bool
) -> dict[str, Usage]:
    """What each of the partners has of the event at `now`: seats in live holds, and (with
    `pool`) seats of the open pool."""
    params = {"event_id": event_id, "partners": list(partners), "now": now}
    held = dict(conn.execute(_HELD_BY, params).all())
    pooled = dict(conn.execute(_POOL_BY, params).all()) if pool else {}
    return {p: Usage(int(held.get(p) or 0), int(pooled.get(p) or 0)) for p in partners}


def _changed(conn: Connection, statement, ids: Sequence[UUID], **params) -> int:
    return conn.execute(statement, {"ids": list(ids), **params}).rowcount


def mark_cancelled(conn: Connection, reservation_ids: Sequence[UUID], at: datetime) -> int:
    """Cancel confirmed reservations and release holds; returns how many still were."""
    return _changed(conn, _MARK_CANCELLED, reservation_ids, cancelled_at_=at)


def mark_confirmed(conn: Connection, reservation_ids: Sequence[UUID]) -> int:
    """Holds become confirmed reservations; returns how many were still held."""
    return _changed(conn, _MARK_CONFIRMED, reservation_ids)


def mark_expired(conn: Connection, reservation_ids: Sequence[UUID]) -> int:
    """Lapsed holds are expired; returns how many were still held."""
    return _changed(conn, _MARK_EXPIRED, reservation_ids)


def extend_hold(conn: Connection, reservation_id: UUID, expires_at: datetime) -> bool:
    """A hold now ends at `expires_at`; False if it is no longer held."""
    params = {"id_": reservation_id, "expires_at_": expires_at}
    return conn.execute(_EXTEND, params).rowcount == 1


def _status_is(status: str, now: datetime):
    """A listing's status filter, as the reservations stand at `now`."""
    lapsed = and_(_HELD, reservations.c.expires_at <= now)
    if status == Status.HELD.value:
        return and_(_HELD, reservations.c.expires_at > now)
    if status == Status.EXPIRED.value:
        return or_(reservations.c.status == status, lapsed)
    return reservations.c.status == status


def list_reservations(
    conn: Connection,
    event_id: str,
    *,
    partner_id: str | None,
    status: str | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
    now: datetime,
) -> list[Reservation]:
    """An event's reservations in (created_at, id) order — stable while rows are added — as
    they stand at `now`."""
    query = (
        select(*_RESERVATION_COLUMNS)
        .where(reservations.c.event_id == event_id)
        .order_by(reservations.c.created_at, reservations.c.id)
        .limit(limit)
    )
    if partner_id is not None:
        query = query.where(reservations.c.partner_id == partner_id)
    if status is not None:
        query = query.where(_status_is(status, now))
    if after is not None:
        query = query.where(tuple_(reservations.c.created_at, reservations.c.id) > tuple_(*after))
    return [_reservation(row).seen_at(now) for row in conn.execute(query)]
