"""Two transactions lined up on a Barrier so both provably read the same version."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event

from ticketboss.cli import seed_event
from ticketboss.domain import NotEnoughSeats, VersionConflict
from ticketboss.services import ReservationService

EVENT_ID = "node-meetup-2025"


class LineUpCompareAndSwaps:
    """Holds each thread's first CAS UPDATE until every thread has read the event."""

    def __init__(self, engine, parties: int):
        self.engine = engine
        self.barrier = threading.Barrier(parties, timeout=10)
        self.first_done = threading.local()
        self.cas_statements = 0
        self.lock = threading.Lock()

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self.before_execute)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self.before_execute)

    def before_execute(self, conn, cursor, statement, parameters, context, executemany):
        if not statement.lstrip().upper().startswith("UPDATE EVENTS"):
            return
        with self.lock:
            self.cas_statements += 1
        if not getattr(self.first_done, "value", False):
            self.first_done.value = True
            self.barrier.wait()


def run_together(*calls):
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.exception() or f.result() for f in futures]


def test_two_reservations_reading_the_same_version_both_succeed_after_a_retry(service):
    with LineUpCompareAndSwaps(service.engine, parties=2) as lineup:
        results = run_together(
            lambda: service.reserve(EVENT_ID, "a", 3), lambda: service.reserve(EVENT_ID, "b", 4)
        )
    assert [r.seats for r in results] == [3, 4]
    # Both read version 0: one CAS won, the other matched no row and retried once.
    assert lineup.cas_statements == 3
    summary = service.summary(EVENT_ID)
    assert (summary.event.available_seats, summary.event.version, summary.reservation_count) == (
        493,
        2,
        2,
    )


def test_the_loser_of_the_last_seats_retries_and_then_gets_a_genuine_not_enough_seats(
    service, pg_engine
):
    seed_event(pg_engine, EVENT_ID, "Node.js Meet-up", 5, reset=True)
    with LineUpCompareAndSwaps(service.engine, parties=2):
        results = run_together(
            lambda: service.reserve(EVENT_ID, "a", 4), lambda: service.reserve(EVENT_ID, "b", 4)
        )
    losers = [r for r in results if isinstance(r, NotEnoughSeats)]
    assert len(losers) == 1
    # Decided on a fresh read after the retry: 1 seat left, not the 5 both first saw.
    assert losers[0].available == 1
    assert service.summary(EVENT_ID).event.available_seats == 1


def test_a_cancel_and_a_reservation_on_the_same_version_both_land(service):
    reservation = service.reserve(EVENT_ID, "a", 5)
    with LineUpCompareAndSwaps(service.engine, parties=2) as lineup:
        results = run_together(
            lambda: service.cancel(reservation.reservation_id),
            lambda: service.reserve(EVENT_ID, "b", 2),
        )
    assert results[0] is None and results[1].seats == 2
    assert lineup.cas_statements == 3
    summary = service.summary(EVENT_ID)
    assert (summary.event.available_seats, summary.event.version, summary.reservation_count) == (
        498,
        3,
        1,
    )


def test_two_cancels_of_one_reservation_return_its_seats_once(service):
    reservation = service.reserve(EVENT_ID, "a", 5)
    with LineUpCompareAndSwaps(service.engine, parties=2):
        results = run_together(
            lambda: service.cancel(reservation.reservation_id),
            lambda: service.cancel(reservation.reservation_id),
        )
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "ReservationNotFound"]
    summary = service.summary(EVENT_ID)
    assert (summary.event.available_seats, summary.event.version) == (500, 2)


def test_when_the_retries_run_out_the_conflict_surfaces_and_nothing_is_written(
    service, pg_settings
):
    from dataclasses import replace

    impatient = ReservationService(service.engine, replace(pg_settings, cas_max_attempts=1))
    with LineUpCompareAndSwaps(service.engine, parties=2):
        results = run_together(
            lambda: impatient.reserve(EVENT_ID, "a", 1),
            lambda: impatient.reserve(EVENT_ID, "b", 1),
        )
    assert sum(isinstance(r, VersionConflict) for r in results) == 1
    summary = service.summary(EVENT_ID)
    assert (summary.event.available_seats, summary.event.version, summary.reservation_count) == (
        499,
        1,
        1,
    )


def test_retries_exhausted_over_http_is_a_503_with_retry_after(pg_url):
    from ticketboss import create_app
    from ticketboss.config import Settings

    app = create_app(Settings(database_url=pg_url, cas_max_attempts=1, retry_after_seconds=2))
    engine = app.extensions["ticketboss"].engine
    seed_event(engine, EVENT_ID, "Node.js Meet-up", 500, reset=True)

    def post():
        return app.test_client().post("/api/reservations", json={"partnerId": "p", "seats": 1})

    try:
        with LineUpCompareAndSwaps(engine, parties=2):
            responses = run_together(post, post)
    finally:
        engine.dispose()
    assert sorted(r.status_code for r in responses) == [201, 503]
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["Retry-After"] == "2"
    assert busy.mimetype == "application/problem+json"


@pytest.mark.parametrize("seats", [0, 1])
def test_seed_never_touches_an_existing_event_without_reset(service, pg_engine, seats):
    service.reserve(EVENT_ID, "a", 2)
    message = seed_event(pg_engine, EVENT_ID, "Other", seats, reset=False)
    assert "unchanged" in message
    summary = service.summary(EVENT_ID)
    assert (summary.event.name, summary.event.available_seats, summary.event.version) == (
        "Node.js Meet-up",
        498,
        1,
    )
