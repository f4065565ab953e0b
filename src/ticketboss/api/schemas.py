"""Marshmallow schemas: the validation of every request and the shape of every response."""

import re

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from ticketboss.domain import MAX_SEATS, MIN_SEATS


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable_text(value: str) -> None:
    """PostgreSQL text is valid UTF-8 without NUL: refuse what it could not store."""
    if _UNSTORABLE.search(value):
        raise ValidationError("Must not contain NUL or lone surrogates.")


class ReserveRequest(Schema):
    class Meta:
        unknown = EXCLUDE  # extra fields are ignored, as the Node.js API did

    partner_id = fields.String(
        data_key="partnerId",
        required=True,
        validate=[
            validate.Length(min=1, max=128),
            validate.Regexp(r"(?s).*\S", error="Must not be blank."),
            _storable_text,
        ],
    )
    seats = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=MIN_SEATS, max=MAX_SEATS)
    )


class ReservationIdPath(Schema):
    reservation_id = fields.UUID(required=True)


class EventSummary(Schema):
    event_id = fields.String(data_key="eventId")
    name = fields.String()
    total_seats = fields.Integer(data_key="totalSeats")
    available_seats = fields.Integer(data_key="availableSeats")
    reservation_count = fields.Integer(data_key="reservationCount")
    version = fields.Integer()


class ReservationCreated(Schema):
    reservation_id = fields.UUID(data_key="reservationId")
    seats = fields.Integer()
    status = fields.String()


class ReservationDetail(ReservationCreated):
    event_id = fields.String(data_key="eventId")
    partner_id = fields.String(data_key="partnerId")
    created_at = fields.AwareDateTime(data_key="createdAt")
    cancelled_at = fields.AwareDateTime(data_key="cancelledAt", allow_none=True)


class Health(Schema):
    status = fields.String()


class Problem(Schema):
    """RFC 9457 problem details, plus `error` (= detail) for clients of the Node.js API."""

    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    error = fields.String()
    errors = fields.Dict(metadata={"description": "Per-field messages of a 400."})
