"""The reservation API of the Node.js service, kept to the letter, on the default event."""

from flask import current_app, url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from ticketboss.api import service
from ticketboss.api.schemas import (
    EventSummary,
    Problem,
    ReservationCreated,
    ReservationDetail,
    ReservationIdPath,
    ReserveRequest,
)

blp = Blueprint(
    "reservations",
    __name__,
    url_prefix="/api/reservations",
    description="Reserve and cancel seats of the default event",
)

# Schema instances, not classes: webargs would build (and deep-copy) a new one per request.
RESERVE_REQUEST = ReserveRequest()
RESERVATION_ID = ReservationIdPath()

_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}


def _default_event_id() -> str:
    return current_app.config["DEFAULT_EVENT_ID"]


@blp.route("", strict_slashes=False)
class Reservations(MethodView):
    @blp.response(200, EventSummary)
    @blp.alt_response(503, schema=Problem, headers=_RETRY_AFTER)
    def get(self):
        """Summary of the default event: seats left, confirmed reservations, version."""
        return service().summary(_default_event_id())

    @blp.arguments(RESERVE_REQUEST, error_status_code=400)
    @blp.response(
        201,
        ReservationCreated,
        headers={"Location": {"schema": {"type": "string"}, "description": "The reservation."}},
    )
    @blp.alt_response(400, schema=Problem, description="The body is not a valid request.")
    @blp.alt_response(409, schema=Problem, description="Not enough seats left.")
    @blp.alt_response(503, schema=Problem, headers=_RETRY_AFTER, description="Try again later.")
    def post(self, body):
        """Reserve 1–10 seats for a partner."""
        reservation = service().reserve(_default_event_id(), body["partner_id"], body["seats"])
        location = url_for(
            "reservations.ReservationItem", reservation_id=reservation.reservation_id
        )
        return reservation, 201, {"Location": location}


@blp.route("/<reservation_id>")
class ReservationItem(MethodView):
    @blp.arguments(RESERVATION_ID, location="path", error_status_code=400)
    @blp.response(200, ReservationDetail)
    @blp.alt_response(400, schema=Problem, description="The id is not a UUID.")
    @blp.alt_response(404, schema=Problem, description="No reservation with that id.")
    def get(self, path, **_):
        """A reservation, confirmed or cancelled."""
        return service().get(_default_event_id(), path["reservation_id"])

    @blp.arguments(RESERVATION_ID, location="path", error_status_code=400)
    @blp.response(204)
    @blp.alt_response(400, schema=Problem, description="The id is not a UUID.")
    @blp.alt_response(404, schema=Problem, description="No confirmed reservation with that id.")
    @blp.alt_response(503, schema=Problem, headers=_RETRY_AFTER, description="Try again later.")
    def delete(self, path, **_):
        """Cancel a confirmed reservation; its seats return to the pool."""
        service().cancel(_default_event_id(), path["reservation_id"])
