"""Marshmallow schemas: the validation of every request and the shape of every response."""

import re

from flask import current_app
from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    post_dump,
    validate,
    validates_schema,
)

from ticketboss.domain import MAX_SEATS, MIN_SEATS, Status

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: str) -> bool:
    """PostgreSQL text is valid UTF-8 without NUL."""
    return not _UNSTORABLE.search(value)


class Text(fields.String):
    """A string field for requests: refuses text the database could not store, so no input
    string reaches a query without the check."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if not storable(text):
            raise ValidationError("Must not contain NUL or lone surrogates.")
        return text


def whole(core: str) -> str:
    """A pattern the whole value must match, spelled so that it means the same in ECMA-262
    (the dialect of OpenAPI patterns) and in Python: `$` would also accept a trailing
    newline in Python, and `\\Z` is Python only; "no character follows" is both."""
    return f"^(?:{core})(?![\\s\\S])"


class Pattern(validate.Regexp):
    """Validated as JSON Schema validates a `pattern` (an unanchored search) and documented as
    written, so the document's pattern and the service agree in every language."""

    def __call__(self, value):  # type: ignore[override]  # marshmallow's own is untyped
        if self.regex.search(value) is None:
            raise ValidationError(self._format_error(value))
        return value


# A visible character: not whitespace, not a control or zero-width format character. Spelled
# out, because Python's \s and ECMA-262's \s differ at the edges (U+001C–1F, U+FEFF).
_VISIBLE = (
    "[^\\u0000-\\u0020\\u007f-\\u00a0\\u00ad\\u1680\\u180e\\u2000-\\u200f\\u2028-\\u202f"
    "\\u205f-\\u206f\\u3000\\ufeff]"
)
_NOT_BLANK = Pattern(_VISIBLE, error="Must contain a visible character.")
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


class CanonicalUUID(fields.UUID):
    """A UUID in its canonical 8-4-4-4-12 spelling (either case); braces, `urn:uuid:` and
    undashed spellings are refused, so one reservation has one id."""

    _SPELLING = re.compile(_UUID)

    def __init__(self, **kwargs):
        super().__init__(**kwargs, metadata={"pattern": whole(_UUID)})

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or self._SPELLING.fullmatch(value) is None:
            raise self.make_error("invalid_uuid")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    """A JSON true or false, nothing that merely looks like one ("true", 1), as the integer
    fields are strict."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class RequestSchema(Schema):
    """Every request's schema: unknown fields are ignored, as the Node.js API did."""

    class Meta:
        unknown = EXCLUDE


class ReserveRequest(RequestSchema):
    partner_id = Text(
        data_key="partnerId",
        validate=[validate.Length(min=1, max=128), _NOT_BLANK],
        metadata={
            "description": "Whose reservation it is. A partner key's own when absent (another "
            "partner's is 403); an operator key names any partner. Required with AUTH_MODE=open."
        },
    )
    seats = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=MIN_SEATS, max=MAX_SEATS)
    )


class TtlSeconds(fields.Integer):
    """How long a hold lasts: 1 to HOLD_MAX_SECONDS (the running service's setting)."""

    def __init__(self, description: str, **kwargs):
        super().__init__(
            data_key="ttlSeconds",
            strict=True,
            validate=validate.Range(min=1),
            metadata={"description": description},
            **kwargs,
        )

    def _deserialize(self, value, attr, data, **kwargs):
        seconds = super()._deserialize(value, attr, data, **kwargs)
        longest = current_app.config["HOLD_MAX_SECONDS"]
        if seconds > longest:
            raise ValidationError(f"Must be at most {longest} (HOLD_MAX_SECONDS).")
        return seconds


class HoldRequest(ReserveRequest):
    ttl_seconds = TtlSeconds(
        "Seconds the hold lasts, 1 to HOLD_MAX_SECONDS (7200 by default); "
        "HOLD_TTL_SECONDS (900 by default) when absent."
    )


class ExtendRequest(RequestSchema):
    ttl_seconds = TtlSeconds(
        "The hold ends this many seconds from now (1 to HOLD_MAX_SECONDS), but never "
        "later than HOLD_MAX_SECONDS after its creation.",
        required=True,
    )


class ReservationIdPath(RequestSchema):
    reservation_id = CanonicalUUID(required=True)


