"""Two partners race for an event's last pool seats while an operator resizes a partner's
allocation, lined up by a Barrier, over three apps (three workers) on one database: the
resize and the sales go through the one compare-and-swap, so nobody oversells, exactly the
seats that were there are sold, and the resize applies or is refused as the sales allow."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from sqlalchemy import select

from support.api import as_operator
from ticketboss import create_app, services_of
from ticketboss.cli import seed_event
from ticketboss.store.tables import reservations

EVENT = "allocation-resize-race"
PATH = f"/api/events/{EVENT}"
TOTAL = 20
ALLOCATED = 8  # the owner's allocation before the race
LAST = 4  # the pool seats left when the race starts
OWNER, RACER, OTHER_RACER, FILLER = "p20", "p21", "p22", "p23"
ROUNDS = 8  # per case


@dataclass(frozen=True)
class Answer:
    """One answer, with when its request was sent and answered (time.monotonic())."""

    status: int
    body: dict
    sent: float
    answered: float


@dataclass
class Client:
    """A thread's requests, all answered in order; `failed`: what broke the thread."""

    answers: list[Answer] = field(default_factory=list)
    failed: BaseException | None = None

    def send(self, request, *args, **kwargs) -> Answer:
        sent = time.monotonic()
        response = request(*args, **kwargs)
        answer = Answer(response.status_code, response.get_json() or {}, sent, time.monotonic())
        self.answers.append(answer)
        return answer

    def created(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 201]


@pytest.fixture(scope="module")
def apps(pg_settings):
    """Three apps on one database, as three gunicorn workers."""
    made = [as_operator(create_app(pg_settings)) for _ in range(3)]
    yield made
    for app in made:
        services_of(app).engine.dispose()


def buy_until_refused(app, partner: str, seats: int, client: Client, start: threading.Barrier):
    """Reserve `seats` at a time until a 409 (or 20 answers: a bound, never reached)."""
    test_client = app.test_client()
    start.wait()
    try:
        for _ in range(20):
            body = {"partnerId": partner, "seats": seats}
            answer = client.send(test_client.post, f"{PATH}/reservations", json=body)
            if answer.status != 201:
                return
    except BaseException as exc:
        client.failed = exc


def resize(app, partner: str, body: dict, client: Client, start: threading.Barrier):
    test_client = app.test_client()
    start.wait()
    try:
        client.send(test_client.put, f"{PATH}/allocations/{partner}", json=body)
    except BaseException as exc:
        client.failed = exc


