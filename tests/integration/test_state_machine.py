"""Hypothesis drives reserve / hold / confirm / extend / cancel / sweep / summary, and the
operator's allocations (set, resize, reopen, delete) and resizes, on PostgreSQL beside a
plain-Python model, with a clock that jumps past hold expiries. Three partners take seats:
two that an operator may give allocations, and one that never has any.

The model keeps per-bucket books the way the spec states them, not the way the code computes
them: an allocation's taken and held seats are the allocated seats of its partner's confirmed
and held bookings, the open pool's are the rest of every booking's seats, and a deleted
allocation keeps exactly the seats still used from it until none are.

Time in the model is the clock's skew, in seconds: every TTL and jump is a multiple of 30 s,
so the few milliseconds of real time a run takes never decide whether a hold is alive."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from support.clock import JumpingClock
from support.database import PATIENT
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.domain import (
    ALLOCATION,
    ALLOCATION_AND_POOL,
    EVERY_PARTNER,
    MAX_SEATS,
    MIN_SEATS,
    POOL,
    Allocation,
    AllocationInUse,
    AllocationNotFound,
    AllocationTooLarge,
    HoldExpired,
    HoldLimitReached,
    NotEnoughSeats,
    NotHeld,
    Pool,
    PreconditionFailed,
    ReservationNotFound,
    SeatsAlreadyReserved,
    Status,
)
from ticketboss.services import ReservationService
from ticketboss.store.tables import allocations as allocations_table
from ticketboss.store.tables import reservations as reservations_table

EVENT_ID = "state-machine-event"
LONGEST = 150  # HOLD_MAX_SECONDS here, so that extensions meet the cap
MAX_HELD = 12  # PARTNER_MAX_HELD_SEATS here: small, so that holds meet it
ALLOTTED = ("alpha", "beta")  # the partners an operator may give an allocation
PARTNERS = (*ALLOTTED, "p")  # "p" never has one: it only ever takes from the pool
# If-Match on allot and unallot: none, the event's version, or one it does not have.
MATCHES = st.sampled_from([None, None, "current", "stale"])
# Allocations to start with: (partner, seats, overflow, max_held_seats), at most one each.
SHARES = st.lists(
    st.tuples(
        st.sampled_from(ALLOTTED),
        st.integers(0, 15),
        st.booleans(),
        st.one_of(st.none(), st.integers(1, 15)),
    ),
    max_size=2,
    unique_by=lambda share: share[0],
)
# The event's reservations' rows, and its allocations' rows.
RESERVATION_ROWS = select(
    reservations_table.c.id,
    reservations_table.c.status,
    reservations_table.c.partner_id,
    reservations_table.c.seats,
    reservations_table.c.allocated_seats,
).where(reservations_table.c.event_id == EVENT_ID)
ALLOCATION_ROWS = select(
    allocations_table.c.partner_id,
    allocations_table.c.seats,
    allocations_table.c.overflow,
    allocations_table.c.taken,
    allocations_table.c.held,
    allocations_table.c.max_held_seats,
    allocations_table.c.closed,
).where(allocations_table.c.event_id == EVENT_ID)


@dataclass
class Booking:
    """The model of one reservation or hold; times are clock skews in seconds."""

    partner: str
    seats: int
    allocated: int  # of its seats, those drawn from its partner's allocation
    status: Status
    created: int | None = None  # holds only
    expires: int | None = None


@dataclass
class Share:
    """The model of an allocation as the operator last set it; what is used of it is its
    partner's bookings' allocated seats. A closed share was deleted: the event shows it for
    as long as seats are still used from it."""

    seats: int
    overflow: bool
    max_held: int | None
    closed: bool = False


class ReservationMachine(RuleBasedStateMachine):
    ids = Bundle("ids")

    def __init__(self, service: ReservationService, clock: JumpingClock):
        super().__init__()
        self.service = service
        self.clock = clock
        self.total = 0
        self.skew = 0
        self.bookings: dict[uuid.UUID, Booking] = {}
        self.shares: dict[str, Share] = {}
        self.changes = 0

    @initialize(total=st.integers(min_value=0, max_value=40), shares=SHARES)
    def start_the_event_over(self, total, shares):
        seed_event(self.service.engine, EVENT_ID, "Stateful", total, reset=True)
        self.clock.skew = self.clock.skew.__class__(0)
        self.total = total
        # Most runs start with allocations: swarm testing leaves the allot rule out of some.
        for partner, seats, overflow, max_held in shares:
            self.allot(partner, seats, overflow, max_held, match=None)

    # The model ------------------------------------------------------------------------------

    def status(self, booking: Booking) -> Status:
        """As it stands now: a hold past its time is expired, tidied or not."""
        if booking.status is Status.HELD and booking.expires <= self.skew:
            return Status.EXPIRED
        return booking.status

    def reclaim(self) -> int:
        """Every write (and a summary) first expires the lapsed holds: one version each."""
        lapsed = [b for b in self.bookings.values() if self.status(b) is not b.status]
        for booking in lapsed:
            booking.status = Status.EXPIRED
        self.changes += len(lapsed)
        return len(lapsed)

    def seats_in(self, status: Status) -> int:
        return sum(b.seats for b in self.bookings.values() if b.status is status)

    def drawn(self, partner: str, status: Status) -> int:
        """The seats the partner's bookings in that status drew from its allocation."""
        return sum(
            b.allocated
            for b in self.bookings.values()
            if b.partner == partner and b.status is status
        )

    def allocations(self) -> dict[str, Allocation]:
        """The allocations the event should show: the open ones, and the closed ones that
        still have seats used (exactly those seats)."""
        books = {}
        for partner, share in self.shares.items():
            taken, held = self.drawn(partner, Status.CONFIRMED), self.drawn(partner, Status.HELD)
            seats = taken + held if share.closed else share.seats
            if seats or not share.closed:
                books[partner] = Allocation(
                    partner, seats, share.overflow, taken, held, share.max_held, share.closed
                )
        return books

    def pool(self) -> Pool:
        """The open pool's books: what no allocation sets aside, and the bookings' seats that
        were not drawn from one."""
        pooled = {
            status: sum(b.seats - b.allocated for b in self.bookings.values() if b.status is status)
            for status in (Status.CONFIRMED, Status.HELD)
        }
        seats = self.total - sum(a.seats for a in self.allocations().values())
        taken, held = pooled[Status.CONFIRMED], pooled[Status.HELD]
        return Pool(seats, taken, held, seats - taken - held)

    def open_share(self, partner: str) -> Allocation | None:
        found = self.allocations().get(partner)
        return None if found is None or found.closed else found

    def available_to(self, partner: str) -> int:
        own, pool = self.open_share(partner), self.pool().available
        if own is None:
            return pool
        return own.available + (pool if own.overflow else 0)

    def take(self, partner: str, seats: int) -> tuple[int, tuple[str, int] | None]:
        """How many of `seats` come from the partner's allocation, or the bucket that runs
        out and what it has."""
        own, pool = self.open_share(partner), self.pool().available
        if own is None:
            return 0, (POOL, pool) if seats > pool else None
        drawn = min(seats, own.available)
        if drawn < seats and not own.overflow:
            return drawn, (ALLOCATION, own.available)
        if seats - drawn > pool:
            return drawn, (ALLOCATION_AND_POOL, own.available + pool)
        return drawn, None

    def hold_limit(self, partner: str) -> int:
        own = self.open_share(partner)
        return MAX_HELD if own is None or own.max_held_seats is None else own.max_held_seats

    def if_versions(self, match: str | None) -> frozenset[int] | None:
        if match is None:
            return None
        return frozenset({self.changes if match == "current" else self.changes + 1})

    # The rules ------------------------------------------------------------------------------

    def refused(self, refusal: tuple[str, int], seats: int, call) -> None:
        with pytest.raises(NotEnoughSeats) as raised:
            call()
        bucket, available = refusal
        assert (raised.value.bucket, raised.value.available) == (bucket, available)
        assert raised.value.requested == seats

    @rule(target=ids, partner=st.sampled_from(PARTNERS), seats=st.integers(MIN_SEATS, MAX_SEATS))
    def reserve(self, partner, seats):
        self.reclaim()
        allocated, refusal = self.take(partner, seats)
        if refusal is not None:
            self.refused(refusal, seats, lambda: self.service.reserve(EVENT_ID, partner, seats))
            return multiple()
        reservation = self.service.reserve(EVENT_ID, partner, seats)
        assert (reservation.seats, reservation.status) == (seats, Status.CONFIRMED)
        assert (reservation.partner_id, reservation.allocated_seats) == (partner, allocated)
        self.bookings[reservation.reservation_id] = Booking(
            partner, seats, allocated, Status.CONFIRMED
        )
        self.changes += 1
        return reservation.reservation_id

    @rule(
        target=ids,
        partner=st.sampled_from(PARTNERS),
        seats=st.integers(MIN_SEATS, MAX_SEATS),
        ttl=st.sampled_from([60, 120]),
    )
    def hold(self, partner, seats, ttl):
        self.reclaim()
        allocated, refusal = self.take(partner, seats)
        if refusal is not None:
            self.refused(refusal, seats, lambda: self.service.hold(EVENT_ID, partner, seats, ttl))
            return multiple()
        # Its live holds in every bucket count, however it released and held again.
        held = sum(
            b.seats
            for b in self.bookings.values()
            if b.partner == partner and b.status is Status.HELD
        )
        limit = self.hold_limit(partner)
        if held + seats > limit:
            with pytest.raises(HoldLimitReached) as raised:
                self.service.hold(EVENT_ID, partner, seats, ttl)
            assert raised.value.limit == limit
            return multiple()
        hold = self.service.hold(EVENT_ID, partner, seats, ttl)
        assert (hold.seats, hold.status) == (seats, Status.HELD)
        assert (hold.partner_id, hold.allocated_seats) == (partner, allocated)
        self.bookings[hold.reservation_id] = Booking(
            partner, seats, allocated, Status.HELD, self.skew, self.skew + ttl
        )
        self.changes += 1
        return hold.reservation_id

    def pick(self, data):
        """Mostly one of the holds (what confirm and extend are for), else any id."""
        holds = [rid for rid, b in self.bookings.items() if b.created is not None]
        anything = st.sampled_from([*self.bookings, uuid.UUID(int=0)])
        return data.draw(st.one_of(st.sampled_from(holds), anything) if holds else anything)

    @rule(data=st.data())
    def confirm(self, data):
        reservation_id = self.pick(data)
        self.reclaim()
        booking = self.bookings.get(reservation_id)
        expected = {
            None: ReservationNotFound,
            Status.EXPIRED: HoldExpired,
            Status.CANCELLED: NotHeld,
        }
        status = booking and booking.status
        if status in expected:
            with pytest.raises(expected[status]):
                self.service.confirm(EVENT_ID, reservation_id, owner=EVERY_PARTNER)
            return
        confirmed = self.service.confirm(EVENT_ID, reservation_id, owner=EVERY_PARTNER)
        assert (confirmed.status, confirmed.seats) == (Status.CONFIRMED, booking.seats)
        assert confirmed.allocated_seats == booking.allocated  # the same buckets, now taken
        if status is Status.HELD:
            booking.status, booking.expires = Status.CONFIRMED, None
            self.changes += 1

    @rule(data=st.data(), ttl=st.sampled_from([60, 240]))
    def extend(self, data, ttl):
        reservation_id = self.pick(data)
        self.reclaim()
        booking = self.bookings.get(reservation_id)
        status = booking and booking.status
        if status is not Status.HELD:
            error = {None: ReservationNotFound, Status.EXPIRED: HoldExpired}.get(status, NotHeld)
            with pytest.raises(error):
                self.service.extend(EVENT_ID, reservation_id, ttl, owner=EVERY_PARTNER)
            return
        extended = self.service.extend(EVENT_ID, reservation_id, ttl, owner=EVERY_PARTNER)
        booking.expires = min(self.skew + ttl, booking.created + LONGEST)
        assert extended.status is Status.HELD
        self.changes += 1

    @rule(data=st.data())
    def cancel_or_release(self, data):
        reservation_id = self.pick(data)
        self.reclaim()
        booking = self.bookings.get(reservation_id)
        status = booking and booking.status
        if status in (None, Status.CANCELLED, Status.EXPIRED):
            error = HoldExpired if status is Status.EXPIRED else ReservationNotFound
            with pytest.raises(error):
                self.service.cancel(EVENT_ID, reservation_id, owner=EVERY_PARTNER)
            return
        self.service.cancel(EVENT_ID, reservation_id, owner=EVERY_PARTNER)
        booking.status = Status.CANCELLED
        self.changes += 1

    @rule(
        partner=st.sampled_from(ALLOTTED),
        seats=st.integers(0, 24),
        overflow=st.booleans(),
        max_held=st.one_of(st.none(), st.integers(1, 15)),
        match=MATCHES,
    )
    def allot(self, partner, seats, overflow, max_held, match):
        self.reclaim()
        if_versions = self.if_versions(match)

        def call():
            return self.service.allot(
                EVENT_ID,
                partner,
                seats,
                overflow=overflow,
                max_held_seats=max_held,
                if_versions=if_versions,
            )

        before = self.allocations().get(partner)
        used = before.used if before is not None else 0
        # A closed allocation sets nothing aside any more: reopened, it can have its used
        # seats and what the pool has left.
        most = used + self.pool().available + (before.available if before is not None else 0)
        if match == "stale":
            with pytest.raises(PreconditionFailed):
                call()
            return
        if seats < used:
            with pytest.raises(AllocationInUse):
                call()
            return
        if seats > most:
            with pytest.raises(AllocationTooLarge) as raised:
                call()
            assert raised.value.most == most
            return
        allotted = call()
        expected = Allocation(
            partner,
            seats,
            overflow,
            before.taken if before else 0,
            before.held if before else 0,
            max_held,
        )
        written = expected != before
        assert allotted.allocation == expected
        assert (allotted.created, allotted.written) == (before is None or before.closed, written)
        self.shares[partner] = Share(seats, overflow, max_held)
        self.changes += written
        assert allotted.event.version == self.changes

    @rule(data=st.data(), match=MATCHES)
    def unallot(self, data, match):
        # Mostly an allocation that is open (what a delete is for), else either partner's.
        opened = [p for p, share in self.shares.items() if not share.closed]
        anyone = st.sampled_from(ALLOTTED)
        partner = data.draw(st.one_of(st.sampled_from(opened), anyone) if opened else anyone)
        self.reclaim()
        if_versions = self.if_versions(match)
        share = self.shares.get(partner)
        if match == "stale":
            with pytest.raises(PreconditionFailed):
                self.service.unallot(EVENT_ID, partner, if_versions=if_versions)
            return
        if share is None or share.closed:  # never set, or deleted already (used or not)
            with pytest.raises(AllocationNotFound):
                self.service.unallot(EVENT_ID, partner, if_versions=if_versions)
            return
        event = self.service.unallot(EVENT_ID, partner, if_versions=if_versions)
        share.closed = True
        self.changes += 1
        assert event.version == self.changes
        assert event.allocations.get(partner) == self.allocations().get(partner)

    @rule(total=st.integers(0, 40))
    def resize_the_event(self, total):
        self.reclaim()
        # Seats set aside stay the allocations', used or not: only the pool's may go.
        kept = self.total - self.pool().available
        if total < kept:
            with pytest.raises(SeatsAlreadyReserved):
                self.service.resize(EVENT_ID, total_seats=total)
            return
        event = self.service.resize(EVENT_ID, total_seats=total)
        self.changes += total != self.total
        self.total = total
        assert (event.total_seats, event.version) == (total, self.changes)

    @rule(seconds=st.sampled_from([30, 60, 90]))
    def time_passes(self, seconds):
        self.clock.jump(seconds)
        self.skew += seconds

    @rule()
    def sweep(self):
        # Other tests' events share the database, and the jumped clock lapses their holds too:
        # the sweep expires those as well; the rows invariant checks this event's exactly.
        assert self.service.sweep() >= self.reclaim()

    @rule(data=st.data())
    def read_back(self, data):
        if not self.bookings:
            return
        reservation_id = data.draw(st.sampled_from(sorted(self.bookings)))
        booking = self.bookings[reservation_id]
        reservation = self.service.get(EVENT_ID, reservation_id, owner=EVERY_PARTNER)
        # Reads tidy nothing: a lapsed hold reads expired before any write reclaims it.
        assert reservation.status is self.status(booking)
        assert (reservation.cancelled_at is None) == (booking.status is not Status.CANCELLED)
        assert reservation.allocated_seats == booking.allocated
        if booking.expires is not None and booking.status is Status.HELD:
            lasts = (reservation.expires_at - reservation.created_at).total_seconds()
            assert abs(lasts - (booking.expires - booking.created)) < 5  # real time: ms

    # After every step ----------------------------------------------------------------------

    @invariant()
    def the_books_balance_and_match_the_model(self):
        event = self.service.summary(EVENT_ID)  # reclaims lapsed holds itself
        self.reclaim()
        held, confirmed = self.seats_in(Status.HELD), self.seats_in(Status.CONFIRMED)
        assert event.available_seats >= 0
        assert event.available_seats + event.held_seats + confirmed == event.total_seats
        assert (event.available_seats, event.held_seats) == (self.total - confirmed - held, held)
        assert event.reservation_count == sum(
            b.status is Status.CONFIRMED for b in self.bookings.values()
        )
        assert event.version == self.changes
        # Every bucket: each allocation, the pool, and what each partner can get.
        assert dict(event.allocations) == self.allocations()
        assert event.pool == self.pool()
        assert all(0 <= a.used <= a.seats for a in event.allocations.values())
        assert min(event.pool.seats, event.pool.taken, event.pool.held, event.pool.available) >= 0
        assert {p: event.available_to(p) for p in PARTNERS} == {
            p: self.available_to(p) for p in PARTNERS
        }

    @invariant()
    def the_rows_are_the_model(self):
        with self.service.engine.connect() as conn:
            rows = conn.execute(RESERVATION_ROWS).all()
            allocations = conn.execute(ALLOCATION_ROWS).all()
        # Rows may lag only where a read cannot write: lapsed holds not yet tidied.
        assert {
            row.id: (Status(row.status), row.partner_id, row.seats, row.allocated_seats)
            for row in rows
        } == {rid: (b.status, b.partner, b.seats, b.allocated) for rid, b in self.bookings.items()}
        # An allocation's row each, as the model has them; none left once one is gone.
        assert {row.partner_id: Allocation(*row) for row in allocations} == self.allocations()


@pytest.fixture
def machine_service(pg_engine, pg_url):
    clock = JumpingClock()
    settings = Settings(
        database_url=pg_url,
        hold_ttl_seconds=60,
        hold_max_seconds=LONGEST,
        partner_max_held_seats=MAX_HELD,
        **PATIENT,
    )
    return ReservationService(pg_engine, settings, clock), clock


def test_every_change_and_the_summary_always_agree_with_the_model(machine_service):
    service, clock = machine_service
    run_state_machine_as_test(
        lambda: ReservationMachine(service, clock),
        settings=settings(
            max_examples=100,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        ),
    )
