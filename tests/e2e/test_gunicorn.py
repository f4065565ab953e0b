"""The deployed shape: gunicorn with its config file (two gevent workers, group commit, shared
metrics) over real sockets, on PostgreSQL and on the SQLite default (two workers on one file)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from support.servers import METRICS_TOKEN, request, serving
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services.partners import create_key, revoke_key
from ticketboss.store.db import make_engine

EVENT_ID = "node-meetup-2025"


@pytest.fixture(scope="module")
def engine(database_url):
    engine = make_engine(Settings(database_url=database_url))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def operator(engine) -> str:
    return create_key(engine, "ops", Role.OPERATOR)[1]


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    with serving(database_url, tmp_path_factory) as served:
        yield served.port


def test_a_burst_through_gunicorn_sells_exactly_the_seats_and_metrics_add_up(
    server, engine, operator
):
    seed_event(engine, EVENT_ID, "Node.js Meet-up", 50, reset=True)
    statuses = Counter()
    start = threading.Barrier(80)
    lock = threading.Lock()

    def client():
        start.wait()
        status, _ = request(
            server, "POST", "/api/reservations", {"partnerId": "p", "seats": 1}, operator
        )
        with lock:
            statuses[status] += 1

    threads = [threading.Thread(target=client) for _ in range(80)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == Counter({201: 50, 409: 30})

    status, body = request(server, "GET", "/api/reservations", key=operator)
    summary = json.loads(body)
    assert (status, summary["availableSeats"], summary["reservationCount"]) == (200, 0, 50)
    assert summary["version"] == 50

    status, body = request(server, "GET", "/metrics", key=METRICS_TOKEN)
    samples = dict(
        line.rsplit(" ", 1) for line in body.decode().splitlines() if line.startswith("ticket")
    )
    # Counted by both workers, added up by the scrape.
    assert float(samples["ticketboss_reservations_confirmed_total"]) == 50
    assert float(samples["ticketboss_cas_commits_total"]) <= 50


def test_errors_through_gunicorn_are_problem_json(server, operator):
    status, body = request(
        server, "POST", "/api/reservations", {"partnerId": "p", "seats": 0}, operator
    )
    assert status == 400 and json.loads(body)["status"] == 400
    status, body = request(server, "GET", "/nope")
    assert status == 404 and json.loads(body)["title"] == "Not Found"


# Keys and the rate limit across two workers -------------------------------------------------

REDIS_URL = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def secured(database_url, tmp_path_factory, engine):
    """Two workers that trust a looked-up key for 1 s and share a rate limit in Redis."""
    redis = pytest.importorskip("redis").Redis.from_url(REDIS_URL)
    try:
        redis.ping()
    except OSError as exc:  # redis-py's ConnectionError is an OSError
        pytest.fail(f"Redis does not answer at {REDIS_URL} ({exc}); .ci/run starts it")
    with serving(
        database_url,
        tmp_path_factory,
        AUTH_CACHE_SECONDS="1",
        PARTNER_RATE_LIMIT="5",
        PARTNER_RATE_BURST="10",
        RATELIMIT_STORAGE_URI=REDIS_URL,
    ) as served:
        seed_event(engine, EVENT_ID, "Node.js Meet-up", 50, reset=True)
        yield served.port


def fire(port, key, n, path="/api/reservations"):
    """n simultaneous GETs, each on its own connection (so both workers take some)."""
    statuses = Counter()
    start = threading.Barrier(n)
    lock = threading.Lock()

    def one():
        start.wait()
        status, _ = request(port, "GET", path, key=key)
        with lock:
            statuses[status] += 1

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return statuses


def test_a_revoked_key_is_refused_by_every_worker_within_the_cache_time(secured, engine):
    info, key, _ = create_key(engine, f"rev-{uuid.uuid4().hex[:8]}", Role.PARTNER)
    assert fire(secured, key, 8) == Counter({200: 8})  # both workers now trust it
    time.sleep(1.1)  # let the rate limit's window pass
    revoke_key(engine, info.key_id)
    revoked_at = time.monotonic()
    while fire(secured, key, 8) != Counter({401: 8}):
        assert time.monotonic() - revoked_at < 3, "a worker still accepts the revoked key"
        time.sleep(0.1)
    assert fire(secured, key, 8) == Counter({401: 8})


def test_the_rate_limit_holds_across_workers_through_redis(secured, engine):
    from redis import Redis

    partner_id = f"rl-{uuid.uuid4().hex[:8]}"
    _, key, _ = create_key(engine, partner_id, Role.PARTNER)
    # A burst of 10 for the partner, whichever worker takes each request: 30 at once get
    # exactly 10 answers (per-worker memory would let up to 20 through).
    assert fire(secured, key, 30) == Counter({200: 10, 429: 20})
    stored = Redis.from_url(REDIS_URL).keys(f"*partner:{partner_id}*")
    assert stored, "the limit's counters are not in Redis"
    status, body, headers = request(secured, "GET", "/api/reservations", key=key, full=True)
    assert status == 429 and json.loads(body)["type"] == "/problems/rate-limited"
    assert int(headers["Retry-After"]) >= 1 and headers["RateLimit"].startswith('"partner";r=0')


# Holds in real time ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unswept(database_url, tmp_path_factory):
    """Two workers that never sweep: only writes reclaim lapsed holds."""
    with serving(database_url, tmp_path_factory, HOLD_SWEEP_SECONDS="0") as served:
        yield served.port


def rows_of(engine, event_id) -> dict[str, str]:
    from sqlalchemy import select

    from ticketboss.store.tables import reservations

    with engine.connect() as conn:
        query = select(reservations.c.id, reservations.c.status).where(
            reservations.c.event_id == event_id
        )
        return {str(rid): status for rid, status in conn.execute(query)}


def test_a_lapsed_holds_seats_are_reserved_by_another_partner_with_no_sweep(
    unswept, engine, operator
):
    event = f"hold-{uuid.uuid4().hex[:8]}"
    seed_event(engine, event, "Holds", 5, reset=True)
    status, body = request(
        unswept,
        "POST",
        f"/api/events/{event}/holds",
        {"partnerId": "alpha", "seats": 4, "ttlSeconds": 1},
        operator,
    )
    assert status == 201
    hold_id = json.loads(body)["reservationId"]
    reserve = {"partnerId": "beta", "seats": 3}
    assert (
        request(unswept, "POST", f"/api/events/{event}/reservations", reserve, operator)[0] == 409
    )
    time.sleep(1.2)
    assert (
        request(unswept, "POST", f"/api/events/{event}/reservations", reserve, operator)[0] == 201
    )
    status, body = request(
        unswept, "POST", f"/api/events/{event}/reservations/{hold_id}/confirm", key=operator
    )
    assert status == 409 and json.loads(body)["type"] == "/problems/hold-expired"
    assert rows_of(engine, event)[hold_id] == "expired"  # reclaimed by the reservation's batch
    summary = json.loads(request(unswept, "GET", f"/api/events/{event}", key=operator)[1])
    assert (summary["availableSeats"], summary["heldSeats"]) == (2, 0)


def test_the_sweep_command_marks_lapsed_holds_expired(unswept, engine, operator, database_url):
    event = f"sweep-{uuid.uuid4().hex[:8]}"
    seed_event(engine, event, "Holds", 5, reset=True)
    body = {"partnerId": "alpha", "seats": 2, "ttlSeconds": 1}
    _, answer = request(unswept, "POST", f"/api/events/{event}/holds", body, operator)
    hold_id = json.loads(answer)["reservationId"]
    time.sleep(1.2)
    assert rows_of(engine, event)[hold_id] == "held"  # nothing wrote since: the row lags
    swept = subprocess.run(
        [Path(sys.executable).parent / "ticketboss", "holds", "sweep"],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert swept.returncode == 0, swept.stderr
    assert re.fullmatch(r"expired [1-9]\d* lapsed holds\n", swept.stdout)
    assert rows_of(engine, event)[hold_id] == "expired"


def test_each_worker_sweeps_lapsed_holds_by_itself(
    database_url, tmp_path_factory, engine, operator
):
    event = f"swept-{uuid.uuid4().hex[:8]}"
    seed_event(engine, event, "Holds", 5, reset=True)
    with serving(database_url, tmp_path_factory, HOLD_SWEEP_SECONDS="0.2") as served:
        body = {"partnerId": "alpha", "seats": 2, "ttlSeconds": 1}
        _, answer = request(served.port, "POST", f"/api/events/{event}/holds", body, operator)
        hold_id = json.loads(answer)["reservationId"]
        deadline = time.monotonic() + 5
        while rows_of(engine, event)[hold_id] != "expired":
            assert time.monotonic() < deadline, "no worker swept the lapsed hold"
            time.sleep(0.1)
        _, metrics = request(served.port, "GET", "/metrics", key=METRICS_TOKEN)
    samples = dict(
        line.rsplit(" ", 1) for line in metrics.decode().splitlines() if line.startswith("ticket")
    )
    assert float(samples["ticketboss_holds_created_total"]) == 1  # counters start at 0
    assert float(samples["ticketboss_holds_expired_total"]) >= 1  # other tests' too
    assert float(samples[f'ticketboss_held_seats{{event_id="{event}"}}']) == 0
