"""Every request is answered within its deadline, whatever hangs: the service over gunicorn,
against a PostgreSQL cluster and a Redis of this module's own, stopped (SIGSTOP), killed,
filled and trickled at, with keyed clients retrying on the same Idempotency-Key. Nothing is
lost, oversold or booked twice once the dependency is back.

Each test prints its figures (answers by status, worst latency, time to recover): run with
`-rP` to see them."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager

import psycopg2
import pytest
from sqlalchemy import create_engine, select, text

from support.faults import PrivatePostgres, PrivateRedis, wait_until
from support.servers import METRICS_TOKEN, request, serving
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services.partners import create_key
from ticketboss.store import queries
from ticketboss.store.db import make_engine
from ticketboss.store.migrate import upgrade
from ticketboss.store.tables import idempotency_keys, reservations

DEADLINE = 2.0
# What an answer may take past the deadline: the 503 itself, a busy 2-core machine.
MARGIN = 1.0
SETTINGS = {
    "REQUEST_DEADLINE_SECONDS": DEADLINE,
    "BODY_TIMEOUT_SECONDS": 2,
    "DB_POOL_SIZE": 4,
    "DB_MAX_OVERFLOW": 6,
    "HOLD_SWEEP_SECONDS": 0,
}


@pytest.fixture(scope="module")
def postgres():
    cluster = PrivatePostgres(max_connections=40).start()
    yield cluster
    cluster.remove()


@pytest.fixture(scope="module")
def url(postgres) -> str:
    admin = create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE ticketboss"))
    admin.dispose()
    upgrade(postgres.url("ticketboss"))
    return postgres.url("ticketboss")


@pytest.fixture(scope="module")
def direct(url):
    engine = make_engine(Settings(database_url=url, db_pool_size=2, db_max_overflow=0))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def key(direct) -> str:
    """An operator's key; the load reserves for partner `p`, which exists."""
    create_key(direct, "p", Role.PARTNER)
    return create_key(direct, "hang-ops", Role.OPERATOR)[1]


@pytest.fixture(scope="module")
def served(url, tmp_path_factory):
    # Each fault is the database failing: a traceback per worker for the first of them.
    with serving(url, tmp_path_factory, max_tracebacks=4, **SETTINGS) as server:
        yield server
    assert "unhandled error" not in server.log.read_text()


@pytest.fixture
def event(direct) -> str:
    event_id = f"hang-{uuid.uuid4().hex[:8]}"
    seed_event(direct, event_id, "Hangs", 100_000, reset=True)
    return event_id


class KeyedLoad:
    """Clients in a closed loop, each reserving one seat at a time under a new
    Idempotency-Key, retried on that key (503, 409 in flight) until it is definite: 201, or
    409 not-enough-seats. Every attempt's status, Retry-After and latency is recorded."""

    def __init__(self, port: int, key: str, event_id: str, clients: int = 20):
        self.port, self.key, self.path = port, key, f"/api/events/{event_id}/reservations"
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        # Each attempt: when it began, how long it took, its status, whether it said
        # Retry-After, and its problem type.
        self.attempts: list[tuple[float, float, object, bool, str]] = []
        self.booked: dict[str, str] = {}  # Idempotency-Key -> reservation id
        self.threads = [threading.Thread(target=self.client) for _ in range(clients)]

    def __enter__(self) -> KeyedLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in self.threads), "a client never ended"

    def client(self) -> None:
        conn = None
        while not self.stopping.is_set():
            idempotency_key = uuid.uuid4().hex
            for _ in range(200):  # the same key until its answer is definite
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                status, _, body = self.attempt(conn, idempotency_key)
                if status is None:
                    conn.close()
                    conn = None
                if status == 201:
                    with self.lock:
                        self.booked[idempotency_key] = body["reservationId"]
                    break
                if status == 409 and body.get("type") == "/problems/not-enough-seats":
                    break
                if status not in (None, 503, 409):
                    break  # anything else is recorded, and ends this key
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def attempt(self, conn, idempotency_key: str):
        headers = {
            "Authorization": f"Bearer {self.key}",
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
        }
        began = time.monotonic()
        try:
            conn.request("POST", self.path, json.dumps({"partnerId": "p", "seats": 1}), headers)
            response = conn.getresponse()
            body = json.loads(response.read() or b"{}")
            status, retry_after = response.status, response.getheader("Retry-After") is not None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            status, retry_after, body = f"no answer: {type(exc).__name__}", False, {}
        kind = body.get("type", "")
        with self.lock:
            self.attempts.append((began, time.monotonic() - began, status, retry_after, kind))
        return (status if isinstance(status, int) else None), retry_after, body

    def statuses(self, since: float = 0.0, until: float = float("inf")) -> Counter:
        return Counter(a[2] for a in self.attempts if since <= a[0] < until)

    def kinds(self, status: int) -> Counter:
        """The problem types of the answers of that status."""
        return Counter(a[4].removeprefix("/problems/") for a in self.attempts if a[2] == status)

    def worst(self) -> float:
        return max(a[1] for a in self.attempts)

    def first_201_after(self, moment: float) -> float:
        return min(a[0] + a[1] for a in self.attempts if a[2] == 201 and a[0] >= moment) - moment


