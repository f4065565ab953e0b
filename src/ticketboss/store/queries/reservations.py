"""SQL of the reservations table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import (
    Connection,
    bindparam,
    insert,
    select,
    tuple_,
    update,
)

from ticketboss.domain import Reservation, Status
from ticketboss.store.tables import reservations

_CONFIRMED = Status.CONFIRMED.value

_INSERT_RESERVATIONS = insert(reservations)

_RESERVATION_COLUMNS = (
    reservations.c.id,
    reservations.c.event_id,
    reservations.c.partner_id,
    reservations.c.seats,
    reservations.c.status,
    reservations.c.created_at,
    reservations.c.cancelled_at,
)
_LOAD_RESERVATION = select(*_RESERVATION_COLUMNS).where(reservations.c.id == bindparam("id"))

_CONFIRMED_SEATS = select(reservations.c.id, reservations.c.seats, reservations.c.partner_id).where(
    reservations.c.id.in_(bindparam("ids", expanding=True)),
    reservations.c.event_id == bindparam("event_id"),
    reservations.c.status == _CONFIRMED,
)

_MARK_CANCELLED = (
    update(reservations)
    .where(reservations.c.id.in_(bindparam("ids", expanding=True)))
    .where(reservations.c.status == _CONFIRMED)
    .values(status=Status.CANCELLED.value, cancelled_at=bindparam("cancelled_at_"))
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
    )


def load_confirmed_seats(
    conn: Connection, event_id: str, reservation_ids: Sequence[UUID]
) -> dict[UUID, tuple[int, str]]:
    """(seats, partner id) of those reservations that are still confirmed, by id."""
    if not reservation_ids:
        return {}
    rows = conn.execute(_CONFIRMED_SEATS, {"ids": list(reservation_ids), "event_id": event_id})
    return {row.id: (row.seats, row.partner_id) for row in rows}


def mark_cancelled(conn: Connection, reservation_ids: Sequence[UUID], at: datetime) -> int:
    """Flip confirmed reservations to cancelled; returns how many were still confirmed."""
    return conn.execute(
        _MARK_CANCELLED, {"ids": list(reservation_ids), "cancelled_at_": at}
    ).rowcount


def list_reservations(
    conn: Connection,
    event_id: str,
    *,
    partner_id: str | None,
    status: str | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> list[Reservation]:
    """An event's reservations in (created_at, id) order — stable while rows are added."""
    query = (
        select(*_RESERVATION_COLUMNS)
        .where(reservations.c.event_id == event_id)
        .order_by(reservations.c.created_at, reservations.c.id)
        .limit(limit)
    )
    if partner_id is not None:
        query = query.where(reservations.c.partner_id == partner_id)
    if status is not None:
        query = query.where(reservations.c.status == status)
    if after is not None:
        query = query.where(tuple_(reservations.c.created_at, reservations.c.id) > tuple_(*after))
    return [_reservation(row) for row in conn.execute(query)]
