"""What the default-event routes and the /api/events routes share: conditional requests,
Idempotency-Key handling, cursors, and the documentation of problem responses."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from uuid import UUID

from flask import Response, jsonify, request
from werkzeug.exceptions import BadRequest

from ticketboss import services_of
from ticketboss.api.auth import principal
from ticketboss.api.errors import PROBLEM_JSON, problem, status_of
from ticketboss.api.schemas import Problem, ReservationCreated, storable
from ticketboss.domain import Event, Forbidden
from ticketboss.services import EventService, IdempotencyKey, Replay, ReservationService
from ticketboss.services.idempotency import Kept

_VERSION = re.compile(r"0|[1-9][0-9]{0,17}")  # the exact text of an ETag we send
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}
ETAG = {"ETag": {"schema": {"type": "string"}, "description": 'The event\'s version: "<n>".'}}
LOCATION = {"Location": {"schema": {"type": "string"}, "description": "The reservation."}}
REPLAYED = {
    "Idempotent-Replayed": {
        "schema": {"type": "string", "enum": ["true"]},
        "description": "Present when this is the stored answer to an earlier request.",
    }
}
_RESERVATION_CREATED = ReservationCreated()


def _header_doc(name: str, description: str) -> dict:
    """`blp.doc` keywords documenting a request header that Werkzeug parses (no schema is
    parsed for it, so reads pay no second parse)."""
    header = {"in": "header", "name": name, "schema": {"type": "string"}}
    return {"parameters": [{**header, "description": description}]}


IF_MATCH = _header_doc("If-Match", 'The event\'s ETag ("<version>"): write only at that version.')
IF_NONE_MATCH = _header_doc(
    "If-None-Match", "The ETag you have: 304 while the event is still at it."
)

# Status → (description, extra headers) of the problem responses routes document.
_PROBLEMS = {
    400: ("The request is not valid (body, path, query or header).", {}),
    403: ("The key may not do this (another partner's partnerId, or an operator's route).", {}),
    404: ("No such event or reservation.", REPLAYED),
    409: (
        "Not enough seats, the id is taken, or the Idempotency-Key is in flight.",
        {**RETRY_AFTER, **REPLAYED},
    ),
    412: ("If-Match names a version the event no longer has; nothing was written.", {}),
    422: ("The Idempotency-Key was used with a different request.", {}),
    503: ("Overloaded, or the database is unreachable: retry after Retry-After.", RETRY_AFTER),
}


def problems(blp, *statuses: int):
    """Document problem+json responses of a route (decorator)."""

    def decorate(view):
        for status in statuses:
            description, headers = _PROBLEMS[status]
            view = blp.alt_response(
                status,
                schema=Problem,
                content_type=PROBLEM_JSON,
                description=description,
                headers=headers or None,
            )(view)
        return view

    return decorate


def reservations() -> ReservationService:
    return services_of().reservations


def events() -> EventService:
    return services_of().events


def etag(event: Event) -> str:
    return str(event.version)


def etag_header(event: Event) -> dict[str, str]:
    return {"ETag": f'"{etag(event)}"'}


def if_match_versions() -> frozenset[int] | None:
    """The versions If-Match allows (None: no If-Match, or `*`); a tag that is not one of our
    ETags allows none, so the write is refused with 412."""
    if "If-Match" not in request.headers or request.if_match.star_tag:
        return None
    # Strong comparison: only the exact text of one of our tags matches; a malformed
    # header matches nothing, so the write is refused rather than done unconditionally.
    return frozenset(int(t) for t in request.if_match.as_set() if t and _VERSION.fullmatch(t))


def summary_response(event: Event):
    """The event's summary with its ETag; 304 when If-None-Match already has it (weak
    comparison, as RFC 9110 asks: a proxy may have weakened our tag)."""
    tag = etag(event)
    if request.if_none_match.contains_weak(tag) or request.if_none_match.star_tag:
        response = Response(status=304)
        response.set_etag(tag)
        return response
    return event, 200, etag_header(event)


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


def encode_cursor(*values) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode()


def decode_cursor(cursor: str, *types: Callable[[str], object]) -> list:
    """The values of a cursor we made (strings), each converted by its type; a 400 for
    anything else."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError
        if not all(isinstance(value, str) and storable(value) for value in values):
            raise ValueError
        return [convert(value) for convert, value in zip(types, values, strict=True)]
    except (TypeError, ValueError) as exc:
        raise BadRequest("cursor: Not a cursor this API gave out.") from exc


def utc_timestamp(text: str) -> datetime:
    """A cursor's timestamp: ISO 8601 in UTC, as we write them (any other offset, even one
    Python accepts, could be out of the database's range)."""
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() != timedelta(0):
        raise ValueError("not UTC")
    return moment


def page(fetched: list, limit: int, key: Callable) -> dict:
    """A page of `limit` items out of `limit + 1` fetched, with a cursor after its last item
    when there is more (so the last page's nextCursor is null)."""
    items = fetched[:limit]
    cursor = encode_cursor(*key(items[-1])) if len(fetched) > limit else None
    return {"items": items, "next_cursor": cursor}
