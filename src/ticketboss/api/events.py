"""Many events: create, list, read, rename/resize, and reserve on any one of them."""

from uuid import UUID

from flask import url_for
from flask.views import MethodView

from ticketboss.api import conditional, cursors, deps, summaries, writes
from ticketboss.api.auth import operator_only
from ticketboss.api.body import Blueprint
from ticketboss.api.docs import ETAG, IF_MATCH, IF_NONE_MATCH, LOCATION, REPLAYED, problems
from ticketboss.api.schemas import (
    EVENT_ID_PARAMETER,
    RESERVATION_ID_PARAMETER,
    EventAndReservationPath,
    EventCreate,
    EventIdPath,
    EventPage,
    EventPatch,
    EventSummary,
    ExtendRequest,
    HoldAnswer,
    HoldRequest,
    PageQuery,
    ReservationCreated,
    ReservationDetail,
    ReservationPage,
    ReservationQuery,
    ReserveHeaders,
    ReserveRequest,
    WriteHeaders,
)

blp = Blueprint("events", __name__, url_prefix="/api/events", description="Events and their seats")

EVENT_ID = EventIdPath()
ITEM = EventAndReservationPath()
WRITE = WriteHeaders()
RESERVE_HEADERS = ReserveHeaders()
HOLD_REQUEST = HoldRequest()
EXTEND_REQUEST = ExtendRequest()


def _event_location(event_id: str) -> str:
    return url_for("events.EventItem", event_id=event_id)


def _reservation_location(event_id: str):
    def location(reservation_id) -> str:
        return url_for("events.EventReservation", event_id=event_id, reservation_id=reservation_id)

    return location


@blp.route("", strict_slashes=False)
class Events(MethodView):
    @blp.doc(operationId="listEvents")
    @blp.arguments(PageQuery(), location="query")
    @blp.response(200, EventPage)
    @problems(blp, 400, 503)
    def get(self, query):
        """Events in id order, `limit` at a time; follow `nextCursor` for the next page."""
        after = cursors.decode_cursor(query["cursor"], str)[0] if "cursor" in query else None
        fetched = deps.events().page(after, query["limit"] + 1)
        seen = [summaries.seen_by_key(e) for e in fetched]
        return cursors.page(seen, query["limit"], lambda e: (e.event_id,))

    @blp.doc(operationId="createEvent")
    @blp.arguments(EventCreate())
    @blp.response(201, EventSummary, headers={**ETAG, **LOCATION})
    @problems(blp, 400, 403, 409, 503)
    @operator_only
    def post(self, body):
        """Create an event with all its seats available (version 0). Operator keys only."""
        event = deps.events().create(body["event_id"], body["name"], body["total_seats"])
        return (
            summaries.seen_by_key(event),
            201,
            {"Location": _event_location(event.event_id), **conditional.etag_header(event)},
        )


@blp.route("/<event_id>", parameters=[EVENT_ID_PARAMETER])
class EventItem(MethodView):
    @blp.doc(operationId="getEvent")
    @blp.arguments(EVENT_ID, location="path")
    @blp.doc(**IF_NONE_MATCH)
    @blp.response(200, EventSummary, headers=ETAG)
    @blp.alt_response(304, description="Not modified: If-None-Match has the ETag.", headers=ETAG)
    @problems(blp, 404, 503)
    def get(self, path, **_):
        """The event's summary."""
        return conditional.summary_response(deps.reservations().summary(path["event_id"]))

    @blp.doc(operationId="updateEvent")
    @blp.arguments(EVENT_ID, location="path")
    @blp.arguments(EventPatch())
    @blp.doc(**IF_MATCH)
    @blp.response(200, EventSummary, headers=ETAG)
    @problems(blp, 400, 403, 404, 409, 412, 503)
    @operator_only
    def patch(self, path, body, **_):
        """Rename, or change totalSeats (never below the seats already reserved); a PATCH to
        what the event already is keeps its version. `eventId` in the body is a 400 (the id
        is the path's). Operator keys only."""
        event = deps.reservations().resize(
            path["event_id"],
            name=body.get("name"),
            total_seats=body.get("total_seats"),
            if_versions=conditional.if_match_versions(),
        )
        return summaries.seen_by_key(event), 200, conditional.etag_header(event)


