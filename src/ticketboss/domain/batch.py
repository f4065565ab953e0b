"""The decision of a group-committed batch, as a pure function: the event as read and the
batch's changes in arrival order in, the event after them and one typed outcome per change
out. No database, no ids, and no clock of its own: `now` (the database's clock) comes in
with the reservations and lapsed holds that were read; the service stamps granted
reservations afterwards."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from uuid import UUID

from ticketboss.domain.errors import (
    AllocationInUse,
    AllocationNotFound,
    AllocationTooLarge,
    EventNotFound,
    HoldExpired,
    HoldLimitReached,
    NotEnoughSeats,
    NotHeld,
    PoolLimitReached,
    PreconditionFailed,
    ReservationNotFound,
    SeatsAlreadyReserved,
    TooManyAllocations,
)
from ticketboss.domain.model import (
    MAX_ALLOCATIONS_PER_EVENT,
    Allocation,
    Event,
    Reservation,
    Status,
)

Answer = TypeVar("Answer", covariant=True)


class Answers(Generic[Answer]):
    """A change whose answer, once it went through, is an `Answer`: the reservation it made
    or changed, None for a cancel, the event for a resize, Tidied for a tidy."""


@dataclass(frozen=True)
class SeatRequest(Answers[Reservation]):
    """Reserve `seats` for a partner; only at one of `if_versions` when given (If-Match).
    With `pool_limit`, the partner may have at most that many seats of the open pool."""

    partner_id: str
    seats: int
    if_versions: frozenset[int] | None = None
    pool_limit: int | None = None


@dataclass(frozen=True)
class HoldRequest(Answers[Reservation]):
    """Hold `seats` for a partner for `ttl` (never more than `longest`). The partner's live
    holds of the event may hold at most `max_held` seats (unless its allocation sets its own
    limit); `pool_limit` as for SeatRequest."""

    partner_id: str
    seats: int
    ttl: timedelta
    longest: timedelta
    max_held: int | None = None
    pool_limit: int | None = None


@dataclass(frozen=True)
class CancelRequest(Answers[None]):
    """Cancel a confirmed reservation or release a live hold; only one of `owner`'s unless
    it is EVERY_PARTNER (a partner key's own; an operator's: any)."""

    reservation_id: UUID
    owner: str | None


@dataclass(frozen=True)
class ConfirmRequest(Answers[Reservation]):
    """Make a live hold a confirmed reservation (one already confirmed stays so)."""

    reservation_id: UUID
    owner: str | None


@dataclass(frozen=True)
class ExtendRequest(Answers[Reservation]):
    """A live hold ends `ttl` from now, but never later than `longest` after its creation."""

    reservation_id: UUID
    ttl: timedelta
    longest: timedelta
    owner: str | None


@dataclass(frozen=True)
class Resize(Answers[Event]):
    """Rename and/or change the total seats (never below the seats taken); only at one of
    `if_versions` when given (If-Match)."""

    name: str | None = None
    total_seats: int | None = None
    if_versions: frozenset[int] | None = None


@dataclass(frozen=True)
class Allot(Answers["Allotted"]):
    """Create, resize or reopen a partner's allocation of the event (never below the seats
    taken and held from it, never beyond what the pool can give); only at one of
    `if_versions` when given (If-Match)."""

    partner_id: str
    seats: int
    overflow: bool = False
    max_held_seats: int | None = None
    if_versions: frozenset[int] | None = None


@dataclass(frozen=True)
class Unallot(Answers[Event]):
    """Delete a partner's allocation: its unused seats go back to the open pool at once,
    and the seats still used from it as they come back (Allocation.closed)."""

    partner_id: str
    if_versions: frozenset[int] | None = None


@dataclass(frozen=True)
class Tidy(Answers["Tidied"]):
    """No change of its own: the batch reclaims lapsed holds (a summary or the sweep)."""


Change = (
    SeatRequest
    | HoldRequest
    | CancelRequest
    | ConfirmRequest
    | ExtendRequest
    | Resize
    | Allot
    | Unallot
    | Tidy
)
Named = CancelRequest | ConfirmRequest | ExtendRequest  # changes of an existing reservation


@dataclass(frozen=True)
class Granted:
    """The seats are the request's: the service inserts its reservation, or its hold until
    `expires_at`."""

    request: SeatRequest | HoldRequest
    expires_at: datetime | None = None
    allocated: int = 0  # of its seats, those drawn from the partner's allocation


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
class Allotted:
    """The allocation as the change left it, in the event at its new version; `created`: it
    did not exist (or was closed) before; `written` False: it already was exactly so."""

    allocation: Allocation
    event: Event
    created: bool = False
    written: bool = True


@dataclass(frozen=True)
class Unallotted:
    """The allocation is deleted; the event as the change left it, at its new version."""

    event: Event


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
    | Allotted
    | Unallotted
    | Tidied
    | NotEnoughSeats
    | HoldLimitReached
    | PoolLimitReached
    | AllocationNotFound
    | AllocationInUse
    | AllocationTooLarge
    | TooManyAllocations
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
    the holds still alive (None when none is); `allocated`: of their seats, those drawn from
    each partner's allocation."""

    holds: Mapping[UUID, int]
    next_expiry: datetime | None
    allocated: Mapping[str, int] = field(default_factory=dict)
    reservations: tuple[Reservation, ...] = ()  # the holds as read (their notifications)


