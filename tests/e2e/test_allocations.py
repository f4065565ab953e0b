"""Partner allocations over real sockets: gunicorn with its config (two workers) in
AUTH_MODE=keys, on PostgreSQL and on one SQLite file, each partner with a key of its own.

The issue's "Done when": an operator gives partner A 30 of an event's 100 seats and B 20
with overflow; A takes exactly its 30 and nothing of the pool, B its 20 and then pool seats,
a partner without an allocation at most the pool's 50, and a cancel gives each seat back to
the bucket it came from; one key never holds more than its limit of an event however it
cycles holds. Then the rest of the routes' rules: what each key's summary shows, who may
set allocations, If-Match, every refusal, and an allocation deleted while seats are taken."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import quote

import pytest

from support.faults import wait_until
from support.servers import request, serving
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services.partners import create_key
from ticketboss.store.db import make_engine

DEFAULT_EVENT = "node-meetup-2025"
NODE_SUMMARY = {"eventId", "name", "totalSeats", "availableSeats", "reservationCount", "version"}
PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # the JSON, None when there is none
    headers: Message

    @property
    def etag(self) -> str:
        return self.headers["ETag"]


class Client:
    """Requests over a new connection each, with one key (`partner_id`: its partner)."""

    def __init__(self, port: int, key: str | None, partner_id: str | None = None):
        self.port, self.key, self.partner_id = port, key, partner_id

    def __call__(self, method: str, path: str, body=None, **headers: str) -> Answer:
        status, data, answer_headers = request(
            self.port, method, path, body, self.key, full=True, headers=headers
        )
        return Answer(status, json.loads(data) if data else None, answer_headers)

    def get(self, path: str, **headers: str) -> Answer:
        return self("GET", path, **headers)

    def put(self, path: str, body, **headers: str) -> Answer:
        return self("PUT", path, body, **headers)

    def post(self, path: str, body=None, **headers: str) -> Answer:
        return self("POST", path, body, **headers)

    def delete(self, path: str, **headers: str) -> Answer:
        return self("DELETE", path, **headers)


@pytest.fixture(scope="module")
def engine(database_url):
    engine = make_engine(Settings(database_url=database_url))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def port(database_url, tmp_path_factory):
    with serving(database_url, tmp_path_factory, AUTH_MODE="keys") as served:
        yield served.port


@pytest.fixture(scope="module")
def operator(port, engine) -> Client:
    return Client(port, create_key(engine, "ops", Role.OPERATOR)[1])


@pytest.fixture
def partner(port, engine):
    """partner() -> a Client with the key of a new partner of its own."""

    def make() -> Client:
        partner_id = f"pa-{uuid.uuid4().hex[:10]}"
        return Client(port, create_key(engine, partner_id, Role.PARTNER)[1], partner_id)

    return make


@pytest.fixture
def new_event(operator):
    """new_event(seats) -> the id of a new event of this test's own."""

    def make(seats: int = 100) -> str:
        event_id = f"alloc-{uuid.uuid4().hex[:10]}"
        body = {"eventId": event_id, "name": "Allocations", "totalSeats": seats}
        assert operator.post("/api/events", body).status == 201
        return event_id

    return make


# The routes, as the tests call them -------------------------------------------------------


def allocation_path(event_id: str, partner_id: str) -> str:
    return f"/api/events/{event_id}/allocations/{partner_id}"


def allot(operator: Client, event_id: str, partner_id: str, seats: int, **body) -> Answer:
    return operator.put(allocation_path(event_id, partner_id), {"seats": seats, **body})


def reserve(client: Client, event_id: str, seats: int, **headers: str) -> Answer:
    """A partner key's own reservation (no partnerId)."""
    return client.post(f"/api/events/{event_id}/reservations", {"seats": seats}, **headers)


def hold(client: Client, event_id: str, seats: int, ttl: int | None = None, **headers) -> Answer:
    body = {"seats": seats, **({"ttlSeconds": ttl} if ttl is not None else {})}
    return client.post(f"/api/events/{event_id}/holds", body, **headers)


def cancel(client: Client, event_id: str, reservation_id: str) -> Answer:
    return client.delete(f"/api/events/{event_id}/reservations/{reservation_id}")


