"""What the default-event routes and the /api/events routes share when they write: the
partner a key acts for, the request's Idempotency-Key, and replays of stored answers."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from flask import Response, jsonify
from werkzeug.exceptions import BadRequest

from ticketboss.api.conditional import if_match_versions
from ticketboss.api.deps import keys, principal, reservations
from ticketboss.api.errors import problem, problem_type
from ticketboss.api.schemas import HoldAnswer
from ticketboss.domain import Forbidden, UnknownPartner
from ticketboss.services import IdempotencyKey, Replay
from ticketboss.services.kinds import DONE, REFUSALS

# The schema of every answer that made or changed a reservation (without an expiry it
# dumps exactly as ReservationCreated).
_HOLD_ANSWER = HoldAnswer()


def reserve(event_id: str, body: dict, headers: dict, location: Callable[[UUID], str]):
    """POST a reservation: 201 with Location, or the stored answer of its Idempotency-Key."""
    partner_id, seats = _partner(body), body["seats"]
    key = _key(headers, IdempotencyKey.for_reserve, event_id, partner_id, seats)
    outcome = reservations().reserve(
        event_id, partner_id, seats, if_versions=if_match_versions(), key=key
    )
    if isinstance(outcome, Replay):
        return replay(outcome, location, seats)
    return outcome, 201, {"Location": location(outcome.reservation_id)}


def hold(event_id: str, body: dict, headers: dict, location: Callable[[UUID], str]):
    """POST a hold: 201 with Location, or the stored answer of its Idempotency-Key."""
    partner_id, seats, ttl = _partner(body), body["seats"], body.get("ttl_seconds")
    key = _key(headers, IdempotencyKey.for_hold, event_id, partner_id, seats, ttl)
    outcome = reservations().hold(event_id, partner_id, seats, ttl, key=key)
    if isinstance(outcome, Replay):
        return replay(outcome, location)
    return outcome, 201, {"Location": location(outcome.reservation_id)}


def confirm(event_id: str, reservation_id: UUID, headers: dict):
    """POST .../confirm: the hold, now confirmed (200), or its key's stored answer."""
    key = _key(headers, IdempotencyKey.for_confirm, event_id, reservation_id)
    outcome = reservations().confirm(event_id, reservation_id, owner=principal().owner(), key=key)
    return replay(outcome, None) if isinstance(outcome, Replay) else outcome


def extend(event_id: str, reservation_id: UUID, body: dict, headers: dict):
    """POST .../extend: the hold with its new expiry (200), or its key's stored answer."""
    ttl = body["ttl_seconds"]
    key = _key(headers, IdempotencyKey.for_extend, event_id, reservation_id, ttl)
    outcome = reservations().extend(
        event_id, reservation_id, ttl, owner=principal().owner(), key=key
    )
    return replay(outcome, None) if isinstance(outcome, Replay) else outcome


def cancel(event_id: str, reservation_id: UUID, headers: dict):
    """DELETE a reservation or a hold: 204, or the stored answer of its Idempotency-Key."""
    key = _key(headers, IdempotencyKey.for_cancel, event_id, reservation_id)
    outcome = reservations().cancel(event_id, reservation_id, owner=principal().owner(), key=key)
    if isinstance(outcome, Replay):
        return replay(outcome, None)
    return Response(status=204)


def _partner(body: dict) -> str:
    """Whose seats a reservation or hold takes: the key's partner, or the one an operator
    names, which must have an account (open mode: the body's, any the schema takes)."""
    who = principal()
    partner_id = who.acting_for(body.get("partner_id"))
    if partner_id is None:  # AUTH_MODE=open: the body says whose reservation it is
        # As webargs says a missing field, so the answer is the one the schema used to give.
        missing = BadRequest()
        missing.data = {  # type: ignore[attr-defined]  # webargs' attribute
            "messages": {"json": {"partnerId": ["Missing data for required field."]}}
        }
        raise missing
    # A key's own partner exists (the key is its), so a partner reserving for itself pays no
    # lookup; an operator naming another partner does, cached per worker.
    if who.partner_id not in (None, partner_id) and not keys().has_partner(partner_id):
        raise UnknownPartner(partner_id)
    return partner_id


def _key(headers: dict, kind: Callable[..., IdempotencyKey], *request) -> IdempotencyKey | None:
    """The request's Idempotency-Key, scoped and fingerprinted as its kind of request is
    stored (services/idempotency.IdempotencyKey.for_*); None without one."""
    if "idempotency_key" not in headers:
        return None
    return kind(principal(), headers["idempotency_key"], *request)


def get_reservation(event_id: str, reservation_id: UUID):
    """A reservation the key may see; another partner's is a 404."""
    return reservations().get(event_id, reservation_id, owner=principal().owner())


def listed_partner(asked: str | None) -> str | None:
    """Whose reservations a listing shows: a partner key only its own (asking for another's is
    403), an operator everyone's or the one it asks for."""
    owner = principal().owner()
    if owner is None:
        return asked
    if asked not in (None, owner):
        raise Forbidden("A partner key lists only its own reservations.")
    return owner


def replay(
    stored: Replay, location: Callable[[UUID], str] | None, seats: int | None = None
) -> Response:
    """The first answer again, marked as a replay. (`seats`: the request's, for answers kept
    before keys stored them.)"""
    marked = {"Idempotent-Replayed": "true"}
    refusal = REFUSALS.get(stored.kind)
    if refusal is not None:  # said as the error table says that kind of problem
        status, slug = problem_type(refusal)
        return problem(status, stored.detail or "", slug, marked)
    kind = DONE[stored.kind]
    if kind.shows is None:  # a cancel: nothing to show
        return Response(status=kind.status, headers=marked)
    answer = {
        "reservation_id": stored.reservation_id,
        "seats": stored.seats or seats,
        "status": kind.shows.value,
        "expires_at": stored.held_until,
    }
    response = jsonify(_HOLD_ANSWER.dump(answer))
    response.status_code = kind.status
    response.headers.update(marked)
    if kind.status == 201:
        assert location is not None and stored.reservation_id is not None
        response.headers["Location"] = location(stored.reservation_id)
    return response
