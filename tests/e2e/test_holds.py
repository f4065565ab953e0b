"""Holds through HTTP on PostgreSQL and SQLite: take seats, confirm, extend, release, lapse.

The app's clock is the database's, moved forward by the test (JumpingClock) to pass expiries
without waiting; tests/e2e/test_gunicorn.py lets a real hold lapse in real time.
"""

from datetime import datetime, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from support.api import as_operator, assert_problem, create_event
from support.api import reserve as api_reserve
from support.clock import JumpingClock
from support.database import PATIENT
from ticketboss import create_app, services_of
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services.partners import create_key
from ticketboss.store.tables import reservations

EVENT = "gala"


@pytest.fixture(scope="session")
def clock():
    return JumpingClock()


@pytest.fixture(scope="session")
def holds_app(database_url, clock):
    app = as_operator(create_app(Settings(database_url=database_url, **PATIENT), clock=clock))
    yield app
    services_of(app).engine.dispose()


@pytest.fixture
def client(holds_app, clock):
    """An operator's client, with a fresh 10-seat event and the clock back at the database's."""
    clock.skew = timedelta(0)
    engine = services_of(holds_app).engine
    from ticketboss.store.tables import events, idempotency_keys

    with engine.begin() as conn:
        conn.execute(idempotency_keys.delete())
        conn.execute(reservations.delete().where(reservations.c.event_id == EVENT))
        conn.execute(events.delete().where(events.c.event_id == EVENT))
    client = holds_app.test_client()
    assert create_event(client, EVENT, seats=10).status_code == 201
    return client


def hold(client, seats=3, partner="alpha", ttl=None, key=None, event_id=EVENT):
    body = {"seats": seats, **({"partnerId": partner} if partner else {})}
    if ttl is not None:
        body["ttlSeconds"] = ttl
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(f"/api/events/{event_id}/holds", json=body, headers=headers)


def act(client, reservation_id, action, key=None, **body):
    headers = {"Idempotency-Key": key} if key else {}
    path = f"/api/events/{EVENT}/reservations/{reservation_id}/{action}"
    return client.post(path, json=body if body else None, headers=headers)


def reservation(client, reservation_id):
    return client.get(f"/api/events/{EVENT}/reservations/{reservation_id}")


def summary(client):
    return client.get(f"/api/events/{EVENT}").get_json()


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def about(delta: timedelta, seconds: float) -> bool:
    """Equal but for the real time the requests took."""
    return abs(delta - timedelta(seconds=seconds)) < timedelta(seconds=1)


def test_a_hold_takes_seats_and_shows_in_held_seats(client):
    response = hold(client, 3, ttl=60)
    assert response.status_code == 201
    body = response.get_json()
    assert body["status"] == "held" and body["seats"] == 3
    assert (
        response.headers["Location"] == f"/api/events/{EVENT}/reservations/{body['reservationId']}"
    )
    assert summary(client) | {"name": None} == {
        "eventId": EVENT,
        "name": None,
        "totalSeats": 10,
        "availableSeats": 7,
        "heldSeats": 3,
        "reservationCount": 0,
        "version": 1,
    }
    detail = reservation(client, body["reservationId"]).get_json()
    assert detail["status"] == "held" and detail["expiresAt"] == body["expiresAt"]
    assert when(detail["expiresAt"]) - when(detail["createdAt"]) == timedelta(seconds=60)


def test_a_hold_lasts_hold_ttl_seconds_unless_asked(client):
    detail = reservation(client, hold(client).get_json()["reservationId"]).get_json()
    assert when(detail["expiresAt"]) - when(detail["createdAt"]) == timedelta(seconds=900)


def test_confirm_makes_the_hold_a_reservation_and_again_gives_the_same_answer(client):
    held = hold(client, 3).get_json()
    first = act(client, held["reservationId"], "confirm")
    again = act(client, held["reservationId"], "confirm")
    assert first.status_code == again.status_code == 200
    assert (
        first.get_json()
        == again.get_json()
        == {
            "reservationId": held["reservationId"],
            "seats": 3,
            "status": "confirmed",
        }
    )
    after = summary(client)
    assert (after["availableSeats"], after["heldSeats"], after["reservationCount"]) == (7, 0, 1)
    assert after["version"] == 2  # the hold and the confirm; confirming again wrote nothing
    assert "expiresAt" not in reservation(client, held["reservationId"]).get_json()


def test_extend_moves_the_expiry_but_never_past_the_cap_from_creation(client, clock):
    held = hold(client, 2, ttl=60).get_json()
    created = when(reservation(client, held["reservationId"]).get_json()["createdAt"])
    clock.jump(30)
    extended = act(client, held["reservationId"], "extend", ttlSeconds=600)
    assert extended.status_code == 200 and extended.get_json()["status"] == "held"
    assert about(when(extended.get_json()["expiresAt"]) - created, 630)
    clock.jump(500)  # alive: the expiry was pushed to 630 s; the cap is 7200 s
    capped = act(client, held["reservationId"], "extend", ttlSeconds=7200)
    assert when(capped.get_json()["expiresAt"]) == created + timedelta(seconds=7200)
    clock.jump(6700)
    assert_problem(act(client, held["reservationId"], "extend", ttlSeconds=60), 409, "hold-expired")


