"""Two transactions lined up on a Barrier so both provably read the same version.

Within one process concurrent reservations share a group commit and never race; two
services on one engine stand for two gunicorn worker processes, whose transactions do.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import OperationalError

from support.api import as_operator
from ticketboss import services_of
from ticketboss.cli import seed_event
from ticketboss.domain import (
    EVERY_PARTNER,
    HoldExpired,
    NotEnoughSeats,
    Reservation,
    VersionConflict,
)
from ticketboss.services import CancelRequest, ReservationService, SeatRequest
from ticketboss.services.reservations import Submitted
from ticketboss.store import queries
from ticketboss.store.tables import reservations

EVENT_ID = "node-meetup-2025"


class LineUpCompareAndSwaps:
    """Holds each thread's first CAS UPDATE until every thread has read the event."""

    def __init__(self, *engines, parties: int):
        self.engines = engines
        self.barrier = threading.Barrier(parties, timeout=10)
        self.first_done = threading.local()
        self.cas_statements = 0
        self.lock = threading.Lock()

    def __enter__(self):
        for engine in self.engines:
            event.listen(engine, "before_cursor_execute", self.before_execute)
        return self

    def __exit__(self, *exc):
        for engine in self.engines:
            event.remove(engine, "before_cursor_execute", self.before_execute)

    def before_execute(self, conn, cursor, statement, parameters, context, executemany):
        if not statement.lstrip().upper().startswith("UPDATE EVENTS"):
            return
        with self.lock:
            self.cas_statements += 1
        if not getattr(self.first_done, "value", False):
            self.first_done.value = True
            self.barrier.wait()


@pytest.fixture
def other_worker(service):
    """A second service on the same database: another worker process's group commit."""
    return ReservationService(service.engine, service.settings)


def run_together(*calls):
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.exception() or f.result() for f in futures]


def test_two_reservations_reading_the_same_version_both_succeed_after_a_retry(
    service, other_worker
):
    with LineUpCompareAndSwaps(service.engine, parties=2) as lineup:
        results = run_together(
            lambda: service.reserve(EVENT_ID, "a", 3),
            lambda: other_worker.reserve(EVENT_ID, "b", 4),
        )
    assert [r.seats for r in results] == [3, 4]
    # Both read version 0: one CAS won, the other matched no row and retried once.
    assert lineup.cas_statements == 3
    summary = service.summary(EVENT_ID)
    assert (summary.available_seats, summary.version, summary.reservation_count) == (
        493,
        2,
        2,
    )


def test_the_loser_of_the_last_seats_retries_and_then_gets_a_genuine_not_enough_seats(
    service, other_worker, pg_engine
):
    seed_event(pg_engine, EVENT_ID, "Node.js Meet-up", 5, reset=True)
    with LineUpCompareAndSwaps(service.engine, parties=2):
        results = run_together(
            lambda: service.reserve(EVENT_ID, "a", 4),
            lambda: other_worker.reserve(EVENT_ID, "b", 4),
        )
    losers = [r for r in results if isinstance(r, NotEnoughSeats)]
    assert len(losers) == 1
    # Decided on a fresh read after the retry: 1 seat left, not the 5 both first saw.
    assert losers[0].available == 1
    assert service.summary(EVENT_ID).available_seats == 1


def test_a_cancel_and_a_reservation_on_the_same_version_both_land(service, other_worker):
    reservation = service.reserve(EVENT_ID, "a", 5)
    with LineUpCompareAndSwaps(service.engine, parties=2) as lineup:
        results = run_together(
            lambda: service.cancel(EVENT_ID, reservation.reservation_id, owner=EVERY_PARTNER),
            lambda: other_worker.reserve(EVENT_ID, "b", 2),
        )
    assert results[0] is None and results[1].seats == 2
    assert lineup.cas_statements == 3
    summary = service.summary(EVENT_ID)
    assert (summary.available_seats, summary.version, summary.reservation_count) == (
        498,
        3,
        1,
    )


def test_two_cancels_of_one_reservation_return_its_seats_once(service, other_worker):
    reservation = service.reserve(EVENT_ID, "a", 5)
    with LineUpCompareAndSwaps(service.engine, parties=2):
        results = run_together(
            lambda: service.cancel(EVENT_ID, reservation.reservation_id, owner=EVERY_PARTNER),
            lambda: other_worker.cancel(EVENT_ID, reservation.reservation_id, owner=EVERY_PARTNER),
        )
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "ReservationNotFound"]
    summary = service.summary(EVENT_ID)
    assert (summary.available_seats, summary.version) == (500, 2)


