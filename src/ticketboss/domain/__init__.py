"""Pure rules of seat inventory: no Flask, no SQLAlchemy."""

from ticketboss.domain.errors import (
    EventNotFound,
    NotEnoughSeats,
    OutcomeUnknown,
    ReservationNotFound,
    VersionConflict,
)
from ticketboss.domain.model import MAX_SEATS, MIN_SEATS, Event, Reservation, Status

__all__ = [
    "MAX_SEATS",
    "MIN_SEATS",
    "Event",
    "EventNotFound",
    "NotEnoughSeats",
    "OutcomeUnknown",
    "Reservation",
    "ReservationNotFound",
    "Status",
    "VersionConflict",
]
