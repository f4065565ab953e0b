"""domain/batch.plan without a database: a batch decides as if its changes ran one at a time."""

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticketboss.domain import (
    ALLOCATION,
    ALLOCATION_AND_POOL,
    EVERY_PARTNER,
    POOL,
    Allocation,
    AllocationInUse,
    AllocationNotFound,
    AllocationTooLarge,
    Event,
    EventNotFound,
    HoldExpired,
    HoldLimitReached,
    NotEnoughSeats,
    NotHeld,
    Pool,
    PoolLimitReached,
    PreconditionFailed,
    Reservation,
    ReservationNotFound,
    SeatsAlreadyReserved,
    Status,
)
from ticketboss.domain.batch import (
    Allot,
    Allotted,
    CancelRequest,
    Confirmed,
    ConfirmRequest,
    Extended,
    ExtendRequest,
    Granted,
    HoldRequest,
    Lapsed,
    Read,
    Released,
    Resize,
    Resized,
    SeatRequest,
    Tidied,
    Tidy,
    Unallot,
    Unallotted,
    Usage,
    plan,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
A, B, H, L = (uuid.uuid4() for _ in range(4))


def _row(rid, seats, partner, status, expires_at=None, created_at=NOW - MINUTE):
    return Reservation(rid, "gala", partner, seats, status, created_at, expires_at=expires_at)


# Confirmed A (3 seats) and B (1); H holds 2 until a minute from now; L held 2 until a second ago.
NAMED = {
    A: _row(A, 3, "alpha", Status.CONFIRMED),
    B: _row(B, 1, "beta", Status.CONFIRMED),
    H: _row(H, 2, "alpha", Status.HELD, NOW + MINUTE),
    L: _row(L, 2, "beta", Status.HELD, NOW - timedelta(seconds=1)),
}
GALA = Event("gala", "Gala", 14, 6, version=7, reservation_count=2)
HELD = Event("gala", "Gala", 14, 2, 7, 2, held_seats=4, next_expiry=NOW - timedelta(seconds=1))
LAPSED = Lapsed({L: 2}, next_expiry=NOW + MINUTE)


def read(event=GALA, lapsed=None):
    return Read(event, NOW, NAMED, lapsed)


def kinds(decided):
    return [type(o) for o in decided.outcomes]


def test_each_reservation_sees_what_the_ones_ahead_of_it_left_and_smaller_ones_still_fit():
    decided = plan("gala", read(), [SeatRequest("p", 4), SeatRequest("p", 3), SeatRequest("p", 2)])
    assert kinds(decided) == [Granted, NotEnoughSeats, Granted]
    assert (decided.after.available_seats, decided.after.reservation_count) == (0, 4)
    assert decided.changes == 2 and decided.after.version == 9


def test_a_cancel_gives_its_seats_back_to_the_changes_behind_it_once():
    changes = [
        SeatRequest("p", 8),
        CancelRequest(A, EVERY_PARTNER),
        SeatRequest("p", 8),
        CancelRequest(A, EVERY_PARTNER),
    ]
    decided = plan("gala", read(), changes)
    assert kinds(decided) == [NotEnoughSeats, Released, Granted, ReservationNotFound]
    assert decided.after.available_seats == 1


def test_another_partners_reservation_is_not_found():
    changes = [CancelRequest(A, owner="beta"), CancelRequest(B, "beta"), ConfirmRequest(H, "beta")]
    assert kinds(plan("gala", read(), changes)) == [
        ReservationNotFound,
        Released,
        ReservationNotFound,
    ]


def test_if_match_is_compared_with_the_version_the_changes_ahead_left():
    changes = [SeatRequest("p", 1, frozenset({7})), SeatRequest("p", 1, frozenset({7}))]
    decided = plan("gala", read(), changes)
    assert kinds(decided) == [Granted, PreconditionFailed]
    assert decided.outcomes[1].version == 8


def test_a_missing_event_refuses_every_change():
    decided = plan("gone", None, [SeatRequest("p", 1), CancelRequest(A, EVERY_PARTNER)])
    assert all(isinstance(o, EventNotFound) for o in decided.outcomes) and decided.changes == 0


def test_a_hold_takes_seats_until_its_expiry_which_is_capped():
    changes = [HoldRequest("p", 2, MINUTE, HOUR), HoldRequest("p", 1, 3 * HOUR, HOUR)]
    decided = plan("gala", read(), changes)
    assert [o.expires_at for o in decided.outcomes] == [NOW + MINUTE, NOW + HOUR]
    after = decided.after
    assert (after.available_seats, after.held_seats, after.next_expiry) == (3, 3, NOW + MINUTE)
    assert after.reservation_count == 2  # holds are not confirmed reservations


def test_lapsed_holds_are_reclaimed_before_the_batch_so_their_seats_serve_it():
    decided = plan(
        "gala", read(HELD, LAPSED), [SeatRequest("p", 4), ConfirmRequest(L, EVERY_PARTNER)]
    )
    assert kinds(decided) == [Granted, HoldExpired]
    assert decided.expired == [L] and decided.changes == 2
    assert (decided.after.held_seats, decided.after.next_expiry) == (2, NOW + MINUTE)
    assert decided.after.available_seats == 0


def test_the_planner_refuses_to_decide_without_the_lapsed_holds_it_may_need():
    with pytest.raises(ValueError, match="lapsed"):
        plan("gala", read(HELD), [SeatRequest("p", 1)])


def test_confirm_keeps_the_seats_taken_and_confirming_again_writes_nothing():
    decided = plan(
        "gala",
        read(HELD, LAPSED),
        [ConfirmRequest(H, EVERY_PARTNER), ConfirmRequest(H, EVERY_PARTNER)],
    )
    assert kinds(decided) == [Confirmed, Confirmed]
    assert [o.written for o in decided.outcomes] == [True, False]
    assert decided.outcomes[1].reservation.status is Status.CONFIRMED
    after = decided.after
    assert (after.available_seats, after.held_seats, after.reservation_count) == (4, 0, 3)
    assert decided.changes == 2  # the lapsed hold, and one confirm


def test_a_released_hold_cannot_be_confirmed_or_extended():
    changes = [
        CancelRequest(H, EVERY_PARTNER),
        ConfirmRequest(H, EVERY_PARTNER),
        ExtendRequest(H, MINUTE, HOUR, EVERY_PARTNER),
    ]
    decided = plan("gala", read(HELD, LAPSED), changes)
    assert kinds(decided) == [Released, NotHeld, NotHeld]
    assert (decided.after.available_seats, decided.after.held_seats) == (6, 0)


def test_an_extension_never_passes_the_cap_counted_from_creation():
    decided = plan(
        "gala",
        read(HELD, LAPSED),
        [
            ExtendRequest(H, 10 * MINUTE, HOUR, EVERY_PARTNER),
            ExtendRequest(H, 2 * HOUR, HOUR, EVERY_PARTNER),
        ],
    )
    assert kinds(decided) == [Extended, Extended]
    created = NAMED[H].created_at
    assert [o.reservation.expires_at for o in decided.outcomes] == [
        NOW + 10 * MINUTE,
        created + HOUR,
    ]


def test_a_tidy_reports_the_event_as_the_batch_left_it():
    decided = plan("gala", read(HELD, LAPSED), [Tidy(), SeatRequest("p", 1)])
    tidied = decided.outcomes[0]
    assert isinstance(tidied, Tidied) and tidied.expired == 1
    assert (tidied.event.available_seats, tidied.event.version) == (4, 8)


def test_a_tidy_that_finds_nothing_lapsed_still_corrects_the_next_expiry():
    stale = Lapsed({}, next_expiry=NOW + MINUTE)
    decided = plan("gala", read(HELD, stale), [Tidy()])
    assert decided.changes == 0 and decided.writes
    assert decided.after.next_expiry == NOW + MINUTE


def test_a_resize_counts_held_seats_as_taken():
    # 8 seats confirmed and H's 2 held (L's 2 lapsed): 10 are taken.
    changes = [Resize(total_seats=9), Resize(name="Gala II", total_seats=10)]
    decided = plan("gala", read(HELD, LAPSED), changes)
    assert kinds(decided) == [SeatsAlreadyReserved, Resized]
    assert (decided.after.name, decided.after.available_seats) == ("Gala II", 0)


def test_a_resize_to_what_the_event_already_is_writes_nothing():
    decided = plan("gala", read(), [Resize(name="Gala", total_seats=14), Resize(name="Gala")])
    assert kinds(decided) == [Resized, Resized]
    assert decided.changes == 0 and not decided.writes
    assert [o.event.version for o in decided.outcomes] == [7, 7]
    # Beside a change that is written, it adds no version of its own.
    decided = plan("gala", read(), [Resize(total_seats=14), SeatRequest("p", 1)])
    assert decided.changes == 1 and decided.after.version == 8


# The property: a batch equals its changes applied one at a time by a plain model.
IDS = [A, B, H, L, uuid.UUID(int=0)]
OWNERS = st.sampled_from([None, "alpha", "beta"])
changes = st.lists(
    st.one_of(
        st.builds(SeatRequest, st.sampled_from(["alpha", "beta"]), st.integers(1, 10)),
        st.builds(
            HoldRequest,
            st.sampled_from(["alpha", "beta"]),
            st.integers(1, 10),
            st.just(MINUTE),
            st.just(HOUR),
        ),
        st.builds(CancelRequest, st.sampled_from(IDS), OWNERS),
        st.builds(ConfirmRequest, st.sampled_from(IDS), OWNERS),
        st.builds(ExtendRequest, st.sampled_from(IDS), st.just(MINUTE), st.just(HOUR), OWNERS),
    ),
    max_size=20,
)


@given(available=st.integers(0, 10), changes=changes)
def test_a_batch_decides_exactly_as_one_change_at_a_time(available, changes):
    total = available + 3 + 1 + 2 + 2  # A, B, H and the lapsed L
    event = Event("gala", "Gala", total, available, 0, 2, held_seats=4, next_expiry=NOW)
    decided = plan("gala", Read(event, NOW, NAMED, LAPSED), changes)

    left, count, held = available + 2, 2, 2  # L is reclaimed first
    status = {rid: r.status for rid, r in NAMED.items()} | {L: Status.EXPIRED}
    expected = []
    for change in changes:
        if isinstance(change, SeatRequest | HoldRequest):
            granted = change.seats <= left
            if granted:
                left -= change.seats
                count, held = (
                    (count + 1, held)
                    if isinstance(change, SeatRequest)
                    else (count, held + 1 * change.seats)
                )
            expected.append(Granted if granted else NotEnoughSeats)
            continue
        found = NAMED.get(change.reservation_id)
        if found is None or change.owner not in (None, found.partner_id):
            expected.append(ReservationNotFound)
            continue
        rid, seats, now_is = found.reservation_id, found.seats, status[found.reservation_id]
        if now_is is Status.EXPIRED:
            expected.append(HoldExpired)
        elif isinstance(change, CancelRequest):
            if now_is is Status.CANCELLED:
                expected.append(ReservationNotFound)
                continue
            left += seats
            count, held = (count - 1, held) if now_is is Status.CONFIRMED else (count, held - seats)
            status[rid] = Status.CANCELLED
            expected.append(Released)
        elif isinstance(change, ConfirmRequest) and now_is is Status.CONFIRMED:
            expected.append(Confirmed)
        elif now_is is not Status.HELD:
            expected.append(NotHeld)
        elif isinstance(change, ConfirmRequest):
            count, held = count + 1, held - seats
            status[rid] = Status.CONFIRMED
            expected.append(Confirmed)
        else:
            expected.append(Extended)
    assert kinds(decided) == expected
    after = decided.after
    assert (after.available_seats, after.reservation_count, after.held_seats) == (
        left,
        count,
        held,
    )
    assert after.version == decided.changes


# Allocations -------------------------------------------------------------------------------

# total 12: alpha has 4 seats of its own, beta 3 and then the pool's; the pool has 5.
SPLIT = Event(
    "gala",
    "Gala",
    12,
    12,
    7,
    allocations={"alpha": Allocation("alpha", 4), "beta": Allocation("beta", 3, overflow=True)},
)


def split(*changes, event=SPLIT, usage=None):
    return plan("gala", Read(event, NOW, {}, None, usage or {}), list(changes))


def test_a_partner_takes_from_its_allocation_then_from_the_pool_only_with_overflow():
    decided = split(
        SeatRequest("beta", 2),
        SeatRequest("beta", 3),  # its last seat, then two of the pool
        SeatRequest("beta", 3),  # the pool's only
        SeatRequest("alpha", 4),
        SeatRequest("alpha", 1),  # no overflow: the pool's 0 seats left are not alpha's
    )
    assert kinds(decided) == [Granted, Granted, Granted, Granted, NotEnoughSeats]
    assert [o.allocated for o in decided.of(Granted)] == [2, 1, 0, 4]
    refused = decided.outcomes[-1]
    assert (refused.bucket, refused.available, refused.requested) == (ALLOCATION, 0, 1)
    after = decided.after
    assert after.allocations["alpha"] == Allocation("alpha", 4, taken=4)
    assert after.allocations["beta"] == Allocation("beta", 3, overflow=True, taken=3)
    assert after.pool == Pool(5, 5, 0, 0)


def test_without_overflow_the_allocation_refuses_even_while_the_pool_has_seats():
    decided = split(SeatRequest("alpha", 5), HoldRequest("alpha", 5, MINUTE, HOUR))
    assert [(o.bucket, o.available) for o in decided.outcomes] == [(ALLOCATION, 4)] * 2
    assert decided.after.pool_available == 5 and decided.changes == 0


def test_with_overflow_the_refusal_names_the_allocation_and_the_pool():
    decided = split(SeatRequest("beta", 9))
    assert (decided.outcomes[0].bucket, decided.outcomes[0].available) == (ALLOCATION_AND_POOL, 8)


def test_a_partner_without_an_allocation_takes_only_from_the_pool():
    decided = split(SeatRequest("p", 5), SeatRequest("p", 1), SeatRequest("alpha", 4))
    assert kinds(decided) == [Granted, NotEnoughSeats, Granted]
    assert decided.outcomes[0].allocated == 0
    assert (decided.outcomes[1].bucket, decided.outcomes[1].available) == (POOL, 0)
    # The allocations kept their seats for their own partners.
    assert decided.after.available_to("beta") == 3


# A booked event of 20 seats. alpha's allocation (6, no overflow) has RA's 3 seats confirmed
# and HA's 2 and LA's 1 held, LA's having lapsed; beta's (4, overflow) has 4 of RB's 6 seats,
# the other 2 are the pool's, as are RP's 2 confirmed and HP's 1 held. Pool: 10 seats, 4
# taken, 1 held, 5 available.
RA, HA, LA, RB, RP, HP = (uuid.uuid4() for _ in range(6))
BOOKED = {
    RA: replace(_row(RA, 3, "alpha", Status.CONFIRMED), allocated_seats=3),
    HA: replace(_row(HA, 2, "alpha", Status.HELD, NOW + MINUTE), allocated_seats=2),
    LA: replace(_row(LA, 1, "alpha", Status.HELD, NOW - MINUTE), allocated_seats=1),
    RB: replace(_row(RB, 6, "beta", Status.CONFIRMED), allocated_seats=4),
    RP: _row(RP, 2, "p", Status.CONFIRMED),
    HP: _row(HP, 1, "p", Status.HELD, NOW + HOUR),
}
BOOKED_EVENT = Event(
    "gala",
    "Gala",
    20,
    5,
    7,
    reservation_count=3,
    held_seats=4,
    next_expiry=NOW - MINUTE,
    allocations={
        "alpha": Allocation("alpha", 6, taken=3, held=3),
        "beta": Allocation("beta", 4, overflow=True, taken=4),
    },
)
BOOKED_LAPSED = Lapsed({LA: 1}, NOW + MINUTE, {"alpha": 1})
BOOKED_USAGE = {"alpha": Usage(held=2), "beta": Usage(), "p": Usage(held=1, pool=3)}


def booked(*changes, usage=BOOKED_USAGE):
    read = Read(BOOKED_EVENT, NOW, BOOKED, BOOKED_LAPSED, dict(usage))
    return plan("gala", read, list(changes))


def test_the_booked_event_balances_and_a_lapsed_hold_gives_its_seat_back_to_its_allocation():
    assert BOOKED_EVENT.pool == Pool(10, 4, 1, 5)
    decided = booked(Tidy())
    assert decided.expired == [LA]
    assert decided.after.allocations["alpha"] == Allocation("alpha", 6, taken=3, held=2)
    assert decided.after.pool == BOOKED_EVENT.pool


def test_cancel_release_and_confirm_give_seats_back_to_the_buckets_they_came_from():
    decided = booked(CancelRequest(RB, EVERY_PARTNER))  # 4 to beta's, 2 to the pool
    assert decided.after.allocations["beta"] == Allocation("beta", 4, overflow=True)
    assert decided.after.pool == Pool(10, 2, 1, 7)
    decided = booked(CancelRequest(HA, EVERY_PARTNER), CancelRequest(HP, EVERY_PARTNER))
    assert decided.after.allocations["alpha"] == Allocation("alpha", 6, taken=3)
    assert decided.after.pool == Pool(10, 4, 0, 6)
    decided = booked(ConfirmRequest(HA, EVERY_PARTNER))  # still alpha's: now taken
    assert decided.after.allocations["alpha"] == Allocation("alpha", 6, taken=5)
    assert decided.after.pool == BOOKED_EVENT.pool


def test_a_deleted_allocation_keeps_its_used_seats_shrinks_as_they_come_back_and_then_is_gone():
    decided = booked(
        Unallot("alpha"),  # its 1 unused seat (once LA lapsed) is the pool's at once
        SeatRequest("alpha", 3),  # alpha now takes from the pool like any partner
        CancelRequest(RA, EVERY_PARTNER),
        Unallot("alpha"),
        CancelRequest(HA, EVERY_PARTNER),
        Unallot("alpha"),
    )
    assert kinds(decided) == [
        Unallotted,
        Granted,
        Released,
        AllocationNotFound,
        Released,
        AllocationNotFound,
    ]
    closed = decided.outcomes[0].event.allocations["alpha"]
    assert closed == Allocation("alpha", 5, taken=3, held=2, closed=True)
    assert decided.outcomes[0].event.pool_available == 6
    assert decided.outcomes[1].allocated == 0
    after = decided.after
    assert "alpha" not in after.allocations
    assert after.pool == Pool(16, 7, 1, 8)


def test_an_allot_reopens_a_closed_allocation_with_the_seats_still_used_from_it():
    decided = booked(Unallot("alpha"), Allot("alpha", 8, overflow=True))
    reopened = decided.outcomes[1]
    assert isinstance(reopened, Allotted) and reopened.created and reopened.written
    assert reopened.allocation == Allocation("alpha", 8, overflow=True, taken=3, held=2)
    assert decided.after.allocations["alpha"] == reopened.allocation
    assert decided.after.pool == Pool(8, 4, 1, 3)


def test_an_allocation_never_shrinks_below_its_used_seats_nor_grows_beyond_what_the_pool_has():
    decided = booked(
        Allot("alpha", 4),  # 5 used, once LA lapsed
        Allot("alpha", 5),  # its one unused seat is the pool's: 6
        Allot("beta", 11),  # 4 used, and the pool's 6: at most 10
        Allot("gamma", 7),
        Allot("gamma", 6),
        Allot("beta", 5),  # the pool has nothing left
    )
    assert kinds(decided) == [
        AllocationInUse,
        Allotted,
        AllocationTooLarge,
        AllocationTooLarge,
        Allotted,
        AllocationTooLarge,
    ]
    assert [decided.outcomes[i].most for i in (2, 3, 5)] == [10, 6, 4]
    assert decided.after.pool == Pool(5, 4, 1, 0)
    assert decided.after.available_to("gamma") == 6


def test_an_event_resize_cannot_remove_allocated_seats():
    decided = split(Resize(total_seats=6), Resize(total_seats=7), Allot("alpha", 0))
    assert kinds(decided) == [SeatsAlreadyReserved, Resized, Allotted]
    assert decided.outcomes[1].event.pool == Pool(0, 0, 0, 0)
    assert decided.after.pool_available == 4


def test_the_hold_limit_counts_the_live_holds_across_a_batch():
    # p holds HP's 1 seat: with a limit of 4, a release then a new hold resets nothing.
    held = {"p": Usage(held=1, pool=3)}
    decided = booked(
        HoldRequest("p", 3, MINUTE, HOUR, max_held=4),
        HoldRequest("p", 1, MINUTE, HOUR, max_held=4),
        CancelRequest(HP, EVERY_PARTNER),
        HoldRequest("p", 1, MINUTE, HOUR, max_held=4),
        HoldRequest("p", 1, MINUTE, HOUR, max_held=4),
        usage=held,
    )
    assert kinds(decided) == [Granted, HoldLimitReached, Released, Granted, HoldLimitReached]
    assert decided.outcomes[1].limit == 4
    # A confirmed hold is held no more.
    decided = booked(
        ConfirmRequest(HP, EVERY_PARTNER),
        HoldRequest("p", 4, MINUTE, HOUR, max_held=4),
        usage=held,
    )
    assert kinds(decided) == [Confirmed, Granted]


def test_an_allocation_may_set_its_own_hold_limit_and_a_closed_one_no_longer_does():
    event = replace(SPLIT, allocations={"alpha": Allocation("alpha", 4, max_held_seats=2)})
    usage = {"alpha": Usage()}
    decided = split(
        HoldRequest("alpha", 2, MINUTE, HOUR, max_held=100),
        HoldRequest("alpha", 1, MINUTE, HOUR, max_held=100),
        Unallot("alpha"),
        HoldRequest("alpha", 3, MINUTE, HOUR, max_held=5),  # the service's limit again
        HoldRequest("alpha", 1, MINUTE, HOUR, max_held=5),
        event=event,
        usage=usage,
    )
    assert kinds(decided) == [Granted, HoldLimitReached, Unallotted, Granted, HoldLimitReached]
    assert [decided.outcomes[i].limit for i in (1, 4)] == [2, 5]
    assert decided.of(Granted)[1].allocated == 0  # from the pool, once closed


def test_the_pool_limit_counts_only_seats_of_the_pool():
    usage = {"beta": Usage(), "p": Usage(pool=4)}
    decided = split(
        SeatRequest("beta", 5, pool_limit=2),  # 3 of its own and 2 of the pool
        SeatRequest("beta", 1, pool_limit=2),
        HoldRequest("beta", 1, MINUTE, HOUR, pool_limit=2),
        SeatRequest("p", 1, pool_limit=5),
        SeatRequest("p", 1, pool_limit=5),
        usage=usage,
    )
    assert kinds(decided) == [
        Granted,
        PoolLimitReached,
        PoolLimitReached,
        Granted,
        PoolLimitReached,
    ]
    assert decided.outcomes[1].limit == 2
    # Seats drawn wholly from an allocation are never the pool's to limit.
    decided = split(SeatRequest("alpha", 4, pool_limit=1), usage={"alpha": Usage(pool=9)})
    assert kinds(decided) == [Granted]


def test_each_written_allocation_change_raises_the_version_by_one_and_an_identical_allot_none():
    decided = split(
        Allot("alpha", 4),  # exactly as it is
        Allot("alpha", 4, overflow=True),
        Allot("alpha", 4, overflow=True, if_versions=frozenset({8})),  # the same again
        Unallot("beta", if_versions=frozenset({7})),  # the version the changes ahead left: 8
        Unallot("beta", if_versions=frozenset({8})),
        Allot("beta", 2),  # gone (nothing used): created anew
        Allot("gamma", 1, max_held_seats=3),
    )
    assert kinds(decided) == [
        Allotted,
        Allotted,
        Allotted,
        PreconditionFailed,
        Unallotted,
        Allotted,
        Allotted,
    ]
    allotted = decided.of(Allotted)
    assert [(a.written, a.created) for a in allotted] == [
        (False, False),
        (True, False),
        (False, False),
        (True, True),
        (True, True),
    ]
    assert [a.event.version for a in allotted] == [7, 8, 8, 10, 11]
    assert decided.outcomes[4].event.version == 9
    assert decided.changes == 4 and decided.after.version == 11
    assert decided.after.allocations == {
        "alpha": Allocation("alpha", 4, overflow=True),
        "beta": Allocation("beta", 2),
        "gamma": Allocation("gamma", 1, max_held_seats=3),
    }
    # Alone, an identical allot writes nothing at all.
    assert not split(Allot("alpha", 4)).writes


# The property: batches of random changes, committed one after another as the service would
# (cancels, releases, confirms and expiries of what earlier batches granted), keep every
# bucket's books, and decide exactly as their changes one at a time.
PARTNERS = ["alpha", "beta", "p"]  # p is never given an allocation
NAMED_CHANGES = (CancelRequest, ConfirmRequest, ExtendRequest)


def _usage(rows: dict, now: datetime) -> dict[str, Usage]:
    """What queries.load_usage reads: each partner's live holds, and its seats of the pool."""
    usage = {}
    for partner in PARTNERS:
        mine = [r for r in rows.values() if r.partner_id == partner]
        live = [r for r in mine if r.status is Status.HELD and r.expires_at > now]
        confirmed = [r for r in mine if r.status is Status.CONFIRMED]
        pooled = sum(r.seats - r.allocated_seats for r in live + confirmed)
        usage[partner] = Usage(sum(r.seats for r in live), pooled)
    return usage


def _read(event: Event, rows: dict, now: datetime, changes) -> Read:
    """What ReservationService._read reads for those changes."""
    ids = {c.reservation_id for c in changes if isinstance(c, NAMED_CHANGES)}
    lapsed = None
    if event.has_lapsed_holds(now):
        holds = [r for r in rows.values() if r.status is Status.HELD]
        gone = [r for r in holds if r.expires_at <= now]
        allocated: dict[str, int] = {}
        for r in gone:
            if r.allocated_seats:
                allocated[r.partner_id] = allocated.get(r.partner_id, 0) + r.allocated_seats
        alive = [r.expires_at for r in holds if r.expires_at > now]
        lapsed = Lapsed(
            {r.reservation_id: r.seats for r in gone}, min(alive, default=None), allocated
        )
    named = {i: rows[i] for i in ids if i in rows}
    return Read(event, now, named, lapsed, _usage(rows, now))


def _commit(decided, rows: dict, now: datetime) -> Event:
    """What ReservationService._write leaves: the rows, and the event's row (swapped)."""
    for reservation_id in decided.expired:
        rows[reservation_id] = replace(rows[reservation_id], status=Status.EXPIRED)
    for outcome in decided.outcomes:
        if isinstance(outcome, Granted):
            request, held = outcome.request, outcome.expires_at is not None
            new = Reservation(
                uuid.uuid4(),
                "gala",
                request.partner_id,
                request.seats,
                Status.HELD if held else Status.CONFIRMED,
                now,
                expires_at=outcome.expires_at,
                allocated_seats=outcome.allocated,
            )
            rows[new.reservation_id] = new
        elif isinstance(outcome, Released):
            gone = outcome.reservation
            rows[gone.reservation_id] = replace(gone, status=Status.CANCELLED, expires_at=None)
        elif isinstance(outcome, Confirmed | Extended):
            rows[outcome.reservation.reservation_id] = outcome.reservation
    return decided.after if decided.writes else decided.before


def _balanced(event: Event, rows: dict) -> None:
    """Every bucket's books, from the event's row and from the reservations' rows."""
    allocations = event.allocations.values()
    for a in allocations:
        assert 0 <= a.taken and 0 <= a.held and a.used <= a.seats
        assert a.used or not a.closed  # a closed allocation is gone once nothing is used
        assert not a.closed or a.available == 0
        mine = [r for r in rows.values() if r.partner_id == a.partner_id]
        for figure, status in ((a.taken, Status.CONFIRMED), (a.held, Status.HELD)):
            assert figure == sum(r.allocated_seats for r in mine if r.status is status)
    pool = event.pool
    assert min(pool.seats, pool.taken, pool.held, pool.available) >= 0
    assert pool.seats + sum(a.seats for a in allocations) == event.total_seats
    assert pool.available + sum(a.available for a in allocations) == event.available_seats
    confirmed = [r for r in rows.values() if r.status is Status.CONFIRMED]
    held = [r for r in rows.values() if r.status is Status.HELD]
    assert pool.taken == sum(r.seats - r.allocated_seats for r in confirmed)
    assert pool.held == sum(r.seats - r.allocated_seats for r in held)
    assert event.held_seats == sum(r.seats for r in held)
    assert event.reservation_count == len(confirmed)
    assert event.available_seats + event.held_seats + sum(r.seats for r in confirmed) == (
        event.total_seats
    )


def _genuine(met: Event, change, outcome, after: Event) -> None:
    """The outcome is what the event it met could give: a seat request's seats come from its
    partner's open allocation first, the rest from the pool (only with overflow) and a 409
    says what the partner could get; an allot leaves the allocation asked for, open, with the
    seats used from it; an unallot leaves it closed with only those, or none."""
    if isinstance(change, SeatRequest | HoldRequest):
        can, own = met.available_to(change.partner_id), met.allocation_of(change.partner_id)
        if isinstance(outcome, NotEnoughSeats):
            assert change.seats > outcome.available == can
        elif isinstance(outcome, Granted):
            assert change.seats <= can
            assert outcome.allocated == (0 if own is None else min(change.seats, own.available))
    elif isinstance(change, Allot) and isinstance(outcome, Allotted):
        before = met.allocations.get(change.partner_id)
        used = (before.taken, before.held) if before is not None else (0, 0)
        asked = Allocation(
            change.partner_id, change.seats, change.overflow, *used, change.max_held_seats
        )
        assert after.allocations[change.partner_id] == asked
    elif isinstance(change, Unallot) and isinstance(outcome, Unallotted):
        before = met.allocations[change.partner_id]
        closed = replace(before, seats=before.used, closed=True)
        assert after.allocations.get(change.partner_id) == (closed if before.used else None)


_SEATS = st.integers(1, 10)
_MAX_HELD = st.one_of(st.none(), st.integers(1, 15))
_PARTNER, _ALLOTTED = st.sampled_from(PARTNERS), st.sampled_from(PARTNERS[:2])
# A change, or (kind, n) for a change naming the n-th reservation of earlier batches (or none).
_CHANGE = st.one_of(
    st.builds(SeatRequest, _PARTNER, _SEATS, pool_limit=st.one_of(st.none(), st.just(8))),
    st.builds(HoldRequest, _PARTNER, _SEATS, st.just(MINUTE), st.just(HOUR), max_held=_MAX_HELD),
    st.builds(Allot, _ALLOTTED, st.integers(0, 15), st.booleans(), _MAX_HELD),
    st.builds(Unallot, _ALLOTTED),
    st.builds(Resize, total_seats=st.integers(0, 40)),
    st.tuples(st.sampled_from(NAMED_CHANGES), st.integers(0, 63)),
)
_BATCHES = st.lists(
    st.tuples(
        st.sampled_from([timedelta(0), MINUTE / 2, MINUTE]),
        st.lists(_CHANGE, min_size=1, max_size=5),
    ),
    min_size=1,
    max_size=8,
)


def _named(change, rows: dict):
    """The change itself, or the one it stands for, naming a reservation of `rows`."""
    if not isinstance(change, tuple):
        return change
    kind, n = change
    # The confirmed and held ones first: Hypothesis draws small numbers more often.
    live = [i for i, r in rows.items() if r.status in (Status.CONFIRMED, Status.HELD)]
    ids = [*live, *(i for i in rows if i not in live), uuid.UUID(int=0)]
    reservation_id = ids[n % len(ids)]
    if kind is ExtendRequest:
        return ExtendRequest(reservation_id, MINUTE, HOUR, EVERY_PARTNER)
    return kind(reservation_id, EVERY_PARTNER)


# Allocations to start with, so that most runs have some.
_SHARES = st.lists(
    st.builds(Allot, _ALLOTTED, st.integers(0, 15), st.booleans(), _MAX_HELD), max_size=2
)


@settings(max_examples=200)  # pure and quick: about 2 s
@given(total=st.integers(0, 40), shares=_SHARES, batches=_BATCHES)
def test_random_batches_keep_every_buckets_books_and_decide_as_one_change_at_a_time(
    total, shares, batches
):
    event, rows, now = Event("gala", "Gala", total, total, 0), {}, NOW
    for wait, drawn in [(timedelta(0), shares), *batches]:
        now += wait
        changes = [_named(change, rows) for change in drawn]
        decided = plan("gala", _read(event, rows, now, changes), changes)
        # The same changes, one batch each, from the same rows, at the same time.
        alone, one_by_one = event, dict(rows)
        for change, outcome in zip(changes, decided.outcomes, strict=True):
            # A Tidy ahead of it reports the event the change meets (lapsed holds reclaimed).
            single = plan("gala", _read(alone, one_by_one, now, [change]), [Tidy(), change])
            met, answer = single.outcomes[0].event, single.outcomes[1]
            assert type(answer) is type(outcome)
            alone = _commit(single, one_by_one, now)
            _genuine(met, change, answer, alone)
        event = _commit(decided, rows, now)
        assert event.version == decided.before.version + decided.changes
        assert (alone.version, alone.allocations, alone.pool) == (
            event.version,
            event.allocations,
            event.pool,
        )
        _balanced(event, rows)