def test_when_the_retries_run_out_the_conflict_surfaces_and_nothing_is_written(
    service, pg_settings
):
    from dataclasses import replace

    impatient = replace(pg_settings, cas_max_attempts=1, cas_swaps_per_transaction=1)
    worker_a = ReservationService(service.engine, impatient)
    worker_b = ReservationService(service.engine, impatient)
    with LineUpCompareAndSwaps(service.engine, parties=2):
        results = run_together(
            lambda: worker_a.reserve(EVENT_ID, "a", 1),
            lambda: worker_b.reserve(EVENT_ID, "b", 1),
        )
    assert sum(isinstance(r, VersionConflict) for r in results) == 1
    with service.engine.connect() as conn:
        rows = (
            conn.execute(
                select(reservations.c.partner_id).where(reservations.c.event_id == EVENT_ID)
            )
            .scalars()
            .all()
        )
    assert len(rows) == 1  # the loser wrote nothing
    summary = service.summary(EVENT_ID)
    assert (summary.available_seats, summary.version, summary.reservation_count) == (
        499,
        1,
        1,
    )


def test_retries_exhausted_over_http_is_a_503_with_retry_after(pg_url):
    from ticketboss import create_app, services_of
    from ticketboss.config import Settings

    # Two apps stand for two gunicorn workers.
    settings = Settings(
        database_url=pg_url, cas_max_attempts=1, cas_swaps_per_transaction=1, retry_after_seconds=2
    )
    apps = [as_operator(create_app(settings)), as_operator(create_app(settings))]
    engines = [services_of(app).engine for app in apps]
    seed_event(engines[0], EVENT_ID, "Node.js Meet-up", 500, reset=True)

    def post(app):
        return app.test_client().post("/api/reservations", json={"partnerId": "p", "seats": 1})

    try:
        with LineUpCompareAndSwaps(*engines, parties=2):
            responses = run_together(lambda: post(apps[0]), lambda: post(apps[1]))
    finally:
        for engine in engines:
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
    assert (summary.name, summary.available_seats, summary.version) == (
        "Node.js Meet-up",
        498,
        1,
    )


def test_a_batch_that_loses_the_cas_retries_whole_and_what_fits_is_served_in_order(
    service, other_worker, pg_engine
):
    seed_event(pg_engine, EVENT_ID, "Node.js Meet-up", 10, reset=True)
    batch_a = [SeatRequest("a", 4), SeatRequest("a", 4), SeatRequest("a", 3)]
    batch_b = [SeatRequest("b", 5)]
    with LineUpCompareAndSwaps(service.engine, parties=2) as lineup:
        got_a, got_b = run_together(
            lambda: service.commit_batch(EVENT_ID, batch_a),
            lambda: other_worker.commit_batch(EVENT_ID, batch_b),
        )
    served = lambda outcomes: [isinstance(o, Reservation) for o in outcomes]  # noqa: E731
    # Both read 10 seats; the loser re-ran its whole batch on a fresh read, so the result is
    # one of the two serial orders, never a mix of stale decisions.
    a_first = (served(got_a), served(got_b)) == ([True, True, False], [False])
    b_first = (served(got_a), served(got_b)) == ([True, False, False], [True])
    assert a_first or b_first
    assert lineup.cas_statements >= 2
    granted = [o for o in got_a + got_b if isinstance(o, Reservation)]
    summary = service.summary(EVENT_ID)
    assert summary.available_seats == 10 - sum(r.seats for r in granted)
    assert summary.version == len(granted) == summary.reservation_count


def test_one_batch_applies_reserves_and_cancels_in_arrival_order(service, pg_engine):
    seed_event(pg_engine, EVENT_ID, "Node.js Meet-up", 6, reset=True)
    first = service.reserve(EVENT_ID, "a", 6)
    outcomes = service.commit_batch(
        EVENT_ID,
        [
            SeatRequest("b", 2),  # nothing left yet: refused
            CancelRequest(first.reservation_id, EVERY_PARTNER),  # 6 seats back
            SeatRequest("c", 4),  # fits now
            CancelRequest(
                first.reservation_id, EVERY_PARTNER
            ),  # already cancelled in this very batch
            SeatRequest("d", 3),  # 2 left: refused
        ],
    )
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds == [
        "NotEnoughSeats",
        "NoneType",
        "Reservation",
        "ReservationNotFound",
        "NotEnoughSeats",
    ]
    summary = service.summary(EVENT_ID)
    # One batch, two changes: the version rises by exactly two.
    assert (summary.available_seats, summary.reservation_count, summary.version) == (2, 1, 3)
    assert (
        service.get(EVENT_ID, first.reservation_id, owner=EVERY_PARTNER).status.value == "cancelled"
    )


