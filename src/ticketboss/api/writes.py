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
from ticketboss.api.schemas import ReservationCreated
from ticketboss.domain import Forbidden
from ticketboss.services import EventService, IdempotencyKey, Replay, ReservationService
from ticketboss.services.idempotency import Kept

_RESERVATION_CREATED = ReservationCreated()


def reservations() -> ReservationService:
    return services_of().reservations


def events() -> EventService:
    return services_of().events


def reserve(event_id: str, body: dict, headers: dict, location: Callable[[UUID], str]):
    """POST a reservation: 201 with Location, or the stored answer of its Idempotency-Key."""
    who = principal()
    partner_id, seats = who.acting_for(body.get("partner_id")), body["seats"]
    if partner_id is None:  # AUTH_MODE=open: the body says whose reservation it is
        # As webargs says a missing field, so the answer is the one the schema used to give.
        missing = BadRequest()
        missing.data = {  # type: ignore[attr-defined]  # webargs' attribute
            "messages": {"json": {"partnerId": ["Missing data for required field."]}}
        }
        raise missing
    key = None
    if "idempotency_key" in headers:
        request_body = {"eventId": event_id, "partnerId": partner_id, "seats": seats}
        scope = key_scope(f"partner:{partner_id}")
        key = IdempotencyKey.of(scope, headers["idempotency_key"], request_body)
    outcome = reservations().reserve(
        event_id, partner_id, seats, if_versions=if_match_versions(), key=key
    )
    if isinstance(outcome, Replay):
        return replay(outcome, seats, location)
    return outcome, 201, {"Location": location(outcome.reservation_id)}


def cancel(event_id: str, reservation_id: UUID, headers: dict):
    """DELETE a reservation: 204, or the stored answer of its Idempotency-Key."""
    who = principal()
    key = None
    if "idempotency_key" in headers:
        scope = key_scope(f"reservation:{reservation_id}")
        key = IdempotencyKey.of(
            scope, headers["idempotency_key"], {"cancel": str(reservation_id), "eventId": event_id}
        )
    outcome = reservations().cancel(event_id, reservation_id, owner=who.owner(), key=key)
    if isinstance(outcome, Replay):
        return replay(outcome, None, None)
    return Response(status=204)


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


def replay(stored: Replay, seats: int | None, location: Callable[[UUID], str] | None):
    """The first answer again, marked as a replay."""
    marked = {"Idempotent-Replayed": "true"}
    if stored.kind is Kept.RESERVED:
        created = {"reservation_id": stored.reservation_id, "seats": seats, "status": "confirmed"}
        response = jsonify(_RESERVATION_CREATED.dump(created))
        response.status_code = 201
        assert location is not None and stored.reservation_id is not None
        response.headers.update({**marked, "Location": location(stored.reservation_id)})
        return response
    if stored.kind is Kept.CANCELLED:
        return Response(status=204, headers=marked)
    # A refusal: said as the error table says that kind of problem.
    return problem(status_of(stored.kind), stored.detail or "", stored.kind.value, marked)