_EVENT_ID = Pattern(
    whole("[A-Za-z0-9][A-Za-z0-9._-]{0,127}"),
    error="1-128 letters, digits, '.', '_' or '-', starting with a letter or digit.",
)


# Path parameters as the document shows them at path level (flask-smorest would otherwise
# say only "string" there); the schemas below validate them.
EVENT_ID_PARAMETER = {
    "in": "path",
    "name": "event_id",
    "schema": {"type": "string", "pattern": _EVENT_ID.regex.pattern, "maxLength": 128},
}
RESERVATION_ID_PARAMETER = {
    "in": "path",
    "name": "reservation_id",
    "schema": {"type": "string", "format": "uuid", "pattern": whole(_UUID)},
}


class EventIdPath(RequestSchema):
    event_id = Text(required=True, validate=_EVENT_ID)


class EventAndReservationPath(EventIdPath, ReservationIdPath):
    pass


class WriteHeaders(RequestSchema):
    """Idempotency-Key of a DELETE, validated here."""

    idempotency_key = Text(
        data_key="Idempotency-Key",
        validate=validate.Length(min=1, max=255),
        metadata={"description": "Makes a retried request return the first one's answer."},
    )


class ReserveHeaders(WriteHeaders):
    """Headers of a reservation. If-Match is parsed by Werkzeug (request.if_match); it is
    declared here so that the document names it beside Idempotency-Key."""

    if_match = Text(
        data_key="If-Match",
        metadata={"description": 'The event\'s ETag ("<version>"): write only at that version.'},
    )


_EVENT_NAME = [validate.Length(min=1, max=200), _NOT_BLANK]


class EventCreate(RequestSchema):
    event_id = Text(data_key="eventId", required=True, validate=_EVENT_ID)
    name = Text(required=True, validate=_EVENT_NAME)
    total_seats = fields.Integer(
        data_key="totalSeats", required=True, strict=True, validate=validate.Range(0, 1_000_000)
    )


class EventPatch(RequestSchema):
    """The event's id is its path's and cannot change: a body naming `eventId` is refused
    rather than ignored, since its sender expected it to mean something."""

    name = Text(validate=_EVENT_NAME)
    total_seats = fields.Integer(
        data_key="totalSeats", strict=True, validate=validate.Range(0, 1_000_000)
    )

    @validates_schema(pass_original=True)
    def _something_to_change(self, data, original, **_):
        if "eventId" in original:
            raise ValidationError("The event's id is its path's and cannot change.", "eventId")
        if not data:
            raise ValidationError("Give name and/or totalSeats.")


class PageQuery(RequestSchema):
    limit = fields.Integer(load_default=20, validate=validate.Range(1, 100))
    cursor = Text(
        validate=validate.Length(max=1000),
        metadata={"description": "nextCursor of the previous page."},
    )


class ReservationQuery(PageQuery):
    partner_id = Text(data_key="partnerId", validate=validate.Length(1, 128))
    status = Text(validate=validate.OneOf([s.value for s in Status]))


class NodeSummary(Schema):
    """The summary of the Node.js API, field for field (its routes know no holds)."""

    event_id = fields.String(data_key="eventId")
    name = fields.String()
    total_seats = fields.Integer(data_key="totalSeats")
    available_seats = fields.Integer(data_key="availableSeats")
    reservation_count = fields.Integer(data_key="reservationCount")
    version = fields.Integer()


class PoolFigures(Schema):
    """The open pool: the seats no allocation sets aside. A partner key sees only
    `available` (the rest would tell what the other partners' allocations add up to)."""

    seats = fields.Integer(metadata={"description": "Operators only."})
    taken = fields.Integer(metadata={"description": "In confirmed reservations (operators only)."})
    held = fields.Integer(metadata={"description": "In holds (operators only)."})
    available = fields.Integer()

    @post_dump
    def _operators_figures_only_for_operators(self, data, **_):
        return {k: v for k, v in data.items() if v is not None}


class Allocation(Schema):
    partner_id = fields.String(data_key="partnerId")
    seats = fields.Integer(metadata={"description": "Set aside for this partner alone."})
    taken = fields.Integer(metadata={"description": "Of them, in confirmed reservations."})
    held = fields.Integer(metadata={"description": "Of them, in holds."})
    available = fields.Integer()
    overflow = fields.Boolean(
        metadata={
            "description": "Whether the partner also takes from the open pool once its "
            "allocation is used up."
        }
    )
    max_held_seats = fields.Integer(
        data_key="maxHeldSeats",
        allow_none=True,
        metadata={
            "description": "Its own limit on seats held at once; null: PARTNER_MAX_HELD_SEATS."
        },
    )
    closed = fields.Boolean(
        metadata={
            "description": "Deleted while seats were still taken or held from it: it "
            "keeps exactly those, and each one given back goes to the open pool."
        }
    )


