"""Pure rules of seat inventory: no Flask, no SQLAlchemy."""

from ticketboss.domain.access import ANYONE, Principal, Role
from ticketboss.domain.errors import (
    EventExists,
    EventNotFound,
    Forbidden,
    HoldExpired,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    NotEnoughSeats,
    NotHeld,
    OutcomeUnknown,
    PreconditionFailed,
    ReservationNotFound,
    SeatsAlreadyReserved,
    Unauthenticated,
    VersionConflict,
)
from ticketboss.domain.model import MAX_SEATS, MIN_SEATS, Event, Reservation, Status

__all__ = [
    "ANYONE",
    "MAX_SEATS",
    "MIN_SEATS",
    "Event",
    "EventExists",
    "EventNotFound",
    "Forbidden",
    "HoldExpired",
    "IdempotencyKeyInFlight",
    "IdempotencyKeyReused",
    "NotEnoughSeats",
    "NotHeld",
    "OutcomeUnknown",
    "PreconditionFailed",
    "Principal",
    "Reservation",
    "ReservationNotFound",
    "Role",
    "SeatsAlreadyReserved",
    "Status",
    "Unauthenticated",
    "VersionConflict",
]