def test_after_its_ttl_a_holds_seats_go_to_the_next_reservation_with_no_sweep(client, clock):
    held = hold(client, 8, ttl=60).get_json()
    assert_problem(api_reserve(client, 5, "beta", event_id=EVENT), 409, "not-enough-seats")
    clock.jump(61)
    taken = api_reserve(client, 5, "beta", event_id=EVENT)
    assert taken.status_code == 201
    rid = held["reservationId"]
    assert_problem(act(client, rid, "confirm"), 409, "hold-expired")
    assert_problem(act(client, rid, "extend", ttlSeconds=60), 409, "hold-expired")
    assert_problem(client.delete(f"/api/events/{EVENT}/reservations/{rid}"), 409, "hold-expired")
    assert reservation(client, rid).get_json()["status"] == "expired"
    after = summary(client)
    assert (after["availableSeats"], after["heldSeats"], after["reservationCount"]) == (5, 0, 1)


def test_a_lapsed_hold_reads_expired_and_its_seats_free_before_anything_tidied_it(client, clock):
    held = hold(client, 4, ttl=10).get_json()
    clock.jump(11)
    assert reservation(client, held["reservationId"]).get_json()["status"] == "expired"
    engine = services_of(client.application).engine
    with engine.connect() as conn:  # nothing wrote it yet
        status = conn.scalar(select(reservations.c.status).where(reservations.c.event_id == EVENT))
    assert status == "held"
    first, second = client.get(f"/api/events/{EVENT}"), client.get(f"/api/events/{EVENT}")
    assert first.get_json()["availableSeats"] == 10 and first.get_json()["heldSeats"] == 0
    # The summary reclaimed the seats by a write of its own: its version says so, and stays.
    assert first.get_json()["version"] == 2 and first.headers["ETag"] == '"2"'
    assert second.get_json() == first.get_json()
    expired = client.get(f"/api/events/{EVENT}/reservations?status=expired").get_json()
    assert [r["reservationId"] for r in expired["items"]] == [held["reservationId"]]


def test_the_sweep_marks_lapsed_holds_expired(client, clock):
    lapsing = hold(client, 2, ttl=10).get_json()["reservationId"]
    staying = hold(client, 2, ttl=600).get_json()["reservationId"]
    clock.jump(11)
    listed = client.get(f"/api/events/{EVENT}/reservations?status=held").get_json()["items"]
    assert [r["reservationId"] for r in listed] == [staying]
    # (Other tests' lapsed holds in this database are swept too.)
    assert services_of(client.application).reservations.sweep() >= 1
    assert services_of(client.application).reservations.sweep() == 0
    engine = services_of(client.application).engine
    with engine.connect() as conn:
        query = select(reservations.c.id, reservations.c.status)
        rows = dict(conn.execute(query.where(reservations.c.event_id == EVENT)).all())
    assert {str(k): v for k, v in rows.items()} == {lapsing: "expired", staying: "held"}
    assert summary(client)["heldSeats"] == 2


def test_releasing_a_hold_gives_its_seats_back_and_it_cannot_be_confirmed(client):
    rid = hold(client, 6).get_json()["reservationId"]
    assert client.delete(f"/api/events/{EVENT}/reservations/{rid}").status_code == 204
    assert summary(client)["availableSeats"] == 10
    assert_problem(act(client, rid, "confirm"), 409, "not-held")
    assert_problem(act(client, rid, "extend", ttlSeconds=5), 409, "not-held")
    assert reservation(client, rid).get_json()["status"] == "cancelled"


def test_a_confirmed_reservation_cannot_be_extended_but_can_be_cancelled(client):
    rid = hold(client, 2).get_json()["reservationId"]
    act(client, rid, "confirm")
    assert_problem(act(client, rid, "extend", ttlSeconds=5), 409, "not-held")
    assert client.delete(f"/api/events/{EVENT}/reservations/{rid}").status_code == 204
    after = summary(client)
    assert (after["availableSeats"], after["reservationCount"]) == (10, 0)


def test_a_hold_is_refused_only_when_the_seats_are_not_there(client, clock):
    hold(client, 6, ttl=30)
    assert_problem(hold(client, 5), 409, "not-enough-seats")
    clock.jump(31)
    assert hold(client, 10).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"seats": 1, "ttlSeconds": 0},
        {"seats": 1, "ttlSeconds": 7201},
        {"seats": 1, "ttlSeconds": "60"},
        {"seats": 11},
        {"seats": 1, "ttlSeconds": 1.5},
        {"seats": 1, "ttlSeconds": None},
    ],
)
def test_bad_holds_are_400s_that_take_nothing(client, body):
    response = client.post(f"/api/events/{EVENT}/holds", json={"partnerId": "alpha", **body})
    assert_problem(response, 400, "invalid-request")
    assert summary(client)["availableSeats"] == 10


