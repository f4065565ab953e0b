"""Every SQL statement the service runs, including the versioned compare-and-swap."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import Connection, delete, func, insert, select, update

from ticketboss.domain import Event, Reservation, Status, VersionConflict
from ticketboss.store.tables import events, reservations

_EVENT_COLUMNS = (
    events.c.event_id,
    events.c.name,
    events.c.total_seats,
    events.c.available_seats,
    events.c.version,
    events.c.reservation_count,
)


def _is_confirmed():
    return reservations.c.status == Status.CONFIRMED.value


def load_event(conn: Connection, event_id: str) -> Event | None:
    row = conn.execute(select(*_EVENT_COLUMNS).where(events.c.event_id == event_id)).first()
    return Event(*row) if row else None


def compare_and_swap(conn: Connection, seen: Event, after: Event, changes: int = 1) -> None:
    """Write `after`'s seats only if the event's version is still the one we read (`seen`);
    else VersionConflict.

    `changes` is how many reservations or cancellations this write applies: the version rises
    by exactly that many.
    """
    result = conn.execute(
        update(events)
        .where(events.c.event_id == seen.event_id, events.c.version == seen.version)
        .values(
            available_seats=after.available_seats,
            reservation_count=after.reservation_count,
            version=events.c.version + changes,
            updated_at=func.now(),
        )
    )
    if result.rowcount != 1:
        raise VersionConflict(seen.event_id)


def insert_reservations(conn: Connection, rows: list[Reservation]) -> None:
    conn.execute(
        insert(reservations),
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
    row = conn.execute(
        select(
            reservations.c.id,
            reservations.c.event_id,
            reservations.c.partner_id,
            reservations.c.seats,
            reservations.c.status,
            reservations.c.created_at,
            reservations.c.cancelled_at,
        ).where(reservations.c.id == reservation_id)
    ).first()
    if row is None:
        return None
    return Reservation(
        reservation_id=row.id,
        event_id=row.event_id,
        partner_id=row.partner_id,
        seats=row.seats,
        status=Status(row.status),
        created_at=_as_utc(row.created_at),
        cancelled_at=_as_utc(row.cancelled_at),
    )


def _as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone; every one we write is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def mark_cancelled(conn: Connection, reservation_id: UUID, at: datetime) -> bool:
    """Flip a confirmed reservation to cancelled; False if it was no longer confirmed."""
    result = conn.execute(
        update(reservations)
        .where(reservations.c.id == reservation_id, _is_confirmed())
        .values(status=Status.CANCELLED.value, cancelled_at=at)
    )
    return result.rowcount == 1


def create_event(conn: Connection, event_id: str, name: str, total_seats: int) -> None:
    conn.execute(
        insert(events).values(
            event_id=event_id,
            name=name,
            total_seats=total_seats,
            available_seats=total_seats,
            version=0,
        )
    )


def reset_event(conn: Connection, event_id: str, name: str, total_seats: int) -> None:
    """Delete the event's reservations and give it all its seats back at version 0."""
    conn.execute(delete(reservations).where(reservations.c.event_id == event_id))
    conn.execute(
        update(events)
        .where(events.c.event_id == event_id)
        .values(
            name=name,
            total_seats=total_seats,
            available_seats=total_seats,
            version=0,
            reservation_count=0,
            updated_at=func.now(),
        )
    )
