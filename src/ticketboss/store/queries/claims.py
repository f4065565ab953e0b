"""SQL of the idempotency_keys table: claims and their answers."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    insert,
    or_,
    select,
    update,
)

from ticketboss.store.tables import idempotency_keys


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


def await_replication(conn: Connection, scope: str, key: str) -> None:
    """Lock the key's row: a write to the WAL, so that with a synchronous standby this
    transaction's COMMIT returns (without a warning) only once the standby has the WAL up to
    it, every earlier commit included. (A transaction that only reads, even one given an id,
    writes no WAL and waits for nothing.)"""
    conn.execute(
        select(idempotency_keys.c.key)
        .where(idempotency_keys.c.scope == scope, idempotency_keys.c.key == key)
        .with_for_update()
    )


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
        seats=bindparam("b_seats"),
        held_until=bindparam("b_held_until"),
        detail=bindparam("b_detail"),
        locked_until=None,
    )
)


def record_outcome(
    conn: Connection, scope, key, owner, outcome, reservation_id, seats, held_until, detail
) -> bool:
    """Store the answer on the claim we hold; False if the claim is no longer ours."""
    result = conn.execute(
        _RECORD_OUTCOME,
        {
            "b_scope": scope,
            "b_key": key,
            "b_owner": owner,
            "b_outcome": outcome,
            "b_reservation_id": reservation_id,
            "b_seats": seats,
            "b_held_until": held_until,
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
