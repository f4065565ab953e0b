"""What the default-event routes and the /api/events routes share when they write: the
partner a key acts for, Idempotency-Key scopes, and replays of stored answers."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from flask import Response, jsonify
from werkzeug.exceptions import BadRequest

from ticketboss import services_of
from ticketboss.api.auth import principal
from ticketboss.api.conditional import if_match_versions
from ticketboss.api.errors import problem, status_of
from ticketboss.api.schemas import HoldAnswer
from ticketboss.domain import Forbidden, Status, UnknownPartner
from ticketboss.services import EventService, IdempotencyKey, Replay, ReservationService
from ticketboss.services.idempotency import Kept

# The schema of every answer that made or changed a reservation (without an expiry it
# dumps exactly as ReservationCreated).
_HOLD_ANSWER = HoldAnswer()


def reservations() -> ReservationService:
    return services_of().reservations


def events() -> EventService:
    return services_of().events


def reserve(event_id: str, body: dict, headers: dict, location: Callable[[UUID], str]):
    """POST a reservation: 201 with Location, or the stored answer of its Idempotency-Key."""
    partner_id, seats = _partner(body), body["seats"]
    request_body = {"eventId": event_id, "partnerId": partner_id, "seats": seats}
    key = _key(headers, f"partner:{partner_id}", request_body)
    outcome = reservations().reserve(
        event_id, partner_id, seats, if_versions=if_match_versions(), key=key
    )
    if isinstance(outcome, Replay):
        return replay(outcome, location, seats)
    return outcome, 201, {"Location": location(outcome.reservation_id)}


def hold(event_id: str, body: dict, headers: dict, location: Callable[[UUID], str]):
    """POST a hold: 201 with Location, or the stored answer of its Idempotency-Key."""
    partner_id, seats, ttl = _partner(body), body["seats"], body.get("ttl_seconds")
    request_body = {"hold": event_id, "partnerId": partner_id, "seats": seats, "ttl": ttl}
    key = _key(headers, f"partner:{partner_id}", request_body)
    outcome = reservations().hold(event_id, partner_id, seats, ttl, key=key)
    if isinstance(outcome, Replay):
        return replay(outcome, location)
    return outcome, 201, {"Location": location(outcome.reservation_id)}


def confirm(event_id: str, reservation_id: UUID, headers: dict):
    """POST .../confirm: the hold, now confirmed (200), or its key's stored answer."""
    request_body = {"confirm": str(reservation_id), "eventId": event_id}
    key = _key(headers, f"reservation:{reservation_id}", request_body)
    outcome = reservations().confirm(event_id, reservation_id, owner=principal().owner(), key=key)
    return replay(outcome, None) if isinstance(outcome, Replay) else outcome


def extend(event_id: str, reservation_id: UUID, body: dict, headers: dict):
    """POST .../extend: the hold with its new expiry (200), or its key's stored answer."""
    ttl = body["ttl_seconds"]
    request_body = {"extend": str(reservation_id), "eventId": event_id, "ttl": ttl}
    key = _key(headers, f"reservation:{reservation_id}", request_body)
    outcome = reservations().extend(
        event_id, reservation_id, ttl, owner=principal().owner(), key=key
    )
    return replay(outcome, None) if isinstance(outcome, Replay) else outcome


def cancel(event_id: str, reservation_id: UUID, headers: dict):
    """DELETE a reservation or a hold: 204, or the stored answer of its Idempotency-Key."""
    request_body = {"cancel": str(reservation_id), "eventId": event_id}
    key = _key(headers, f"reservation:{reservation_id}", request_body)
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
    if who.partner_id not in (None, partner_id) and not services_of().keys.has_partner(partner_id):
        raise UnknownPartner(partner_id)
    return partner_id


def _key(headers: dict, what: str, request_body: dict) -> IdempotencyKey | None:
    """The request's Idempotency-Key, scoped (key_scope) and fingerprinted by its body."""
    if "idempotency_key" not in headers:
        return None
    return IdempotencyKey.of(key_scope(what), headers["idempotency_key"], request_body)


def key_scope(what: str) -> str:
    """Where an Idempotency-Key lives: with the key's holder, then what the request names (a
    partner, a reservation), so no two partners' keys can meet; open mode: what it names."""
    who = principal()
    return what if who.partner_id is None else f"{who.role}:{who.partner_id}:{what}"


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
    if stored.kind is Kept.CANCELLED:
        return Response(status=204, headers=marked)
    status = _DONE_STATUS.get(stored.kind)
    if status is None:  # a refusal: said as the error table says that kind of problem
        return problem(status_of(stored.kind), stored.detail or "", stored.kind.value, marked)
    answer = {
        "reservation_id": stored.reservation_id,
        "seats": stored.seats or seats,
        "status": _DONE_STATUS_TEXT[stored.kind],
        "expires_at": stored.held_until,
    }
    response = jsonify(_HOLD_ANSWER.dump(answer))
    response.status_code = status
    response.headers.update(marked)
    if status == 201:
        assert location is not None and stored.reservation_id is not None
        response.headers["Location"] = location(stored.reservation_id)
    return response


# Answers that did something: their status, and the reservation's status they said.
_DONE_STATUS = {Kept.RESERVED: 201, Kept.HELD: 201, Kept.CONFIRMED: 200, Kept.EXTENDED: 200}
_DONE_STATUS_TEXT = {
    Kept.RESERVED: Status.CONFIRMED.value,
    Kept.HELD: Status.HELD.value,
    Kept.CONFIRMED: Status.CONFIRMED.value,
    Kept.EXTENDED: Status.HELD.value,
}