def detail(client: Client, event_id: str, reservation_id: str) -> dict:
    answer = client.get(f"/api/events/{event_id}/reservations/{reservation_id}")
    assert answer.status == 200, answer.body
    return answer.body


def summary(client: Client, event_id: str) -> dict:
    answer = client.get(f"/api/events/{event_id}")
    assert answer.status == 200, answer.body
    return answer.body


def allocations(client: Client, event_id: str) -> dict:
    answer = client.get(f"/api/events/{event_id}/allocations")
    assert answer.status == 200, answer.body
    return answer.body


def books(operator: Client, event_id: str) -> tuple[dict, tuple]:
    """Each allocation's (seats, taken, held, available), and the pool's, as operators see them."""
    page = allocations(operator, event_id)
    figures = ("seats", "taken", "held", "available")
    by_partner = {a["partnerId"]: tuple(a[f] for f in figures) for a in page["items"]}
    return by_partner, tuple(page["pool"][f] for f in figures)


def listed(client: Client, event_id: str) -> dict:
    """The event as the event list shows it to the key (page after page until it is found)."""
    path = "/api/events?limit=100"
    while True:
        page = client.get(path).body
        found = [e for e in page["items"] if e["eventId"] == event_id]
        if found or page["nextCursor"] is None:
            assert found, event_id
            return found[0]
        path = f"/api/events?limit=100&cursor={quote(page['nextCursor'])}"


def assert_problem(answer: Answer, status: int, slug: str) -> dict:
    assert answer.status == status, answer.body
    assert answer.headers.get_content_type() == PROBLEM
    assert answer.body["type"] == f"/problems/{slug}" and answer.body["status"] == status
    return answer.body


def taken(answer: Answer) -> str:
    """The id of the reservation or hold an answer made (it must be a 201)."""
    assert answer.status == 201, answer.body
    return answer.body["reservationId"]


# Done when --------------------------------------------------------------------------------


def test_each_partner_takes_from_its_own_bucket_and_a_cancel_gives_seats_back_to_it(
    operator, partner, new_event
):
    event = new_event(100)
    a, b, c = partner(), partner(), partner()
    assert allot(operator, event, a.partner_id, 30).status == 201
    assert allot(operator, event, b.partner_id, 20, overflow=True).status == 201
    assert books(operator, event) == (
        {a.partner_id: (30, 0, 0, 30), b.partner_id: (20, 0, 0, 20)},
        (50, 0, 0, 50),
    )

    # A: exactly its 30, every seat from its allocation, and nothing of the pool.
    mine = [taken(reserve(a, event, 10)) for _ in range(3)]
    assert [detail(a, event, rid)["allocatedSeats"] for rid in mine] == [10, 10, 10]
    for refused in (reserve(a, event, 1), hold(a, event, 1)):
        body = assert_problem(refused, 409, "not-enough-seats")
        assert (body["bucket"], body["requested"], body["available"]) == ("allocation", 1, 0)

    # C, without an allocation: the pool's 50 and not one more.
    assert summary(c, event)["availableSeats"] == 50
    pooled = [taken(reserve(c, event, 10)) for _ in range(5)]
    assert {detail(c, event, rid)["allocatedSeats"] for rid in pooled} == {0}
    body = assert_problem(reserve(c, event, 1), 409, "not-enough-seats")
    assert (body["bucket"], body["available"]) == ("pool", 0)

    # B: its 20, then (with overflow) the pool's seats, here none.
    assert summary(b, event)["availableSeats"] == 20
    assert detail(b, event, taken(reserve(b, event, 10)))["allocatedSeats"] == 10
    assert detail(b, event, taken(reserve(b, event, 5)))["allocatedSeats"] == 5
    body = assert_problem(reserve(b, event, 10), 409, "not-enough-seats")
    assert (body["bucket"], body["requested"], body["available"]) == ("allocation+pool", 10, 5)

    # A cancel of C's gives its 10 seats to the pool, which B now reaches past its own 5.
    assert cancel(c, event, pooled[0]).status == 204
    assert books(operator, event)[1] == (50, 40, 0, 10)
    assert summary(b, event)["availableSeats"] == 15
    straddling = taken(reserve(b, event, 10))
    assert detail(b, event, straddling)["allocatedSeats"] == 5  # 5 of its own, 5 of the pool
    assert detail(b, event, taken(reserve(b, event, 5)))["allocatedSeats"] == 0
    assert_problem(reserve(b, event, 1), 409, "not-enough-seats")
    assert books(operator, event) == (
        {a.partner_id: (30, 30, 0, 0), b.partner_id: (20, 20, 0, 0)},
        (50, 50, 0, 0),
    )
    totals = summary(operator, event)
    assert (totals["availableSeats"], totals["reservationCount"]) == (0, 11)

    # Each cancel gives its seats back to the bucket they came from.
    assert cancel(a, event, mine[0]).status == 204
    assert books(operator, event)[0][a.partner_id] == (30, 20, 0, 10)
    assert books(operator, event)[1] == (50, 50, 0, 0)
    assert_problem(reserve(c, event, 1), 409, "not-enough-seats")  # none came to the pool
    assert cancel(b, event, straddling).status == 204
    assert books(operator, event) == (
        {a.partner_id: (30, 20, 0, 10), b.partner_id: (20, 15, 0, 5)},
        (50, 45, 0, 5),
    )
    assert summary(c, event)["availableSeats"] == 5
    assert taken(reserve(c, event, 5))
    assert_problem(reserve(c, event, 1), 409, "not-enough-seats")
    assert taken(reserve(a, event, 10))  # and A has its 10 again

    # Listings show each reservation's bucket too.
    listed = a.get(f"/api/events/{event}/reservations?status=confirmed").body["items"]
    assert sorted(r["allocatedSeats"] for r in listed) == [10, 10, 10]


