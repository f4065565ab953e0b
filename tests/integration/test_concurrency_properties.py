"""Hypothesis draws concurrent workloads and runs them on real threads against PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from sqlalchemy import select

from support.api import as_operator
from support.clock import JumpingClock
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


# The apps' PARTNER_MAX_HELD_SEATS: low enough for the allocation property's draws to reach
# it (the other tests here hold nothing).
HELD_LIMIT = 20


@pytest.fixture(scope="module")
def clock():
    """The apps' clock: the database's, which the allocation property jumps past expiries."""
    return JumpingClock()


@pytest.fixture(scope="module")
def pg_apps(pg_settings, clock):
    """Three apps on one database stand for three gunicorn workers: each group-commits its
    own requests, and their batches race each other through the compare-and-swap."""
    settings = replace(pg_settings, partner_max_held_seats=HELD_LIMIT)
    apps = [as_operator(create_app(settings, clock=clock)) for _ in range(3)]
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


# Allocations ---------------------------------------------------------------------------------

ALLOCATED = "allocation-race"
ALLOCATED_PATH = f"/api/events/{ALLOCATED}"
PARTNERS = ("p0", "p1", "p2", "p3", "p4")
SHORT_TTL, LONG_TTL, JUMP = 30, 600, 60  # a jump lapses the short holds alive before it
# Seconds of leeway between the database's clock and the threads' (one host: the same time).
SLACK = 1.0
BUCKETS = {(False, False): "pool", (True, False): "allocation", (True, True): "allocation+pool"}


@dataclass(frozen=True)
class Span:
    """A request as its client timed it: sent and answered (time.monotonic()), and the
    clock's skew in seconds just before it was sent and just after it was answered."""

    sent: float
    answered: float
    skew_sent: float
    skew_answered: float


@dataclass
class Hold:
    """A granted hold; `ended`: the confirm or release after which it is held no more (also
    when that was answered hold-expired)."""

    partner: str
    seats: int
    ttl: int
    span: Span
    ended: Span | None = None

    def surely_counts_at(self, other: Span) -> bool:
        """Held (committed, not ended, not lapsed) through the whole of the other request."""
        return (
            self.span.answered < other.sent
            and (self.ended is None or self.ended.sent > other.answered)
            and other.skew_answered
            - self.span.skew_sent
            + (other.answered - self.span.sent)
            + SLACK
            < self.ttl
        )

    def may_count_at(self, other: Span) -> bool:
        """Perhaps held at some point of the other request."""
        return (
            self.span.sent < other.answered
            and (self.ended is None or self.ended.answered > other.sent)
            and other.skew_sent - self.span.skew_answered - SLACK < self.ttl
        )


@dataclass(frozen=True)
class Refusal:
    """A 409 to a reserve or hold: who asked, how many seats, what the problem said, when."""

    partner: str
    seats: int
    body: dict
    span: Span


@dataclass
class Seen:
    """What one client thread was answered."""

    created: dict[str, int] = field(default_factory=dict)  # 201s: id -> seats
    holds: dict[str, Hold] = field(default_factory=dict)  # the 201s that were holds
    confirmed: set[str] = field(default_factory=set)  # holds confirmed (200)
    released: set[str] = field(default_factory=set)  # 204s
    expired: set[str] = field(default_factory=set)  # ids answered hold-expired
    refused: list[Refusal] = field(default_factory=list)
    unexpected: list[tuple[int, object]] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)


allocations = st.none() | st.fixed_dictionaries(
    {
        "seats": st.integers(0, 30),
        "overflow": st.booleans(),
        "maxHeldSeats": st.none() | st.integers(1, 25),
    }
)
# Seats only go down: no cancel, release or jump (confirming keeps the seats taken).
down_ops = st.one_of(
    st.tuples(st.just("reserve"), st.integers(1, 10)),
    st.tuples(st.just("hold"), st.integers(1, 10), st.sampled_from([SHORT_TTL, LONG_TTL])),
    st.tuples(st.just("confirm"), st.integers(0, 5)),
)
any_ops = down_ops | st.tuples(st.just("cancel"), st.integers(0, 5)) | st.tuples(st.just("jump"))
allocation_workloads = st.booleans().flatmap(
    lambda only_down: st.fixed_dictionaries(
        {
            "total_seats": st.integers(0, 100),
            "partners": st.lists(allocations, min_size=2, max_size=5),
            # (the partner it reserves for, by index, and its script)
            "clients": st.lists(
                st.tuples(
                    st.integers(0, 4),
                    st.lists(down_ops if only_down else any_ops, min_size=1, max_size=8),
                ),
                min_size=2,
                max_size=16,
            ),
        }
    )
)