@dataclass(frozen=True)
class Usage:
    """What one partner has of an event now: seats in its live holds, and seats of the open
    pool in its holds and reservations (read only when a pool limit asks for it)."""

    held: int = 0
    pool: int = 0


@dataclass(frozen=True)
class Read:
    """What a batch read: the event at the database's time `now`, the event's reservations
    that its changes name, its lapsed holds (read whenever it may have some), and the usage
    of each partner whose limits a change must check (Usage)."""

    event: Event
    now: datetime
    named: Mapping[UUID, Reservation] = field(default_factory=dict)
    lapsed: Lapsed | None = None
    usage: Mapping[str, Usage] = field(default_factory=dict)


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
        return len(self.expired) + sum(moves_version(o) for o in self.outcomes)

    @property
    def writes(self) -> bool:
        """Whether the event's row is written: for its changes, or for a next expiry that
        reading the lapsed holds corrected."""
        if self.before is None or self.after is None:
            return False
        return self.changes > 0 or self.after.next_expiry != self.before.next_expiry


def moves_version(outcome: Outcome) -> bool:
    """Whether the outcome changes the event (its version rises by one for it)."""
    if isinstance(outcome, Confirmed | Resized | Allotted):
        return outcome.written
    return isinstance(outcome, Granted | Released | Extended | Unallotted)


@dataclass(slots=True)
class State:
    """What a change is decided against: the event as the changes ahead of it left it, the
    version it then has, the named reservations and the partners' usage as those changes
    left them, the database's time of the read, and how many lapsed holds the batch
    reclaimed first. Rules read it; only `plan` moves it on."""

    event: Event
    version: int
    named: Mapping[UUID, Reservation]
    now: datetime
    expired: int
    usage: Mapping[str, Usage]


@dataclass(slots=True)  # one per change: not frozen, which costs a setattr per field
class Step:
    """A change decided: its outcome, the event after it, and the named reservation as it
    left it (None when it changed none)."""

    outcome: Outcome
    event: Event
    reservation: Reservation | None = None


Rule = Callable[[Any, State], Step]
# The planner's rule for each kind of change. Adding a kind is its request type and its rule
# here, and its row in services/kinds.py (what a key keeps of it, how the API answers it).
RULES: dict[type, Rule] = {}


def rule(kind: type) -> Callable[[Rule], Rule]:
    """Register the decorated function as the rule of `kind` of change."""

    def register(decide: Rule) -> Rule:
        RULES[kind] = decide
        return decide

    return register


def plan(event_id: str, read: Read | None, changes: Sequence[Answers[Any]]) -> Plan:
    """Apply the changes one by one, each to the event as the ones ahead of it left it, as if
    they had run one at a time in this order, at the time of the read. Lapsed holds are
    reclaimed first; `read.lapsed` must be there whenever the event may have some
    (Event.has_lapsed_holds). No read: there is no such event."""
    if read is None:
        return Plan(None, None, [EventNotFound(event_id) for _ in changes])
    event, now, lapsed = read.event, read.now, read.lapsed
    if lapsed is None and event.has_lapsed_holds(now):
        raise ValueError("the event may have lapsed holds: read them first")
    current, named = event, dict(read.named)
    expired: list[UUID] = []
    if lapsed is not None:
        current = current.reclaim(sum(lapsed.holds.values()), lapsed.next_expiry, lapsed.allocated)
        expired = list(lapsed.holds)
        for reservation_id in expired:
            if reservation_id in named:
                named[reservation_id] = replace(named[reservation_id], status=Status.EXPIRED)
    # What each change is decided against, moved on by the planner (never by a rule) after
    # each one: the event it left, the version the next change sees (one more for every
    # change written so far), the named reservation it changed, and the usage it moved.
    usage = dict(read.usage)
    state = State(current, event.version + len(expired), named, now, len(expired), usage)
    outcomes: list[Outcome] = []
    for change in changes:
        step = RULES[type(change)](change, state)
        state.event = step.event
        if step.reservation is not None:
            named[step.reservation.reservation_id] = step.reservation
        if usage:
            _track(usage, step.outcome)
        outcomes.append(step.outcome)
        state.version += moves_version(step.outcome)
    return Plan(event, replace(state.event, version=state.version), outcomes, expired)