def test_holds_draw_from_the_buckets_and_a_release_gives_them_back(operator, partner, new_event):
    event = new_event(100)
    b = partner()
    assert allot(operator, event, b.partner_id, 20, overflow=True).status == 201
    held = [taken(hold(b, event, 10)) for _ in range(3)]
    assert [detail(b, event, rid)["allocatedSeats"] for rid in held] == [10, 10, 0]
    assert books(operator, event) == ({b.partner_id: (20, 0, 20, 0)}, (80, 0, 10, 70))
    confirmed = b.post(f"/api/events/{event}/reservations/{held[0]}/confirm")
    assert confirmed.status == 200
    assert books(operator, event) == ({b.partner_id: (20, 10, 10, 0)}, (80, 0, 10, 70))
    assert cancel(b, event, held[1]).status == 204  # a release: back to the allocation
    assert cancel(b, event, held[2]).status == 204  # back to the pool
    assert books(operator, event) == ({b.partner_id: (20, 10, 0, 10)}, (80, 0, 0, 80))
    assert summary(operator, event)["heldSeats"] == 0


def test_one_key_never_holds_more_than_its_limit_however_it_cycles_holds(
    operator, partner, new_event
):
    event = new_event(300)
    p = partner()
    held = [taken(hold(p, event, 10, ttl=7200)) for _ in range(10)]  # PARTNER_MAX_HELD_SEATS
    over = assert_problem(hold(p, event, 1), 409, "hold-limit-reached")
    assert (over["requested"], over["held"], over["limit"]) == (1, 100, 100)
    # A release and a new hold reset nothing: the limit counts what is held now.
    for _ in range(5):
        assert cancel(p, event, held.pop(0)).status == 204
        held.append(taken(hold(p, event, 10, ttl=7200)))
        assert_problem(hold(p, event, 1), 409, "hold-limit-reached")
        assert_problem(hold(p, event, 10, ttl=1), 409, "hold-limit-reached")
    # A refusal kept under an Idempotency-Key replays as it was, even once seats are free.
    refused = hold(p, event, 5, **{"Idempotency-Key": "over-the-limit"})
    assert_problem(refused, 409, "hold-limit-reached")
    assert cancel(p, event, held.pop()).status == 204
    again = hold(p, event, 5, **{"Idempotency-Key": "over-the-limit"})
    assert_problem(again, 409, "hold-limit-reached")
    assert again.headers["Idempotent-Replayed"] == "true"
    held.append(taken(hold(p, event, 10)))
    # A confirmed hold is a sale: it no longer counts as held.
    assert p.post(f"/api/events/{event}/reservations/{held.pop()}/confirm").status == 200
    assert taken(hold(p, event, 10))
    assert_problem(hold(p, event, 1), 409, "hold-limit-reached")
    after = summary(operator, event)
    assert (after["heldSeats"], after["availableSeats"]) == (100, 190)
    # The limit is one partner's: another holds as before.
    assert taken(hold(partner(), event, 10))


