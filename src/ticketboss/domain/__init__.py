"""Pure rules of seat inventory: no Flask, no SQLAlchemy."""

from ticketboss.domain.errors import (
    EventExists,
    EventNotFound,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    NotEnoughSeats,
    OutcomeUnknown,
    PreconditionFailed,
    ReservationNotFound,
    SeatsAlreadyReserved,
    VersionConflict,
)
from ticketboss.domain.model import MAX_SEATS, MIN_SEATS, Event, Reservation, Status

__all__ = [
    "MAX_SEATS",
    "MIN_SEATS",
    "Event",
    "EventExists",
    "EventNotFound",
    "IdempotencyKeyInFlight",
    "IdempotencyKeyReused",
    "NotEnoughSeats",
    "OutcomeUnknown",
    "PreconditionFailed",
    "Reservation",
    "ReservationNotFound",
    "SeatsAlreadyReserved",
    "Status",
    "VersionConflict",
]
