"""The pure rules, without a database."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketboss.config import Settings
from ticketboss.domain import (
    ALLOCATION,
    ALLOCATION_AND_POOL,
    POOL,
    Allocation,
    Event,
    InvalidPartnerId,
    NotEnoughSeats,
    Pool,
    SeatsAlreadyReserved,
    check_partner_id,
)


def event(available=10, total=10):
    return Event("e", "E", total, available, version=3)


def test_reserving_takes_seats_and_leaves_the_version_to_the_store():
    after = event().reserve(4)
    assert (after.available_seats, after.version) == (6, 3)


def test_reserving_more_than_is_left_is_not_enough_seats():
    with pytest.raises(NotEnoughSeats) as raised:
        event(available=3).reserve(4)
    assert (raised.value.requested, raised.value.available) == (4, 3)


def test_releasing_can_never_exceed_the_total():
    assert event(available=6).release(4).available_seats == 10
    with pytest.raises(ValueError):
        event(available=7).release(4)


@given(total=st.integers(0, 1000), requests=st.lists(st.integers(1, 10)))
def test_a_sequence_of_reservations_never_goes_below_zero(total, requests):
    current = event(available=total, total=total)
    for seats in requests:
        try:
            current = current.reserve(seats)
        except NotEnoughSeats:
            assert seats > current.available_seats
    assert 0 <= current.available_seats <= total


def test_settings_come_from_upper_cased_environment_variables():
    settings = Settings.from_env(
        {
            "DATABASE_URL": "sqlite:///x.db",
            "CAS_MAX_ATTEMPTS": "7",
            "CAS_MAX_SECONDS": "1.5",
            "DB_POOL_SIZE": "",
        }
    )
    assert settings.database_url == "sqlite:///x.db"
    assert (settings.cas_max_attempts, settings.cas_max_seconds) == (7, 1.5)
    assert settings.db_pool_size == Settings().db_pool_size


@pytest.mark.parametrize("partner_id", ["abc-corp", "a", "0", "a.b_c-9", "x" * 64])
def test_a_canonical_partner_id_is_accepted_as_it_is(partner_id):
    check_partner_id(partner_id)


@pytest.mark.parametrize(
    ("partner_id", "hint"),
    [
        ("ABC", "its canonical spelling is 'abc'"),
        ("\u212a-corp", "its canonical spelling is 'k-corp'"),  # the Kelvin sign
        ("cafe\u0301", "non-ASCII characters (U+0301)"),  # NFD: e and a combining accent
        ("\u0430bc-corp", "non-ASCII characters (U+0430)"),  # a Cyrillic a
        ("", ""),
        ("-abc", ""),
        ("x" * 65, ""),
        ("abc\n", ""),
    ],
)
def test_any_other_partner_id_is_refused_with_the_rule_and_never_folded(partner_id, hint):
    with pytest.raises(InvalidPartnerId) as refused:
        check_partner_id(partner_id)
    message = str(refused.value)
    assert "1-64 characters of lowercase ASCII letters" in message and hint in message
    assert "\n" not in message  # one line, whatever the id holds


# Allocations: a partner's share beside the open pool ------------------------------------------

SOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def allotted(total=12, **allocations: Allocation) -> Event:
    """An event of `total` seats, none used, with those allocations (by partner id)."""
    return Event("e", "E", total, total, version=3, allocations=allocations)


# alpha has 4 seats of its own, beta 3 and the pool when they are gone; the pool has 5.
SPLIT = allotted(alpha=Allocation("alpha", 4), beta=Allocation("beta", 3, overflow=True))


def test_an_allocation_has_what_is_neither_taken_nor_held():
    share = Allocation("alpha", 10, taken=3, held=2)
    assert (share.available, share.used) == (5, 5)
    assert share.drawn(taken=5) == Allocation("alpha", 10, taken=8, held=2)
    with pytest.raises(ValueError, match="overdrawn"):
        share.drawn(held=6)
    with pytest.raises(ValueError, match="overdrawn"):
        share.drawn(taken=-4)


def test_a_closed_allocation_shrinks_as_its_seats_come_back_and_is_gone_when_none_are_used():
    closed = Allocation("alpha", 5, taken=3, held=2, closed=True)
    assert closed.drawn(taken=-3) == Allocation("alpha", 2, held=2, closed=True)
    # A confirmed hold stays used: the same seats.
    assert closed.drawn(taken=1, held=-1) == Allocation("alpha", 5, taken=4, held=1, closed=True)
    assert closed.drawn(taken=-3, held=-2) is None


def test_the_pool_is_what_no_allocation_sets_aside():
    assert SPLIT.pool == Pool(5, 0, 0, 5) and SPLIT.pool_available == 5
    assert SPLIT.available_seats == 12  # the total over every bucket
    assert (SPLIT.available_to("alpha"), SPLIT.available_to("beta")) == (4, 3 + 5)
    assert SPLIT.available_to("p") == 5
    assert event().pool == Pool(10, 0, 0, 10)  # without allocations: the whole event


def test_a_partner_takes_from_its_allocation_first_and_the_pool_only_with_overflow():
    after, allocated = SPLIT.take("beta", 5)
    assert allocated == 3
    assert after.allocations["beta"] == Allocation("beta", 3, overflow=True, taken=3)
    assert after.pool == Pool(5, 2, 0, 3)
    with pytest.raises(NotEnoughSeats) as refused:
        SPLIT.take("alpha", 5)
    assert (refused.value.bucket, refused.value.available, refused.value.requested) == (
        ALLOCATION,
        4,
        5,
    )
    with pytest.raises(NotEnoughSeats) as refused:
        SPLIT.take("beta", 9)
    assert (refused.value.bucket, refused.value.available) == (ALLOCATION_AND_POOL, 8)


def test_a_partner_without_an_allocation_takes_only_from_the_pool():
    after, allocated = SPLIT.take("p", 5, expires_at=SOON)
    assert allocated == 0 and after.pool == Pool(5, 0, 5, 0)
    assert after.allocations == SPLIT.allocations
    with pytest.raises(NotEnoughSeats) as refused:
        after.take("p", 1)
    assert (refused.value.bucket, refused.value.available) == (POOL, 0)
    assert "open pool" in str(refused.value)
    # The allocated seats are still there for their partners.
    assert (after.available_to("alpha"), after.available_to("beta")) == (4, 3)


def books(event: Event) -> tuple:
    return event.available_seats, event.held_seats, event.pool, dict(event.allocations)


def test_seats_go_back_to_the_buckets_they_came_from():
    held, _ = SPLIT.take("beta", 5, expires_at=SOON)  # 3 of beta's, 2 of the pool
    assert held.allocations["beta"] == Allocation("beta", 3, overflow=True, held=3)
    confirmed = held.confirm_hold(5, "beta", 3)
    assert confirmed.allocations["beta"] == Allocation("beta", 3, overflow=True, taken=3)
    assert confirmed.pool == Pool(5, 2, 0, 3)
    assert books(confirmed.release(5, "beta", 3)) == books(SPLIT)  # cancelled
    assert books(held.release_hold(5, "beta", 3)) == books(SPLIT)  # released
    assert books(held.reclaim(5, None, {"beta": 3})) == books(SPLIT)  # lapsed


def test_a_closed_allocation_is_taken_from_no_more_and_its_partner_takes_from_the_pool():
    used, _ = SPLIT.take("alpha", 3)
    closed = used.allot(replace(used.allocations["alpha"], seats=3, closed=True))
    assert closed.allocations["alpha"] == Allocation("alpha", 3, taken=3, closed=True)
    assert closed.pool_available == 6 and closed.available_to("alpha") == 6
    assert closed.take("alpha", 6)[1] == 0  # all of them the pool's
    back = closed.release(3, "alpha", 3)
    assert "alpha" not in back.allocations and back.pool_available == 9


def test_a_resize_never_takes_allocated_seats_even_unused_ones():
    with pytest.raises(SeatsAlreadyReserved, match="allocated"):
        SPLIT.resize(6)
    smaller = SPLIT.resize(7)
    assert (smaller.pool, smaller.allocations) == (Pool(0, 0, 0, 0), SPLIT.allocations)


SHARES = st.lists(st.tuples(st.integers(0, 8), st.booleans()), min_size=0, max_size=3)
TAKES = st.lists(
    st.tuples(st.sampled_from(["a0", "a1", "a2", "p"]), st.integers(1, 10), st.booleans()),
    max_size=30,
)


@given(pool=st.integers(0, 20), shares=SHARES, takes=TAKES)
def test_takes_never_oversell_a_bucket_and_refusals_are_genuine(pool, shares, takes):
    allocations = {
        f"a{i}": Allocation(f"a{i}", seats, overflow) for i, (seats, overflow) in enumerate(shares)
    }
    total = pool + sum(a.seats for a in allocations.values())
    current = Event("e", "E", total, total, 0, allocations=allocations)
    drawn = dict.fromkeys(allocations, 0)  # what each allocation gave, by the answers
    pooled = 0  # and the pool
    for partner, seats, held in takes:
        can, own = current.available_to(partner), current.allocation_of(partner)
        try:
            current, allocated = current.take(partner, seats, SOON if held else None)
        except NotEnoughSeats as refused:
            assert seats > refused.available == can
            continue
        assert seats <= can
        assert allocated == (0 if own is None else min(seats, own.available))
        if allocated:
            drawn[partner] += allocated
        pooled += seats - allocated
    for share in current.allocations.values():  # none oversold, each as its answers say
        assert share.seats == allocations[share.partner_id].seats
        assert share.used == drawn[share.partner_id] <= share.seats
    assert current.pool.seats == pool
    assert current.pool.taken + current.pool.held == pooled <= pool
    assert current.available_seats == total - pooled - sum(drawn.values())