def timed(clock: JumpingClock, send, *args, **kwargs) -> tuple:
    """The answer of `send(*args, **kwargs)`, and its Span."""
    skew_sent, sent = clock.skew.total_seconds(), time.monotonic()
    response = send(*args, **kwargs)
    answered = time.monotonic()
    return response, Span(sent, answered, skew_sent, clock.skew.total_seconds())


def run_partner(app, clock, partner, script, start: threading.Barrier, seen: Seen):
    client = app.test_client()
    mine: list[str] = []  # its reservations and holds not cancelled, released or lapsed
    start.wait()
    for op, *args in script:
        if op == "jump":
            clock.jump(JUMP)
            continue
        if op in ("reserve", "hold"):
            body = {"partnerId": partner, "seats": args[0]}
            if op == "hold":
                body["ttlSeconds"] = args[1]
            path = f"{ALLOCATED_PATH}/{'holds' if op == 'hold' else 'reservations'}"
            response, span = timed(clock, client.post, path, json=body)
            seen.statuses[response.status_code] += 1
            answer = response.get_json()
            if response.status_code == 201:
                mine.append(answer["reservationId"])
                seen.created[mine[-1]] = args[0]
                if op == "hold":
                    seen.holds[mine[-1]] = Hold(partner, args[0], args[1], span)
            elif response.status_code == 409 and (
                answer["type"] == "/problems/not-enough-seats"
                or (op == "hold" and answer["type"] == "/problems/hold-limit-reached")
            ):
                seen.refused.append(Refusal(partner, args[0], answer, span))
            else:
                seen.unexpected.append((response.status_code, answer))
            continue
        if op == "confirm":
            candidates = [r for r in mine if r in seen.holds and r not in seen.confirmed]
        else:
            candidates = mine
        if not candidates:
            continue
        reservation_id = candidates[args[0] % len(candidates)]
        item = f"{ALLOCATED_PATH}/reservations/{reservation_id}"
        if op == "confirm":
            response, span = timed(clock, client.post, f"{item}/confirm")
        else:
            response, span = timed(clock, client.delete, item)
        seen.statuses[response.status_code] += 1
        hold = seen.holds.get(reservation_id)
        if response.status_code in (200, 204, 409) and hold is not None and hold.ended is None:
            hold.ended = span
        if response.status_code == 409 and response.get_json()["type"] == "/problems/hold-expired":
            seen.expired.add(reservation_id)
            mine.remove(reservation_id)
        elif response.status_code == 204 and op == "cancel":
            seen.released.add(reservation_id)
            mine.remove(reservation_id)
        elif response.status_code == 200 and op == "confirm":
            seen.confirmed.add(reservation_id)
        else:
            seen.unexpected.append((response.status_code, response.get_json()))