def test_a_connection_lost_at_commit_is_a_503_and_never_retried(pg_url, pg_engine):
    """If COMMIT fails, the changes may have landed: retrying could book the seats twice."""
    from sqlalchemy.exc import OperationalError

    from ticketboss import create_app
    from ticketboss.config import Settings

    app = as_operator(create_app(Settings(database_url=pg_url)))
    engine = services_of(app).engine
    seed_event(engine, EVENT_ID, "Node.js Meet-up", 500, reset=True)
    client = app.test_client()
    client.get("/api/reservations")  # the worker now knows the key: no commit to look it up
    commits = []

    def lose_the_connection(conn):
        commits.append(conn)
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    event.listen(engine, "commit", lose_the_connection)
    try:
        response = client.post("/api/reservations", json={"partnerId": "p", "seats": 2})
    finally:
        event.remove(engine, "commit", lose_the_connection)
        engine.dispose()
    assert response.status_code == 503 and "Retry-After" in response.headers
    assert response.get_json()["type"] == "/problems/outcome-unknown"
    assert len(commits) == 1  # one attempt, no retry
    with pg_engine.connect() as conn:
        assert queries.load_event(conn, EVENT_ID).version == 0


def test_a_batch_whose_idempotency_claim_was_taken_over_answers_in_flight_and_the_rest_commit(
    service,
):
    from sqlalchemy import update

    from ticketboss.domain import IdempotencyKeyInFlight
    from ticketboss.services import IdempotencyKey, idempotency
    from ticketboss.store.tables import idempotency_keys

    key = IdempotencyKey.of("partner:a", "k-lost", {"seats": 1})
    held = idempotency.claim(service.engine, service.settings, key)
    with service.engine.begin() as conn:  # its lease lapsed and a retry took the key over
        conn.execute(update(idempotency_keys).values(owner=uuid.uuid4()))
    outcomes = service.commit_batch(
        EVENT_ID, [Submitted(SeatRequest("a", 1), held), SeatRequest("b", 2), SeatRequest("c", 3)]
    )
    assert isinstance(outcomes[0], IdempotencyKeyInFlight)
    assert [o.seats for o in outcomes[1:]] == [2, 3]
    summary = service.summary(EVENT_ID)
    assert (summary.available_seats, summary.reservation_count, summary.version) == (495, 2, 2)


def test_a_claim_lost_on_the_last_allowed_attempt_still_answers_in_flight_and_the_rest_commit(
    service,
):
    """A lost claim shrinks the batch and tries again at once, whatever is left of the retry
    policy (here: no attempt left at all)."""
    from sqlalchemy import update

    from ticketboss.domain import IdempotencyKeyInFlight
    from ticketboss.services import IdempotencyKey, idempotency
    from ticketboss.store.tables import idempotency_keys

    strict = ReservationService(service.engine, replace(service.settings, cas_max_attempts=1))
    key = IdempotencyKey.of("partner:a", f"k-{uuid.uuid4().hex}", {"seats": 1})
    held = idempotency.claim(service.engine, service.settings, key)
    with service.engine.begin() as conn:  # its lease lapsed and a retry took the key over
        conn.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.key == key.key)
            .values(owner=uuid.uuid4())
        )
    outcomes = strict.commit_batch(
        EVENT_ID, [Submitted(SeatRequest("a", 1), held), SeatRequest("b", 2)]
    )
    assert isinstance(outcomes[0], IdempotencyKeyInFlight)
    assert outcomes[1].seats == 2


def test_a_sweep_leading_a_batch_keeps_the_requests_in_it_within_a_deadline(service):
    """The sweep has no request of its own, but a batch it leads may carry requests: it runs
    on a request's time (REQUEST_DEADLINE_SECONDS), so a row lock held past that fails the
    batch, nothing written, instead of a statement timeout's worth later."""
    quick = ReservationService(
        service.engine, replace(service.settings, request_deadline_seconds=0.5)
    )
    quick.hold(EVENT_ID, "a", 1, ttl_seconds=1)
    time.sleep(1.2)  # the hold lapsed: the sweep has work
    locker = service.engine.connect()
    locker.execute(text("SELECT 1 FROM events WHERE event_id = :e FOR UPDATE"), {"e": EVENT_ID})
    began = time.monotonic()
    try:
        with pytest.raises(OperationalError):  # the statement timeout the deadline set
            quick.sweep()
    finally:
        took = time.monotonic() - began
        locker.rollback()
        locker.close()
    assert took < 2.0  # not DB_STATEMENT_TIMEOUT_MS (5 s)
    assert quick.sweep() == 1  # once the lock is gone, the next sweep does it


