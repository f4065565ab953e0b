"""The changes feed: what happened to the caller's reservations, holds and allocations and
to the events, in order, to catch up from after an outage (webhooks push the same)."""

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from ticketboss.api import cursors, deps
from ticketboss.api.body import Blueprint
from ticketboss.api.docs import problems
from ticketboss.api.schemas import RequestSchema, Text
from ticketboss.api.views import Notification, notice
from ticketboss.services.changes import START, changes

blp = Blueprint(
    "changes", __name__, url_prefix="/api/changes", description="Notifications, to catch up from"
)


class ChangesQuery(RequestSchema):
    after = Text(
        validate=validate.Length(max=1000),
        metadata={"description": "nextCursor of the previous page; absent: the oldest kept."},
    )
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    event_id = Text(data_key="eventId", validate=validate.Length(1, 200))


class ChangesPage(Schema):
    items = fields.List(fields.Nested(Notification))
    next_cursor = fields.String(
        data_key="nextCursor",
        metadata={
            "description": "Always set: ask with it again for what happened since (an empty "
            "page keeps the cursor where it was)."
        },
    )


@blp.route("", strict_slashes=False)
class Changes(MethodView):
    @blp.doc(operationId="listChanges")
    @blp.arguments(ChangesQuery(), location="query")
    @blp.response(200, ChangesPage)
    @problems(blp, 400, 503)
    def get(self, query):
        """Your notifications after `after`, oldest first (operators: everyone's). A row
        whose transaction commits late is listed after the ones before it, never skipped."""
        after = START
        if "after" in query:
            xid, last = cursors.decode_cursor(query["after"], int, int)
            after = (xid, last)
        viewer = deps.principal().owner()
        rows, cursor = changes(
            deps.engine(), after, query["limit"], viewer=viewer, event_id=query.get("event_id")
        )
        items = [notice(row, viewer) for row in rows]
        return {"items": items, "next_cursor": cursors.encode_cursor(*map(str, cursor))}