def allot_all(app, total: int, drawn: list) -> dict[str, dict]:
    """The operator sets the drawn allocations in order: each fits (201) or is refused as
    larger than what is left of the event (409); returns those set, by partner."""
    client = app.test_client()
    set_aside: dict[str, dict] = {}
    for partner, allocation in zip(PARTNERS, drawn, strict=False):
        if allocation is None:
            continue
        response = client.put(f"{ALLOCATED_PATH}/allocations/{partner}", json=allocation)
        left = total - sum(a["seats"] for a in set_aside.values())
        if allocation["seats"] <= left:
            assert response.status_code == 201, response.get_json()
            set_aside[partner] = allocation
        else:
            assert response.status_code == 409, response.get_json()
            assert response.get_json()["type"] == "/problems/allocation-too-large"
    return set_aside


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(workload=allocation_workloads)
def test_concurrent_partners_with_allocations_never_oversell_a_bucket_and_their_books_balance(
    pg_apps, clock, workload
):
    engine = services_of(pg_apps[0]).engine
    total = workload["total_seats"]
    seed_event(engine, ALLOCATED, "Allocation race", total, reset=True)
    clock.skew = timedelta(0)
    partners = PARTNERS[: len(workload["partners"])]
    set_aside = allot_all(pg_apps[0], total, workload["partners"])
    clients = [(partners[i % len(partners)], script) for i, script in workload["clients"]]
    seen = [Seen() for _ in clients]
    start = threading.Barrier(len(clients))
    threads = [
        threading.Thread(
            target=run_partner, args=(pg_apps[i % 3], clock, partner, script, start, out)
        )
        for i, ((partner, script), out) in enumerate(zip(clients, seen, strict=True))
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)

        # Reclaims what lapsed since; then nothing lapses any more (no jumps, and the
        # shortest hold lasts longer than the rest of the test).
        summary = pg_apps[1].test_client().get(ALLOCATED_PATH).get_json()
        page = pg_apps[2].test_client().get(f"{ALLOCATED_PATH}/allocations").get_json()
    finally:
        clock.skew = timedelta(0)
    with engine.connect() as conn:
        rows = {
            str(r.id): r
            for r in conn.execute(select(reservations).where(reservations.c.event_id == ALLOCATED))
        }

    statuses = sum((s.statuses for s in seen), Counter())
    assert set(statuses) <= {200, 201, 204, 409}, statuses  # contention is never a 5xx
    assert [u for s in seen for u in s.unexpected] == []
    created = {k: v for s in seen for k, v in s.created.items()}
    holds = {k: h for s in seen for k, h in s.holds.items()}
    confirmed = set().union(*(s.confirmed for s in seen))
    released = set().union(*(s.released for s in seen))
    expired = set().union(*(s.expired for s in seen))
    refused = [r for s in seen for r in s.refused]
    for refusal in refused:
        event(f"refused: {refusal.body['type'].removeprefix('/problems/')}")
        event(f"bucket refused: {refusal.body.get('bucket')}")
    event(f"holds lapsed: {bool(expired) or any(r.status == 'expired' for r in rows.values())}")

    # Every 201 is persisted with its seats, for its partner, and nothing else was written;
    # every answer stands (as in test_hold_concurrency).
    assert set(rows) == set(created)
    assert all(rows[k].seats == seats for k, seats in created.items())
    partner_of = {
        k: partner for (partner, _), s in zip(clients, seen, strict=True) for k in s.created
    }
    assert all(rows[k].partner_id == partner for k, partner in partner_of.items())
    status = {k: r.status for k, r in rows.items()}
    assert {k for k, s in status.items() if s == "cancelled"} == released
    assert all(status[k] == "confirmed" for k in confirmed - released)
    assert all(status[k] == "expired" for k in expired)
    assert all(status[k] in ("held", "expired") for k in set(holds) - confirmed - released)
    assert all(status[k] in ("confirmed", "cancelled") for k in set(created) - set(holds))

    # Each row drew from its partner's buckets only: none of an allocation without one, and
    # none of the pool for a partner whose allocation does not overflow.
    for r in rows.values():
        allocation = set_aside.get(r.partner_id)
        assert 0 <= r.allocated_seats <= r.seats
        if allocation is None:
            assert r.allocated_seats == 0, r
        elif not allocation["overflow"]:
            assert r.allocated_seats == r.seats, r

    # The books balance per bucket, and no bucket is oversold.
    def in_rows(of: str, seats) -> int:
        return sum(seats(r) for r in rows.values() if r.status == of)

    listed = {a["partnerId"]: a for a in page["items"]}
    assert set(listed) == set(set_aside)
    # The summary shows the buckets once the event has allocations (docs/api.md).
    assert ("pool" in summary) == ("allocations" in summary) == bool(set_aside)
    assert page["items"] == summary.get("allocations", [])
    assert page["pool"] == summary.get("pool", page["pool"])
    for partner, a in listed.items():
        drawn = set_aside[partner]
        assert (a["seats"], a["overflow"], a["maxHeldSeats"], a["closed"]) == (
            drawn["seats"],
            drawn["overflow"],
            drawn["maxHeldSeats"],
            False,
        )
        of_partner = [r for r in rows.values() if r.partner_id == partner]
        assert a["taken"] == sum(r.allocated_seats for r in of_partner if r.status == "confirmed")
        assert a["held"] == sum(r.allocated_seats for r in of_partner if r.status == "held")
        assert 0 <= a["available"] == a["seats"] - a["taken"] - a["held"]
    pool = page["pool"]
    assert pool["seats"] + sum(a["seats"] for a in listed.values()) == total
    assert pool["taken"] == in_rows("confirmed", lambda r: r.seats - r.allocated_seats)
    assert pool["held"] == in_rows("held", lambda r: r.seats - r.allocated_seats)
    assert 0 <= pool["available"] == pool["seats"] - pool["taken"] - pool["held"]
    held_seats = in_rows("held", lambda r: r.seats)
    assert (summary["totalSeats"], summary["heldSeats"], summary["reservationCount"]) == (
        total,
        held_seats,
        sum(s == "confirmed" for s in status.values()),
    )
    assert summary["availableSeats"] == pool["available"] + sum(
        a["available"] for a in listed.values()
    )
    assert summary["availableSeats"] + held_seats + in_rows("confirmed", lambda r: r.seats) == total
    # One version per allocation set and per change.
    changes = sum(1 + (s in ("cancelled", "expired")) + (k in confirmed) for k, s in status.items())
    assert summary["version"] == len(set_aside) + changes

    # No partner ever held more than its limit at once: the holds surely held all through a
    # grant, with the seats it granted, fit in the limit.
    def limit_of(partner: str) -> int:
        own = set_aside.get(partner, {}).get("maxHeldSeats")
        return HELD_LIMIT if own is None else own

    for hold in holds.values():
        others = [h for h in holds.values() if h.partner == hold.partner and h is not hold]
        surely = sum(h.seats for h in others if h.surely_counts_at(hold.span))
        assert surely + hold.seats <= limit_of(hold.partner)
    for partner in partners:
        live = sum(r.seats for r in rows.values() if r.partner_id == partner and r.status == "held")
        assert live <= limit_of(partner)

    # Every 409 is genuine for the bucket that answered it.
    available_of = {
        partner: (listed[partner]["available"] if partner in listed else 0) for partner in partners
    }
    only_down = all(op[0] not in ("cancel", "jump") for _, script in clients for op in script)
    event(f"seats only went down: {only_down}")
    for refusal in refused:
        body, partner = refusal.body, refusal.partner
        if body["type"] == "/problems/hold-limit-reached":
            # The partner then held (perhaps) enough seats for these to pass its limit.
            mine = [h for h in holds.values() if h.partner == partner]
            perhaps = sum(h.seats for h in mine if h.may_count_at(refusal.span))
            assert perhaps + refusal.seats > limit_of(partner), refusal
            continue
        allocation = set_aside.get(partner)
        overflow = allocation is not None and allocation["overflow"]
        bucket = BUCKETS[(allocation is not None, overflow)]
        assert body["bucket"] == bucket, refusal
        assert body["requested"] == refusal.seats
        assert 0 <= body["available"] < refusal.seats, refusal
        if only_down:
            # Seats only went down since: that bucket is still short of what was asked.
            left = {
                "pool": pool["available"],
                "allocation": available_of[partner],
                "allocation+pool": available_of[partner] + pool["available"],
            }[bucket]
            assert left <= body["available"], refusal
    if only_down:
        # An overflowing partner only took pool seats once its allocation was used up.
        for r in rows.values():
            if r.allocated_seats < r.seats and r.partner_id in set_aside:
                assert available_of[r.partner_id] == 0, r
