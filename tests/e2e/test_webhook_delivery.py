"""Webhook deliveries over real sockets: gunicorn with its config (two workers, each with its
dispatcher) on PostgreSQL, delivering to real HTTP receivers on loopback that verify every
signature with the `standardwebhooks` library.

Every kind of change is told, with the object exactly as its GET route then showed it and the
event's version after it; the webhooks and GET /api/changes say the same; a partner hears
only of its own reservations, holds and allocation (and of the events), an operator of all.
Then the failures: a receiver that is down for a while, one that answers 410, one that keeps
answering 500, workers killed with SIGKILL mid-send, PostgreSQL restarted, and a receiver so
slow that its deliveries time out, which slows nobody else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, func, select, text

from support.faults import PrivatePostgres, wait_until
from support.receiver import Receiver
from support.servers import request, serving
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services.dispatcher import lease_seconds
from ticketboss.services.partners import create_key
from ticketboss.store.db import make_engine
from ticketboss.store.migrate import upgrade
from ticketboss.store.tables import webhook_deliveries

TIMEOUT = 2.0  # WEBHOOK_TIMEOUT_SECONDS
SETTINGS = {
    "AUTH_MODE": "keys",
    "WEBHOOK_SECRET_KEYS": Fernet.generate_key().decode(),
    "WEBHOOKS_ALLOW_PRIVATE": "1",
    "WEBHOOK_RETRY_BASE_SECONDS": 0.2,
    "WEBHOOK_POLL_SECONDS": 0.2,
    "WEBHOOK_TIMEOUT_SECONDS": TIMEOUT,
    "HOLD_SWEEP_SECONDS": 0.5,
}
# How long a delivery may take to arrive when nothing is wrong (a poll is 0.2 s).
PROMPT = 5.0


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # the JSON, None when there is none
    headers: Message


class Client:
    """Requests over a new connection each, with one key (`partner_id`: its partner)."""

    def __init__(self, port: int, key: str, partner_id: str):
        self.port, self.key, self.partner_id = port, key, partner_id

    def __call__(self, method: str, path: str, body=None) -> Answer:
        status, data, headers = request(self.port, method, path, body, self.key, full=True)
        return Answer(status, json.loads(data) if data else None, headers)

    def ok(self, method: str, path: str, body=None, status: int = 200) -> Any:
        """The JSON of a request that must answer `status`."""
        answer = self(method, path, body)
        assert answer.status == status, (method, path, answer.status, answer.body)
        return answer.body


# Databases and servers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def new_database(pg_url):
    """new_database() -> the URL of a new database on the tests' server, migrated; each
    server gets its own, since every dispatcher on a database delivers for every endpoint
    in it (each with its own server's settings)."""
    made: list[str] = []

    def make() -> str:
        url = pg_url.rsplit("/", 1)[0] + f"/ticketboss_webhooks_{uuid.uuid4().hex[:10]}"
        upgrade(url)
        made.append(url.rsplit("/", 1)[1])
        return url

    yield make
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in made:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@dataclass
class Service:
    """A gunicorn serving one database: its port, master process, log and an engine on it."""

    port: int
    process: subprocess.Popen
    log: Any
    engine: Any

    def client(self, role: Role = Role.PARTNER, partner_id: str | None = None) -> Client:
        """A client with a new key of a new partner (or of `partner_id`)."""
        partner_id = partner_id or f"wh-{uuid.uuid4().hex[:10]}"
        return Client(self.port, create_key(self.engine, partner_id, role)[1], partner_id)


@contextmanager
def served(url: str, tmp_path_factory, max_tracebacks=0, **settings) -> Iterator[Service]:
    """gunicorn on `url` with SETTINGS and `settings`, and an engine of the tests' on it."""
    engine = make_engine(Settings(database_url=url, db_pool_size=2, db_max_overflow=2))
    try:
        with serving(url, tmp_path_factory, max_tracebacks, **{**SETTINGS, **settings}) as server:
            yield Service(server.port, server.process, server.log, engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def main(new_database, tmp_path_factory):
    """The server most tests share (their endpoints and events are their own)."""
    with served(new_database(), tmp_path_factory) as service:
        yield service


@pytest.fixture(scope="module")
def strict(new_database, tmp_path_factory):
    """A server that gives up after three attempts and sends up to eight deliveries to one
    endpoint at once; its workers are killed too."""
    settings = {"WEBHOOK_MAX_ATTEMPTS": 3, "WEBHOOK_ENDPOINT_CONCURRENCY": 8}
    with served(new_database(), tmp_path_factory, **settings) as service:
        yield service


@pytest.fixture(scope="module")
def main_operator(main) -> Client:
    return main.client(Role.OPERATOR, "wh-ops")


# Endpoints and receivers --------------------------------------------------------------------


class Hooks:
    """Receivers registered as endpoints; each endpoint is deleted (nothing more is sent to
    it) and each receiver closed at the end."""

    def __init__(self):
        self.registered: list[tuple[Client, str]] = []
        self.receivers: list[Receiver] = []

    def register(self, client: Client, **receiver: Any) -> tuple[Receiver, dict]:
        """A new receiver (Receiver's settings), registered as an endpoint of `client`'s
        key: (the receiver, the endpoint as registration answered it)."""
        hook = Receiver(**receiver)
        self.receivers.append(hook)
        endpoint = client.ok("POST", "/api/webhooks", {"url": hook.url}, status=201)
        self.registered.append((client, endpoint["id"]))
        hook.secret = endpoint["secret"]
        return hook, endpoint

    def close(self) -> None:
        try:
            for client, endpoint_id in self.registered:
                assert client("DELETE", f"/api/webhooks/{endpoint_id}").status in (204, 404)
        finally:
            for hook in self.receivers:
                hook.close()


@pytest.fixture
def hooks():
    made = Hooks()
    yield made
    made.close()


def new_event(operator: Client, seats: int = 1000) -> str:
    event_id = f"wh-{uuid.uuid4().hex[:10]}"
    body = {"eventId": event_id, "name": "Webhooks", "totalSeats": seats}
    operator.ok("POST", "/api/events", body, status=201)
    return event_id


def reserve(client: Client, event_id: str, seats: int = 1, **body: Any) -> dict:
    path = f"/api/events/{event_id}/reservations"
    return client.ok("POST", path, {"seats": seats, **body}, status=201)


def feed(client: Client, event_id: str | None = None) -> list[dict]:
    """Every notification GET /api/changes lists to the key (of one event), page by page."""
    items: list[dict] = []
    query = f"eventId={event_id}&" if event_id else ""
    after = ""
    while True:
        page = client.ok("GET", f"/api/changes?{query}limit=50{after}")
        if not page["items"]:
            return items
        items += page["items"]
        after = f"&after={page['nextCursor']}"


def of_event(hook: Receiver, event_id: str) -> dict[str, dict]:
    """The notifications of that event the receiver got (answered 2xx), by webhook-id."""
    return {
        webhook_id: got.notification
        for webhook_id, got in hook.unique().items()
        if got.notification["eventId"] == event_id
    }


def deliveries(client: Client, endpoint_id: str) -> list[dict]:
    return client.ok("GET", f"/api/webhooks/{endpoint_id}/deliveries?limit=100")["items"]


# 1–3: every type, as the API shows it; the feed says the same; who hears what ------------------


@dataclass(frozen=True)
class Step:
    """One change and what it must be told as: its type, whose it is (None: the event's),
    the event's version after it, and its object as each viewer's GET showed it then."""

    type: str
    partner_id: str | None
    version: int
    data: dict[str, dict]  # viewer ("a", "b", "ops") -> the object as its GET showed it


@dataclass(frozen=True)
class Story:
    event_id: str
    a: str  # partner A's id (with an allocation on the event)
    b: str  # partner B's id (without one)
    steps: list[Step]
    received: dict[str, list]  # viewer -> what its endpoint got (Received), in arrival order
    unique: dict[str, dict[str, dict]]  # viewer -> webhook-id -> notification, 2xx-answered
    feeds: dict[str, list[dict]]  # viewer -> GET /api/changes?eventId=…, oldest first


@pytest.fixture(scope="module")
def story(main, main_operator) -> Story:
    """Partners A and B and an operator each register an endpoint; then, on a new event, an
    allocation for A, every change a partner can make (by A; B reserves once), an operator's
    PATCH and allocation change, and A's hold left to lapse. After each change, each object
    is read back with GET, as each viewer sees it, with the event's version."""
    ops, a, b = main_operator, main.client(), main.client()
    viewers = {"a": a, "b": b, "ops": ops}
    hooks = Hooks()
    try:
        hook = {name: hooks.register(client)[0] for name, client in viewers.items()}
        event_id = new_event(ops, 100)
        base = f"/api/events/{event_id}"
        steps: list[Step] = []

        def version() -> int:
            return ops.ok("GET", base)["version"]

        def told(kind: str, client: Client, path: str) -> None:
            """A change to `client`'s object at `path`, read back at once."""
            data = client.ok("GET", path)
            steps.append(
                Step(kind, client.partner_id, version(), {"ops": data, viewer_of(client): data})
            )

        def viewer_of(client: Client) -> str:
            return "a" if client is a else "b"

        allocation = f"{base}/allocations/{a.partner_id}"
        ops.ok("PUT", allocation, {"seats": 10}, status=201)
        told("allocation.updated", a, allocation)

        reserved = reserve(a, event_id, 2)["reservationId"]
        told("reservation.confirmed", a, f"{base}/reservations/{reserved}")

        held = a.ok("POST", f"{base}/holds", {"seats": 1, "ttlSeconds": 600}, 201)
        held_path = f"{base}/reservations/{held['reservationId']}"
        told("hold.created", a, held_path)
        a.ok("POST", f"{held_path}/extend", {"ttlSeconds": 900})
        told("hold.extended", a, held_path)
        a.ok("POST", f"{held_path}/confirm")
        told("reservation.confirmed", a, held_path)

        released = a.ok("POST", f"{base}/holds", {"seats": 1}, 201)
        released_path = f"{base}/reservations/{released['reservationId']}"
        told("hold.created", a, released_path)
        a.ok("DELETE", released_path, status=204)
        told("hold.released", a, released_path)

        a.ok("DELETE", f"{base}/reservations/{reserved}", status=204)
        told("reservation.cancelled", a, f"{base}/reservations/{reserved}")

        of_b = reserve(b, event_id, 1)["reservationId"]
        told("reservation.confirmed", b, f"{base}/reservations/{of_b}")

        patched = ops.ok("PATCH", base, {"name": "Webhooks, renamed", "totalSeats": 120})
        views = {name: client.ok("GET", base) for name, client in viewers.items()}
        assert views["a"] != views["ops"] != views["b"]  # the allocation shows differently
        steps.append(Step("event.updated", None, patched["version"], views))

        ops.ok("PUT", allocation, {"seats": 12, "overflow": True})
        told("allocation.updated", a, allocation)

        # Last, and nothing else happens to the event meanwhile: only the sweep can expire it.
        lapsing = a.ok("POST", f"{base}/holds", {"seats": 1, "ttlSeconds": 2}, 201)
        lapsing_path = f"{base}/reservations/{lapsing['reservationId']}"
        told("hold.created", a, lapsing_path)

        def expired() -> bool:
            return any(n["type"] == "hold.expired" for n in of_event(hook["a"], event_id).values())

        wait_until(expired, 2 + PROMPT)
        told("hold.expired", a, lapsing_path)
        assert steps[-1].data["a"]["status"] == "expired"

        for name in viewers:
            expected = len([s for s in steps if name in s.data])
            wait_until(lambda: len(of_event(hook[name], event_id)) >= expected, PROMPT)  # noqa: B023
        feeds = {}
        for name, client in viewers.items():
            expected = len([s for s in steps if name in s.data])
            wait_until(lambda: len(feed(client, event_id)) >= expected, PROMPT)  # noqa: B023
            feeds[name] = feed(client, event_id)
    finally:
        hooks.close()  # endpoints deleted first: nothing is sent to a closed receiver
    return Story(
        event_id,
        a.partner_id,
        b.partner_id,
        steps,
        {name: list(h.received) for name, h in hook.items()},
        {name: of_event(h, event_id) for name, h in hook.items()},
        feeds,
    )


STORY = [
    "allocation.updated",
    "reservation.confirmed",
    "hold.created",
    "hold.extended",
    "reservation.confirmed",
    "hold.created",
    "hold.released",
    "reservation.cancelled",
    "reservation.confirmed",
    "event.updated",
    "allocation.updated",
    "hold.created",
    "hold.expired",
]


def expected_for(story: Story, viewer: str) -> list[tuple[str, str | None, int]]:
    """(type, partnerId, version) of each change `viewer` must be told of, in order."""
    return [(s.type, s.partner_id, s.version) for s in story.steps if viewer in s.data]


def told_to(story: Story, viewer: str) -> list[tuple[str, str | None, int]]:
    """(type, partnerId, version) of each notification `viewer`'s endpoint got, by version."""
    got = sorted(story.unique[viewer].values(), key=lambda n: n["version"])
    return [(n["type"], n["partnerId"], n["version"]) for n in got]


def test_each_change_is_told_once_signed_at_the_version_it_left_the_event_at(story):
    assert [s.type for s in story.steps] == STORY
    versions = [s.version for s in story.steps]
    assert versions == list(range(1, len(versions) + 1))  # one change, one version
    for viewer in ("a", "b", "ops"):
        assert told_to(story, viewer) == expected_for(story, viewer), viewer
        # Each delivery verified by the library, its webhook-id the notification's id.
        for received in story.received[viewer]:
            assert received.verified, received.headers
            assert received.id == received.notification["id"]
            assert received.notification["eventId"] == story.event_id


@pytest.mark.parametrize("kind", sorted(set(STORY)))
def test_each_type_carries_its_object_as_the_get_right_after_the_change_showed_it(story, kind):
    for step in [s for s in story.steps if s.type == kind]:
        for viewer, shown in step.data.items():
            [told] = [n for n in story.unique[viewer].values() if n["version"] == step.version]
            assert told["type"] == kind
            assert told["data"] == shown, (viewer, kind, step.version)


def test_the_feed_lists_in_version_order_exactly_what_the_webhooks_delivered(story):
    for viewer in ("a", "b", "ops"):
        listed = story.feeds[viewer]
        versions = [n["version"] for n in listed]
        assert versions == sorted(versions) and len(set(versions)) == len(versions), viewer
        # The same ids, and the whole bodies alike.
        assert {n["id"]: n for n in listed} == story.unique[viewer], viewer


def test_a_partner_hears_only_of_its_own_and_the_events_changes_and_an_operator_of_all(story):
    mine = {"a": story.a, "b": story.b}
    for viewer, partner_id in mine.items():
        for notification in [*story.unique[viewer].values(), *story.feeds[viewer]]:
            assert notification["partnerId"] in (partner_id, None), (viewer, notification)
    # B: its own reservation and the event's update, nothing of A's.
    assert told_to(story, "b") == [
        ("reservation.confirmed", story.b, 9),
        ("event.updated", None, 10),
    ]
    # The event's update as each one's GET showed it: A's allocation only to A and the
    # operator, the pool's figures only to the operator.
    updates = {
        v: n["data"]
        for v in mine | {"ops": None}
        for n in story.unique[v].values()
        if n["type"] == "event.updated"
    }
    assert [a["partnerId"] for a in updates["a"]["allocations"]] == [story.a]
    assert updates["b"]["allocations"] == []
    assert [a["partnerId"] for a in updates["ops"]["allocations"]] == [story.a]
    assert updates["ops"]["pool"]["seats"] == 110  # 120 seats, 10 of them A's (then)
    assert "seats" not in updates["a"]["pool"] and "seats" not in updates["b"]["pool"]
    # The operator: every change, of both partners and the event.
    assert told_to(story, "ops") == expected_for(story, "ops")
    assert len(story.unique["ops"]) == len(story.steps)


# 4–6: a receiver down for a while, one that is gone, one that keeps failing -------------------


def test_a_receiver_down_for_a_while_gets_everything_once_back_after_logged_503s(main, hooks):
    partner = main.client()
    hook, endpoint = hooks.register(partner, status=503)
    event_id = new_event(main.client(Role.OPERATOR))
    made = [reserve(partner, event_id)["reservationId"] for _ in range(5)]

    # Every delivery was tried and refused at least once before the receiver comes back.
    def refused_each() -> bool:
        tried = {r.id for r in hook.received if r.answered == 503}
        return len(tried) == len(made)

    wait_until(refused_each, PROMPT)
    hook.status = 200
    wait_until(lambda: len(hook.unique()) == len(made), PROMPT + 2)

    listed = feed(partner, event_id)
    assert {n["id"] for n in listed} == set(hook.unique())  # nothing missing, nothing more
    assert sorted(n["data"]["reservationId"] for n in listed) == sorted(made)
    assert all(r.verified for r in hook.received)
    shown = deliveries(partner, endpoint["id"])
    assert len(shown) == len(made)
    for delivery in shown:
        assert delivery["status"] == "delivered" and delivery["settledAt"] is not None
        last, *failed = delivery["history"]  # newest first
        assert (last["statusCode"], last["nextAttemptAt"]) == (200, None)
        assert failed and delivery["attempts"] == len(failed) + 1
        for attempt in failed:
            assert attempt["statusCode"] == 503 and attempt["nextAttemptAt"] is not None
            assert attempt["nextAttemptAt"] > attempt["attemptedAt"]


def test_a_410_disables_the_endpoint_until_a_retry_enables_it_with_what_it_missed(main, hooks):
    partner = main.client()
    gone, endpoint = hooks.register(partner, status=410)
    witness, _ = hooks.register(partner)  # the same partner's other endpoint
    event_id = new_event(main.client(Role.OPERATOR))
    first = reserve(partner, event_id)["reservationId"]

    path = f"/api/webhooks/{endpoint['id']}"
    wait_until(lambda: partner.ok("GET", path)["enabled"] is False, PROMPT)
    shown = partner.ok("GET", path)
    assert shown["disabledReason"] == "410 Gone from the endpoint"
    assert shown["disabledAt"] is not None
    [delivery] = deliveries(partner, endpoint["id"])
    assert delivery["status"] == "failed" and delivery["attempts"] == 1
    assert [(a["statusCode"], a["nextAttemptAt"]) for a in delivery["history"]] == [(410, None)]

    # Back, but disabled: a later notification reaches the witness and not this endpoint
    # (both are fanned out in one transaction: it got no delivery at all).
    gone.status = 200
    later = reserve(partner, event_id)["reservationId"]
    wait_until(lambda: len(of_event(witness, event_id)) == 2, PROMPT)
    assert [d["id"] for d in deliveries(partner, endpoint["id"])] == [delivery["id"]]
    assert gone.unique() == {}

    # The retry enables it, sends the delivery again and queues what it missed meanwhile.
    retried = partner.ok("POST", f"{path}/deliveries/{delivery['id']}/retry", status=202)
    assert retried["status"] == "pending" and retried["attempts"] == 0
    assert partner.ok("GET", path)["enabled"] is True
    assert partner.ok("GET", path)["disabledReason"] is None
    wait_until(lambda: len(gone.unique()) == 2, PROMPT)
    assert {n["id"] for n in feed(partner, event_id)} == set(gone.unique())
    told = {n["data"]["reservationId"] for n in of_event(gone, event_id).values()}
    assert told == {first, later}
    assert all(r.verified for r in gone.received)
    missed, again = deliveries(partner, endpoint["id"])  # newest first
    assert again["id"] == delivery["id"] and again["status"] == "delivered"
    assert [a["statusCode"] for a in again["history"]] == [200, 410]
    assert missed["status"] == "delivered"
    assert [a["statusCode"] for a in missed["history"]] == [200]


def test_after_max_attempts_of_500_the_delivery_fails_and_the_endpoint_is_disabled(strict, hooks):
    partner = strict.client()
    hook, endpoint = hooks.register(partner, status=500)
    event_id = new_event(strict.client(Role.OPERATOR))
    reserve(partner, event_id)

    path = f"/api/webhooks/{endpoint['id']}"
    # Three attempts, 0.2 s and 0.4 s apart (±25 %).
    wait_until(lambda: partner.ok("GET", path)["enabled"] is False, PROMPT)
    shown = partner.ok("GET", path)
    assert shown["disabledReason"] == "3 attempts failed (last: HTTP 500)"
    [delivery] = deliveries(partner, endpoint["id"])
    assert (delivery["status"], delivery["attempts"]) == ("failed", 3)
    assert delivery["nextAttemptAt"] is None and delivery["settledAt"] is not None
    history = delivery["history"]
    assert [a["statusCode"] for a in history] == [500, 500, 500]
    assert history[0]["nextAttemptAt"] is None
    assert all(a["nextAttemptAt"] is not None for a in history[1:])
    assert len(hook.received) == 3 and all(r.verified for r in hook.received)
    assert len({r.id for r in hook.received}) == 1  # one notification, the same webhook-id

    reserve(partner, event_id)  # nothing more for a disabled endpoint
    wait_until(lambda: len(feed(partner, event_id)) == 2, PROMPT)
    assert len(deliveries(partner, endpoint["id"])) == 1


# 7–9: workers killed, PostgreSQL restarted, a receiver that hangs ------------------------------


def workers_of(master: subprocess.Popen) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(master.pid)], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in found.stdout.split()]


