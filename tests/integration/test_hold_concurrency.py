"""Hypothesis draws concurrent workloads of holds, confirms, releases, reserves and clock
jumps, and runs them on real threads over three apps (three workers) on one small event."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from support.api import as_operator
from support.clock import JumpingClock
from ticketboss import create_app, services_of
from ticketboss.cli import seed_event
from ticketboss.store.queries import read_database_now
from ticketboss.store.tables import reservations

EVENT = "hold-race"
PATH = f"/api/events/{EVENT}"


@dataclass
class Seen:
    """What one client thread was answered."""

    created: dict[str, int] = field(default_factory=dict)  # 201s: id -> seats
    holds: set[str] = field(default_factory=set)  # the 201s that were holds
    confirmed: set[str] = field(default_factory=set)  # holds confirmed (200)
    released: set[str] = field(default_factory=set)  # 204s
    refused: list[int] = field(default_factory=list)  # seats asked by not-enough-seats 409s
    expired: set[str] = field(default_factory=set)  # ids answered hold-expired
    statuses: Counter = field(default_factory=Counter)


@pytest.fixture(scope="module")
def clock():
    return JumpingClock()


@pytest.fixture(scope="module")
def apps(pg_settings, clock):
    """Three apps sharing one clock, as three workers share the database's."""
    made = [as_operator(create_app(pg_settings, clock=clock)) for _ in range(3)]
    yield made
    for app in made:
        services_of(app).engine.dispose()


ops = st.one_of(
    st.tuples(st.just("reserve"), st.integers(1, 6)),
    st.tuples(st.just("hold"), st.integers(1, 6), st.sampled_from([30, 60])),
    st.tuples(st.just("confirm"), st.integers(0, 5)),
    st.tuples(st.just("release"), st.integers(0, 5)),
    st.tuples(st.just("jump"), st.sampled_from([20, 40])),
)
workloads = st.fixed_dictionaries(
    {
        "total_seats": st.integers(0, 30),
        "clients": st.lists(st.lists(ops, min_size=1, max_size=8), min_size=2, max_size=16),
    }
)


def run_client(app, clock, script, start: threading.Barrier, seen: Seen):
    client = app.test_client()
    mine: list[str] = []  # this client's reservations and holds, not yet released
    start.wait()
    for op, *args in script:
        if op == "jump":
            clock.jump(args[0])
            continue
        if op in ("reserve", "hold"):
            body = {"partnerId": "p", "seats": args[0]}
            if op == "hold":
                body["ttlSeconds"] = args[1]
            response = client.post(
                f"{PATH}/{'holds' if op == 'hold' else 'reservations'}", json=body
            )
            seen.statuses[response.status_code] += 1
            if response.status_code == 201:
                mine.append(response.get_json()["reservationId"])
                seen.created[mine[-1]] = args[0]
                if op == "hold":
                    seen.holds.add(mine[-1])
            elif response.status_code == 409:
                seen.refused.append(args[0])
            continue
        if not mine:
            continue
        reservation_id = mine[args[0] % len(mine)]
        item = f"{PATH}/reservations/{reservation_id}"
        response = client.post(f"{item}/confirm") if op == "confirm" else client.delete(item)
        seen.statuses[response.status_code] += 1
        if response.status_code == 409:
            assert response.get_json()["type"] == "/problems/hold-expired", response.get_json()
            seen.expired.add(reservation_id)
            mine.remove(reservation_id)
        elif response.status_code == 204:
            seen.released.add(reservation_id)
            mine.remove(reservation_id)
        elif response.status_code == 200 and reservation_id in seen.holds:
            seen.confirmed.add(reservation_id)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(workload=workloads)
def test_concurrent_holds_confirms_releases_and_jumps_never_oversell_nor_lose_an_answer(
    apps, clock, workload
):
    engine = services_of(apps[0]).engine
    total = workload["total_seats"]
    seed_event(engine, EVENT, "Hold race", total, reset=True)
    clock.skew = timedelta(0)
    scripts = workload["clients"]
    seen = [Seen() for _ in scripts]
    start = threading.Barrier(len(scripts))
    threads = [
        threading.Thread(target=run_client, args=(apps[i % 3], clock, script, start, out))
        for i, (script, out) in enumerate(zip(scripts, seen, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)

    statuses = sum((s.statuses for s in seen), Counter())
    assert set(statuses) <= {200, 201, 204, 409}, statuses  # contention is never a 5xx
    created = {k: v for s in seen for k, v in s.created.items()}
    holds = set().union(*(s.holds for s in seen))
    confirmed = set().union(*(s.confirmed for s in seen))
    released = set().union(*(s.released for s in seen))
    expired = set().union(*(s.expired for s in seen))

    summary = apps[1].test_client().get(PATH).get_json()  # reclaims what lapsed since
    with engine.connect() as conn:
        rows = {
            str(r.id): r
            for r in conn.execute(select(reservations).where(reservations.c.event_id == EVENT))
        }
        now = clock.now(read_database_now(conn))

    # Every 201 is persisted with its seats, and nothing else was written.
    assert set(rows) == set(created)
    assert all(rows[k].seats == seats for k, seats in created.items())
    status = {k: r.status for k, r in rows.items()}
    # Every answer stands: a 204 cancelled it, a 200 confirmed it (unless its own client
    # released it afterwards), a hold-expired 409 means it lapsed and was never confirmed.
    assert {k for k, s in status.items() if s == "cancelled"} == released
    assert all(status[k] == "confirmed" for k in confirmed - released)
    assert all(status[k] == "expired" for k in expired)
    assert not expired & confirmed
    never_settled = holds - confirmed - released
    assert all(status[k] in ("held", "expired") for k in never_settled)
    assert all(status[k] in ("confirmed", "cancelled") for k in set(created) - holds)
    # What is still held is alive, by the one clock.
    assert all(rows[k].expires_at > now for k, s in status.items() if s == "held")

    # Never oversold, counting live holds; the books balance; one version per change.
    held = sum(rows[k].seats for k, s in status.items() if s == "held")
    taken = sum(rows[k].seats for k, s in status.items() if s == "confirmed")
    assert summary["availableSeats"] >= 0
    assert (summary["heldSeats"], summary["reservationCount"]) == (
        held,
        sum(s == "confirmed" for s in status.values()),
    )
    assert summary["availableSeats"] + held + taken == total
    changes = sum(1 + (s in ("cancelled", "expired")) + (k in confirmed) for k, s in status.items())
    assert summary["version"] == changes

    # Without releases or jumps, seats only ever go down: a 409 must still be unservable.
    if all(op[0] not in ("release", "jump") for script in scripts for op in script):
        assert all(summary["availableSeats"] < seats for s in seen for seats in s.refused)
