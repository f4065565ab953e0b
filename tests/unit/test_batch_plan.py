"""domain/batch.plan without a database: a batch decides as if its changes ran one at a time."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketboss.domain import (
    EVERY_PARTNER,
    Event,
    EventNotFound,
    HoldExpired,
    NotEnoughSeats,
    NotHeld,
    PreconditionFailed,
    Reservation,
    ReservationNotFound,
    SeatsAlreadyReserved,
    Status,
)
from ticketboss.domain.batch import (
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
