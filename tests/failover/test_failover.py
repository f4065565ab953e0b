"""Failovers under keyed load, Jepsen-style (`make failover`; `.ci/run` runs it after
`make test`). One HA cluster (`make cluster ARGS="--ha --hosts 2"`: etcd, three PostgreSQL 15
nodes under Patroni in strict synchronous mode, HAProxy routing to the primary, pgbouncer,
two app hosts and their balancer) goes through four faults in turn:

- kill -9 of the primary's Patroni and postmaster together (a host lost);
- SIGSTOP of the primary past the leader's TTL, then SIGCONT (a host that hangs and comes
  back: it must rejoin as a replica, and never acknowledge a write in between);
- a planned switchover (patronictl);
- the synchronous standby killed, then the primary.

Clients reserve, hold and confirm with Idempotency-Keys through the whole stack, retrying
each key until it is answered for good; every attempt is logged as ok, refused or unknown.
After each fault, with the clients stopped: every acknowledged write is on the new
primary (acknowledged-lost = 0), the database holds exactly what was acknowledged (no key
booked twice), every unknown was resolved by its key's retry, and the books balance. Each
fault reports the time to the first successful write, the longest gap without one, and the
clients' errors by class."""

from __future__ import annotations

import http.client
import itertools
import json
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import func, select

from cluster.ha import LOOP_WAIT, TTL, HACluster, installed
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services.partners import create_key
from ticketboss.store.db import make_engine
from ticketboss.store.tables import events, reservations

pytestmark = [
    pytest.mark.failover,
    pytest.mark.skipif(installed() is not None, reason=f"Patroni/etcd: {installed()}"),
]

EVENT = "ha-failover"
SEATS = 1_000_000
CLIENTS = 8
PAUSE = 0.1  # seconds between a client's attempts after an unknown (a real client would
# honour Retry-After; a short pause measures the gap more finely)
GIVE_UP = 90  # seconds one operation may stay unknown before the test calls it unresolved
# Writes resume within this of a crash: the leader's key outlives it by up to TTL, a standby
# takes it within a loop, HAProxy routes within ~1 s, and strict synchronous mode waits for
# the remaining replica to follow as the synchronous standby (docs/operations.md).
WRITES_RESUME_WITHIN = TTL + LOOP_WAIT + 15
RETRY = {"idempotency-key-in-flight"}  # 409s that mean "not yet", not a refusal


@dataclass
class Op:
    """One write and its Idempotency-Key, retried until answered for good."""

    kind: str  # reserve | hold | confirm
    seats: int
    target: str | None = None  # confirm: the hold's reservationId
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    outcome: str = "unknown"  # ok | refused | unknown
    reservation_id: str | None = None
    unknowns: int = 0  # attempts that got no answer for good

    @property
    def request(self) -> tuple[str, dict | None]:
        if self.kind == "confirm":
            return f"/api/events/{EVENT}/reservations/{self.target}/confirm", None
        if self.kind == "hold":
            return f"/api/events/{EVENT}/holds", {"seats": self.seats, "ttlSeconds": 3600}
        return f"/api/events/{EVENT}/reservations", {"seats": self.seats}


@dataclass(frozen=True)
class Attempt:
    sent: float
    done: float
    label: str  # "201", "503 outcome-unknown", "502", "ConnectionResetError", ...
    ok: bool