def _track(usage: dict[str, Usage], outcome: Outcome) -> None:
    """Move the usage of the partner whose seats the outcome took or gave back."""
    if isinstance(outcome, Granted):
        request, pooled = outcome.request, outcome.request.seats - outcome.allocated
        held = request.seats if outcome.expires_at is not None else 0
        partner_id = request.partner_id
    elif isinstance(outcome, Released):
        r = outcome.reservation
        held = -r.seats if r.status is Status.HELD else 0
        pooled, partner_id = -(r.seats - r.allocated_seats), r.partner_id
    elif isinstance(outcome, Confirmed) and outcome.written:
        held, pooled, partner_id = -outcome.reservation.seats, 0, outcome.reservation.partner_id
    else:
        return
    if partner_id in usage:
        before = usage[partner_id]
        usage[partner_id] = Usage(before.held + held, before.pool + pooled)


def _at_version(if_versions: frozenset[int] | None, s: State) -> PreconditionFailed | None:
    """If-Match: the refusal when the event is not at one of the versions named."""
    if if_versions is not None and s.version not in if_versions:
        return PreconditionFailed(s.event.event_id, s.version)
    return None


@rule(SeatRequest)
def _reserve(change: SeatRequest, s: State) -> Step:
    refused = _at_version(change.if_versions, s)
    if refused is not None:
        return Step(refused, s.event)
    try:
        after, allocated = s.event.take(change.partner_id, change.seats)
    except NotEnoughSeats as not_enough:
        return Step(not_enough, s.event)
    over = _over_pool_limit(change, change.seats - allocated, s)
    if over is not None:
        return Step(over, s.event)
    return Step(Granted(change, allocated=allocated), after)


@rule(HoldRequest)
def _hold(change: HoldRequest, s: State) -> Step:
    expires_at = s.now + min(change.ttl, change.longest)
    try:
        after, allocated = s.event.take(change.partner_id, change.seats, expires_at)
    except NotEnoughSeats as not_enough:
        return Step(not_enough, s.event)
    allocation = s.event.allocation_of(change.partner_id)
    limit = change.max_held
    if allocation is not None and allocation.max_held_seats is not None:
        limit = allocation.max_held_seats
    if limit is not None:
        held = s.usage[change.partner_id].held
        if held + change.seats > limit:
            event_id = s.event.event_id
            return Step(
                HoldLimitReached(event_id, change.partner_id, change.seats, held, limit), s.event
            )
    over = _over_pool_limit(change, change.seats - allocated, s)
    if over is not None:
        return Step(over, s.event)
    return Step(Granted(change, expires_at, allocated), after)


def _over_pool_limit(
    change: SeatRequest | HoldRequest, pooled: int, s: State
) -> PoolLimitReached | None:
    """The refusal when the partner would have more of the open pool than its limit."""
    if change.pool_limit is None or not pooled:
        return None
    used = s.usage[change.partner_id].pool
    if used + pooled <= change.pool_limit:
        return None
    return PoolLimitReached(s.event.event_id, change.partner_id, pooled, used, change.pool_limit)


@rule(Resize)
def _resize(change: Resize, s: State) -> Step:
    refused = _at_version(change.if_versions, s)
    if refused is not None:
        return Step(refused, s.event)
    event = s.event
    try:
        after = event if change.total_seats is None else event.resize(change.total_seats)
    except SeatsAlreadyReserved as too_small:
        return Step(too_small, event)
    after = after if change.name is None else replace(after, name=change.name)
    if after == event:  # nothing changes: no write, no new version (and no new ETag)
        return Step(Resized(replace(event, version=s.version), written=False), event)
    return Step(Resized(replace(after, version=s.version + 1)), after)


