"""Hypothesis draws concurrent workloads and runs them on real threads against PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import select

from support.api import as_operator
from ticketboss import create_app, services_of
from ticketboss.cli import seed_event
from ticketboss.store.tables import idempotency_keys, reservations

EVENT_ID = "node-meetup-2025"


@dataclass
class Outcome:
    """What one client thread saw."""

    created: dict[str, int] = field(default_factory=dict)  # reservationId -> seats
    cancelled: set[str] = field(default_factory=set)
    refused: list[int] = field(default_factory=list)  # seats asked for by each 409
    statuses: Counter = field(default_factory=Counter)


@pytest.fixture(scope="module")
def pg_apps(pg_settings):
    """Three apps on one database stand for three gunicorn workers: each group-commits its
    own requests, and their batches race each other through the compare-and-swap."""
    apps = [as_operator(create_app(pg_settings)) for _ in range(3)]
    yield apps
    for app in apps:
        services_of(app).engine.dispose()


@pytest.fixture(scope="module")
def pg_app(pg_apps):
    return pg_apps[0]


# A client's script: ("reserve", seats) or ("cancel", index of one of its own earlier 201s).
ops = st.one_of(
    st.tuples(st.just("reserve"), st.integers(1, 10)),
    st.tuples(st.just("cancel"), st.integers(0, 5)),
)
workloads = st.fixed_dictionaries(
    {
        "total_seats": st.integers(0, 120),
        "workers": st.integers(1, 3),
        "clients": st.lists(st.lists(ops, min_size=1, max_size=8), min_size=2, max_size=32),
    }
)


def run_client(app, script, start: threading.Barrier, outcome: Outcome):
    client = app.test_client()
    mine: list[str] = []
    start.wait()
    for op, arg in script:
        if op == "reserve":
            response = client.post("/api/reservations", json={"partnerId": "p", "seats": arg})
            outcome.statuses[response.status_code] += 1
            if response.status_code == 201:
                mine.append(response.get_json()["reservationId"])
                outcome.created[mine[-1]] = arg
            elif response.status_code == 409:
                outcome.refused.append(arg)
        elif mine:
            reservation_id = mine.pop(arg % len(mine))
            response = client.delete(f"/api/reservations/{reservation_id}")
            outcome.statuses[response.status_code] += 1
            if response.status_code == 204:
                outcome.cancelled.add(reservation_id)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(workload=workloads)
def test_concurrent_reserves_and_cancels_never_oversell_nor_lose_a_201(pg_apps, workload):
    pg_app = pg_apps[0]
    workers = pg_apps[: workload["workers"]]
    engine = services_of(pg_app).engine
    total = workload["total_seats"]
    seed_event(engine, EVENT_ID, "Node.js Meet-up", total, reset=True)
    scripts = workload["clients"]
    outcomes = [Outcome() for _ in scripts]
    start = threading.Barrier(len(scripts))
    threads = [
        threading.Thread(target=run_client, args=(workers[i % len(workers)], script, start, out))
        for i, (script, out) in enumerate(zip(scripts, outcomes, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)

    statuses = sum((o.statuses for o in outcomes), Counter())
    created = {k: v for o in outcomes for k, v in o.created.items()}
    cancelled = set().union(*(o.cancelled for o in outcomes))
    # Only the contract's answers; contention is retried, never a 5xx.
    assert set(statuses) <= {201, 204, 409}, statuses

    with engine.connect() as conn:
        rows = {
            str(r.id): r
            for r in conn.execute(select(reservations).where(reservations.c.event_id == EVENT_ID))
        }
    summary = pg_app.test_client().get("/api/reservations").get_json()

    # Every 201 is persisted, with its seats, and nothing else was written.
    assert set(rows) == set(created)
    assert all(rows[k].seats == seats for k, seats in created.items())
    assert {k for k, r in rows.items() if r.status == "cancelled"} == cancelled
    confirmed = [r.seats for k, r in rows.items() if r.status == "confirmed"]

    # Never oversold; the books balance; one version per committed change.
    assert summary["availableSeats"] >= 0
    assert summary["availableSeats"] + sum(confirmed) == total
    assert summary["reservationCount"] == len(confirmed)
    assert summary["version"] == len(created) + len(cancelled)

    # Without cancels seats only ever go down, so a genuine 409 must still be unservable now.
    if all(op == "reserve" for script in scripts for op, _ in script):
        refused = [seats for o in outcomes for seats in o.refused]
        assert all(summary["availableSeats"] < seats for seats in refused)


def test_a_burst_bigger_than_the_event_sells_exactly_the_seats(pg_app):
    service = services_of(pg_app).reservations
    seed_event(service.engine, EVENT_ID, "Node.js Meet-up", 100, reset=True)
    batches_before = REGISTRY.get_sample_value("ticketboss_cas_commits_total")
    outcomes = [Outcome() for _ in range(32)]
    start = threading.Barrier(32)
    threads = [
        threading.Thread(target=run_client, args=(pg_app, [("reserve", 1)] * 5, start, o))
        for o in outcomes
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    statuses = sum((o.statuses for o in outcomes), Counter())
    assert statuses == Counter({201: 100, 409: 60})
    summary = pg_app.test_client().get("/api/reservations").get_json()
    assert (summary["availableSeats"], summary["reservationCount"], summary["version"]) == (
        0,
        100,
        100,
    )
    assert len({uuid.UUID(k) for o in outcomes for k in o.created}) == 100
    # The burst was group-committed: fewer transactions than reservations.
    assert REGISTRY.get_sample_value("ticketboss_cas_commits_total") - batches_before < 100


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    threads=st.integers(2, 24),
    workers=st.integers(1, 3),
    seats=st.integers(1, 10),
    key=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=40),
)
def test_concurrent_duplicates_of_one_idempotency_key_book_exactly_once(
    pg_apps, threads, workers, seats, key
):
    engine = services_of(pg_apps[0]).engine
    seed_event(engine, EVENT_ID, "Node.js Meet-up", 100, reset=True)
    with engine.begin() as conn:
        conn.execute(idempotency_keys.delete())
    start = threading.Barrier(threads)
    answers = []

    def duplicate(app):
        client = app.test_client()
        start.wait()
        response = client.post(
            "/api/reservations",
            json={"partnerId": "p", "seats": seats},
            headers={"Idempotency-Key": key},
        )
        answers.append((response.status_code, response.get_json()))

    pool = [
        threading.Thread(target=duplicate, args=(pg_apps[i % workers],)) for i in range(threads)
    ]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=60)

    created = {body["reservationId"] for status, body in answers if status == 201}
    others = {(status, body["type"]) for status, body in answers if status != 201}
    # Only the first answer, or "still in flight, retry later".
    assert others <= {(409, "/problems/idempotency-key-in-flight")}
    assert len(created) == 1
    with engine.connect() as conn:
        rows = conn.execute(
            select(reservations.c.id).where(reservations.c.event_id == EVENT_ID)
        ).all()
    assert [str(row.id) for row in rows] == list(created)
    summary = pg_apps[0].test_client().get("/api/reservations").get_json()
    assert (summary["availableSeats"], summary["version"]) == (100 - seats, 1)
