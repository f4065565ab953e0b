"""SQL of the events table, including the versioned compare-and-swap."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

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
from ticketboss.store.queries.clock import database_now
from ticketboss.store.tables import allocations, events, notifications, reservations

_EVENT_COLUMNS = (
    events.c.event_id,
    events.c.name,
    events.c.total_seats,
    events.c.available_seats,
    events.c.version,
    events.c.reservation_count,
    events.c.held_seats,
    events.c.next_expiry,
)
# Allocation's fields, in its order (partner_id first).
_ALLOCATION_COLUMNS = (
    allocations.c.partner_id,
    allocations.c.seats,
    allocations.c.overflow,
    allocations.c.taken,
    allocations.c.held,
    allocations.c.max_held_seats,
    allocations.c.closed,
)
_WITH_ALLOCATIONS = events.outerjoin(allocations, allocations.c.event_id == events.c.event_id)
# The event's row and its allocations (a row each; one row of NULLs without any), with the
# database's clock: one statement, so they are of one moment, the version's.
_LOAD_EVENT = (
    select(*_EVENT_COLUMNS, *_ALLOCATION_COLUMNS)
    .select_from(_WITH_ALLOCATIONS)
    .where(events.c.event_id == bindparam("event_id"))
)
_LOAD_EVENT_AT = (
    select(*_EVENT_COLUMNS, database_now(), *_ALLOCATION_COLUMNS)
    .select_from(_WITH_ALLOCATIONS)
    .where(events.c.event_id == bindparam("event_id"))
)
_EVENT_WIDTH = len(_EVENT_COLUMNS)
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
        version=events.c.version + bindparam("changes"),
        updated_at=func.now(),
    )
)


def _event(rows: Sequence, width: int = _EVENT_WIDTH) -> Event:
    """An event from its rows joined with its allocations (the first `width` columns are the
    event's, the last ones an allocation's or NULLs)."""
    event = Event(*rows[0][:_EVENT_WIDTH])
    found = {r[width]: Allocation(*r[width:]) for r in rows if r[width] is not None}
    return replace(event, allocations=found) if found else event


def load_event(conn: Connection, event_id: str) -> Event | None:
    rows = conn.execute(_LOAD_EVENT, {"event_id": event_id}).all()
    return _event(rows) if rows else None


def load_event_at(conn: Connection, event_id: str) -> tuple[Event, datetime] | None:
    """The event and the database's clock as it read it; None when there is no such event."""
    rows = conn.execute(_LOAD_EVENT_AT, {"event_id": event_id}).all()
    return (_event(rows, _EVENT_WIDTH + 1), rows[0][_EVENT_WIDTH]) if rows else None


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
    """Delete the event's reservations, allocations and notifications (a fresh start: its
    versions begin again at 0, which partners' notifications of its old ones would
    contradict) and give it all its seats back at version 0."""
    conn.execute(delete(notifications).where(notifications.c.event_id == event_id))
    conn.execute(delete(reservations).where(reservations.c.event_id == event_id))
    conn.execute(delete(allocations).where(allocations.c.event_id == event_id))
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
            updated_at=func.now(),
        )
    )


def list_events(conn: Connection, after: str | None, limit: int) -> list[Event]:
    """Events in event_id order, after the given id, with their allocations."""
    page = select(events.c.event_id).order_by(events.c.event_id).limit(limit)
    if after is not None:
        page = page.where(events.c.event_id > after)
    query = (
        select(*_EVENT_COLUMNS, *_ALLOCATION_COLUMNS)
        .select_from(_WITH_ALLOCATIONS)
        .where(events.c.event_id.in_(page.scalar_subquery()))
        .order_by(events.c.event_id, allocations.c.partner_id)
    )
    by_event: dict[str, list] = {}
    for row in conn.execute(query):
        by_event.setdefault(row[0], []).append(row)
    return [_event(rows) for rows in by_event.values()]


_INSERT_ALLOCATION = insert(allocations)
_UPDATE_ALLOCATION = (
    update(allocations)
    .where(
        allocations.c.event_id == bindparam("event_id_"),
        allocations.c.partner_id == bindparam("partner_id_"),
    )
    .values(
        seats=bindparam("seats_"),
        taken=bindparam("taken_"),
        held=bindparam("held_"),
        overflow=bindparam("overflow_"),
        max_held_seats=bindparam("max_held_seats_"),
        closed=bindparam("closed_"),
    )
)
_DELETE_ALLOCATIONS = delete(allocations).where(
    allocations.c.event_id == bindparam("event_id_"),
    allocations.c.partner_id.in_(bindparam("partner_ids", expanding=True)),
)


def write_allocations(
    conn: Connection,
    event_id: str,
    before: Mapping[str, Allocation],
    after: Mapping[str, Allocation],
) -> None:
    """Write the event's allocations as `after` leaves them, from `before`: read in the same
    statement as the event at the version the caller's compare-and-swap has just won, whose
    row lock it holds until it commits, so the rows are still exactly as read."""
    gone = [p for p in before if p not in after]
    if gone:
        conn.execute(_DELETE_ALLOCATIONS, {"event_id_": event_id, "partner_ids": gone})
    new = [a for p, a in after.items() if p not in before]
    if new:
        conn.execute(_INSERT_ALLOCATION, [{"event_id": event_id, **_fields(a)} for a in new])
    changed = [a for p, a in after.items() if p in before and before[p] != a]
    if changed:
        rows = [
            {"event_id_": event_id, "partner_id_": a.partner_id}
            | {f"{k}_": v for k, v in _fields(a).items() if k != "partner_id"}
            for a in changed
        ]
        conn.execute(_UPDATE_ALLOCATION, rows)


def _fields(a: Allocation) -> dict:
    return {
        "partner_id": a.partner_id,
        "seats": a.seats,
        "taken": a.taken,
        "held": a.held,
        "overflow": a.overflow,
        "max_held_seats": a.max_held_seats,
        "closed": a.closed,
    }
