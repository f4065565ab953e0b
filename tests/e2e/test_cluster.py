"""A 2-host cluster (pgbouncer, two gunicorn hosts, HAProxy with event affinity) on loopback:
a burst of keyed reservations through the balancer, one host killed (-9 to its master) in the
middle. Clients retry with the same Idempotency-Key, as partners are told to."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from cluster.run import Cluster
from support.servers import request
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services.partners import create_key
from ticketboss.store.db import make_engine
from ticketboss.store.tables import reservations

EVENT = "cluster-kill"
CLIENTS = 16


@pytest.fixture(scope="module")
def engine(pg_url):
    engine = make_engine(Settings(database_url=pg_url))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def cluster(pg_url):
    # Not under pytest's tmp_path: pgbouncer runs as postgres, who cannot enter that tree.
    workdir = Path(tempfile.mkdtemp(prefix="ticketboss-cluster-test-"))
    try:
        with Cluster(pg_url, hosts=2, workdir=workdir) as running:
            yield running
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def confirmed_by(host) -> float:
    """The reservations a host has confirmed, from its /metrics."""
    _, body = request(host.port, "GET", "/metrics", key=host.env["METRICS_TOKEN"])
    for line in body.decode().splitlines():
        if line.startswith("ticketboss_reservations_confirmed_total "):
            return float(line.split()[1])
    return 0.0


def summaries_answered(host) -> float:
    """The summaries a host answered (200 or 429), from its /metrics."""
    _, body = request(host.port, "GET", "/metrics", key=host.env["METRICS_TOKEN"])
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith("ticketboss_http_requests_total")
        and 'route="/api/events/<event_id>"' in line
        and 'method="GET"' in line
    )


def test_a_killed_host_loses_no_confirmed_reservation_and_its_event_moves(cluster, engine):
    seed_event(engine, EVENT, "Cluster", 100_000, reset=True)
    key = create_key(engine, "cluster-ops", Role.OPERATOR)[1]
    port = cluster.haproxy.port
    answered: dict[str, str] = {}  # Idempotency-Key -> reservationId
    failures = Counter()  # answers that were not definite, before a retry got one
    lock = threading.Lock()
    stop = threading.Event()
    killed_at: list[float] = []
    after_kill = Counter()

    def client():
        while not stop.is_set():
            idempotency_key = uuid.uuid4().hex
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # the same key until a definite answer
                sent = time.monotonic()
                try:
                    status, body = request(
                        port,
                        "POST",
                        f"/api/events/{EVENT}/reservations",
                        {"partnerId": "p", "seats": 1},
                        key,
                        headers={"Idempotency-Key": idempotency_key},
                    )
                except OSError:
                    status, body = None, b""
                with lock:
                    if killed_at and sent > killed_at[0] + 2:  # sent once the event moved
                        after_kill[status] += 1
                    if status == 201:
                        answered[idempotency_key] = json.loads(body)["reservationId"]
                        break
                    failures[status] += 1
                time.sleep(0.1)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(2)
    serving = max(cluster.hosts, key=confirmed_by)  # the event's host, by affinity
    other = next(h for h in cluster.hosts if h is not serving)
    assert confirmed_by(serving) > 0 and confirmed_by(other) == 0  # one host had the event
    serving.kill()
    killed_at.append(time.monotonic())
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)

    # The event moved: the other host served it, and every request sent 2 s after the kill
    # was booked (or, for a retry whose first try died with the host, told that its key is
    # still claimed until the lease of IDEMPOTENCY_LEASE_SECONDS lapses).
    assert confirmed_by(other) > 0
    assert set(after_kill) <= {201, 409} and after_kill[201] > 0, after_kill
    # At most the requests in flight on the killed host failed (one per client), plus the
    # retries that found their key still claimed by a request that died with the host
    # (409 in flight, until its lease lapses).
    assert sum(n for s, n in failures.items() if s != 409) <= CLIENTS, failures
    assert set(failures) <= {None, 409, 502, 503}, failures
    # No 201 lost, none booked twice: one row per key answered, and nothing else.
    with engine.connect() as conn:
        rows = (
            conn.execute(select(reservations.c.id).where(reservations.c.event_id == EVENT))
            .scalars()
            .all()
        )
    assert sorted(str(r) for r in rows) == sorted(answered.values())
    _, body = request(port, "GET", f"/api/events/{EVENT}", key=key)
    summary = json.loads(body)
    assert summary["availableSeats"] + len(rows) == 100_000
    assert summary["reservationCount"] == len(rows) == len(set(answered.values()))


@pytest.fixture(scope="module")
def round_robin(pg_url):
    """Two hosts in turn, sharing a partner rate limit of 5/s (burst 10) through Redis."""
    workdir = Path(tempfile.mkdtemp(prefix="ticketboss-cluster-test-"))
    try:
        with Cluster(
            pg_url,
            hosts=2,
            balance="roundrobin",
            workdir=workdir,
            PARTNER_RATE_LIMIT=5,
            PARTNER_RATE_BURST=10,
        ) as running:
            yield running
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_rate_limit_and_idempotency_keys_hold_across_hosts(round_robin, engine):
    seed_event(engine, "cluster-shared", "Shared", 100, reset=True)
    key = create_key(engine, f"shared-{uuid.uuid4().hex[:6]}", Role.PARTNER)[1]
    # The same key and body sent to each host directly: one booking, the same answer twice.
    body = {"seats": 2}
    answers = [
        request(
            host.port,
            "POST",
            "/api/events/cluster-shared/reservations",
            body,
            key,
            headers={"Idempotency-Key": "order-1"},
        )
        for host in round_robin.hosts
    ]
    assert [status for status, _ in answers] == [201, 201]
    assert len({json.loads(answer)["reservationId"] for _, answer in answers}) == 1
    # Through the balancer, in turn to both hosts: one partner's burst of 10, counted once.
    time.sleep(2.1)  # the two POSTs above count too: let the window pass
    statuses = Counter(
        request(round_robin.haproxy.port, "GET", "/api/events/cluster-shared", key=key)[0]
        for _ in range(30)
    )
    assert statuses == Counter({200: 10, 429: 20})
    # Both hosts answered (round robin): the count was shared, not one host's own.
    assert all(summaries_answered(host) > 0 for host in round_robin.hosts)
    with engine.connect() as conn:
        rows = conn.execute(
            select(reservations.c.id).where(reservations.c.event_id == "cluster-shared")
        ).all()
    assert len(rows) == 1