def test_a_burst_of_holds_from_one_key_stops_at_its_limit(operator, partner, new_event):
    """The attack of the issue: one key, many connections at once, long holds."""
    event, p = new_event(1000), partner()
    start, answers, lock = threading.Barrier(30), [], threading.Lock()

    def attack():
        start.wait()
        answer = hold(p, event, 10, ttl=7200)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=attack) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert Counter(a.status for a in answers) == Counter({201: 10, 409: 20})
    assert {a.body["type"] for a in answers if a.status == 409} == {"/problems/hold-limit-reached"}
    after = summary(operator, event)
    assert (after["heldSeats"], after["availableSeats"]) == (100, 900)


def test_an_allocation_sets_its_own_hold_limit_over_both_buckets(operator, partner, new_event):
    event = new_event(400)
    small, large = partner(), partner()
    assert (
        allot(operator, event, small.partner_id, 10, overflow=True, maxHeldSeats=25).status == 201
    )
    assert detail(small, event, taken(hold(small, event, 10)))["allocatedSeats"] == 10
    assert detail(small, event, taken(hold(small, event, 10)))["allocatedSeats"] == 0
    body = assert_problem(hold(small, event, 10), 409, "hold-limit-reached")
    assert (body["held"], body["limit"]) == (20, 25)
    assert taken(hold(small, event, 5))
    # Above the service's default, when the operator says so.
    assert allot(operator, event, large.partner_id, 200, maxHeldSeats=150).status == 201
    for _ in range(15):
        taken(hold(large, event, 10))
    assert_problem(hold(large, event, 1), 409, "hold-limit-reached")
    # Without maxHeldSeats the allocation is back on PARTNER_MAX_HELD_SEATS (100).
    resized = allot(operator, event, large.partner_id, 200)
    assert resized.status == 200 and resized.body["maxHeldSeats"] is None
    assert_problem(hold(large, event, 1), 409, "hold-limit-reached")
    assert taken(reserve(large, event, 10))  # a reservation is no hold: not limited


# What each key sees -----------------------------------------------------------------------


def test_the_allocation_routes_need_a_key(port, operator, partner, new_event):
    event, a = new_event(100), partner()
    allot(operator, event, a.partner_id, 10)
    nobody = Client(port, None)
    for answer in (
        nobody.get(f"/api/events/{event}/allocations"),
        nobody.get(allocation_path(event, a.partner_id)),
        allot(nobody, event, a.partner_id, 20),
        nobody.delete(allocation_path(event, a.partner_id)),
    ):
        assert_problem(answer, 401, "unauthenticated")
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert books(operator, event)[0] == {a.partner_id: (10, 0, 0, 10)}


def test_a_partner_sees_what_it_can_get_and_only_its_own_allocation(operator, partner, new_event):
    event = new_event(100)
    a, b, c = partner(), partner(), partner()
    # Without allocations, an event is summarised as it was before they existed.
    for client in (operator, a):
        assert set(summary(client, event)) == NODE_SUMMARY | {"heldSeats"}
    allot(operator, event, a.partner_id, 30)
    allot(operator, event, b.partner_id, 20, overflow=True)
    taken(reserve(a, event, 10))
    taken(hold(c, event, 10))
    pool = {"seats": 50, "taken": 0, "held": 10, "available": 40}
    own = {
        a.partner_id: {"seats": 30, "taken": 10, "held": 0, "available": 20, "overflow": False},
        b.partner_id: {"seats": 20, "taken": 0, "held": 0, "available": 20, "overflow": True},
    }
    for allocation in own.values():
        allocation |= {"maxHeldSeats": None, "closed": False}

    seen = summary(operator, event)
    assert (seen["availableSeats"], seen["heldSeats"], seen["pool"]) == (80, 10, pool)
    assert seen["allocations"] == [{"partnerId": p, **own[p]} for p in sorted(own)]
    for client, available in ((a, 20), (b, 60), (c, 40)):
        seen = summary(client, event)
        mine = [{"partnerId": p, **own[p]} for p in own if p == client.partner_id]
        # Of the pool a partner sees what it can use: its size beside the event's total
        # would tell what the other partners' allocations add up to.
        assert (seen["availableSeats"], seen["pool"], seen["allocations"]) == (
            available,
            {"available": pool["available"]},
            mine,
        ), client.partner_id
        assert (seen["totalSeats"], seen["reservationCount"]) == (100, 1)
        # The event list says the same, and so does the allocations route.
        assert listed(client, event) == seen
        page = allocations(client, event)
        assert (page["items"], page["pool"]) == (mine, {"available": pool["available"]})
    assert len(allocations(operator, event)["items"]) == 2
    assert allocations(operator, event)["pool"] == pool

    # One allocation: its partner's and operators'; anyone else's is a 404 like a missing one.
    for client in (a, operator):
        answer = client.get(allocation_path(event, a.partner_id))
        assert answer.status == 200 and answer.body == {
            "partnerId": a.partner_id,
            **own[a.partner_id],
        }
        assert answer.etag == f'"{summary(operator, event)["version"]}"'
    for client in (b, c):
        assert_problem(
            client.get(allocation_path(event, a.partner_id)), 404, "allocation-not-found"
        )
    assert_problem(operator.get(allocation_path(event, c.partner_id)), 404, "allocation-not-found")
    assert_problem(c.get(allocation_path(event, c.partner_id)), 404, "allocation-not-found")


