"""Events and reservations as immutable values; changes return new values."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from uuid import UUID

from ticketboss.domain.errors import NotEnoughSeats, SeatsAlreadyReserved

MIN_SEATS = 1
MAX_SEATS = 10


class Status(enum.StrEnum):
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Event:
    event_id: str
    name: str
    total_seats: int
    available_seats: int
    version: int
    reservation_count: int = 0  # confirmed reservations

    def reserve(self, seats: int) -> Event:
        """The event after taking `seats`; NotEnoughSeats if they are not there."""
        if seats > self.available_seats:
            raise NotEnoughSeats(self.event_id, seats, self.available_seats)
        return replace(
            self,
            available_seats=self.available_seats - seats,
            reservation_count=self.reservation_count + 1,
        )

    def resize(self, total_seats: int) -> Event:
        """The event with a new total; the reserved seats stay reserved."""
        reserved = self.total_seats - self.available_seats
        if total_seats < reserved:
            raise SeatsAlreadyReserved(self.event_id, total_seats, reserved)
        return replace(self, total_seats=total_seats, available_seats=total_seats - reserved)

    def release(self, seats: int) -> Event:
        """The event after `seats` of a cancelled reservation return to the pool."""
        available = self.available_seats + seats
        if available > self.total_seats:
            raise ValueError(f"releasing {seats} seats would exceed the event's total")
        return replace(
            self, available_seats=available, reservation_count=self.reservation_count - 1
        )


@dataclass(frozen=True)
class Reservation:
    reservation_id: UUID
    event_id: str
    partner_id: str
    seats: int
    status: Status
    created_at: datetime
    cancelled_at: datetime | None = None
