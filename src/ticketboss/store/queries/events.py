"""SQL of the events table, including the versioned compare-and-swap."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)

from ticketboss.domain import Allocation, Event
from ticketboss.domain.model import NO_ALLOCATIONS
from ticketboss.store.queries.clock import database_now
from ticketboss.store.tables import events, reservations

_EVENT_COLUMNS = (
    events.c.event_id,
    events.c.name,
    events.c.total_seats,
    events.c.available_seats,
    events.c.version,
    events.c.reservation_count,
    events.c.held_seats,
    events.c.next_expiry,
    events.c.allocations,
)
_LOAD_EVENT = select(*_EVENT_COLUMNS).where(events.c.event_id == bindparam("event_id"))
# The same row with the database's clock, read in the same statement.
_LOAD_EVENT_AT = select(*_EVENT_COLUMNS, database_now()).where(
    events.c.event_id == bindparam("event_id")
)
_VERSION = select(events.c.version).where(events.c.event_id == bindparam("event_id"))
_LAPSED_EVENTS = (
    select(events.c.event_id)
    .where(events.c.next_expiry <= bindparam("now"))
    .order_by(events.c.event_id)
)

_COMPARE_AND_SWAP = (
    update(events)
    .where(events.c.event_id == bindparam("seen_id"), events.c.version == bindparam("seen"))
    .values(
        name=bindparam("new_name"),
        total_seats=bindparam("new_total"),
        available_seats=bindparam("new_available"),
        reservation_count=bindparam("new_count"),
        held_seats=bindparam("new_held"),
        next_expiry=bindparam("new_next_expiry"),
        allocations=bindparam("new_allocations"),
        version=events.c.version + bindparam("changes"),
        updated_at=func.now(),
    )
)


# events.allocations, as stored: {partnerId: {"seats", "overflow", "taken", "held",
# "maxHeldSeats", "closed"}}, NULL when there are none.
_STORED = {
    "seats": "seats",
    "overflow": "overflow",
    "taken": "taken",
    "held": "held",
    "maxHeldSeats": "max_held_seats",
    "closed": "closed",
}


def _allocations(stored: Mapping[str, Mapping[str, Any]] | None) -> Mapping[str, Allocation]:
    if not stored:
        return NO_ALLOCATIONS
    return {
        partner_id: Allocation(partner_id, **{_STORED[k]: v for k, v in fields.items()})
        for partner_id, fields in stored.items()
    }


def _stored(allocations: Mapping[str, Allocation]) -> dict[str, dict[str, Any]] | None:
    if not allocations:
        return None
    return {
        a.partner_id: {key: getattr(a, name) for key, name in _STORED.items()}
        for a in allocations.values()
    }


def _event(row) -> Event:
    event_id, name, total, available, version, count, held, next_expiry, allocations = row[:9]
    return Event(
        event_id,
        name,
        total,
        available,
        version,
        count,
        held,
        next_expiry,
        _allocations(allocations),
    )


def load_event(conn: Connection, event_id: str) -> Event | None:
    row = conn.execute(_LOAD_EVENT, {"event_id": event_id}).first()
    return _event(row) if row else None


def load_event_at(conn: Connection, event_id: str) -> tuple[Event, datetime] | None:
    """The event and the database's clock as it read it; None when there is no such event."""
    row = conn.execute(_LOAD_EVENT_AT, {"event_id": event_id}).first()
    return (_event(row), row[-1]) if row else None


def load_version(conn: Connection, event_id: str) -> int | None:
    return conn.scalar(_VERSION, {"event_id": event_id})


def events_with_lapsed_holds(conn: Connection, now: datetime) -> list[str]:
    """The events some of whose holds may have lapsed by `now`."""
    return list(conn.scalars(_LAPSED_EVENTS, {"now": now}))


def compare_and_swap(conn: Connection, seen: Event, after: Event, changes: int = 1) -> bool:
    """Write `after`'s seats only if the event's version is still the one we read (`seen`);
    False if it is not (another transaction committed a change since our read).

    `changes` is how many reservations or cancellations this write applies: the version rises
    by exactly that many.
    """
    result = conn.execute(
        _COMPARE_AND_SWAP,
        {
            "seen_id": seen.event_id,
            "seen": seen.version,
            "new_name": after.name,
            "new_total": after.total_seats,
            "new_available": after.available_seats,
            "new_count": after.reservation_count,
            "new_held": after.held_seats,
            "new_next_expiry": after.next_expiry,
            "new_allocations": _stored(after.allocations),
            "changes": changes,
        },
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
            held_seats=0,
            next_expiry=None,
            allocations=None,
            updated_at=func.now(),
        )
    )


def list_events(conn: Connection, after: str | None, limit: int) -> list[Event]:
    """Events in event_id order, after the given id."""
    query = select(*_EVENT_COLUMNS).order_by(events.c.event_id).limit(limit)
    if after is not None:
        query = query.where(events.c.event_id > after)
    return [_event(row) for row in conn.execute(query)]