def test_the_node_summary_keeps_exactly_its_fields_with_allocations(operator, partner, engine):
    seed_event(engine, DEFAULT_EVENT, "Node.js Meet-up", 100, reset=True)
    try:
        a, c = partner(), partner()
        assert allot(operator, DEFAULT_EVENT, a.partner_id, 30).status == 201
        for client, available in ((operator, 100), (a, 30), (c, 70)):
            seen = client.get("/api/reservations")
            assert seen.status == 200 and set(seen.body) == NODE_SUMMARY
            assert seen.body["availableSeats"] == available
        created = a.post("/api/reservations", {"seats": 10})
        assert created.status == 201
        assert set(created.body) == {"reservationId", "seats", "status"}
        assert detail(a, DEFAULT_EVENT, created.body["reservationId"])["allocatedSeats"] == 10
        assert a.get("/api/reservations").body["availableSeats"] == 20
        assert c.get("/api/reservations").body["availableSeats"] == 70
        assert operator.get("/api/reservations").body["availableSeats"] == 90
    finally:  # the default event is every test's: leave it without allocations
        seed_event(engine, DEFAULT_EVENT, "Node.js Meet-up", 500, reset=True)


# Who may set allocations, and when --------------------------------------------------------


def test_a_partner_key_can_neither_set_nor_delete_an_allocation(operator, partner, new_event):
    event = new_event(100)
    a, b = partner(), partner()
    allot(operator, event, a.partner_id, 30)
    before = (summary(operator, event), allocations(operator, event))
    for client in (a, b):
        for target in (a.partner_id, b.partner_id):
            assert_problem(allot(client, event, target, 50), 403, "forbidden")
            assert_problem(client.delete(allocation_path(event, target)), 403, "forbidden")
    assert (summary(operator, event), allocations(operator, event)) == before


def test_if_match_guards_puts_and_deletes_with_the_events_version(operator, partner, new_event):
    event, a = new_event(100), partner()
    path = allocation_path(event, a.partner_id)
    created = allot(operator, event, a.partner_id, 30)
    assert created.status == 201 and created.headers["Location"] == path
    assert created.etag == '"1"' == operator.get(f"/api/events/{event}/allocations").etag
    assert summary(operator, event)["version"] == 1

    stale = {"If-Match": '"0"'}
    assert_problem(operator.put(path, {"seats": 40}, **stale), 412, "precondition-failed")
    assert_problem(operator.delete(path, **stale), 412, "precondition-failed")
    assert books(operator, event)[0] == {a.partner_id: (30, 0, 0, 30)}

    resized = operator.put(path, {"seats": 40}, **{"If-Match": '"1"'})
    assert (resized.status, resized.body["seats"], resized.etag) == (200, 40, '"2"')
    same = operator.put(path, {"seats": 40}, **{"If-Match": '"2"'})  # already so: no write
    assert (same.status, same.etag) == (200, '"2"')
    taken(reserve(a, event, 1))  # version 3
    assert_problem(operator.delete(path, **{"If-Match": '"2"'}), 412, "precondition-failed")
    deleted = operator.delete(path, **{"If-Match": '"2", "3"'})
    assert (deleted.status, deleted.etag) == (204, '"4"')
    assert summary(operator, event)["version"] == 4
    assert operator.put(path, {"seats": 5}, **{"If-Match": "*"}).status == 201