class Load:
    """CLIENTS threads of keyed writes through the app's balancer, and their history."""

    def __init__(self, port: int, key: str):
        self.port = port
        self.auth = f"Bearer {key}"
        self.ops: list[Op] = []
        self.attempts: list[Attempt] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.stopping.clear()
        self.threads = [threading.Thread(target=self._client) for _ in range(CLIENTS)]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """No new operation; each client finishes (resolves) the one it has."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(GIVE_UP + 15)
        assert not any(t.is_alive() for t in self.threads)

    def _client(self) -> None:
        rng = random.Random()
        while not self.stopping.is_set():
            op = Op("hold" if rng.random() < 0.3 else "reserve", rng.randint(1, 4))
            self._run(op)
            if op.kind == "hold" and op.outcome == "ok":
                self._run(Op("confirm", op.seats, target=op.reservation_id))

    def _run(self, op: Op) -> None:
        with self.lock:
            self.ops.append(op)
        give_up = time.monotonic() + GIVE_UP
        while time.monotonic() < give_up:
            attempt, body = self._attempt(op)
            with self.lock:
                self.attempts.append(attempt)
            if attempt.ok:
                op.outcome, op.reservation_id = "ok", body["reservationId"]
                return
            if attempt.label.startswith("4") and body.get("type", "").split("/")[-1] not in RETRY:
                op.outcome = "refused"
                return
            op.unknowns += 1
            time.sleep(PAUSE)

    def _attempt(self, op: Op) -> tuple[Attempt, dict]:
        path, body = op.request
        headers = {"Authorization": self.auth, "Idempotency-Key": op.key}
        if body is not None:
            headers["Content-Type"] = "application/json"
        sent = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", path, json.dumps(body) if body else None, headers)
            response = conn.getresponse()
            raw = response.read()
            answer = json.loads(raw) if raw.startswith(b"{") else {}
            label = str(response.status)
            if response.status >= 400:
                label += " " + answer.get("type", "").split("/")[-1]
            if response.status >= 500 and not response.getheader("Retry-After"):
                label += " without Retry-After"
            ok = response.status in (200, 201)
            return Attempt(sent, time.monotonic(), label.strip(), ok), answer
        except (OSError, http.client.HTTPException) as failed:
            label = "timeout" if isinstance(failed, socket.timeout) else type(failed).__name__
            return Attempt(sent, time.monotonic(), label, False), {}
        finally:
            conn.close()

    def wait_for_write(self, after: float, within: float) -> float:
        """Seconds from `after` to the first success of an attempt sent after it."""
        deadline = after + within
        while time.monotonic() < deadline:
            with self.lock:
                done = [a.done for a in self.attempts if a.ok and a.sent > after]
            if done:
                return min(done) - after
            time.sleep(0.05)
        raise AssertionError(f"no successful write within {within} s")

    def report(self, since: float, faults: dict[str, float]) -> dict:
        """The figures of a fault: first write after each of its moments, longest gap
        without a successful write, attempts by class."""
        with self.lock:
            window = [a for a in self.attempts if a.sent >= since]
        successes = sorted(a.done for a in window if a.ok)
        gaps = [b - a for a, b in itertools.pairwise(successes)]
        return {
            "first write": {
                name: round(min(a.done for a in window if a.ok and a.sent > at) - at, 1)
                for name, at in faults.items()
            },
            "longest gap": round(max(gaps, default=0.0), 1),
            "slowest answer": round(max(a.done - a.sent for a in window), 1),
            "attempts": dict(Counter(a.label for a in window).most_common()),
        }


# What a host logs of an outage (ticketboss.outages), and tracebacks.
OUTAGE_LINES = ("database unavailable", "database still unavailable", "database answering again")


def log_lines(cluster: HACluster) -> Counter:
    """Outage lines and tracebacks in the app hosts' logs so far."""
    counted: Counter = Counter()
    for host in cluster.app.hosts:
        for line in host.log_path.read_text(errors="replace").splitlines():
            for kind in (*OUTAGE_LINES, "Traceback"):
                if kind in line:
                    counted[kind] += 1
    return counted


