"""Webhook endpoints: a partner registers where its notifications are pushed, reads what was
delivered, rotates the signing secret and retries a delivery; an operator sees them all."""

from flask import Response, url_for
from flask.views import MethodView

from ticketboss.api import cursors, deps, docs
from ticketboss.api.body import Blueprint
from ticketboss.api.webhook_schemas import (
    DELIVERY_ID_PARAMETER,
    ENDPOINT_ID_PARAMETER,
    DeliveryPath,
    DeliveryQuery,
    EndpointPath,
    WebhookCreate,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookEndpoint,
    WebhookEndpointList,
    WebhookEndpointWithSecret,
)

blp = Blueprint(
    "webhooks",
    __name__,
    url_prefix="/api/webhooks",
    description="Endpoints that notifications are pushed to (Standard Webhooks v1), and "
    "their deliveries",
)

CREATE = WebhookCreate()
ENDPOINT = EndpointPath()
DELIVERY = DeliveryPath()
PAGE = DeliveryQuery()
LOCATION = {"Location": {"schema": {"type": "string"}, "description": "The endpoint."}}
_LARGEST_ID = 2**63 - 1

# Status → description of the problems these routes answer (api/docs.py's are the seats').
_PROBLEMS = {
    400: "The request is not valid (body, path, query or header), or the URL is refused "
    "(webhook-url-refused: `detail` says why, e.g. its host resolves to a private address).",
    404: "No such webhook endpoint (webhook-endpoint-not-found; another partner's answers the "
    "same), or no such delivery of it (webhook-delivery-not-found).",
    409: "The partner has WEBHOOK_ENDPOINTS_PER_PARTNER endpoints already "
    "(too-many-webhook-endpoints): delete one first.",
    503: "Webhooks are not configured on this service (webhooks-not-configured: "
    "WEBHOOK_SECRET_KEYS is unset), or it is overloaded or its database unreachable: retry "
    "after Retry-After.",
}


def problems(*statuses: int):
    """Document the problem+json responses of a webhook route (decorator)."""
    return docs.problems(blp, *statuses, described=_PROBLEMS)


def _owner() -> str | None:
    """Whose endpoints the key may see: its partner's, or every one (operators)."""
    return deps.principal().owner()


def _delivery_id(text: str) -> int:
    delivery_id = int(text)
    if not 1 <= delivery_id <= _LARGEST_ID:
        raise ValueError("out of range")
    return delivery_id


@blp.route("", strict_slashes=False)
class WebhookEndpoints(MethodView):
    @blp.doc(operationId="listWebhookEndpoints")
    @blp.response(200, WebhookEndpointList)
    @problems(503)
    def get(self):
        """The key's endpoints (an operator's: every partner's), oldest first."""
        principal = deps.principal()
        every_partner = principal.owner() is None
        return {"items": deps.webhooks().list(principal.partner_id, every_partner)}

    @blp.doc(operationId="createWebhookEndpoint")
    @blp.arguments(CREATE)
    @blp.response(201, WebhookEndpointWithSecret, headers=LOCATION)
    @problems(400, 409, 503)
    def post(self, body):
        """Register an endpoint: notifications of the given types (every type without
        `types`) are POSTed to `url`, signed with `secret`, shown only in this answer. A
        partner's endpoint receives its own notifications and the events' updates; an
        operator's, every partner's."""
        principal = deps.principal()
        endpoint, secret = deps.webhooks().register(
            principal.partner_id or "",  # AUTH_MODE=open: the keyless client is nobody's
            principal.owner() is None,
            body["url"],
            body["types"],
        )
        location = url_for("webhooks.WebhookEndpointItem", endpoint_id=endpoint.endpoint_id)
        return {"endpoint": endpoint, "secret": secret}, 201, {"Location": location}


@blp.route("/<endpoint_id>", parameters=[ENDPOINT_ID_PARAMETER])
class WebhookEndpointItem(MethodView):
    @blp.doc(operationId="getWebhookEndpoint")
    @blp.arguments(ENDPOINT, location="path")
    @blp.response(200, WebhookEndpoint)
    @problems(400, 404, 503)
    def get(self, path, **_):
        """One endpoint (without its secret)."""
        return deps.webhooks().get(path["endpoint_id"], _owner())

    @blp.doc(operationId="deleteWebhookEndpoint")
    @blp.arguments(ENDPOINT, location="path")
    @blp.response(204)
    @problems(400, 404, 503)
    def delete(self, path, **_):
        """Delete the endpoint: nothing more is sent to it, and its deliveries are gone."""
        deps.webhooks().delete(path["endpoint_id"], _owner())
        return Response(status=204)


@blp.route("/<endpoint_id>/rotate-secret", parameters=[ENDPOINT_ID_PARAMETER])
class WebhookSecretRotation(MethodView):
    @blp.doc(operationId="rotateWebhookSecret")
    @blp.arguments(ENDPOINT, location="path")
    @blp.response(200, WebhookEndpointWithSecret)
    @problems(400, 404, 503)
    def post(self, path, **_):
        """A new secret, shown only in this answer; until `secretRotatedUntil` deliveries
        are signed with the previous one too, so receivers can switch without a gap."""
        endpoint, secret = deps.webhooks().rotate_secret(path["endpoint_id"], _owner())
        return {"endpoint": endpoint, "secret": secret}


@blp.route("/<endpoint_id>/deliveries", parameters=[ENDPOINT_ID_PARAMETER])
class WebhookDeliveries(MethodView):
    @blp.doc(operationId="listWebhookDeliveries")
    @blp.arguments(ENDPOINT, location="path")
    @blp.arguments(PAGE, location="query")
    @blp.response(200, WebhookDeliveryPage)
    @problems(400, 404, 503)
    def get(self, path, query, **_):
        """The endpoint's deliveries, newest first, each with its latest attempts; follow
        `nextCursor` for older ones."""
        after = None
        if "cursor" in query:
            after = cursors.decode_cursor(query["cursor"], _delivery_id)[0]
        fetched = deps.webhooks().deliveries(
            path["endpoint_id"], _owner(), after, query["limit"] + 1
        )
        return cursors.page(fetched, query["limit"], lambda d: (str(d.delivery_id),))


@blp.route(
    "/<endpoint_id>/deliveries/<delivery_id>/retry",
    parameters=[ENDPOINT_ID_PARAMETER, DELIVERY_ID_PARAMETER],
)
class WebhookDeliveryRetry(MethodView):
    @blp.doc(operationId="retryWebhookDelivery")
    @blp.arguments(DELIVERY, location="path")
    @blp.response(202, WebhookDelivery)
    @problems(400, 404, 503)
    def post(self, path, **_):
        """Send the delivery again, now, from its first attempt; a disabled endpoint is
        enabled again (its receiver is back)."""
        return deps.webhooks().retry(path["endpoint_id"], path["delivery_id"], _owner())