# Refusals ---------------------------------------------------------------------------------


def test_allocations_never_exceed_what_the_event_can_give(operator, partner, new_event):
    event = new_event(100)
    a, b, c = partner(), partner(), partner()
    body = assert_problem(allot(operator, event, a.partner_id, 101), 409, "allocation-too-large")
    assert "100" in body["detail"]
    assert allot(operator, event, a.partner_id, 60).status == 201
    assert_problem(allot(operator, event, b.partner_id, 41), 409, "allocation-too-large")
    taken(reserve(c, event, 10))
    taken(hold(c, event, 10))  # the pool has 20 left
    assert_problem(allot(operator, event, b.partner_id, 21), 409, "allocation-too-large")
    assert allot(operator, event, b.partner_id, 20).status == 201
    assert_problem(allot(operator, event, a.partner_id, 61), 409, "allocation-too-large")
    assert books(operator, event) == (
        {a.partner_id: (60, 0, 0, 60), b.partner_id: (20, 0, 0, 20)},
        (20, 10, 10, 0),
    )
    # Nor can the event shrink under them.
    answer = operator("PATCH", f"/api/events/{event}", {"totalSeats": 99})
    assert_problem(answer, 409, "seats-reserved")


def test_an_allocation_never_shrinks_below_what_is_taken_and_held_from_it(
    operator, partner, new_event
):
    event, a = new_event(100), partner()
    allot(operator, event, a.partner_id, 60)
    taken(reserve(a, event, 10))
    taken(hold(a, event, 5))
    body = assert_problem(allot(operator, event, a.partner_id, 14), 409, "allocation-in-use")
    assert "15" in body["detail"]
    assert books(operator, event) == ({a.partner_id: (60, 10, 5, 45)}, (40, 0, 0, 40))
    shrunk = allot(operator, event, a.partner_id, 15)
    assert (shrunk.status, shrunk.body["available"]) == (200, 0)
    assert books(operator, event) == ({a.partner_id: (15, 10, 5, 0)}, (85, 0, 0, 85))


def test_an_event_has_at_most_fifty_allocations(operator, partner, new_event):
    event = new_event(100)
    partners = [partner() for _ in range(51)]
    for p in partners[:50]:
        assert allot(operator, event, p.partner_id, 1).status == 201
    assert_problem(allot(operator, event, partners[50].partner_id, 1), 409, "too-many-allocations")
    assert operator.delete(allocation_path(event, partners[0].partner_id)).status == 204
    assert allot(operator, event, partners[50].partner_id, 1).status == 201


def test_missing_allocations_events_and_partners(operator, partner, new_event):
    event, a = new_event(100), partner()
    for answer in (
        operator.get(allocation_path(event, a.partner_id)),
        operator.delete(allocation_path(event, a.partner_id)),
    ):
        assert_problem(answer, 404, "allocation-not-found")
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    for answer in (
        operator.get(f"/api/events/{missing}/allocations"),
        operator.get(allocation_path(missing, a.partner_id)),
        allot(operator, missing, a.partner_id, 1),
        operator.delete(allocation_path(missing, a.partner_id)),
    ):
        assert_problem(answer, 404, "event-not-found")
    # With keys, an allocation is only for a partner that has an account.
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"
    assert_problem(allot(operator, event, nobody, 10), 422, "unknown-partner")
    assert allocations(operator, event)["items"] == []
    assert summary(operator, event)["version"] == 0
    # Deleted with nothing used, it is gone: a second delete finds nothing.
    allot(operator, event, a.partner_id, 10)
    assert operator.delete(allocation_path(event, a.partner_id)).status == 204
    assert_problem(
        operator.delete(allocation_path(event, a.partner_id)), 404, "allocation-not-found"
    )
    assert allocations(operator, event)["items"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"seats": -1},
        {"seats": "5"},
        {"seats": 1.5},
        {"seats": None},
        {"seats": 1_000_001},
        {},
        {"overflow": True},
        {"seats": 5, "maxHeldSeats": 0},
        {"seats": 5, "maxHeldSeats": -1},
        {"seats": 5, "maxHeldSeats": "3"},
        {"seats": 5, "overflow": "true"},
        {"seats": 5, "overflow": 1},
        {"seats": 5, "overflow": "maybe"},
        {"seats": 5, "overflow": None},
        [5],
        "5",
    ],
    ids=repr,
)
def test_a_bad_body_is_a_400_that_changes_nothing(operator, partner, new_event, body):
    event, a = new_event(100), partner()
    allot(operator, event, a.partner_id, 10)
    before = summary(operator, event)
    assert_problem(operator.put(allocation_path(event, a.partner_id), body), 400, "invalid-request")
    assert summary(operator, event) == before


