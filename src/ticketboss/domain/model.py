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
    HELD = "held"  # seats taken until expires_at, then back by themselves
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"  # a cancelled reservation or a released hold
    EXPIRED = "expired"  # a hold that lapsed


@dataclass(frozen=True)
class Event:
    """An event's seats as one row: `available_seats + held_seats + the confirmed seats =
    total_seats` at every version. `held_seats` counts the holds as last written; any whose
    time has passed since are *lapsed* and are reclaimed by the next write (`reclaim`).
    `next_expiry` is never later than the earliest expiry of those holds, so before it
    every one of them is alive and no hold needs to be read."""

    event_id: str
    name: str
    total_seats: int
    available_seats: int
    version: int
    reservation_count: int = 0  # confirmed reservations
    held_seats: int = 0
    next_expiry: datetime | None = None

    def has_lapsed_holds(self, now: datetime) -> bool:
        """Whether some hold may have expired by `now` (a cheap test on the row alone)."""
        return self.next_expiry is not None and self.next_expiry <= now

    def _take(self, seats: int) -> int:
        if seats > self.available_seats:
            raise NotEnoughSeats(self.event_id, seats, self.available_seats)
        return self.available_seats - seats

    def reserve(self, seats: int) -> Event:
        """The event after confirming `seats` at once; NotEnoughSeats if they are not there."""
        return replace(
            self, available_seats=self._take(seats), reservation_count=self.reservation_count + 1
        )

    def hold(self, seats: int, expires_at: datetime) -> Event:
        """The event after holding `seats` until `expires_at`; NotEnoughSeats as reserve."""
        return replace(
            self,
            available_seats=self._take(seats),
            held_seats=self.held_seats + seats,
            next_expiry=_earliest(self.next_expiry, expires_at),
        )

    def confirm_hold(self, seats: int) -> Event:
        """A live hold's seats become a confirmed reservation (they stay taken)."""
        return replace(
            self,
            held_seats=self._held_less(seats),
            reservation_count=self.reservation_count + 1,
        )

    def extend_hold(self, expires_at: datetime) -> Event:
        """A live hold now ends at `expires_at` (its seats are unchanged)."""
        return replace(self, next_expiry=_earliest(self.next_expiry, expires_at))

    def release_hold(self, seats: int) -> Event:
        """A hold released or lapsed: its seats are back."""
        return replace(
            self, held_seats=self._held_less(seats), available_seats=self.available_seats + seats
        )

    def reclaim(self, seats: int, next_expiry: datetime | None) -> Event:
        """Lapsed holds' `seats` are back; `next_expiry` is the earliest of the holds left."""
        return replace(self.release_hold(seats), next_expiry=next_expiry)

    def resize(self, total_seats: int) -> Event:
        """The event with a new total; the reserved and held seats stay taken."""
        reserved = self.total_seats - self.available_seats
        if total_seats < reserved:
            raise SeatsAlreadyReserved(self.event_id, total_seats, reserved)
        return replace(self, total_seats=total_seats, available_seats=total_seats - reserved)

    def release(self, seats: int) -> Event:
        """The event after `seats` of a cancelled reservation return to the pool."""
        available = self.available_seats + seats
        if available + self.held_seats > self.total_seats:
            raise ValueError(f"releasing {seats} seats would exceed the event's total")
        return replace(
            self, available_seats=available, reservation_count=self.reservation_count - 1
        )

    def _held_less(self, seats: int) -> int:
        if seats > self.held_seats:
            raise ValueError(f"{seats} seats are not held")
        return self.held_seats - seats


def _earliest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None else min(a, b)


@dataclass(frozen=True)
class Reservation:
    """A confirmed reservation, or a hold (`expires_at` set while it is held or expired)."""

    reservation_id: UUID
    event_id: str
    partner_id: str
    seats: int
    status: Status
    created_at: datetime
    cancelled_at: datetime | None = None
    expires_at: datetime | None = None

    def seen_at(self, now: datetime) -> Reservation:
        """As it stands at `now`: a hold past its time is expired even before it is tidied."""
        if self.status is Status.HELD and self.expires_at is not None and self.expires_at <= now:
            return replace(self, status=Status.EXPIRED)
        return self