def check_books(url: str, ops: list[Op]) -> None:
    """The database is what the clients were told, no more and no less."""
    assert not [op for op in ops if op.outcome == "unknown"], "unresolved operations"
    assert not [op for op in ops if op.outcome == "refused"], "refused with seats to spare"
    booked = {op.reservation_id: op for op in ops if op.kind != "confirm" and op.outcome == "ok"}
    confirmed = {op.target for op in ops if op.kind == "confirm" and op.outcome == "ok"}
    engine = make_engine(Settings(database_url=url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(reservations.c.id, reservations.c.seats, reservations.c.status).where(
                    reservations.c.event_id == EVENT
                )
            ).all()
            event = conn.execute(select(events).where(events.c.event_id == EVENT)).one()
            count = conn.scalar(select(func.count()).select_from(reservations))
    finally:
        engine.dispose()
    stored = {str(row.id): row for row in rows}
    lost = set(booked) - set(stored)
    assert not lost, f"{len(lost)} acknowledged reservations lost"
    extra = set(stored) - set(booked)
    assert not extra, f"{len(extra)} reservations no client was told of (a key booked twice?)"
    assert count == len(rows)
    for rid, op in booked.items():
        want = "confirmed" if op.kind == "reserve" or rid in confirmed else "held"
        assert (stored[rid].status, stored[rid].seats) == (want, op.seats), (rid, op)
    sold = sum(r.seats for r in rows if r.status == "confirmed")
    held = sum(r.seats for r in rows if r.status == "held")
    assert event.held_seats == held
    assert event.reservation_count == sum(r.status == "confirmed" for r in rows)
    assert event.available_seats + held + sold == event.total_seats == SEATS


@pytest.fixture(scope="module")
def ha():
    # Not under pytest's tmp_path: the nodes and pgbouncer run as postgres.
    workdir = Path(tempfile.mkdtemp(prefix="ticketboss-failover-"))
    try:
        with HACluster(hosts=2, port=0, workdir=workdir) as running:
            engine = make_engine(Settings(database_url=running.database_url))
            try:
                seed_event(engine, EVENT, "Failover", SEATS, reset=True)
                key = create_key(engine, "failover", Role.PARTNER)[1]
            finally:
                engine.dispose()
            yield running, Load(running.app.haproxy.port, key)
        # Stopped cleanly: nothing of it left running.
        left = subprocess.run(["pgrep", "-af", str(workdir)], capture_output=True, text=True)
        assert not left.stdout, left.stdout
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def kill_primary(ha: HACluster, load: Load) -> dict[str, float]:
    old = ha.primary()
    old.kill()
    killed = time.monotonic()
    load.wait_for_write(killed, WRITES_RESUME_WITHIN)
    old.start()  # the host is back: its node must rejoin as a replica
    return {"kill -9 primary": killed}


def freeze_primary(ha: HACluster, load: Load) -> dict[str, float]:
    old = ha.primary()
    with psycopg2.connect(host="127.0.0.1", port=old.port, user="root", dbname="postgres") as c:
        c.cursor().execute("CREATE TABLE IF NOT EXISTS fence_probe (at timestamptz)")
    old.freeze()
    frozen = time.monotonic()
    load.wait_for_write(frozen, WRITES_RESUME_WITHIN)  # a new leader, past the TTL
    old.thaw()
    thawed = time.monotonic()
    # While its Patroni finds out it lost the leader key, the old primary's PostgreSQL
    # still runs as a primary: a write straight to it must never be acknowledged.
    probes = fence_probes(old.port, seconds=8)
    assert "committed" not in probes, probes
    print(f"\n  writes straight to the thawed old primary: {dict(Counter(probes))}")
    return {"SIGSTOP primary": frozen, "SIGCONT": thawed}


def fence_probes(port: int, seconds: float) -> list[str]:
    """Writes (each in its own thread, for a COMMIT may wait for ever) straight to a node;
    what each came to: committed, refused (an error), or blocked (no answer in time)."""
    outcomes: list[str] = []

    def probe():
        try:
            conn = psycopg2.connect(
                host="127.0.0.1", port=port, user="root", dbname="postgres", connect_timeout=2
            )
        except psycopg2.Error:
            outcomes.append("refused")
            return
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO fence_probe VALUES (now())")
            conn.commit()
            warned = any("might not have been replicated" in n for n in conn.notices)
            outcomes.append("unreplicated" if warned else "committed")
        except psycopg2.Error as refused:
            outcomes.append(f"refused ({type(refused).__name__})")
        finally:
            conn.close()

    threads = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        threads.append(threading.Thread(target=probe, daemon=True))
        threads[-1].start()
        time.sleep(0.5)
    for thread in threads:
        thread.join(max(0.0, end + 2 - time.monotonic()))
    return outcomes + ["blocked"] * sum(t.is_alive() for t in threads)


def switch_over(ha: HACluster, load: Load) -> dict[str, float]:
    candidate = ha.sync_standby()
    began = time.monotonic()
    ha.switchover(candidate)
    done = time.monotonic()
    load.wait_for_write(done, WRITES_RESUME_WITHIN)
    assert ha.primary() is candidate
    return {"patronictl switchover": began, "its return": done}


def kill_standby_then_primary(ha: HACluster, load: Load) -> dict[str, float]:
    standby, primary = ha.sync_standby(), ha.primary()
    (replica,) = set(ha.nodes) - {standby, primary}
    standby.kill()
    standby_killed = time.monotonic()
    # Strict mode: commits wait until the remaining replica is the synchronous standby.
    load.wait_for_write(standby_killed, WRITES_RESUME_WITHIN)
    # Patroni names it so in etcd a loop after PostgreSQL does: only then may it be promoted.
    # (A primary lost within that loop leaves no node that may be: the cluster then waits for
    # the old primary to return, as docs/operations.md says.)
    while ha.sync_standby() is not replica:
        assert time.monotonic() < standby_killed + WRITES_RESUME_WITHIN, ha.members()
        time.sleep(0.1)
    primary.kill()
    primary_killed = time.monotonic()
    # The lone survivor is promoted, and takes no writes until a standby is back: the first
    # host killed returns at once (it lacks the commits made since; never promoted).
    standby.start()
    load.wait_for_write(primary_killed, WRITES_RESUME_WITHIN)
    primary.start()
    return {"kill -9 sync standby": standby_killed, "then the primary": primary_killed}


FAULTS = [kill_primary, freeze_primary, switch_over, kill_standby_then_primary]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.__name__ for f in FAULTS])
def test_a_fault_loses_no_acknowledged_write_and_books_nothing_twice(ha, fault):
    cluster, load = ha
    cluster.wait_for_replication(120)  # all three nodes back from the last fault
    before = {node.name: cluster.role(node) for node in cluster.nodes}
    logged = log_lines(cluster)
    load.start()
    try:
        time.sleep(2)
        since = time.monotonic() - 1
        moments = fault(cluster, load)
        time.sleep(1)  # writes on the new primary
    finally:
        load.stop()
    report = load.report(since, moments)
    report["log lines"] = dict(log_lines(cluster) - logged)
    print(f"\n{fault.__name__} ({before}): {json.dumps(report)}")
    for seconds in report["first write"].values():
        assert seconds <= WRITES_RESUME_WITHIN
    # Every failed attempt is a 503 with Retry-After (the app's, or its balancer's when no
    # host is ready), resolved by a retry of its key: never a 500, never a hang.
    labels = report["attempts"]
    retried = ("20", "409 idempotency-key-in-flight", "503 ")  # no 409 for want of seats
    assert not [label for label in labels if not label.startswith(retried)], labels
    assert not [label for label in labels if "without Retry-After" in label], labels
    # The hosts say what happened in a few lines, not a line (or traceback) per request.
    assert sum(report["log lines"].values()) <= 8 * len(cluster.app.hosts), report
    check_books(cluster.database_url, load.ops)
    # The nodes come back: the one that failed rejoins as a replica, and writes go on.
    cluster.wait_for_replication(120)
    assert sorted(r for r in map(cluster.role, cluster.nodes)) == [
        "leader",
        "replica",
        "sync_standby",
    ]
