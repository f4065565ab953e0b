"""Pure rules of seat inventory: no Flask, no SQLAlchemy."""

from ticketboss.domain.errors import (
    EventNotFound,
    NotEnoughSeats,
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
    "Reservation",
    "ReservationNotFound",
    "Status",
    "VersionConflict",
]
