"""domain/batch.plan without a database: a batch decides as if its changes ran one at a time."""

import uuid

from hypothesis import given
from hypothesis import strategies as st

from ticketboss.domain import (
    Event,
    EventNotFound,
    NotEnoughSeats,
    PreconditionFailed,
    ReservationNotFound,
)
from ticketboss.domain.batch import (
    CancelRequest,
    Confirmed,
    Granted,
    Released,
    SeatRequest,
    plan,
)

GALA = Event("gala", "Gala", total_seats=10, available_seats=6, version=7, reservation_count=2)
A, B = uuid.uuid4(), uuid.uuid4()
CONFIRMED = {A: Confirmed(3, "alpha"), B: Confirmed(1, "beta")}


def test_each_reservation_sees_what_the_ones_ahead_of_it_left_and_smaller_ones_still_fit():
    decided = plan(
        "gala", GALA, [SeatRequest("p", 4), SeatRequest("p", 3), SeatRequest("p", 2)], {}
    )
    assert [type(o) for o in decided.outcomes] == [Granted, NotEnoughSeats, Granted]
    assert (decided.after.available_seats, decided.after.reservation_count) == (0, 4)
    assert decided.changes == 2 and decided.after.version == 7  # the store raises it


def test_a_cancel_gives_its_seats_back_to_the_changes_behind_it_once():
    changes = [SeatRequest("p", 8), CancelRequest(A), SeatRequest("p", 8), CancelRequest(A)]
    decided = plan("gala", GALA, changes, CONFIRMED)
    assert [type(o) for o in decided.outcomes] == [
        NotEnoughSeats,
        Released,
        Granted,
        ReservationNotFound,
    ]
    assert decided.released == [A] and decided.after.available_seats == 1


def test_another_partners_reservation_is_not_found():
    decided = plan(
        "gala", GALA, [CancelRequest(A, owner="beta"), CancelRequest(B, "beta")], CONFIRMED
    )
    assert [type(o) for o in decided.outcomes] == [ReservationNotFound, Released]


def test_if_match_is_compared_with_the_version_the_changes_ahead_left():
    changes = [SeatRequest("p", 1, frozenset({7})), SeatRequest("p", 1, frozenset({7}))]
    decided = plan("gala", GALA, changes, {})
    assert [type(o) for o in decided.outcomes] == [Granted, PreconditionFailed]
    assert decided.outcomes[1].version == 8


def test_a_missing_event_refuses_every_change():
    decided = plan("gone", None, [SeatRequest("p", 1), CancelRequest(A)], CONFIRMED)
    assert all(isinstance(o, EventNotFound) for o in decided.outcomes) and decided.changes == 0


# The property: a batch equals its changes applied one at a time by a plain model.
changes = st.lists(
    st.one_of(
        st.builds(SeatRequest, st.sampled_from(["alpha", "beta"]), st.integers(1, 10)),
        st.builds(
            CancelRequest,
            st.sampled_from([A, B, uuid.UUID(int=0)]),
            st.sampled_from([None, "alpha", "beta"]),
        ),
    ),
    max_size=20,
)


@given(available=st.integers(0, 10), changes=changes)
def test_a_batch_decides_exactly_as_one_change_at_a_time(available, changes):
    event = Event("gala", "Gala", 14, available, version=0, reservation_count=2)
    decided = plan("gala", event, changes, CONFIRMED)

    left, count, confirmed, expected = available, 2, dict(CONFIRMED), []
    for change in changes:
        if isinstance(change, SeatRequest):
            granted = change.seats <= left
            left, count = (left - change.seats, count + 1) if granted else (left, count)
            expected.append(Granted if granted else NotEnoughSeats)
        else:
            found = confirmed.get(change.reservation_id)
            if found and change.owner in (None, found.partner_id):
                del confirmed[change.reservation_id]
                left, count = left + found.seats, count - 1
                expected.append(Released)
            else:
                expected.append(ReservationNotFound)
    assert [type(o) for o in decided.outcomes] == expected
    assert (decided.after.available_seats, decided.after.reservation_count) == (left, count)
    assert decided.changes == sum(e in (Granted, Released) for e in expected)
