"""Idempotency-Key: a retried request gets the first one's answer instead of a second booking.

A request with a key first *claims* it in a short transaction of its own (a row with a lease).
The answer is then written onto that row in the same transaction as the change it describes,
so a reservation never exists without its key's answer. A claim whose request died lapses
after the lease, and a later retry takes it over.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ticketboss import deadline
from ticketboss.config import Settings
from ticketboss.domain import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    OutcomeUnknown,
    Principal,
)
from ticketboss.services.unit_of_work import retry_when_dropped, transaction
from ticketboss.store import queries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdempotencyKey:
    """The client's key, the scope it belongs to, and a fingerprint of its request."""

    scope: str
    key: str
    fingerprint: str

    @classmethod
    def of(cls, scope: str, key: str, request: dict) -> IdempotencyKey:
        canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
        return cls(scope, key, hashlib.sha256(canonical.encode()).hexdigest())

    # Each kind of request's scope and fingerprint, as stored in idempotency_keys: an on-disk
    # format (tests/unit/test_idempotency_formats.py pins them), so a key written by an
    # earlier release still finds its answer.

    @classmethod
    def for_reserve(
        cls, holder: Principal, key: str, event_id: str, partner_id: str, seats: int
    ) -> IdempotencyKey:
        request = {"eventId": event_id, "partnerId": partner_id, "seats": seats}
        return cls.of(scope_of(holder, f"partner:{partner_id}"), key, request)

    @classmethod
    def for_hold(
        cls,
        holder: Principal,
        key: str,
        event_id: str,
        partner_id: str,
        seats: int,
        ttl: int | None,
    ) -> IdempotencyKey:
        request = {"hold": event_id, "partnerId": partner_id, "seats": seats, "ttl": ttl}
        return cls.of(scope_of(holder, f"partner:{partner_id}"), key, request)

    @classmethod
    def for_confirm(
        cls, holder: Principal, key: str, event_id: str, reservation_id: UUID
    ) -> IdempotencyKey:
        request = {"confirm": str(reservation_id), "eventId": event_id}
        return cls.of(scope_of(holder, f"reservation:{reservation_id}"), key, request)

    @classmethod
    def for_extend(
        cls, holder: Principal, key: str, event_id: str, reservation_id: UUID, ttl: int
    ) -> IdempotencyKey:
        request = {"extend": str(reservation_id), "eventId": event_id, "ttl": ttl}
        return cls.of(scope_of(holder, f"reservation:{reservation_id}"), key, request)

    @classmethod
    def for_cancel(
        cls, holder: Principal, key: str, event_id: str, reservation_id: UUID
    ) -> IdempotencyKey:
        request = {"cancel": str(reservation_id), "eventId": event_id}
        return cls.of(scope_of(holder, f"reservation:{reservation_id}"), key, request)


def scope_of(holder: Principal, what: str) -> str:
    """Where an Idempotency-Key lives: with the key's holder, then what the request names (a
    partner, a reservation), so no two partners' keys can meet; open mode: what it names."""
    return what if holder.partner_id is None else f"{holder.role}:{holder.partner_id}:{what}"


@dataclass(frozen=True)
class Claim:
    """We hold the key: our transaction will record the answer on it."""

    key: IdempotencyKey
    owner: UUID


class Kept(enum.StrEnum):
    """The kinds of answer a key keeps (the API decides how each is said in HTTP)."""

    RESERVED = "reserved"
    HELD = "held"
    CONFIRMED = "confirmed"
    EXTENDED = "extended"
    CANCELLED = "cancelled"
    NOT_ENOUGH_SEATS = "not-enough-seats"
    RESERVATION_NOT_FOUND = "reservation-not-found"
    HOLD_EXPIRED = "hold-expired"
    NOT_HELD = "not-held"
    HOLD_LIMIT_REACHED = "hold-limit-reached"
    POOL_LIMIT_REACHED = "pool-limit-reached"


