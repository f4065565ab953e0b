"""Hypothesis: partners interleave reserves, reads, lists and cancels on real threads over
several workers, aiming at their own, each other's and made-up reservation ids. No partner
ever sees, changes or cancels another's reservation, and the books still balance."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from ticketboss import create_app, services_of
from ticketboss.cli import seed_event
from ticketboss.domain import Role
from ticketboss.services.partners import create_key
from ticketboss.store.tables import reservations

EVENT_ID = "isolation-event"
PATH = f"/api/events/{EVENT_ID}/reservations"


@pytest.fixture(scope="module")
def workers(pg_settings):
    """Three apps on one database stand for three gunicorn workers."""
    apps = [create_app(pg_settings) for _ in range(3)]
    yield apps
    for app in apps:
        services_of(app).engine.dispose()


@pytest.fixture(scope="module")
def partner_keys(workers):
    """Four partners with a key each."""
    engine = services_of(workers[0]).engine
    partners = [f"p{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    return {partner: create_key(engine, partner, Role.PARTNER)[1] for partner in partners}


# What one partner does: reserve n seats; or read / cancel a target; or list. A target is one
# of its own earlier reservations, one another partner made (whatever exists when it runs),
# or an id nobody has.
targets = st.sampled_from(["own", "other", "unknown"])
ops = st.one_of(
    st.tuples(st.just("reserve"), st.integers(1, 10)),
    st.tuples(st.sampled_from(["read", "cancel"]), targets),
    st.tuples(st.just("list"), st.none()),
)
workloads = st.fixed_dictionaries(
    {
        "total_seats": st.integers(0, 60),
        "workers": st.integers(1, 3),
        "partners": st.integers(2, 4),
        "scripts": st.lists(st.lists(ops, min_size=1, max_size=8), min_size=2, max_size=16),
    }
)


@dataclass
class Seen:
    """What one thread (acting as one partner) was answered."""

    partner: str
    created: dict[str, int] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    statuses: Counter = field(default_factory=Counter)
    leaks: list[str] = field(default_factory=list)  # anything of another partner's it got


class Board:
    """Reservation ids made so far, by partner, shared by the threads (as ids leak in life)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_partner: dict[str, list[str]] = {}

    def add(self, partner: str, reservation_id: str) -> None:
        with self.lock:
            self.by_partner.setdefault(partner, []).append(reservation_id)

    def pick(self, partner: str, which: str, index: int) -> str:
        with self.lock:
            if which == "own":
                ids = self.by_partner.get(partner, [])
            else:
                ids = [i for p, got in self.by_partner.items() if p != partner for i in got]
        if which == "unknown" or not ids:
            return str(uuid.uuid4())
        return ids[index % len(ids)]


def act(app, partner, key, script, board: Board, start: threading.Barrier, seen: Seen):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    start.wait()
    for step, (op, arg) in enumerate(script):
        if op == "reserve":
            response = client.post(PATH, json={"seats": arg})
            if response.status_code == 201:
                reservation_id = response.get_json()["reservationId"]
                seen.created[reservation_id] = arg
                board.add(partner, reservation_id)
        elif op == "list":
            response = client.get(f"{PATH}?limit=100")
            items = response.get_json()["items"]
            seen.leaks += [r["reservationId"] for r in items if r["partnerId"] != partner]
        else:
            target = board.pick(partner, arg, step)
            if op == "read":
                response = client.get(f"{PATH}/{target}")
                if response.status_code == 200:
                    if response.get_json()["partnerId"] != partner:
                        seen.leaks.append(target)
            else:
                response = client.delete(f"{PATH}/{target}")
                if response.status_code == 204:
                    seen.cancelled.add(target)
        seen.statuses[(op, response.status_code)] += 1


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(workload=workloads)
def test_no_partner_ever_sees_changes_or_cancels_another_partners_reservation(
    workers, partner_keys, workload
):
    engine = services_of(workers[0]).engine
    seed_event(engine, EVENT_ID, "Isolation", workload["total_seats"], reset=True)
    partners = list(partner_keys.items())[: workload["partners"]]
    apps = workers[: workload["workers"]]
    scripts = workload["scripts"]
    board = Board()
    start = threading.Barrier(len(scripts))
    seen = [Seen(partners[i % len(partners)][0]) for i in range(len(scripts))]
    threads = [
        threading.Thread(
            target=act,
            args=(apps[i % len(apps)], *partners[i % len(partners)], script, board, start, s),
        )
        for i, (script, s) in enumerate(zip(scripts, seen, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)

    statuses = sum((s.statuses for s in seen), Counter())
    assert {status for _, status in statuses} <= {200, 201, 204, 404, 409}, statuses
    assert not [leak for s in seen for leak in s.leaks]

    with engine.connect() as conn:
        rows = {
            str(r.id): r
            for r in conn.execute(select(reservations).where(reservations.c.event_id == EVENT_ID))
        }
    # Every reservation belongs to the partner whose key made it, and only its owner's
    # threads ever cancelled it (each cancellation answered 204 exactly once).
    for s in seen:
        assert all(rows[r].partner_id == s.partner for r in s.created)
        assert all(rows[r].partner_id == s.partner for r in s.cancelled)
    cancels = Counter(r for s in seen for r in s.cancelled)
    assert all(n == 1 for n in cancels.values())
    assert {r for r, row in rows.items() if row.status == "cancelled"} == set(cancels)
    assert set(rows) == {r for s in seen for r in s.created}

    # The books balance.
    summary = services_of(workers[0]).reservations.summary(EVENT_ID)
    confirmed = [row.seats for row in rows.values() if row.status == "confirmed"]
    assert summary.available_seats + sum(confirmed) == workload["total_seats"]
    assert summary.reservation_count == len(confirmed)
    assert summary.version == len(rows) + len(cancels)