def in_flight(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(
            select(func.count())
            .select_from(webhook_deliveries)
            .where(
                webhook_deliveries.c.status == "pending", webhook_deliveries.c.lease.is_not(None)
            )
        )


def test_deliveries_in_flight_when_both_workers_are_killed_all_arrive(strict, hooks):
    partner = strict.client()
    hook, _ = hooks.register(partner, delay=1.0)
    event_id = new_event(strict.client(Role.OPERATOR))
    made = [reserve(partner, event_id)["reservationId"] for _ in range(24)]

    wait_until(lambda: in_flight(strict.engine) >= 8, PROMPT)  # every slot of the endpoint
    killed = workers_of(strict.process)
    assert len(killed) == 2
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    # The master boots two new workers; the leases of the dead lapse (lease_seconds), and
    # the 8 senders send the 24 again, 1 s each.
    wait_until(lambda: len(set(workers_of(strict.process)) - set(killed)) == 2, 10)
    resent = lease_seconds(TIMEOUT) + len(made) / 8 * 1.0
    wait_until(lambda: len(hook.unique()) == len(made), resent + PROMPT)

    listed = feed(partner, event_id)
    assert {n["id"] for n in listed} == set(hook.unique())
    assert sorted(n["data"]["reservationId"] for n in listed) == sorted(made)
    assert all(r.verified for r in hook.received)
    print(f"{len(made)} notifications, {len(hook.received)} deliveries received")


def test_deliveries_committed_before_postgresql_stops_arrive_after_it_restarts(
    tmp_path_factory,
):
    postgres = PrivatePostgres().start()
    hooks = Hooks()
    try:
        url = postgres.url("ticketboss")
        upgrade(url)
        # Each worker logs the traceback of its first failed connection (then one line each).
        with served(url, tmp_path_factory, 2, REQUEST_DEADLINE_SECONDS=2) as service:
            try:
                partner = service.client()
                hook, _ = hooks.register(partner, status=503)
                event_id = new_event(service.client(Role.OPERATOR))
                path = f"/api/events/{event_id}/reservations"
                made = [reserve(partner, event_id)["reservationId"] for _ in range(5)]
                # Committed, fanned out and tried once each: they wait for their next attempt.
                wait_until(lambda: len({r.id for r in hook.received}) == len(made), PROMPT)

                postgres.stop()
                hook.status = 200
                during = []
                for _ in range(3):
                    during.append(partner("POST", path, {"seats": 1}))
                    during.append(partner("GET", f"/api/changes?eventId={event_id}"))
                    during.append(partner("GET", "/api/webhooks"))
                assert {a.status for a in during} == {503}, [(a.status, a.body) for a in during]
                assert all(a.headers["Retry-After"] for a in during)
                postgres.start()

                def reserved_again() -> bool:
                    answer = partner("POST", path, {"seats": 1})
                    assert answer.status in (201, 503), (answer.status, answer.body)
                    if answer.status == 201:
                        made.append(answer.body["reservationId"])
                    return answer.status == 201

                wait_until(reserved_again, 15, every=0.2)
                wait_until(lambda: len(hook.unique()) == len(made), PROMPT + 5)
                listed = feed(partner, event_id)
                assert {n["id"] for n in listed} == set(hook.unique())
                assert sorted(n["data"]["reservationId"] for n in listed) == sorted(made)
                assert all(r.verified for r in hook.received)
            finally:
                hooks.close()  # its endpoints, while the server is still there
    finally:
        postgres.remove()


def test_an_endpoint_that_hangs_slows_neither_another_partners_deliveries_nor_reservations(
    main, hooks
):
    slow, quick = main.client(), main.client()
    _, stuck_endpoint = hooks.register(slow, delay=2.5 * TIMEOUT)  # each attempt times out
    prompt, _ = hooks.register(quick)
    event_id = new_event(main.client(Role.OPERATOR))
    for _ in range(8):  # twice the endpoint's share of deliveries in flight
        reserve(slow, event_id)
    wait_until(lambda: in_flight(main.engine) >= 4, PROMPT)

    latencies, arrivals = [], []
    for _ in range(5):
        began = time.monotonic()
        reserve(quick, event_id)
        latencies.append(time.monotonic() - began)
        expected = len(arrivals) + 1
        arrivals.append(wait_until(lambda: len(prompt.unique()) == expected, PROMPT))  # noqa: B023
    print(f"arrivals {max(arrivals):.3f} s, reservations {max(latencies):.3f} s at worst")
    assert max(arrivals) < TIMEOUT, arrivals
    assert max(latencies) < 0.5, latencies
    # Meanwhile not one of the slow endpoint's deliveries went through: each timed out.
    assert {d["status"] for d in deliveries(slow, stuck_endpoint["id"])} == {"pending"}
