"""The reservation API of the Node.js service, kept to the letter, on the default event."""

from flask import current_app, url_for
from flask.views import MethodView

from ticketboss.api import conditional, deps, writes
from ticketboss.api.body import Blueprint
from ticketboss.api.docs import ETAG, IF_NONE_MATCH, LOCATION, REPLAYED, problems
from ticketboss.api.schemas import (
    RESERVATION_ID_PARAMETER,
    NodeSummary,
    ReservationCreated,
    ReservationDetail,
    ReservationIdPath,
    ReserveHeaders,
    ReserveRequest,
    WriteHeaders,
)

blp = Blueprint(
    "reservations",
    __name__,
    url_prefix="/api/reservations",
    description="Reserve and cancel seats of the default event (the Node.js service's API)",
)

# Schema instances, not classes: webargs would build (and deep-copy) a new one per request.
RESERVE_REQUEST = ReserveRequest()
RESERVATION_ID = ReservationIdPath()
WRITE_HEADERS = WriteHeaders()
RESERVE_HEADERS = ReserveHeaders()


def _default_event_id() -> str:
    return current_app.config["DEFAULT_EVENT_ID"]


def _location(reservation_id) -> str:
    return url_for("reservations.ReservationItem", reservation_id=reservation_id)


@blp.route("", strict_slashes=False)
class Reservations(MethodView):
    @blp.doc(operationId="getDefaultEvent")
    @blp.doc(**IF_NONE_MATCH)
    @blp.response(200, NodeSummary, headers=ETAG)
    @blp.alt_response(304, description="Not modified: If-None-Match has the ETag.", headers=ETAG)
    @problems(blp, 404, 503)
    def get(self):
        """Summary of the default event: seats left, confirmed reservations, version."""
        return conditional.summary_response(deps.reservations().summary(_default_event_id()))

    @blp.doc(operationId="reserveOnDefaultEvent")
    @blp.arguments(RESERVE_REQUEST)
    @blp.arguments(RESERVE_HEADERS, location="headers")
    @blp.response(201, ReservationCreated, headers={**LOCATION, **REPLAYED})
    @problems(blp, 400, 403, 404, 409, 412, 422, 503)
    def post(self, body, headers):
        """Reserve 1–10 seats for a partner (a partner key: its own partnerId)."""
        return writes.reserve(_default_event_id(), body, headers, _location)


@blp.route("/<reservation_id>", parameters=[RESERVATION_ID_PARAMETER])
class ReservationItem(MethodView):
    @blp.doc(operationId="getDefaultEventReservation")
    @blp.arguments(RESERVATION_ID, location="path")
    @blp.response(200, ReservationDetail)
    @problems(blp, 400, 404, 503)
    def get(self, path, **_):
        """A reservation of the default event, confirmed or cancelled."""
        return writes.get_reservation(_default_event_id(), path["reservation_id"])

    @blp.doc(operationId="cancelDefaultEventReservation")
    @blp.arguments(RESERVATION_ID, location="path")
    @blp.arguments(WRITE_HEADERS, location="headers")
    @blp.response(204, headers=REPLAYED)
    @problems(blp, 400, 404, 409, 422, 503)
    def delete(self, path, headers, **_):
        """Cancel a confirmed reservation; its seats return to the pool."""
        return writes.cancel(_default_event_id(), path["reservation_id"], headers)