def assert_books_balance(direct, event_id: str, load: KeyedLoad) -> None:
    """Every 201 is a confirmed reservation and every confirmed reservation had its 201, by
    the Idempotency-Key that kept it, once; the event's seats agree with them."""
    with direct.connect() as conn:
        booked = conn.execute(
            select(reservations.c.id).where(
                reservations.c.event_id == event_id, reservations.c.status == "confirmed"
            )
        ).all()
        kept = conn.execute(
            select(idempotency_keys.c.key, idempotency_keys.c.reservation_id).where(
                idempotency_keys.c.reservation_id.in_([r for (r,) in booked])
            )
        ).all()
        event = queries.load_event(conn, event_id)
    assert {str(r) for (r,) in booked} == set(load.booked.values())
    assert {key: str(r) for key, r in kept} == load.booked  # each key booked once, as answered
    assert event.available_seats == event.total_seats - len(booked)


def assert_answered_in_time(load: KeyedLoad) -> None:
    statuses = load.statuses()
    unanswered = {s: n for s, n in statuses.items() if not isinstance(s, int)}
    assert not unanswered, statuses
    assert 500 not in statuses, statuses
    assert load.worst() <= DEADLINE + MARGIN, f"worst {load.worst():.2f} s"
    assert all(a[3] for a in load.attempts if a[2] == 503), "a 503 without Retry-After"


def timed(port: int, path: str) -> tuple[int, float]:
    began = time.monotonic()
    status, _ = request(port, "GET", path)
    return status, time.monotonic() - began


def figures(name: str, load: KeyedLoad, **more) -> None:
    extra = "".join(f", {k} {v}" for k, v in more.items())
    statuses, kinds = dict(load.statuses()), dict(load.kinds(503))
    print(f"[figures] {name}: {statuses} (503s: {kinds}), worst {load.worst():.2f} s{extra}")


# Bodies ------------------------------------------------------------------------------------


def _send_head(port: int, key: str, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        (
            f"POST /api/reservations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\n{head}\r\n"
        ).encode()
    )
    return sock


def _status(sock: socket.socket) -> int:
    answer = sock.recv(65536)
    match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    assert match, answer
    return int(match.group(1))


def test_a_trickled_body_is_answered_408_at_the_body_deadline(served, key):
    sock = _send_head(served.port, key, "Content-Length: 60000\r\n")
    began = time.monotonic()
    sock.settimeout(0.01)
    status = None
    while status is None and time.monotonic() - began < 8:
        try:
            sock.sendall(b" ")
        except OSError:
            pass  # closed after the answer
        try:
            status = _status(sock)
        except TimeoutError:
            time.sleep(0.2)
    took = time.monotonic() - began
    sock.close()
    print(f"[figures] trickled body: {status} after {took:.2f} s (BODY_TIMEOUT_SECONDS=2)")
    assert status == 408
    assert 1.8 <= took <= 2 + MARGIN


