"""Every SQL statement the service runs, including the versioned compare-and-swap.

The statements are built once, with bind parameters: on the hot path SQLAlchemy then only
looks up their compiled form instead of building and hashing a new statement per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)

from ticketboss.domain import Event, Reservation, Status, VersionConflict
from ticketboss.store.tables import api_keys, events, idempotency_keys, partners, reservations

_CONFIRMED = Status.CONFIRMED.value

_LOAD_EVENT = select(
    events.c.event_id,
    events.c.name,
    events.c.total_seats,
    events.c.available_seats,
    events.c.version,
    events.c.reservation_count,
).where(events.c.event_id == bindparam("event_id"))

_COMPARE_AND_SWAP = (
    update(events)
    .where(events.c.event_id == bindparam("seen_id"), events.c.version == bindparam("seen"))
    .values(
        name=bindparam("new_name"),
        total_seats=bindparam("new_total"),
        available_seats=bindparam("new_available"),
        reservation_count=bindparam("new_count"),
        version=events.c.version + bindparam("changes"),
        updated_at=func.now(),
    )
)

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


def load_event(conn: Connection, event_id: str) -> Event | None:
    row = conn.execute(_LOAD_EVENT, {"event_id": event_id}).first()
    return Event(*row) if row else None


def compare_and_swap(conn: Connection, seen: Event, after: Event, changes: int = 1) -> None:
    """Write `after`'s seats only if the event's version is still the one we read (`seen`);
    else VersionConflict.

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
            "changes": changes,
        },
    )
    if result.rowcount != 1:
        raise VersionConflict(seen.event_id)


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


def list_events(conn: Connection, after: str | None, limit: int) -> list[Event]:
    """Events in event_id order, after the given id."""
    query = select(*_LOAD_EVENT.selected_columns).order_by(events.c.event_id).limit(limit)
    if after is not None:
        query = query.where(events.c.event_id > after)
    return [Event(*row) for row in conn.execute(query)]


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


# Idempotency keys -----------------------------------------------------------------------


def insert_claim(conn: Connection, scope, key, fingerprint, owner, locked_until, expires_at):
    """Raises IntegrityError when the key exists in that scope."""
    conn.execute(
        insert(idempotency_keys).values(
            scope=scope,
            key=key,
            fingerprint=fingerprint,
            owner=owner,
            locked_until=locked_until,
            expires_at=expires_at,
        )
    )


def load_claim(conn: Connection, scope: str, key: str):
    return conn.execute(
        select(idempotency_keys).where(
            idempotency_keys.c.scope == scope, idempotency_keys.c.key == key
        )
    ).first()


def take_over_claim(conn: Connection, scope, key, old_owner, new_owner, locked_until) -> bool:
    """Claim a key whose previous request lapsed without an answer."""
    result = conn.execute(
        update(idempotency_keys)
        .where(
            idempotency_keys.c.scope == scope,
            idempotency_keys.c.key == key,
            idempotency_keys.c.owner == old_owner,
            idempotency_keys.c.outcome.is_(None),
        )
        .values(owner=new_owner, locked_until=locked_until)
    )
    return result.rowcount == 1


_RECORD_OUTCOME = (
    update(idempotency_keys)
    .where(
        idempotency_keys.c.scope == bindparam("b_scope"),
        idempotency_keys.c.key == bindparam("b_key"),
        idempotency_keys.c.owner == bindparam("b_owner"),
    )
    .values(
        outcome=bindparam("b_outcome"),
        reservation_id=bindparam("b_reservation_id"),
        detail=bindparam("b_detail"),
        locked_until=None,
    )
)


def record_outcome(conn: Connection, scope, key, owner, outcome, reservation_id, detail) -> bool:
    """Store the answer on the claim we hold; False if the claim is no longer ours."""
    result = conn.execute(
        _RECORD_OUTCOME,
        {
            "b_scope": scope,
            "b_key": key,
            "b_owner": owner,
            "b_outcome": outcome,
            "b_reservation_id": reservation_id,
            "b_detail": detail,
        },
    )
    return result.rowcount == 1


def delete_claim(conn: Connection, scope: str, key: str, owner: UUID | None = None) -> None:
    """Drop a claim (ours, when `owner` is given) so the key can be used afresh."""
    query = delete(idempotency_keys).where(
        idempotency_keys.c.scope == scope, idempotency_keys.c.key == key
    )
    if owner is not None:
        query = query.where(idempotency_keys.c.owner == owner)
    conn.execute(query)


def prune_claims(conn: Connection, now: datetime) -> int:
    """Delete expired keys, except those whose request is still running; returns how many."""
    answered_or_lapsed = or_(
        idempotency_keys.c.outcome.is_not(None), idempotency_keys.c.locked_until < now
    )
    return conn.execute(
        delete(idempotency_keys).where(idempotency_keys.c.expires_at < now, answered_or_lapsed)
    ).rowcount


# Partners and their API keys ------------------------------------------------------------

_ACTIVE_KEY = select(
    api_keys.c.id, api_keys.c.partner_id, api_keys.c.role, api_keys.c.key_hash
).where(api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None))
_TOUCH_KEY = (
    update(api_keys)
    .where(api_keys.c.id == bindparam("key_id"))
    .values(last_used_at=bindparam("used_at"))
)


def ensure_partner(conn: Connection, partner_id: str) -> bool:
    """Create the partner unless it exists; True if it was created."""
    if conn.scalar(select(partners.c.partner_id).where(partners.c.partner_id == partner_id)):
        return False
    conn.execute(insert(partners).values(partner_id=partner_id))
    return True


def insert_key(conn: Connection, key_id, partner_id, role, prefix, key_hash, created_at) -> None:
    conn.execute(
        insert(api_keys).values(
            id=key_id,
            partner_id=partner_id,
            role=role,
            prefix=prefix,
            key_hash=key_hash,
            created_at=created_at,
        )
    )


def load_active_key(conn: Connection, key_hash: str):
    """The unrevoked key with that hash: (id, partner_id, role, key_hash), or None."""
    return conn.execute(_ACTIVE_KEY, {"key_hash": key_hash}).first()


def touch_key(conn: Connection, key_id: str, used_at: datetime) -> None:
    conn.execute(_TOUCH_KEY, {"key_id": key_id, "used_at": used_at})


def list_keys(conn: Connection) -> list:
    """Every partner with its keys (a partner without keys appears once, with None columns)."""
    query = (
        select(
            partners.c.partner_id,
            api_keys.c.id,
            api_keys.c.role,
            api_keys.c.prefix,
            api_keys.c.created_at,
            api_keys.c.last_used_at,
            api_keys.c.revoked_at,
        )
        .select_from(partners.outerjoin(api_keys))
        .order_by(partners.c.partner_id, api_keys.c.created_at)
    )
    return list(conn.execute(query).all())


def revoke_key(conn: Connection, key_id: str, at: datetime) -> bool:
    """Revoke an active key; False if there is no such active key."""
    result = conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=at)
    )
    return result.rowcount == 1
