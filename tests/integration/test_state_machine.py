"""Hypothesis drives reserve / cancel / summary on PostgreSQL beside a plain-Python model."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from ticketboss.cli import seed_event
from ticketboss.domain import MAX_SEATS, MIN_SEATS, NotEnoughSeats, ReservationNotFound, Status

EVENT_ID = "state-machine-event"


class ReservationMachine(RuleBasedStateMachine):
    reservations = Bundle("reservations")

    def __init__(self, service):
        super().__init__()
        self.service = service
        self.total = 0
        self.confirmed: dict[uuid.UUID, int] = {}
        self.cancelled: set[uuid.UUID] = set()
        self.changes = 0

    @initialize(total=st.integers(min_value=0, max_value=40))
    def start_the_event_over(self, total):
        seed_event(self.service.engine, EVENT_ID, "Stateful", total, reset=True)
        self.total = total

    @property
    def available(self) -> int:
        return self.total - sum(self.confirmed.values())

    @rule(
        target=reservations,
        partner=st.sampled_from(["a", "b", "c"]),
        seats=st.integers(MIN_SEATS, MAX_SEATS),
    )
    def reserve(self, partner, seats):
        if seats > self.available:
            with pytest.raises(NotEnoughSeats):
                self.service.reserve(EVENT_ID, partner, seats)
            return multiple()
        reservation = self.service.reserve(EVENT_ID, partner, seats)
        assert (reservation.seats, reservation.status) == (seats, Status.CONFIRMED)
        self.confirmed[reservation.reservation_id] = seats
        self.changes += 1
        return reservation.reservation_id

    @rule(reservation_id=consumes(reservations))
    def cancel(self, reservation_id):
        self.service.cancel(EVENT_ID, reservation_id)
        del self.confirmed[reservation_id]
        self.cancelled.add(reservation_id)
        self.changes += 1

    @rule(data=st.data())
    def cancel_again_or_unknown(self, data):
        choices = [*sorted(self.cancelled), uuid.uuid4()]
        reservation_id = data.draw(st.sampled_from(choices))
        with pytest.raises(ReservationNotFound):
            self.service.cancel(EVENT_ID, reservation_id)

    @rule(data=st.data())
    def read_back(self, data):
        known = sorted(self.confirmed) + sorted(self.cancelled)
        if not known:
            return
        reservation_id = data.draw(st.sampled_from(known))
        reservation = self.service.get(EVENT_ID, reservation_id)
        expected = Status.CONFIRMED if reservation_id in self.confirmed else Status.CANCELLED
        assert reservation.status is expected
        assert (reservation.cancelled_at is None) == (expected is Status.CONFIRMED)

    @invariant()
    def seats_add_up_and_match_the_model(self):
        summary = self.service.summary(EVENT_ID)
        event = summary
        assert event.available_seats >= 0
        assert event.available_seats + sum(self.confirmed.values()) == event.total_seats
        assert event.available_seats == self.available
        assert summary.reservation_count == len(self.confirmed)
        assert event.version == self.changes


def test_reserve_cancel_and_summary_always_agree_with_the_model(service):
    run_state_machine_as_test(
        lambda: ReservationMachine(service),
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        ),
    )