@pytest.mark.parametrize(
    "chunks",
    [
        b"10000000000000000000\r\n{}\r\n0\r\n\r\n",  # twenty hex digits: 2^76 bytes
        b"ffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
        b'1e\n{"partnerId": "p", "seats": 1}\n0\n\n',  # LF-only lines
    ],
)
def test_broken_chunked_framing_is_refused_at_once(served, key, chunks):
    sock = _send_head(served.port, key, "Transfer-Encoding: chunked\r\n")
    began = time.monotonic()
    sock.sendall(chunks)
    status = _status(sock)
    took = time.monotonic() - began
    sock.close()
    print(f"[figures] chunks {chunks[:24]!r}: {status} after {took:.3f} s")
    assert status == 400
    assert took < 1.0


# PostgreSQL -------------------------------------------------------------------------------


def test_a_row_lock_counts_against_a_queued_request_deadline_once(served, direct, key, event):
    """A transaction holding the event's row lock past the deadline: every request queued
    behind it is answered within its own deadline, not one statement timeout per batch."""
    locker = direct.connect()
    locker.execute(text("SELECT 1 FROM events WHERE event_id = :e FOR UPDATE"), {"e": event})
    try:
        with KeyedLoad(served.port, key, event, clients=10) as load:
            time.sleep(2 * DEADLINE + 1)
            locker.rollback()
            released = time.monotonic()
            time.sleep(1.5)
    finally:
        locker.close()
    figures("row lock", load, recovered=f"{load.first_201_after(released):.2f} s")
    assert_answered_in_time(load)
    assert load.statuses(until=released)[503] > 0
    assert_books_balance(direct, event, load)


def test_terminated_backends_are_retried_on_fresh_connections(served, direct, key, event):
    with KeyedLoad(served.port, key, event, clients=20) as load:
        for _ in range(5):
            time.sleep(0.6)
            with direct.connect() as conn:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'ticketboss' AND pid <> pg_backend_pid()"
                    )
                )
        time.sleep(0.5)
    figures("terminated backends", load)
    assert_answered_in_time(load)
    statuses = load.statuses()
    # Killed at any other moment, a connection is replaced and its work done again; killed
    # while its COMMIT was on the wire, the batch's outcome is unknown, and says so (the
    # keys' retries find it). A group commit's batch answers all its requests alike.
    assert set(load.kinds(503)) <= {"outcome-unknown"}, load.kinds(503)
    assert statuses[503] <= 0.05 * statuses.total(), statuses
    assert_books_balance(direct, event, load)


def test_the_pool_waits_for_its_own_connections_when_max_connections_is_reached(
    served, postgres, direct, key, event
):
    with KeyedLoad(served.port, key, event, clients=20) as load:
        time.sleep(1)  # the workers' pools are warm: they hold their own connections
        others = []
        try:
            while True:  # another client takes every free slot
                try:
                    others.append(
                        psycopg2.connect(
                            host="127.0.0.1", port=postgres.port, user="root", dbname="ticketboss"
                        )
                    )
                except psycopg2.OperationalError:
                    break
            taken = time.monotonic()
            time.sleep(4)
        finally:
            for conn in others:
                conn.close()
        freed = time.monotonic()
        time.sleep(0.5)
    during = load.statuses(taken, freed)
    figures("max_connections", load, during=dict(during), others=len(others))
    assert others, "nothing took the free slots"
    assert_answered_in_time(load)
    assert during[201] > 0
    assert during[503] <= 0.05 * during.total(), during
    assert_books_balance(direct, event, load)


def test_a_stopped_postgresql_is_a_prompt_503_and_nothing_is_lost(
    served, postgres, direct, key, event
):
    with KeyedLoad(served.port, key, event, clients=30) as load:
        time.sleep(1.5)
        with postgres.frozen():
            stopped = time.monotonic()
            time.sleep(1)
            ready = timed(served.port, "/api/ready")
            health = timed(served.port, "/api/health")
            time.sleep(3)
        resumed = time.monotonic()
        time.sleep(3)
    recovered = load.first_201_after(resumed)
    # Requests that began in the stall, late enough that none of them could see it end.
    during = load.statuses(stopped + MARGIN, resumed - DEADLINE - MARGIN)
    figures(
        "stopped PostgreSQL",
        load,
        during=dict(during),
        ready=f"{ready[0]} in {ready[1]:.2f} s",
        health=f"{health[0]} in {health[1]:.2f} s",
        recovered=f"{recovered:.2f} s",
    )
    assert_answered_in_time(load)
    assert ready[0] == 503 and ready[1] <= 1 + MARGIN
    assert health[0] == 503 and health[1] <= 1 + MARGIN
    assert during[503] > 0 and set(during) <= {503, 409}, during
    assert recovered < 2
    assert_books_balance(direct, event, load)