@dataclass(frozen=True)
class Replay:
    """An answer a key keeps, and gives again to a retry: its kind, and what the response
    said (the reservation, its seats and the hold's expiry; a refusal's detail)."""

    kind: Kept
    reservation_id: UUID | None = None
    seats: int | None = None
    held_until: datetime | None = None
    detail: str | None = None


@retry_when_dropped
def claim(engine: Engine, settings: Settings, key: IdempotencyKey) -> Claim | Replay:
    """Claim the key, or return its stored answer; IdempotencyKeyReused if it came with
    another request, IdempotencyKeyInFlight while its first request is still running."""
    owner = uuid4()
    subject = f"Idempotency-Key '{key.key}'"
    for _ in range(3):  # a row that expires or lapses under our feet: look again
        now = datetime.now(UTC)
        locked_until = now + timedelta(seconds=settings.idempotency_lease_seconds)
        expires_at = now + timedelta(seconds=settings.idempotency_ttl_seconds)
        try:
            with transaction(engine, subject) as conn:
                queries.insert_claim(
                    conn, key.scope, key.key, key.fingerprint, owner, locked_until, expires_at
                )
            return Claim(key, owner)
        except IntegrityError:
            pass  # the key exists: what state is it in?
        with transaction(engine, subject) as conn:
            row = queries.load_claim(conn, key.scope, key.key)
            if row is not None and row.outcome is not None:
                # The answer may be committed here and not on the synchronous standby (its
                # request's wait was cancelled, or the primary crashed mid-wait and came
                # back): before it is given again, the standby must have it.
                queries.await_replication(conn, key.scope, key.key)
        if row is None:
            continue
        running = row.outcome is None and row.locked_until > now
        if row.expires_at <= now and not running:
            with transaction(engine, subject) as conn:
                queries.delete_claim(conn, key.scope, key.key, row.owner)
            continue
        if row.fingerprint != key.fingerprint:
            raise IdempotencyKeyReused(key.key)
        if row.outcome is not None:
            return Replay(
                Kept(row.outcome), row.reservation_id, row.seats, row.held_until, row.detail
            )
        if running:
            raise IdempotencyKeyInFlight(key.key)
        # Its request died without an answer (nothing was written): take it over.
        with transaction(engine, subject) as conn:
            taken = queries.take_over_claim(
                conn, key.scope, key.key, row.owner, owner, locked_until
            )
        if taken:
            return Claim(key, owner)
    raise IdempotencyKeyInFlight(key.key)


@retry_when_dropped
def release(engine: Engine, held: Claim) -> None:
    """Give the key up unanswered (the request failed before changing anything)."""
    with transaction(engine, f"Idempotency-Key '{held.key.key}'") as conn:
        queries.delete_claim(conn, held.key.scope, held.key.key, held.owner)


def release_if_possible(engine: Engine, held: Claim) -> None:
    """Release the key, best effort: the request is failing for its own reason, which is
    what it answers. With its deadline spent, the release runs in the background (the
    answer does not wait for it). A claim left behind lapses after
    IDEMPOTENCY_LEASE_SECONDS; until then a retry is told the key is in flight."""
    if (deadline.remaining(1.0) or 0.0) > 0:
        _release_quietly(engine, held)
    else:  # a new thread (a greenlet under gevent) starts with no deadline: the default bound
        threading.Thread(target=_release_quietly, args=(engine, held), daemon=True).start()


def _release_quietly(engine: Engine, held: Claim) -> None:
    try:
        release(engine, held)
    except (SQLAlchemyError, OutcomeUnknown) as exc:
        log.info("Idempotency-Key '%s' not released: %s", held.key.key, type(exc).__name__)


def prune(engine: Engine) -> int:
    """Delete expired keys."""
    with transaction(engine, "expired Idempotency-Keys") as conn:
        return queries.prune_claims(conn, datetime.now(UTC))
