"""Events and reservations as immutable values; changes return new values."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from uuid import UUID

from ticketboss.domain.errors import (
    ALLOCATION,
    ALLOCATION_AND_POOL,
    NotEnoughSeats,
    SeatsAlreadyReserved,
)

MIN_SEATS = 1
MAX_SEATS = 10
# Every batch of an event reads all its allocations with its row: a bound keeps that small.
MAX_ALLOCATIONS_PER_EVENT = 50


class Status(enum.StrEnum):
    HELD = "held"  # seats taken until expires_at, then back by themselves
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"  # a cancelled reservation or a released hold
    EXPIRED = "expired"  # a hold that lapsed


@dataclass(frozen=True)
class Allocation:
    """A partner's exclusive share of an event: `seats` set aside, of which `taken` are in
    its confirmed reservations and `held` in its holds (as last written: lapsed holds count
    until they are reclaimed). With `overflow` the partner also takes from the open pool
    once its share is used up. `max_held_seats` is its own limit on seats held at once (None:
    the service's PARTNER_MAX_HELD_SEATS). A `closed` allocation was deleted while seats were
    still used from it: it keeps exactly those (`available` 0), shrinks as they come back,
    and is gone once none are."""

    partner_id: str
    seats: int
    overflow: bool = False
    taken: int = 0
    held: int = 0
    max_held_seats: int | None = None
    closed: bool = False

    @property
    def available(self) -> int:
        return self.seats - self.taken - self.held

    @property
    def used(self) -> int:
        return self.taken + self.held

    def drawn(self, taken: int = 0, held: int = 0) -> Allocation | None:
        """After `taken` more confirmed and `held` more held seats from it (negative: seats
        given back); a closed allocation gives back its seats too, and is None once empty."""
        after = replace(self, taken=self.taken + taken, held=self.held + held)
        if after.taken < 0 or after.held < 0 or after.available < 0:
            raise ValueError(f"partner '{self.partner_id}''s allocation would be overdrawn")
        if self.closed:
            return replace(after, seats=after.used) if after.used else None
        return after


NO_ALLOCATIONS: Mapping[str, Allocation] = MappingProxyType({})


@dataclass(frozen=True)
class Pool:
    """The open pool's books: the seats no allocation sets aside, and of them the taken
    (confirmed), held and available ones."""

    seats: int
    taken: int
    held: int
    available: int


@dataclass(frozen=True)
class Event:
    """An event's seats as one row: `available_seats + held_seats + the confirmed seats =
    total_seats` at every version. `held_seats` counts the holds as last written; any whose
    time has passed since are *lapsed* and are reclaimed by the next write (`reclaim`).
    `next_expiry` is never later than the earliest expiry of those holds, so before it
    every one of them is alive and no hold needs to be read.

    Seats may be set aside for partners (`allocations`, by partner id): `available_seats`
    counts every bucket's, and the open pool has what the allocations do not
    (`pool_available`). Without allocations the pool is the whole event."""

    event_id: str
    name: str
    total_seats: int
    available_seats: int
    version: int
    reservation_count: int = 0  # confirmed reservations
    held_seats: int = 0
    next_expiry: datetime | None = None
    allocations: Mapping[str, Allocation] = field(default_factory=lambda: NO_ALLOCATIONS)

    def has_lapsed_holds(self, now: datetime) -> bool:
        """Whether some hold may have expired by `now` (a cheap test on the row alone)."""
        return self.next_expiry is not None and self.next_expiry <= now

    @property
    def pool_available(self) -> int:
        """The open pool's seats left: what no allocation sets aside."""
        if not self.allocations:
            return self.available_seats
        return self.available_seats - sum(a.available for a in self.allocations.values())

    @property
    def pool(self) -> Pool:
        """The open pool's books (every seat's, when there are no allocations)."""
        allocations = self.allocations.values()
        taken = self.total_seats - self.available_seats - self.held_seats
        return Pool(
            self.total_seats - sum(a.seats for a in allocations),
            taken - sum(a.taken for a in allocations),
            self.held_seats - sum(a.held for a in allocations),
            self.pool_available,
        )

    def allocation_of(self, partner_id: str) -> Allocation | None:
        """The partner's allocation that it takes from (a closed one it takes from no more)."""
        found = self.allocations.get(partner_id) if self.allocations else None
        return None if found is None or found.closed else found

    def available_to(self, partner_id: str) -> int:
        """The seats that partner can get now: its allocation's, and the pool's when it
        overflows or has none."""
        allocation = self.allocation_of(partner_id)
        if allocation is None:
            return self.pool_available
        return allocation.available + (self.pool_available if allocation.overflow else 0)

    def split(self, partner_id: str, seats: int) -> int:
        """How many of `seats` the partner draws from its allocation (the rest come from the
        open pool): its allocation first, then the pool only if it overflows.
        NotEnoughSeats, naming the bucket that ran out, when they are not there."""
        if not self.allocations:  # the hot path: one pool, the whole event
            if seats > self.available_seats:
                raise NotEnoughSeats(self.event_id, seats, self.available_seats)
            return 0
        allocation, pool = self.allocation_of(partner_id), self.pool_available
        if allocation is None:
            if seats > pool:
                raise NotEnoughSeats(self.event_id, seats, pool, pooled=True)
            return 0
        drawn = min(seats, allocation.available)
        if drawn < seats and not allocation.overflow:
            raise NotEnoughSeats(
                self.event_id, seats, allocation.available, bucket=ALLOCATION, partner_id=partner_id
            )
        if seats - drawn > pool:
            raise NotEnoughSeats(
                self.event_id,
                seats,
                allocation.available + pool,
                bucket=ALLOCATION_AND_POOL,
                partner_id=partner_id,
            )
        return drawn

    def _drawn(self, partner_id: str, taken: int = 0, held: int = 0) -> Event:
        """The event with that partner's allocation moved by `taken` and `held` seats."""
        if not (taken or held):
            return self
        allocations = dict(self.allocations)
        if partner_id not in allocations:
            raise ValueError(f"partner '{partner_id}' has no allocation to give seats back to")
        after = allocations[partner_id].drawn(taken, held)
        if after is None:
            del allocations[partner_id]
        else:
            allocations[partner_id] = after
        return replace(self, allocations=allocations or NO_ALLOCATIONS)

    def take(
        self, partner_id: str, seats: int, expires_at: datetime | None = None
    ) -> tuple[Event, int]:
        """The event after the partner takes `seats`, confirmed or (with `expires_at`) held
        until then, and how many of them came from its allocation (Event.split: the rest are
        the pool's); NotEnoughSeats if they are not there."""
        allocated = self.split(partner_id, seats)
        if expires_at is None:
            after = replace(
                self._drawn(partner_id, taken=allocated),
                available_seats=self.available_seats - seats,
                reservation_count=self.reservation_count + 1,
            )
        else:
            after = replace(
                self._drawn(partner_id, held=allocated),
                available_seats=self.available_seats - seats,
                held_seats=self.held_seats + seats,
                next_expiry=_earliest(self.next_expiry, expires_at),
            )
        return after, allocated

    def reserve(self, seats: int) -> Event:
        """The event after confirming `seats` of the open pool at once; NotEnoughSeats if
        they are not there."""
        return self.take("", seats)[0]

    def hold(self, seats: int, expires_at: datetime) -> Event:
        """The event after holding `seats` of the open pool until `expires_at`."""
        return self.take("", seats, expires_at)[0]

    def confirm_hold(self, seats: int, partner_id: str = "", allocated: int = 0) -> Event:
        """A live hold's seats become a confirmed reservation (they stay taken, from the
        same buckets)."""
        return replace(
            self._drawn(partner_id, taken=allocated, held=-allocated),
            held_seats=self._held_less(seats),
            reservation_count=self.reservation_count + 1,
        )

    def extend_hold(self, expires_at: datetime) -> Event:
        """A live hold now ends at `expires_at` (its seats are unchanged)."""
        return replace(self, next_expiry=_earliest(self.next_expiry, expires_at))

    def release_hold(self, seats: int, partner_id: str = "", allocated: int = 0) -> Event:
        """A hold released or lapsed: its seats are back, each in the bucket it came from."""
        return replace(
            self._drawn(partner_id, held=-allocated),
            held_seats=self._held_less(seats),
            available_seats=self.available_seats + seats,
        )

    def reclaim(
        self,
        seats: int,
        next_expiry: datetime | None,
        allocated: Mapping[str, int] = NO_ALLOCATIONS,  # type: ignore[assignment]
    ) -> Event:
        """Lapsed holds' `seats` are back, `allocated[p]` of them to partner p's allocation;
        `next_expiry` is the earliest of the holds left."""
        after = self.release_hold(seats)
        for partner_id, back in allocated.items():
            after = after._drawn(partner_id, held=-back)
        return replace(after, next_expiry=next_expiry)

    def resize(self, total_seats: int) -> Event:
        """The event with a new total; the reserved, held and allocated seats stay."""
        kept = self.total_seats - self.pool_available
        if total_seats < kept:
            raise SeatsAlreadyReserved(
                self.event_id, total_seats, kept, allocated=bool(self.allocations)
            )
        return replace(
            self,
            total_seats=total_seats,
            available_seats=self.available_seats + total_seats - self.total_seats,
        )

    def release(self, seats: int, partner_id: str = "", allocated: int = 0) -> Event:
        """The event after `seats` of a cancelled reservation return, each to its bucket."""
        available = self.available_seats + seats
        if available + self.held_seats > self.total_seats:
            raise ValueError(f"releasing {seats} seats would exceed the event's total")
        return replace(
            self._drawn(partner_id, taken=-allocated),
            available_seats=available,
            reservation_count=self.reservation_count - 1,
        )

    def allot(self, allocation: Allocation) -> Event:
        """The event with that allocation (new, resized, reopened or closed), or without it
        when it is closed with nothing used. The caller checked it fits (domain.batch)."""
        allocations = dict(self.allocations)
        if allocation.closed and not allocation.used:
            allocations.pop(allocation.partner_id, None)
        else:
            allocations[allocation.partner_id] = allocation
        return replace(self, allocations=allocations or NO_ALLOCATIONS)

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
    allocated_seats: int = 0  # of `seats`, those drawn from its partner's allocation

    def seen_at(self, now: datetime) -> Reservation:
        """As it stands at `now`: a hold past its time is expired even before it is tidied."""
        if self.status is Status.HELD and self.expires_at is not None and self.expires_at <= now:
            return replace(self, status=Status.EXPIRED)
        return self