def test_reservations_are_stamped_in_commit_order_so_pages_never_skip_one(service, other_worker):
    """A batch that started first but committed second must not get the older created_at."""
    a_paused, b_committed = threading.Event(), threading.Event()
    paused = threading.local()

    def pause_a_before_its_read(conn, cursor, statement, parameters, context, executemany):
        if getattr(paused, "here", False) and statement.lstrip().upper().startswith("SELECT"):
            paused.here = False
            a_paused.set()
            assert b_committed.wait(10)

    def worker_a():
        paused.here = True
        return service.reserve(EVENT_ID, "a", 1)

    def worker_b():
        try:
            return other_worker.reserve(EVENT_ID, "b", 1)
        finally:
            b_committed.set()

    event.listen(service.engine, "before_cursor_execute", pause_a_before_its_read)
    try:
        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(worker_a)
            assert a_paused.wait(10)  # A's batch has begun; B commits before A reads
            b = pool.submit(worker_b)
            first_committed, last_committed = b.result(10), a.result(10)
    finally:
        event.remove(service.engine, "before_cursor_execute", pause_a_before_its_read)
    assert last_committed.created_at > first_committed.created_at


def test_a_release_whose_rows_were_read_after_a_confirm_committed_retries_and_cancels(
    service, other_worker
):
    """Each statement of a batch's read sees its own moment (READ COMMITTED): a batch that read
    the event before a confirm committed, and the hold after, must not plan on the mix."""
    held = service.hold(EVENT_ID, "a", 2, 60)
    a_paused, b_committed = threading.Event(), threading.Event()
    paused = threading.local()

    def pause_a_before_it_reads_the_hold(conn, cursor, statement, *_):
        if getattr(paused, "here", False) and "FROM reservations" in statement:
            paused.here = False
            a_paused.set()
            assert b_committed.wait(10)

    def worker_a():
        paused.here = True
        return service.cancel(EVENT_ID, held.reservation_id, owner=EVERY_PARTNER)

    event.listen(service.engine, "before_cursor_execute", pause_a_before_it_reads_the_hold)
    try:
        with ThreadPoolExecutor(1) as pool:
            a = pool.submit(worker_a)
            assert a_paused.wait(10)  # A has read the event with the hold still held
            other_worker.confirm(EVENT_ID, held.reservation_id, owner=EVERY_PARTNER)
            b_committed.set()
            assert a.result(10) is None  # cancelled, as a confirmed reservation now
    finally:
        event.remove(service.engine, "before_cursor_execute", pause_a_before_it_reads_the_hold)
    summary = service.summary(EVENT_ID)
    assert (summary.available_seats, summary.held_seats, summary.reservation_count) == (500, 0, 0)
    assert (
        service.get(EVENT_ID, held.reservation_id, owner=EVERY_PARTNER).status.value == "cancelled"
    )


def test_a_confirm_that_reaches_its_write_after_the_hold_lapsed_is_refused(service):
    """Judged alive when the batch read it, the hold lapses while the batch waits to write:
    the write does not resurrect it; the batch re-runs and answers hold-expired."""
    held = service.hold(EVENT_ID, "a", 2, 1)
    waited = threading.local()

    def wait_past_the_expiry(conn, cursor, statement, *_):
        if not getattr(waited, "once", False) and statement.lstrip().startswith(
            "UPDATE reservations"
        ):
            waited.once = True
            threading.Event().wait(1.2)

    event.listen(service.engine, "before_cursor_execute", wait_past_the_expiry)
    try:
        with pytest.raises(HoldExpired):
            service.confirm(EVENT_ID, held.reservation_id, owner=EVERY_PARTNER)
    finally:
        event.remove(service.engine, "before_cursor_execute", wait_past_the_expiry)
    assert service.get(EVENT_ID, held.reservation_id, owner=EVERY_PARTNER).status.value == "expired"
    assert service.summary(EVENT_ID).reservation_count == 0


def test_a_swap_lost_to_a_batch_that_just_committed_is_tried_again_in_the_same_transaction(
    service, pg_settings
):
    from dataclasses import replace

    once = replace(pg_settings, cas_max_attempts=1)  # no second transaction: only re-swaps
    worker_a, worker_b = (
        ReservationService(service.engine, once),
        ReservationService(service.engine, once),
    )
    with LineUpCompareAndSwaps(service.engine, parties=2) as lineup:
        results = run_together(
            lambda: worker_a.reserve(EVENT_ID, "a", 1),
            lambda: worker_b.reserve(EVENT_ID, "b", 1),
        )
    assert all(isinstance(r, Reservation) for r in results), results
    assert lineup.cas_statements == 3  # the loser swapped twice, in one transaction
    summary = service.summary(EVENT_ID)
    assert (summary.available_seats, summary.version) == (498, 2)