def race(apps, owner_body: dict, buyers: list[tuple[str, int]]) -> tuple[Answer, list[Client]]:
    """The operator PUTs the owner's allocation while each buyer buys until refused, all
    started by one Barrier, each on its own app; the operator's answer and the buyers'."""
    operator, clients = Client(), [Client() for _ in buyers]
    start = threading.Barrier(1 + len(buyers))
    threads = [threading.Thread(target=resize, args=(apps[0], OWNER, owner_body, operator, start))]
    threads += [
        threading.Thread(target=buy_until_refused, args=(apps[1 + i % 2], p, n, c, start))
        for i, ((p, n), c) in enumerate(zip(buyers, clients, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    for client in (operator, *clients):
        if client.failed is not None:
            raise client.failed
    (put,) = operator.answers
    return put, clients


def set_up(apps, overflow: bool) -> int:
    """The event with the owner's allocation of ALLOCATED seats, 2 of them taken and 1 held
    by the owner, and the pool sold down to LAST seats; returns the version it is at."""
    engine = services_of(apps[0]).engine
    seed_event(engine, EVENT, "Resize race", TOTAL, reset=True)
    client = apps[0].test_client()
    answers = [
        client.put(f"{PATH}/allocations/{OWNER}", json={"seats": ALLOCATED, "overflow": overflow}),
        client.post(f"{PATH}/reservations", json={"partnerId": OWNER, "seats": 2}),
        client.post(f"{PATH}/holds", json={"partnerId": OWNER, "seats": 1, "ttlSeconds": 3600}),
    ]
    left = TOTAL - ALLOCATED
    while left > LAST:
        seats = min(10, left - LAST)
        answers.append(
            client.post(f"{PATH}/reservations", json={"partnerId": FILLER, "seats": seats})
        )
        left -= seats
    assert [a.status_code for a in answers] == [201] * len(answers)
    page = client.get(f"{PATH}/allocations").get_json()
    assert page["pool"]["available"] == LAST
    assert page["items"][0]["available"] == ALLOCATED - 3
    return len(answers)


def books(apps) -> tuple[dict, dict, list]:
    """The summary, the allocations and the rows after a round, checked against each other:
    no bucket is oversold, the buckets make up the event, and each one's books balance."""
    client = apps[2].test_client()
    summary = client.get(PATH).get_json()
    page = client.get(f"{PATH}/allocations").get_json()
    with services_of(apps[0]).engine.connect() as conn:
        rows = list(conn.execute(select(reservations).where(reservations.c.event_id == EVENT)))
    (allocation,) = page["items"]
    assert allocation["partnerId"] == OWNER and not allocation["closed"]
    pool = page["pool"]
    assert pool["seats"] + allocation["seats"] == TOTAL == summary["totalSeats"]

    def rows_of(status: str, seats, partner: str | None = None) -> int:
        mine = [r for r in rows if r.status == status and partner in (None, r.partner_id)]
        return sum(seats(r) for r in mine)

    for bucket, seats in ((allocation, lambda r: r.allocated_seats), (pool, pooled)):
        partner = OWNER if bucket is allocation else None
        assert bucket["taken"] == rows_of("confirmed", seats, partner)
        assert bucket["held"] == rows_of("held", seats, partner)
        assert 0 <= bucket["available"] == bucket["seats"] - bucket["taken"] - bucket["held"]
    assert all(r.allocated_seats == 0 for r in rows if r.partner_id != OWNER)
    assert summary["availableSeats"] == pool["available"] + allocation["available"]
    assert summary["heldSeats"] == rows_of("held", lambda r: r.seats)
    assert summary["reservationCount"] == sum(r.status == "confirmed" for r in rows)
    return summary, page, rows


def pooled(row) -> int:
    return row.seats - row.allocated_seats


def assert_sold_as_answered(rows, clients: list[Client]) -> None:
    """Every 201 is a confirmed row of its seats; each buyer's last answer is a genuine
    not-enough-seats 409, and nothing else was answered."""
    by_id = {str(r.id): r for r in rows}
    for client in clients:
        *bought, last = client.answers
        assert all(a.status == 201 for a in bought)
        assert last.status == 409 and last.body["type"] == "/problems/not-enough-seats", last
        assert 0 <= last.body["available"] < last.body["requested"]
        for answer in bought:
            row = by_id[answer.body["reservationId"]]
            assert (row.status, row.seats) == ("confirmed", answer.body["seats"])


def drawn(rows, clients: list[Client], partner: str, before: float, *, surely: bool) -> int:
    """Seats the partner's 201s drew from its allocation surely (answered) or perhaps (sent)
    before `before`."""
    allocated = {str(r.id): r.allocated_seats for r in rows if r.partner_id == partner}
    return sum(
        allocated.get(a.body["reservationId"], 0)
        for c in clients
        for a in c.created()
        if (a.answered if surely else a.sent) < before
    )


@pytest.mark.parametrize("grow", range(1, LAST + 2))
def test_two_partners_racing_an_allocation_growing_into_the_pool_sell_exactly_what_is_left(
    apps, grow
):
    outcomes: Counter = Counter()
    for _ in range(ROUNDS):
        version = set_up(apps, overflow=False)
        put, clients = race(apps, {"seats": ALLOCATED + grow}, [(RACER, 1), (OTHER_RACER, 2)])
        summary, page, rows = books(apps)
        assert_sold_as_answered(rows, clients)
        assert [c.answers[-1].body["bucket"] for c in clients] == ["pool", "pool"]
        (allocation,) = page["items"]
        bought = [a for c in clients for a in c.created()]
        assert len(rows) == version - 1 + len(bought)  # every row set up, and every 201's
        sold = sum(a.body["seats"] for a in bought)
        # The pool is sold out, and exactly what it had went: to the buyers, or to the
        # allocation that grew into it.
        assert page["pool"]["available"] == 0
        # The buyers' seats surely sold before the PUT was sent, and perhaps before it was
        # answered.
        surely = sum(a.body["seats"] for a in bought if a.answered < put.sent)
        perhaps = sum(a.body["seats"] for a in bought if a.sent < put.answered)
        grew = put.status == 200
        outcomes[grew] += 1
        if grew:
            assert allocation["seats"] == ALLOCATED + grow
            assert sold == LAST - grow
            assert surely + grow <= LAST  # the pool still had them when it grew
        else:
            assert put.status == 409, put
            assert put.body["type"] == "/problems/allocation-too-large", put
            assert allocation["seats"] == ALLOCATED
            assert sold == LAST
            assert perhaps + grow > LAST  # the pool had fewer than `grow` seats left by then
        assert allocation["available"] == allocation["seats"] - 3
        assert summary["version"] == version + len(bought) + grew
    if grow > LAST:  # never fits
        assert outcomes == Counter({False: ROUNDS})


@pytest.mark.parametrize("shrink_to", [0, 2, 3, 4, 5, 6, 7, ALLOCATED])
def test_a_partner_racing_its_shrinking_allocation_and_another_the_pool_sell_every_seat(
    apps, shrink_to
):
    outcomes: Counter = Counter()
    for _ in range(ROUNDS):
        version = set_up(apps, overflow=True)
        put, clients = race(apps, {"seats": shrink_to, "overflow": True}, [(OWNER, 1), (RACER, 1)])
        summary, page, rows = books(apps)
        assert_sold_as_answered(rows, clients)
        owner, racer = clients
        assert owner.answers[-1].body["bucket"] == "allocation+pool"
        assert racer.answers[-1].body["bucket"] == "pool"
        (allocation,) = page["items"]
        bought = [a for c in clients for a in c.created()]
        assert len(rows) == version - 1 + len(bought)  # every row set up, and every 201's
        # Every seat of the event is gone (the owner's last hold aside), and exactly those
        # that were left: the allocation's unused ones and the pool's, wherever they went.
        assert summary["availableSeats"] == 0
        assert sum(a.body["seats"] for a in bought) == LAST + ALLOCATED - 3
        # What the owner had used of its allocation surely before the PUT was sent, and
        # perhaps before it was answered (2 taken and 1 held before the race).
        surely = 3 + drawn(rows, [owner], OWNER, put.sent, surely=True)
        perhaps = 3 + drawn(rows, [owner], OWNER, put.answered, surely=False)
        shrunk = put.status == 200
        outcomes[shrunk] += 1
        if shrunk:
            assert allocation["seats"] == shrink_to
            assert surely <= shrink_to  # it still had them unused when it shrank
        else:
            assert put.status == 409, put
            assert put.body["type"] == "/problems/allocation-in-use", put
            assert allocation["seats"] == ALLOCATED
            assert perhaps > shrink_to  # more were used of it by then
        assert (allocation["taken"], allocation["held"]) == (allocation["seats"] - 1, 1)
        assert page["pool"]["taken"] == page["pool"]["seats"]
        assert summary["version"] == version + len(bought) + (shrunk and shrink_to != ALLOCATED)
    if shrink_to < 3:  # below what is used before the race
        assert outcomes == Counter({False: ROUNDS})
    if shrink_to == ALLOCATED:  # what it already is: a 200 that writes nothing
        assert outcomes == Counter({True: ROUNDS})
