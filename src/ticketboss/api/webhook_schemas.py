"""Marshmallow schemas of the webhook routes: what a partner sends to register an endpoint,
and how endpoints and their deliveries are shown."""

from marshmallow import Schema, ValidationError, fields, pre_dump, validate

from ticketboss.api.schemas import PageQuery, Pattern, RequestSchema, Text, whole
from ticketboss.domain.notifications import TYPES
from ticketboss.services.outbound import MAX_URL_LENGTH
from ticketboss.services.webhooks import ATTEMPTS_SHOWN

MAX_TYPES = 8
# "we_" and 24 characters of url-safe base64 (services/webhooks.py makes them).
_ENDPOINT_ID = Pattern(whole("we_[A-Za-z0-9_-]{24}"), error="Not a webhook endpoint id.")
_BIGINT = 2**63 - 1

ENDPOINT_ID_PARAMETER = {
    "in": "path",
    "name": "endpoint_id",
    "schema": {"type": "string", "pattern": _ENDPOINT_ID.regex.pattern},
}
DELIVERY_ID_PARAMETER = {
    "in": "path",
    "name": "delivery_id",
    "schema": {"type": "integer", "minimum": 1, "maximum": _BIGINT},
}


def _unique(types: list[str]) -> None:
    if len(set(types)) != len(types):
        raise ValidationError("Each type may be named once.")


class WebhookCreate(RequestSchema):
    url = Text(
        required=True,
        validate=validate.Length(min=1, max=MAX_URL_LENGTH),
        metadata={
            "description": "Where deliveries are POSTed: an https URL whose host resolves to "
            "public addresses only (http and private addresses only where the operator allows "
            "them: WEBHOOKS_ALLOW_PRIVATE)."
        },
    )
    types = fields.List(
        Text(validate=validate.OneOf(sorted(TYPES))),
        allow_none=True,
        load_default=None,
        validate=[validate.Length(min=1, max=MAX_TYPES), _unique],
        metadata={
            "uniqueItems": True,
            "description": "The notification types to deliver; null or absent: every type.",
        },
    )


class EndpointPath(RequestSchema):
    endpoint_id = Text(required=True, validate=_ENDPOINT_ID)


class DeliveryPath(EndpointPath):
    delivery_id = fields.Integer(required=True, validate=validate.Range(1, _BIGINT))


class DeliveryQuery(PageQuery):
    pass


class WebhookEndpoint(Schema):
    """An endpoint as its owner sees it; its secret is shown only by registration and
    rotation."""

    id = fields.String(attribute="endpoint_id")
    url = fields.String()
    types = fields.List(
        fields.String(metadata={"enum": sorted(TYPES)}),
        allow_none=True,
        metadata={"description": "The types it receives; null: every type."},
    )
    partner_id = fields.String(data_key="partnerId", metadata={"description": "Who registered it."})
    every_partner = fields.Boolean(
        data_key="everyPartner",
        metadata={"description": "An operator's: it receives every partner's notifications."},
    )
    created_at = fields.AwareDateTime(data_key="createdAt")
    enabled = fields.Boolean(
        metadata={
            "description": "False once deliveries kept failing (see disabledReason); retrying "
            "one of its deliveries enables it again."
        }
    )
    disabled_at = fields.AwareDateTime(data_key="disabledAt", allow_none=True)
    disabled_reason = fields.String(data_key="disabledReason", allow_none=True)
    secret_rotated_until = fields.AwareDateTime(
        data_key="secretRotatedUntil",
        allow_none=True,
        metadata={
            "description": "After a rotation: until then deliveries are signed with the "
            "previous secret as well as the new one."
        },
    )


class WebhookEndpointWithSecret(WebhookEndpoint):
    """An endpoint just registered or rotated, with its secret: the only time it is shown."""

    secret = fields.String(
        metadata={
            "description": "whsec_…: the key of the deliveries' webhook-signature (Standard "
            "Webhooks v1). Keep it: it is never shown again."
        }
    )

    @pre_dump
    def _endpoint_and_secret(self, shown, **_):
        """`shown`: {"endpoint": Endpoint, "secret": str}, as the views give it."""
        endpoint, secret = shown["endpoint"], shown["secret"]
        return {
            **{name: getattr(endpoint, name) for name in _ENDPOINT_ATTRIBUTES},
            "secret": secret,
        }


_ENDPOINT_ATTRIBUTES = [f.attribute or name for name, f in WebhookEndpoint._declared_fields.items()]


class WebhookEndpointList(Schema):
    items = fields.List(fields.Nested(WebhookEndpoint))


class WebhookAttempt(Schema):
    attempted_at = fields.AwareDateTime(data_key="attemptedAt")
    status_code = fields.Integer(
        data_key="statusCode",
        allow_none=True,
        metadata={"description": "The receiver's HTTP status; null: no answer (see error)."},
    )
    error = fields.String(allow_none=True)
    latency_ms = fields.Integer(data_key="latencyMs")
    next_attempt_at = fields.AwareDateTime(
        data_key="nextAttemptAt",
        allow_none=True,
        metadata={"description": "When it is tried again; null: no more attempts."},
    )


class WebhookDelivery(Schema):
    id = fields.Integer(attribute="delivery_id")
    notification_id = fields.Function(
        lambda d: f"ntf_{d.notification_id}",
        data_key="notificationId",
        metadata={"type": "string", "description": "Its notification's id (its webhook-id)."},
    )
    type = fields.String(metadata={"enum": sorted(TYPES)})
    status = fields.String(metadata={"enum": ["pending", "delivered", "failed"]})
    attempts = fields.Integer(
        metadata={"description": "Attempts since it was created or last retried."}
    )
    next_attempt_at = fields.AwareDateTime(data_key="nextAttemptAt", allow_none=True)
    created_at = fields.AwareDateTime(data_key="createdAt")
    settled_at = fields.AwareDateTime(
        data_key="settledAt",
        allow_none=True,
        metadata={"description": "When it was delivered or given up; null while pending."},
    )
    history = fields.List(
        fields.Nested(WebhookAttempt),
        metadata={"description": f"Its latest attempts (at most {ATTEMPTS_SHOWN}), newest first."},
    )


class WebhookDeliveryPage(Schema):
    items = fields.List(fields.Nested(WebhookDelivery))
    next_cursor = fields.String(data_key="nextCursor", allow_none=True)
