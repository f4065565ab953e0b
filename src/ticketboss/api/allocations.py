"""Partner allocations of an event: operators set them, partners read their own."""

from flask import Response, url_for
from flask.views import MethodView

from ticketboss.api import conditional, deps, summaries
from ticketboss.api.auth import operator_only
from ticketboss.api.body import Blueprint
from ticketboss.api.docs import ETAG, IF_MATCH, IF_NONE_MATCH, problems
from ticketboss.api.schemas import (
    EVENT_ID_PARAMETER,
    Allocation,
    AllocationPage,
    AllocationPut,
    EventAndPartnerPath,
    EventIdPath,
)
from ticketboss.domain import AllocationNotFound, Event, UnknownPartner

blp = Blueprint(
    "allocations",
    __name__,
    url_prefix="/api/events",
    description="Seats of an event set aside for one partner, beside the open pool",
)

EVENT_ID = EventIdPath()
ITEM = EventAndPartnerPath()
PUT_BODY = AllocationPut()
CREATED_AT = {"Location": {"schema": {"type": "string"}, "description": "The allocation."}}
PARTNER_ID_PARAMETER = {
    "in": "path",
    "name": "partner_id",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
}


def _visible(event: Event) -> list:
    """The allocations the key may see: every one (operators), or its own (partners)."""
    owner = deps.principal().owner()
    allocations = sorted(event.allocations.values(), key=lambda a: a.partner_id)
    return [a for a in allocations if owner is None or a.partner_id == owner]


@blp.route("/<event_id>/allocations", parameters=[EVENT_ID_PARAMETER])
class Allocations(MethodView):
    @blp.doc(operationId="listAllocations")
    @blp.arguments(EVENT_ID, location="path")
    @blp.doc(**IF_NONE_MATCH)
    @blp.response(200, AllocationPage, headers=ETAG)
    @blp.alt_response(304, description="Not modified: If-None-Match has the ETag.", headers=ETAG)
    @problems(blp, 400, 404, 503)
    def get(self, path, **_):
        """The event's allocations and its open pool; a partner key sees only its own."""
        event = deps.reservations().summary(path["event_id"])
        unchanged = conditional.not_modified(event)
        if unchanged is not None:
            return unchanged
        pool = event.pool if deps.principal().owner() is None else summaries.for_partner(event.pool)
        page = {"items": _visible(event), "pool": pool}
        return page, 200, conditional.etag_header(event)


@blp.route(
    "/<event_id>/allocations/<partner_id>", parameters=[EVENT_ID_PARAMETER, PARTNER_ID_PARAMETER]
)
class AllocationItem(MethodView):
    @blp.doc(operationId="getAllocation")
    @blp.arguments(ITEM, location="path")
    @blp.response(200, Allocation, headers=ETAG)
    @problems(blp, 400, 404, 503)
    def get(self, path, **_):
        """One partner's allocation (a partner key: only its own; another's is a 404)."""
        event_id, partner_id = path["event_id"], path["partner_id"]
        event = deps.reservations().summary(event_id)
        for allocation in _visible(event):
            if allocation.partner_id == partner_id:
                return allocation, 200, conditional.etag_header(event)
        raise AllocationNotFound(event_id, partner_id)

    @blp.doc(operationId="setAllocation")
    @blp.arguments(ITEM, location="path")
    @blp.arguments(PUT_BODY)
    @blp.doc(**IF_MATCH)
    @blp.response(200, Allocation, headers=ETAG)
    @blp.alt_response(
        201, schema=Allocation, description="Created.", headers={**ETAG, **CREATED_AT}
    )
    @problems(blp, 400, 403, 404, 409, 412, 422, 503)
    @operator_only
    def put(self, path, body, **_):
        """Create, resize or reopen a partner's allocation: `seats` set aside for it alone,
        and with `overflow` the open pool too once they are used. Never below the seats
        taken and held from it, never beyond what the event can give (409). Operator keys
        only."""
        event_id, partner_id = path["event_id"], path["partner_id"]
        # With keys, only a partner that has an account (AUTH_MODE=open: any id, as there).
        if deps.settings().auth_mode == "keys" and not deps.keys().has_partner(partner_id):
            raise UnknownPartner(partner_id)
        done = deps.reservations().allot(
            event_id,
            partner_id,
            body["seats"],
            overflow=body["overflow"],
            max_held_seats=body["max_held_seats"],
            if_versions=conditional.if_match_versions(),
        )
        headers = conditional.etag_header(done.event)
        if done.created:
            location = url_for(
                "allocations.AllocationItem", event_id=event_id, partner_id=partner_id
            )
            return done.allocation, 201, {**headers, "Location": location}
        return done.allocation, 200, headers

    @blp.doc(operationId="deleteAllocation")
    @blp.arguments(ITEM, location="path")
    @blp.doc(**IF_MATCH)
    @blp.response(204, headers=ETAG)
    @problems(blp, 400, 403, 404, 412, 503)
    @operator_only
    def delete(self, path, **_):
        """Delete a partner's allocation: its unused seats go back to the open pool at once;
        seats still taken or held from it stay the partner's, and each one cancelled,
        released or lapsed then goes to the pool. Operator keys only."""
        event = deps.reservations().unallot(
            path["event_id"], path["partner_id"], if_versions=conditional.if_match_versions()
        )
        return Response(status=204, headers=conditional.etag_header(event))