@rule(Allot)
def _allot(change: Allot, s: State) -> Step:
    refused = _at_version(change.if_versions, s)
    if refused is not None:
        return Step(refused, s.event)
    event, partner_id, seats = s.event, change.partner_id, change.seats
    before = event.allocations.get(partner_id)
    if before is None and len(event.allocations) >= MAX_ALLOCATIONS_PER_EVENT:
        return Step(TooManyAllocations(event.event_id, MAX_ALLOCATIONS_PER_EVENT), event)
    used = before.used if before is not None else 0
    if seats < used:
        return Step(AllocationInUse(event.event_id, partner_id, seats, used), event)
    # What it has set aside and not used (nothing when closed), and the pool's: the most.
    most = used + event.pool_available + (before.available if before is not None else 0)
    if seats > most:
        return Step(AllocationTooLarge(event.event_id, partner_id, seats, most), event)
    after = Allocation(
        partner_id,
        seats,
        change.overflow,
        before.taken if before is not None else 0,
        before.held if before is not None else 0,
        change.max_held_seats,
    )
    if after == before:  # exactly as it is: no write, no new version
        return Step(Allotted(after, replace(event, version=s.version), written=False), event)
    allotted = event.allot(after)
    created = before is None or before.closed
    return Step(Allotted(after, replace(allotted, version=s.version + 1), created), allotted)


@rule(Unallot)
def _unallot(change: Unallot, s: State) -> Step:
    refused = _at_version(change.if_versions, s)
    if refused is not None:
        return Step(refused, s.event)
    event = s.event
    before = event.allocations.get(change.partner_id)
    if before is None or before.closed:
        return Step(AllocationNotFound(event.event_id, change.partner_id), event)
    after = event.allot(replace(before, seats=before.used, closed=True))
    return Step(Unallotted(replace(after, version=s.version + 1)), after)


@rule(Tidy)
def _tidy(change: Tidy, s: State) -> Step:
    return Step(Tidied(replace(s.event, version=s.version), s.expired), s.event)


def _look_up(change: Named, s: State, *, confirmed_only: bool) -> Reservation | Outcome:
    """The reservation a change names, as the batch sees it; or its refusal: not found
    (another partner's is not found, exactly as if it did not exist), or a lapsed hold."""
    found = s.named.get(change.reservation_id)
    if found is None or change.owner not in (None, found.partner_id):
        return ReservationNotFound(change.reservation_id, confirmed_only=confirmed_only)
    if found.seen_at(s.now).status is Status.EXPIRED:
        return HoldExpired(found.reservation_id)
    return found


@rule(CancelRequest)
def _cancel(change: CancelRequest, s: State) -> Step:
    found = _look_up(change, s, confirmed_only=True)
    if not isinstance(found, Reservation):
        return Step(found, s.event)
    if found.status is Status.CANCELLED:  # a second cancel finds nothing to cancel
        return Step(ReservationNotFound(found.reservation_id, confirmed_only=True), s.event)
    held = found.status is Status.HELD
    give_back = s.event.release_hold if held else s.event.release
    after = give_back(found.seats, found.partner_id, found.allocated_seats)
    cancelled = replace(found, status=Status.CANCELLED, cancelled_at=s.now)
    return Step(Released(found), after, cancelled)


@rule(ConfirmRequest)
def _confirm(change: ConfirmRequest, s: State) -> Step:
    found = _look_up(change, s, confirmed_only=False)
    if not isinstance(found, Reservation):
        return Step(found, s.event)
    if found.status is Status.CONFIRMED:  # confirming again: the same answer
        return Step(Confirmed(found, written=False), s.event)
    if found.status is not Status.HELD:
        return Step(NotHeld(found.reservation_id, found.status.value), s.event)
    confirmed = replace(found, status=Status.CONFIRMED, expires_at=None)
    after = s.event.confirm_hold(found.seats, found.partner_id, found.allocated_seats)
    return Step(Confirmed(confirmed), after, confirmed)


@rule(ExtendRequest)
def _extend(change: ExtendRequest, s: State) -> Step:
    found = _look_up(change, s, confirmed_only=False)
    if not isinstance(found, Reservation):
        return Step(found, s.event)
    if found.status is not Status.HELD:
        return Step(NotHeld(found.reservation_id, found.status.value), s.event)
    expires_at = min(s.now + change.ttl, found.created_at + change.longest)
    if expires_at <= s.now:  # its cap has passed (HOLD_MAX_SECONDS was lowered since)
        return Step(HoldExpired(found.reservation_id), s.event)
    extended = replace(found, expires_at=expires_at)
    return Step(Extended(extended), s.event.extend_hold(expires_at), extended)