# An allocation deleted while seats are taken from it --------------------------------------


def test_a_deleted_allocation_keeps_its_used_seats_and_each_one_back_goes_to_the_pool(
    operator, partner, new_event
):
    event, a = new_event(100), partner()
    allot(operator, event, a.partner_id, 30)
    confirmed = taken(reserve(a, event, 10))
    held = taken(hold(a, event, 5))
    assert operator.delete(allocation_path(event, a.partner_id)).status == 204

    page = allocations(operator, event)
    assert page["items"] == [
        {
            "partnerId": a.partner_id,
            "seats": 15,  # taken + held
            "taken": 10,
            "held": 5,
            "available": 0,
            "overflow": False,
            "maxHeldSeats": None,
            "closed": True,
        }
    ]
    assert page["pool"] == {"seats": 85, "taken": 0, "held": 0, "available": 85}
    assert summary(operator, event)["availableSeats"] == 85
    closed = allocation_path(event, a.partner_id)
    assert_problem(operator.delete(closed), 404, "allocation-not-found")
    # The partner now takes from the pool like one without an allocation.
    assert summary(a, event)["availableSeats"] == 85
    assert detail(a, event, taken(reserve(a, event, 2)))["allocatedSeats"] == 0

    assert cancel(a, event, confirmed).status == 204
    assert books(operator, event) == ({a.partner_id: (5, 0, 5, 0)}, (95, 2, 0, 93))
    assert cancel(a, event, held).status == 204  # the last seat used from it: it is gone
    assert books(operator, event) == ({}, (100, 2, 0, 98))
    after = summary(operator, event)
    assert (after["availableSeats"], after["heldSeats"], after["reservationCount"]) == (98, 0, 1)
    assert set(after) == NODE_SUMMARY | {"heldSeats"}  # no allocations: summarised as before


def test_a_lapsed_hold_of_a_deleted_allocation_gives_its_seats_to_the_pool(
    operator, partner, new_event
):
    event, a = new_event(100), partner()
    allot(operator, event, a.partner_id, 30)
    lapsing = taken(hold(a, event, 3, ttl=2))
    assert operator.delete(allocation_path(event, a.partner_id)).status == 204
    seen = allocations(operator, event)
    if detail(a, event, lapsing)["status"] == "held":  # still alive after that read
        assert [(x["seats"], x["held"], x["closed"]) for x in seen["items"]] == [(3, 3, True)]
        assert seen["pool"]["available"] == 97

    def gone() -> bool:  # its seats come back by themselves, to the pool
        return allocations(operator, event)["items"] == []

    wait_until(gone, 15, every=0.25)
    assert detail(a, event, lapsing)["status"] == "expired"
    assert books(operator, event) == ({}, (100, 0, 0, 100))
    assert summary(operator, event)["availableSeats"] == 100


def test_a_put_reopens_a_deleted_allocation_with_what_is_still_used(operator, partner, new_event):
    event, a = new_event(100), partner()
    allot(operator, event, a.partner_id, 30)
    kept = taken(reserve(a, event, 10))
    operator.delete(allocation_path(event, a.partner_id))
    assert_problem(allot(operator, event, a.partner_id, 9), 409, "allocation-in-use")
    reopened = allot(operator, event, a.partner_id, 20, overflow=True)
    assert reopened.status == 201
    assert (reopened.body["closed"], reopened.body["taken"], reopened.body["available"]) == (
        False,
        10,
        10,
    )
    assert cancel(a, event, kept).status == 204  # its seats are the allocation's again
    assert books(operator, event) == ({a.partner_id: (20, 0, 0, 20)}, (80, 0, 0, 80))
