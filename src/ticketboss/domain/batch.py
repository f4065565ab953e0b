"""The decision of a group-committed batch, as a pure function: the event as read and the
batch's changes in arrival order in, the event after them and one typed outcome per change
out. No database, no ids, and no clock of its own: `now` (the database's clock) comes in
with the reservations and lapsed holds that were read; the service stamps granted
reservations afterwards."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from uuid import UUID

from ticketboss.domain.errors import (
    EventNotFound,
    HoldExpired,
    NotEnoughSeats,
    NotHeld,
    PreconditionFailed,
    ReservationNotFound,
    SeatsAlreadyReserved,
)
from ticketboss.domain.model import Event, Reservation, Status


@dataclass(frozen=True)
class SeatRequest:
    """Reserve `seats` for a partner; only at one of `if_versions` when given (If-Match)."""

    partner_id: str
    seats: int
    if_versions: frozenset[int] | None = None


@dataclass(frozen=True)
class HoldRequest:
    """Hold `seats` for a partner for `ttl` (never more than `longest`)."""

    partner_id: str
    seats: int
    ttl: timedelta
    longest: timedelta


@dataclass(frozen=True)
class CancelRequest:
    """Cancel a confirmed reservation or release a live hold; only one of `owner`'s when
    given (a partner key)."""

    reservation_id: UUID
    owner: str | None = None


@dataclass(frozen=True)
class ConfirmRequest:
    """Make a live hold a confirmed reservation (one already confirmed stays so)."""

    reservation_id: UUID
    owner: str | None = None


@dataclass(frozen=True)
class ExtendRequest:
    """A live hold ends `ttl` from now, but never later than `longest` after its creation."""

    reservation_id: UUID
    ttl: timedelta
    longest: timedelta
    owner: str | None = None


@dataclass(frozen=True)
class Resize:
    """Rename and/or change the total seats (never below the seats taken); only at one of
    `if_versions` when given (If-Match)."""

    name: str | None = None
    total_seats: int | None = None
    if_versions: frozenset[int] | None = None


@dataclass(frozen=True)
class Tidy:
    """No change of its own: the batch reclaims lapsed holds (a summary or the sweep)."""


Change = SeatRequest | HoldRequest | CancelRequest | ConfirmRequest | ExtendRequest | Resize | Tidy
Named = CancelRequest | ConfirmRequest | ExtendRequest  # changes of an existing reservation


@dataclass(frozen=True)
class Granted:
    """The seats are the request's: the service inserts its reservation, or its hold until
    `expires_at`."""

    request: SeatRequest | HoldRequest
    expires_at: datetime | None = None


@dataclass(frozen=True)
class Released:
    """The reservation is cancelled, or the hold released, and its seats are back."""

    reservation: Reservation


@dataclass(frozen=True)
class Confirmed:
    """The hold is now this confirmed reservation; `written` False: it was confirmed already."""

    reservation: Reservation
    written: bool = True


@dataclass(frozen=True)
class Extended:
    """The hold now ends at `reservation.expires_at`."""

    reservation: Reservation


@dataclass(frozen=True)
class Resized:
    """The event as this change left it, at its new version; `written` False: the change
    named the name and total it already had, and the version stays."""

    event: Event
    written: bool = True


@dataclass(frozen=True)
class Tidied:
    """The event as the batch had left it at this point, and how many lapsed holds the
    batch reclaimed."""

    event: Event
    expired: int


# What a change can come to: a decision, or the refusal's reason as a domain error.
Outcome = (
    Granted
    | Released
    | Confirmed
    | Extended
    | Resized
    | Tidied
    | NotEnoughSeats
    | ReservationNotFound
    | PreconditionFailed
    | EventNotFound
    | HoldExpired
    | NotHeld
    | SeatsAlreadyReserved
)


@dataclass(frozen=True)
class Lapsed:
    """The event's holds whose time has passed (id → seats), and the earliest expiry of
    the holds still alive (None when none is)."""

    holds: Mapping[UUID, int]
    next_expiry: datetime | None


@dataclass(frozen=True)
class Read:
    """What a batch read: the event at the database's time `now`, the event's reservations
    that its changes name, and its lapsed holds (read whenever it may have some)."""

    event: Event
    now: datetime
    named: Mapping[UUID, Reservation] = field(default_factory=dict)
    lapsed: Lapsed | None = None


@dataclass(frozen=True)
class Plan:
    """The batch decided: the event before and after (at its new version), the lapsed holds
    it expires, and one outcome per change, in order."""

    before: Event | None
    after: Event | None
    outcomes: list[Outcome] = field(default_factory=list)
    expired: list[UUID] = field(default_factory=list)

    def of(self, kind: type) -> list:
        return [o for o in self.outcomes if isinstance(o, kind)]

    @property
    def changes(self) -> int:
        """How many changes the write applies: the version rises by exactly this many."""
        return len(self.expired) + sum(_writes(o) for o in self.outcomes)

    @property
    def writes(self) -> bool:
        """Whether the event's row is written: for its changes, or for a next expiry that
        reading the lapsed holds corrected."""
        if self.before is None or self.after is None:
            return False
        return self.changes > 0 or self.after.next_expiry != self.before.next_expiry


def _writes(outcome: Outcome) -> bool:
    if isinstance(outcome, Confirmed | Resized):
        return outcome.written
    return isinstance(outcome, Granted | Released | Extended)


def plan(event_id: str, read: Read | None, changes: Sequence[Change]) -> Plan:
    """Apply the changes one by one, each to the event as the ones ahead of it left it, as if
    they had run one at a time in this order, at the time of the read. Lapsed holds are
    reclaimed first; `read.lapsed` must be there whenever the event may have some
    (Event.has_lapsed_holds). No read: there is no such event."""
    if read is None:
        return Plan(None, None, [EventNotFound(event_id) for _ in changes])
    event, now, lapsed = read.event, read.now, read.lapsed
    if lapsed is None and event.has_lapsed_holds(now):
        raise ValueError("the event may have lapsed holds: read them first")
    current, left = event, dict(read.named)
    expired: list[UUID] = []
    if lapsed is not None:
        current = current.reclaim(sum(lapsed.holds.values()), lapsed.next_expiry)
        expired = list(lapsed.holds)
        for reservation_id in expired:
            if reservation_id in left:
                left[reservation_id] = replace(left[reservation_id], status=Status.EXPIRED)
    version = event.version + len(expired)
    outcomes: list[Outcome] = []
    for change in changes:
        outcome: Outcome
        if isinstance(change, SeatRequest):
            outcome, current = _reserve(change, current, version)
        elif isinstance(change, HoldRequest):
            outcome, current = _hold(change, current, now)
        elif isinstance(change, Resize):
            outcome, current = _resize(change, current, version)
        elif isinstance(change, Tidy):
            outcome = Tidied(replace(current, version=version), len(expired))
        else:
            outcome, current = _change(change, current, left, now)
        outcomes.append(outcome)
        # The version the next change sees: one more for every change written so far.
        version += _writes(outcome)
    return Plan(event, replace(current, version=version), outcomes, expired)


def _reserve(change: SeatRequest, event: Event, version: int):
    if change.if_versions is not None and version not in change.if_versions:
        return PreconditionFailed(event.event_id, version), event
    try:
        return Granted(change), event.reserve(change.seats)
    except NotEnoughSeats as refused:
        return refused, event


def _resize(change: Resize, event: Event, version: int):
    if change.if_versions is not None and version not in change.if_versions:
        return PreconditionFailed(event.event_id, version), event
    try:
        after = event if change.total_seats is None else event.resize(change.total_seats)
    except SeatsAlreadyReserved as refused:
        return refused, event
    after = after if change.name is None else replace(after, name=change.name)
    if after == event:  # nothing changes: no write, no new version (and no new ETag)
        return Resized(replace(event, version=version), written=False), event
    return Resized(replace(after, version=version + 1)), after


def _hold(change: HoldRequest, event: Event, now: datetime):
    expires_at = now + min(change.ttl, change.longest)
    try:
        return Granted(change, expires_at), event.hold(change.seats, expires_at)
    except NotEnoughSeats as refused:
        return refused, event


def _change(change: Named, event: Event, left: dict[UUID, Reservation], now: datetime):
    """Cancel, confirm or extend a reservation the batch read (or an earlier change left)."""
    found = left.get(change.reservation_id)
    if found is None or change.owner not in (None, found.partner_id):
        # Another partner's reservation is not found, exactly as if it did not exist.
        confirmed_only = isinstance(change, CancelRequest)
        return ReservationNotFound(change.reservation_id, confirmed_only=confirmed_only), event
    status = found.seen_at(now).status
    if status is Status.EXPIRED:
        return HoldExpired(found.reservation_id), event
    if isinstance(change, CancelRequest):
        if status is Status.CANCELLED:  # a second cancel finds nothing to cancel
            return ReservationNotFound(found.reservation_id, confirmed_only=True), event
        after = (
            event.release_hold(found.seats) if status is Status.HELD else event.release(found.seats)
        )
        left[found.reservation_id] = replace(found, status=Status.CANCELLED, cancelled_at=now)
        return Released(found), after
    if isinstance(change, ConfirmRequest) and status is Status.CONFIRMED:
        return Confirmed(found, written=False), event  # confirming again: the same answer
    if status is not Status.HELD:
        return NotHeld(found.reservation_id, status.value), event
    if isinstance(change, ConfirmRequest):
        confirmed = replace(found, status=Status.CONFIRMED, expires_at=None)
        left[found.reservation_id] = confirmed
        return Confirmed(confirmed), event.confirm_hold(found.seats)
    expires_at = min(now + change.ttl, found.created_at + change.longest)
    if expires_at <= now:  # its cap has passed (HOLD_MAX_SECONDS was lowered since)
        return HoldExpired(found.reservation_id), event
    extended = replace(found, expires_at=expires_at)
    left[found.reservation_id] = extended
    return Extended(extended), event.extend_hold(expires_at)