@pytest.mark.parametrize("body", [None, {}, {"ttlSeconds": 0}, {"ttlSeconds": 7201}])
def test_an_extend_needs_a_ttl_in_range(client, body):
    rid = hold(client, 1).get_json()["reservationId"]
    response = client.post(f"/api/events/{EVENT}/reservations/{rid}/extend", json=body)
    assert_problem(response, 400, "invalid-request")


def test_unknown_holds_and_events_are_404s(client):
    unknown = "00000000-0000-4000-8000-000000000000"
    assert_problem(act(client, unknown, "confirm"), 404, "reservation-not-found")
    assert_problem(act(client, unknown, "extend", ttlSeconds=5), 404, "reservation-not-found")
    assert_problem(hold(client, event_id="nope"), 404, "event-not-found")


def test_idempotency_keys_replay_holds_confirms_and_extends(client):
    first = hold(client, 2, ttl=60, key="h-1")
    again = hold(client, 2, ttl=60, key="h-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert summary(client)["heldSeats"] == 2
    assert hold(client, 3, ttl=60, key="h-1").status_code == 422  # another request
    # A reservation with the same key and body is another request too, never a replay.
    assert api_reserve(client, 2, "alpha", event_id=EVENT, key="h-1").status_code == 422

    rid = first.get_json()["reservationId"]
    extended = act(client, rid, "extend", key="e-1", ttlSeconds=120)
    extended_again = act(client, rid, "extend", key="e-1", ttlSeconds=120)
    assert extended_again.get_json() == extended.get_json()
    assert extended_again.headers["Idempotent-Replayed"] == "true"
    confirmed = act(client, rid, "confirm", key="c-1")
    client.delete(f"/api/events/{EVENT}/reservations/{rid}")
    confirmed_again = act(client, rid, "confirm", key="c-1")  # the first answer, not "not held"
    assert (confirmed_again.status_code, confirmed_again.get_json()) == (200, confirmed.get_json())


def test_a_partner_cannot_see_confirm_extend_or_release_another_partners_hold(client):
    engine = services_of(client.application).engine
    keys = {p: create_key(engine, p, Role.PARTNER)[1] for p in ("alpha-co", "beta-co")}
    as_partner = {}
    for partner, key in keys.items():
        as_partner[partner] = FlaskClient(client.application, client.application.response_class)
        as_partner[partner].environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    alpha, beta = as_partner["alpha-co"], as_partner["beta-co"]
    held = hold(alpha, 2, partner=None)
    assert held.status_code == 201
    rid = held.get_json()["reservationId"]
    assert_problem(hold(beta, 2, partner="alpha-co"), 403)
    assert_problem(reservation(beta, rid), 404, "reservation-not-found")
    assert_problem(act(beta, rid, "confirm"), 404, "reservation-not-found")
    assert_problem(act(beta, rid, "extend", ttlSeconds=9), 404, "reservation-not-found")
    assert_problem(beta.delete(f"/api/events/{EVENT}/reservations/{rid}"), 404)
    listed = beta.get(f"/api/events/{EVENT}/reservations").get_json()["items"]
    assert listed == []
    assert act(alpha, rid, "confirm").status_code == 200


def test_the_legacy_routes_are_unchanged_and_count_holds_as_taken(client, clock):
    default = client.application.config["DEFAULT_EVENT_ID"]
    seed_event(services_of(client.application).engine, default, "Node.js Meet-up", 500, True)
    before = client.get("/api/reservations").get_json()
    assert set(before) == {
        "eventId",
        "name",
        "totalSeats",
        "availableSeats",
        "reservationCount",
        "version",
    }
    held = hold(client, 4, ttl=5, event_id=default)
    assert held.status_code == 201
    assert (
        client.get("/api/reservations").get_json()["availableSeats"] == before["availableSeats"] - 4
    )
    created = api_reserve(client, 2)
    assert created.status_code == 201 and set(created.get_json()) == {
        "reservationId",
        "seats",
        "status",
    }
    clock.jump(6)
    assert (
        client.get("/api/reservations").get_json()["availableSeats"] == before["availableSeats"] - 2
    )


def test_the_event_list_never_counts_a_lapsed_hold_as_taken(client, clock):
    hold(client, 7, ttl=10)
    clock.jump(11)
    listed = {e["eventId"]: e for e in client.get("/api/events?limit=100").get_json()["items"]}
    assert (listed[EVENT]["availableSeats"], listed[EVENT]["heldSeats"]) == (10, 0)
    assert listed[EVENT] == summary(client)