@blp.route("/<event_id>/reservations", parameters=[EVENT_ID_PARAMETER])
class EventReservations(MethodView):
    @blp.doc(operationId="listReservations")
    @blp.arguments(EVENT_ID, location="path")
    @blp.arguments(ReservationQuery(), location="query")
    @blp.response(200, ReservationPage)
    @problems(blp, 400, 403, 404, 503)
    def get(self, path, query, **_):
        """The event's reservations, oldest first, filtered by partnerId and status. A
        partner key sees only its own; an operator key everyone's."""
        after = None
        if "cursor" in query:
            after = tuple(cursors.decode_cursor(query["cursor"], cursors.utc_timestamp, UUID))
        fetched = deps.events().reservations(
            path["event_id"],
            partner_id=writes.listed_partner(query.get("partner_id")),
            status=query.get("status"),
            after=after,
            limit=query["limit"] + 1,
        )
        return cursors.page(
            fetched, query["limit"], lambda r: (r.created_at.isoformat(), str(r.reservation_id))
        )

    @blp.doc(operationId="reserve")
    @blp.arguments(EVENT_ID, location="path")
    @blp.arguments(ReserveRequest())
    @blp.arguments(RESERVE_HEADERS, location="headers")
    @blp.response(201, ReservationCreated, headers={**LOCATION, **REPLAYED})
    @problems(blp, 400, 403, 404, 409, 412, 422, 503)
    def post(self, path, body, headers, **_):
        """Reserve 1–10 seats of this event for a partner (a partner key: its own partnerId)."""
        event_id = path["event_id"]
        return writes.reserve(event_id, body, headers, _reservation_location(event_id))


@blp.route("/<event_id>/holds", parameters=[EVENT_ID_PARAMETER])
class EventHolds(MethodView):
    @blp.doc(operationId="createHold")
    @blp.arguments(EVENT_ID, location="path")
    @blp.arguments(HOLD_REQUEST)
    @blp.arguments(WRITE, location="headers")
    @blp.response(201, HoldAnswer, headers={**LOCATION, **REPLAYED})
    @problems(blp, 400, 403, 404, 409, 422, 503)
    def post(self, path, body, headers, **_):
        """Hold 1–10 seats during a checkout: they are taken until `expiresAt`, then come
        back by themselves unless the hold is confirmed (…/confirm) or released (DELETE)."""
        event_id = path["event_id"]
        return writes.hold(event_id, body, headers, _reservation_location(event_id))


@blp.route(
    "/<event_id>/reservations/<reservation_id>",
    parameters=[EVENT_ID_PARAMETER, RESERVATION_ID_PARAMETER],
)
class EventReservation(MethodView):
    @blp.doc(operationId="getReservation")
    @blp.arguments(ITEM, location="path")
    @blp.response(200, ReservationDetail)
    @problems(blp, 400, 404, 503)
    def get(self, path, **_):
        """A reservation or hold of this event: held (with expiresAt), confirmed, cancelled or
        expired (a hold past its time reads expired at once)."""
        return writes.get_reservation(path["event_id"], path["reservation_id"])

    @blp.doc(operationId="cancelReservation")
    @blp.arguments(ITEM, location="path")
    @blp.arguments(WRITE, location="headers")
    @blp.response(204, headers=REPLAYED)
    @problems(blp, 400, 404, 409, 422, 503)
    def delete(self, path, headers, **_):
        """Cancel a confirmed reservation of this event, or release a hold: its seats are
        back. 409 hold-expired for a hold past its time."""
        return writes.cancel(path["event_id"], path["reservation_id"], headers)


@blp.route(
    "/<event_id>/reservations/<reservation_id>/confirm",
    parameters=[EVENT_ID_PARAMETER, RESERVATION_ID_PARAMETER],
)
class HoldConfirm(MethodView):
    @blp.doc(operationId="confirmHold")
    @blp.arguments(ITEM, location="path")
    @blp.arguments(WRITE, location="headers")
    @blp.response(200, HoldAnswer, headers=REPLAYED)
    @problems(blp, 400, 404, 409, 422, 503)
    def post(self, path, headers, **_):
        """Confirm a live hold: it becomes a reservation, its seats stay taken. Confirming
        again gives the same answer; 409 hold-expired past its time, not-held once released."""
        return writes.confirm(path["event_id"], path["reservation_id"], headers)


@blp.route(
    "/<event_id>/reservations/<reservation_id>/extend",
    parameters=[EVENT_ID_PARAMETER, RESERVATION_ID_PARAMETER],
)
class HoldExtend(MethodView):
    @blp.doc(operationId="extendHold")
    @blp.arguments(ITEM, location="path")
    @blp.arguments(EXTEND_REQUEST)
    @blp.arguments(WRITE, location="headers")
    @blp.response(200, HoldAnswer, headers=REPLAYED)
    @problems(blp, 400, 404, 409, 422, 503)
    def post(self, path, body, headers, **_):
        """A live hold now ends `ttlSeconds` from now, but never later than HOLD_MAX_SECONDS
        after its creation. 409 hold-expired past its time, not-held if it is not a hold."""
        return writes.extend(path["event_id"], path["reservation_id"], body, headers)