# Redis ------------------------------------------------------------------------------------


@contextmanager
def rate_limited(url, tmp_path_factory, redis: PrivateRedis, **settings):
    limits = {"RATELIMIT_STORAGE_URI": redis.url, "PARTNER_RATE_LIMIT": 100_000, **settings}
    with serving(url, tmp_path_factory, max_tracebacks=4, **SETTINGS, **limits) as server:
        yield server
    assert "unhandled error" not in server.log.read_text()


def storage_up(port: int) -> float | None:
    status, body = request(port, "GET", "/metrics", key=METRICS_TOKEN)
    assert status == 200, body
    found = re.search(rb"^ticketboss_ratelimit_storage_up (\S+)$", body, re.M)
    return float(found.group(1)) if found else None


def test_a_stopped_redis_costs_one_storage_timeout_and_says_so(url, tmp_path_factory, key, direct):
    event = f"redis-{uuid.uuid4().hex[:8]}"
    seed_event(direct, event, "Redis", 100_000, reset=True)
    redis = PrivateRedis().start()
    try:
        with rate_limited(url, tmp_path_factory, redis) as server:
            with KeyedLoad(server.port, key, event, clients=20) as load:
                time.sleep(1)
                assert storage_up(server.port) == 1
                with redis.frozen():
                    stopped = time.monotonic()
                    time.sleep(1)
                    health = timed(server.port, "/api/health")
                    fell_back = storage_up(server.port)
                    time.sleep(2)
                resumed = time.monotonic()
                back = wait_until(lambda: storage_up(server.port) == 1, 40, every=0.5)
            log = server.log.read_text()
    finally:
        redis.stop()
    during = load.statuses(stopped, resumed)
    figures("stopped Redis", load, during=dict(during), health=health, back=f"{back:.1f} s")
    assert_answered_in_time(load)
    # Redis stood still for 3 s: nobody waited for it (a storage timeout is 50 ms; the rest
    # is a busy 2-core machine).
    assert load.worst() < 1.5
    assert set(during) == {201}, during
    assert health[0] == 200
    assert fell_back == 0
    # One line per worker (two) for the outage, one for its end.
    assert 1 <= log.count("rate-limit storage unreachable") <= 2, log
    assert 1 <= log.count("rate-limit storage answers again") <= 2, log
    assert_books_balance(direct, event, load)


def test_a_killed_redis_is_never_a_500_and_the_fallback_keeps_the_limit(
    url, tmp_path_factory, key, direct
):
    """Killed under load: no 500 (the headers' window read included). Then each of the two
    workers allows half of the partner's budget, so the host as a whole keeps its limit."""
    event = f"redis-{uuid.uuid4().hex[:8]}"
    seed_event(direct, event, "Redis", 100_000, reset=True)
    redis = PrivateRedis().start()
    limit = 40
    try:
        with rate_limited(
            url, tmp_path_factory, redis, PARTNER_RATE_LIMIT=limit, PARTNER_RATE_BURST=limit
        ) as server:
            with KeyedLoad(server.port, key, event, clients=10) as load:
                time.sleep(1)
                redis.kill()
                killed = time.monotonic()
                time.sleep(4)
            log = server.log.read_text()
    finally:
        redis.stop()
    after = load.statuses(killed + 1)
    figures("killed Redis", load, after_kill=dict(after))
    assert 500 not in load.statuses()
    assert "rate-limit storage unreachable" in log
    # Three seconds past the kill, over a one-second window: at most 4 windows' worth.
    assert 0 < after[201] <= 4 * limit, after
    assert_books_balance(direct, event, load)
