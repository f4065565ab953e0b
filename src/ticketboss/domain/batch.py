"""The decision of a group-committed batch, as a pure function: the event as read and the
batch's changes in arrival order in, the event after them and one typed outcome per change
out. No database, no clock, no ids: the service stamps granted reservations afterwards."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from ticketboss.domain.errors import (
    EventNotFound,
    NotEnoughSeats,
    PreconditionFailed,
    ReservationNotFound,
)
from ticketboss.domain.model import Event


@dataclass(frozen=True)
class SeatRequest:
    """Reserve `seats` for a partner; only at one of `if_versions` when given (If-Match)."""

    partner_id: str
    seats: int
    if_versions: frozenset[int] | None = None


@dataclass(frozen=True)
class CancelRequest:
    """Cancel a confirmed reservation; only one of `owner`'s when given (a partner key)."""

    reservation_id: UUID
    owner: str | None = None


Change = SeatRequest | CancelRequest


@dataclass(frozen=True)
class Granted:
    """The seats are the request's: the service inserts its reservation."""

    request: SeatRequest


@dataclass(frozen=True)
class Released:
    """The reservation is cancelled and its seats are back."""

    reservation_id: UUID


# What a change can come to: granted, released, or refused with the reason as a domain error.
Outcome = (
    Granted | Released | NotEnoughSeats | ReservationNotFound | PreconditionFailed | EventNotFound
)


@dataclass(frozen=True)
class Confirmed:
    """A confirmed reservation as the batch read it: what a cancel needs to know."""

    seats: int
    partner_id: str


@dataclass(frozen=True)
class Plan:
    """The batch decided: the event before and after, one outcome per change, in order."""

    before: Event | None
    after: Event | None
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def granted(self) -> list[SeatRequest]:
        return [o.request for o in self.outcomes if isinstance(o, Granted)]

    @property
    def released(self) -> list[UUID]:
        return [o.reservation_id for o in self.outcomes if isinstance(o, Released)]

    @property
    def changes(self) -> int:
        """How many changes the write applies: the version rises by exactly this many."""
        return len(self.granted) + len(self.released)


def plan(
    event_id: str,
    event: Event | None,
    changes: Sequence[Change],
    confirmed: Mapping[UUID, Confirmed],
) -> Plan:
    """Apply the changes one by one, each to the event as the ones ahead of it left it, as if
    they had run one at a time in this order. `confirmed` holds the reservations that the
    cancels name and that were still confirmed when the event was read."""
    if event is None:
        return Plan(None, None, [EventNotFound(event_id) for _ in changes])
    current, left, version = event, dict(confirmed), event.version
    outcomes: list[Outcome] = []
    for change in changes:
        if isinstance(change, CancelRequest):
            outcome, current = _cancel(change, current, left)
        else:
            outcome, current = _reserve(change, current, version)
        outcomes.append(outcome)
        # The version the next change sees: one more for every change applied so far.
        version += isinstance(outcome, Granted | Released)
    return Plan(event, current, outcomes)


def _cancel(change: CancelRequest, event: Event, left: dict[UUID, Confirmed]):
    found = left.get(change.reservation_id)
    if found is None or change.owner not in (None, found.partner_id):
        # Another partner's reservation is not found, exactly as if it did not exist.
        return ReservationNotFound(change.reservation_id, confirmed_only=True), event
    del left[change.reservation_id]  # a second cancel of it in this batch finds nothing
    return Released(change.reservation_id), event.release(found.seats)


def _reserve(change: SeatRequest, event: Event, version: int):
    if change.if_versions is not None and version not in change.if_versions:
        return PreconditionFailed(event.event_id, version), event
    try:
        return Granted(change), event.reserve(change.seats)
    except NotEnoughSeats as refused:
        return refused, event