class EventSummary(NodeSummary):
    held_seats = fields.Integer(
        data_key="heldSeats", metadata={"description": "Seats of live holds."}
    )
    pool = fields.Nested(
        PoolFigures, metadata={"description": "Only when the event has allocations."}
    )
    allocations = fields.List(
        fields.Nested(Allocation),
        metadata={
            "description": "Only when the event has allocations: every one (operators), or "
            "the key's own (partners)."
        },
    )

    @post_dump
    def _allocations_only_when_there_are(self, data, **_):
        for key in ("pool", "allocations"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class AllocationPut(RequestSchema):
    seats = fields.Integer(required=True, strict=True, validate=validate.Range(0, 1_000_000))
    overflow = StrictBoolean(load_default=False)
    max_held_seats = fields.Integer(
        data_key="maxHeldSeats",
        strict=True,
        allow_none=True,
        load_default=None,
        validate=validate.Range(1, 1_000_000),
        metadata={
            "description": "Its own limit on seats held at once (1 or more); null or "
            "absent: PARTNER_MAX_HELD_SEATS."
        },
    )


class AllocationPage(Schema):
    items = fields.List(fields.Nested(Allocation))
    pool = fields.Nested(PoolFigures)


class EventAndPartnerPath(EventIdPath):
    partner_id = Text(required=True, validate=[validate.Length(min=1, max=128), _NOT_BLANK])


class ReservationCreated(Schema):
    reservation_id = fields.UUID(data_key="reservationId")
    seats = fields.Integer()
    status = fields.String()


class _HoldExpiry(Schema):
    """`expiresAt`, present only while the reservation is (or was) a hold."""

    expires_at = fields.AwareDateTime(
        data_key="expiresAt",
        metadata={"description": "When the hold lapses (by the database's clock); holds only."},
    )

    @post_dump
    def _expiry_of_holds_only(self, data, **_):
        if data.get("expiresAt") is None:
            data.pop("expiresAt", None)
        return data


class HoldAnswer(_HoldExpiry, ReservationCreated):
    """A hold, or what a confirm or extend made of it."""

    status = fields.String(metadata={"enum": [Status.HELD.value, Status.CONFIRMED.value]})


class ReservationDetail(_HoldExpiry, ReservationCreated):
    event_id = fields.String(data_key="eventId")
    partner_id = fields.String(data_key="partnerId")
    created_at = fields.AwareDateTime(data_key="createdAt")
    cancelled_at = fields.AwareDateTime(data_key="cancelledAt", allow_none=True)
    status = fields.String(metadata={"enum": [s.value for s in Status]})
    allocated_seats = fields.Integer(
        data_key="allocatedSeats",
        metadata={
            "description": "Of its seats, those drawn from its partner's allocation "
            "(the rest are the open pool's); cancelling gives each back to where it came from."
        },
    )


class EventPage(Schema):
    items = fields.List(fields.Nested(EventSummary))
    next_cursor = fields.String(data_key="nextCursor", allow_none=True)


class ReservationPage(Schema):
    items = fields.List(fields.Nested(ReservationDetail))
    next_cursor = fields.String(data_key="nextCursor", allow_none=True)


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
    bucket = fields.String(
        metadata={
            "enum": ["pool", "allocation", "allocation+pool"],
            "description": "not-enough-seats: the bucket that ran out (the open pool, the "
            "partner's allocation, or both for one that overflows).",
        }
    )
    requested = fields.Integer(
        metadata={
            "description": "not-enough-seats, hold-limit-reached, pool-limit-reached: "
            "seats asked for."
        }
    )
    available = fields.Integer(
        metadata={"description": "not-enough-seats: what that bucket had left."}
    )
    held = fields.Integer(
        metadata={"description": "hold-limit-reached: seats the partner holds now."}
    )
    used = fields.Integer(
        metadata={"description": "pool-limit-reached: seats the partner has of the pool."}
    )
    limit = fields.Integer(
        metadata={"description": "hold-limit-reached, pool-limit-reached: the partner's limit."}
    )
