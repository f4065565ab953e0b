"""The pure rules, without a database."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticketboss.config import Settings
from ticketboss.domain import Event, InvalidPartnerId, NotEnoughSeats, check_partner_id


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
