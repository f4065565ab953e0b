"""The service behind a stock pgbouncer in transaction mode, served by gunicorn: it migrates
and serves, the books balance under concurrent reserves and cancels, Idempotency-Key replays,
a locked events table is a 503 after the statement timeout, and keyed retries get a definite
answer within moments of the database coming back after an outage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from cluster.parts import PgBouncer
from support.servers import request, serve
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services.partners import create_key
from ticketboss.store import queries
from ticketboss.store.db import make_engine
from ticketboss.store.tables import reservations

EVENT_ID = "node-meetup-2025"
STATEMENT_TIMEOUT_MS = 1000


@pytest.fixture(scope="module")
def bouncer(pg_url):
    url = make_url(pg_url)
    workdir = Path(tempfile.mkdtemp(prefix="ticketboss-pgbouncer-"))
    pgbouncer = PgBouncer(workdir, url.host, url.port or 5432, url.username)
    pgbouncer.start()
    yield pgbouncer
    pgbouncer.kill()
    subprocess.run(["rm", "-rf", str(workdir)], check=False)


@pytest.fixture(scope="module")
def bounced_url(pg_url, bouncer) -> str:
    url = make_url(pg_url)
    return bouncer.url(url.database, url.username)


@pytest.fixture(scope="module")
def direct(pg_url):
    """The database itself, not through pgbouncer: to check the books and to lock tables."""
    engine = make_engine(Settings(database_url=pg_url))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def key(direct) -> str:
    return create_key(direct, "bounced-ops", Role.OPERATOR)[1]


@pytest.fixture(scope="module")
def served(bounced_url, tmp_path_factory):
    # The lock and the outage below are the database failing: one traceback per worker for
    # each (then short lines), two workers.
    yield from serve(
        bounced_url,
        tmp_path_factory,
        max_tracebacks=2,
        DB_STATEMENT_TIMEOUT_MS=str(STATEMENT_TIMEOUT_MS),
    )


def books(engine, event_id=EVENT_ID):
    with engine.connect() as conn:
        event = queries.load_event(conn, event_id)
        confirmed = conn.execute(
            select(reservations.c.seats).where(
                reservations.c.event_id == event_id, reservations.c.status == "confirmed"
            )
        ).all()
    return event, sum(seats for (seats,) in confirmed), len(confirmed)


def test_migrate_runs_unchanged_through_pgbouncer(bounced_url):
    env = {**os.environ, "DATABASE_URL": bounced_url}
    ticketboss = Path(sys.executable).parent / "ticketboss"
    done = subprocess.run(
        [ticketboss, "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_concurrent_reserves_and_cancels_balance_the_books(served, direct, key):
    seed_event(direct, EVENT_ID, "Node.js Meet-up", 120, reset=True)
    statuses = Counter()
    lock = threading.Lock()
    start = threading.Barrier(40)

    def client(i):
        start.wait()
        for _ in range(4):
            status, body = request(
                served.port, "POST", "/api/reservations", {"partnerId": f"p{i}", "seats": 2}, key
            )
            with lock:
                statuses[("reserve", status)] += 1
            if status == 201 and i % 2:
                reservation_id = json.loads(body)["reservationId"]
                status, _ = request(
                    served.port, "DELETE", f"/api/reservations/{reservation_id}", key=key
                )
                with lock:
                    statuses[("cancel", status)] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert {status for _, status in statuses} <= {201, 204, 409}, statuses
    event, seats, count = books(direct)
    assert event.available_seats + seats == 120 and event.reservation_count == count
    assert count == statuses[("reserve", 201)] - statuses[("cancel", 204)]
    assert event.version == statuses[("reserve", 201)] + statuses[("cancel", 204)]


def test_idempotency_key_replays_through_pgbouncer(served, direct, key):
    seed_event(direct, EVENT_ID, "Node.js Meet-up", 100, reset=True)
    headers = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    answers = [
        request(
            served.port,
            "POST",
            "/api/reservations",
            {"partnerId": "p", "seats": 3},
            key,
            True,
            headers=headers,
        )
        for _ in range(3)
    ]
    assert [status for status, _, _ in answers] == [201, 201, 201]
    assert len({json.loads(body)["reservationId"] for _, body, _ in answers}) == 1
    assert [h.get("Idempotent-Replayed") for _, _, h in answers] == [None, "true", "true"]
    assert books(direct)[2] == 1


def test_a_locked_events_table_is_a_503_after_the_statement_timeout(served, direct, key):
    seed_event(direct, EVENT_ID, "Node.js Meet-up", 100, reset=True)
    locker = direct.connect()
    try:
        locker.execute(text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
        began = time.monotonic()
        status, body = request(
            served.port, "POST", "/api/reservations", {"partnerId": "p", "seats": 1}, key
        )
        waited = time.monotonic() - began
    finally:
        locker.rollback()
        locker.close()
    assert status == 503 and json.loads(body)["status"] == 503
    # The statement timeout, not the lock, ended the wait (plus the retry it may get).
    assert STATEMENT_TIMEOUT_MS / 1000 <= waited < 4 * STATEMENT_TIMEOUT_MS / 1000, waited
    assert books(direct)[2] == 0


def test_keyed_retries_get_a_definite_answer_soon_after_an_outage_and_book_once(
    served, bouncer, direct, key
):
    """Clients send keyed reservations and retry each with its key until they get a definite
    answer; pgbouncer (the database, as the service sees it) dies for 3 s in the middle."""
    seed_event(direct, EVENT_ID, "Node.js Meet-up", 100_000, reset=True)
    stop = threading.Event()
    lock = threading.Lock()
    orders: dict[str, dict] = {}  # key -> {"sent", "answered", "status", "id", "tries"}

    def client(i):
        n = 0
        while not stop.is_set():
            order = f"outage-{i}-{n}-{uuid.uuid4().hex[:6]}"
            record = {"sent": time.monotonic(), "answered": None, "tries": 0}
            with lock:
                orders[order] = record
            while record["answered"] is None:
                record["tries"] += 1
                try:
                    status, body = request(
                        served.port,
                        "POST",
                        "/api/reservations",
                        {"partnerId": f"p{i}", "seats": 1},
                        key,
                        headers={"Idempotency-Key": order},
                    )
                except OSError:
                    status, body = None, b""
                if status in (201, 409) and json.loads(body).get("type") != (
                    "/problems/idempotency-key-in-flight"
                ):
                    record.update(answered=time.monotonic(), status=status)
                    if status == 201:
                        record["id"] = json.loads(body)["reservationId"]
                else:
                    time.sleep(0.1)  # a 503, an in-flight 409, a dropped connection: retry
                if stop.is_set() and time.monotonic() - record["sent"] > 30:
                    break
            n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    bouncer.kill()
    down = time.monotonic()
    time.sleep(3)
    bouncer.start()
    back = time.monotonic()
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join(40)
    assert not any(t.is_alive() for t in threads)

    records = list(orders.values())
    assert all(r["answered"] is not None for r in records), "a keyed request never got an answer"
    assert {r["status"] for r in records} == {201}
    # Orders caught by the outage were answered within two seconds of the database's return.
    caught = [r for r in records if r["sent"] < back and r["answered"] > down]
    assert caught, "the outage caught no request"
    late = max(r["answered"] - back for r in caught)
    assert late < 2.0, late
    # Exactly once: one reservation per order, every 201's id among them, nothing else.
    with direct.connect() as conn:
        rows = {
            str(r.id)
            for r in conn.execute(
                select(reservations.c.id).where(reservations.c.event_id == EVENT_ID)
            )
        }
    assert {r["id"] for r in records} == rows
    assert len(rows) == len(records)
