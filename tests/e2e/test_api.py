"""The public HTTP contract of the Node.js service, on PostgreSQL and on SQLite, in
AUTH_MODE=open: the keyless contract that clients of the Node.js service keep during a
migration (tests/e2e/test_auth.py covers the default, AUTH_MODE=keys)."""

import uuid

import pytest
from flask import url_for

from support.api import assert_problem, reserve
from support.database import PATIENT
from ticketboss import create_app, services_of
from ticketboss.config import Settings


@pytest.fixture(scope="module")
def session_app(database_url):
    app = create_app(Settings(database_url=database_url, auth_mode="open", **PATIENT))
    yield app
    services_of(app).engine.dispose()


@pytest.fixture
def client(app):
    """No key: the Node.js contract."""
    return app.test_client()


def test_summary_of_the_fresh_default_event(client):
    for path in ("/api/reservations", "/api/reservations/"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.get_json() == {
            "eventId": "node-meetup-2025",
            "name": "Node.js Meet-up",
            "totalSeats": 500,
            "availableSeats": 500,
            "reservationCount": 0,
            "version": 0,
        }


@pytest.mark.parametrize("path", ["/api/reservations", "/api/reservations/"])
def test_reserving_returns_201_with_a_location_and_takes_the_seats(client, path):
    response = client.post(path, json={"partnerId": "abc-corp", "seats": 5})
    assert response.status_code == 201
    body = response.get_json()
    assert body == {"reservationId": body["reservationId"], "seats": 5, "status": "confirmed"}
    uuid.UUID(body["reservationId"])
    assert response.headers["Location"] == f"/api/reservations/{body['reservationId']}"

    summary = client.get("/api/reservations").get_json()
    assert (summary["availableSeats"], summary["reservationCount"], summary["version"]) == (
        495,
        1,
        1,
    )


def test_the_location_is_url_for_its_reservation_under_a_script_name_too(app, client):
    # Mounted under a prefix (SCRIPT_NAME), as a proxy may mount it: the Location of a 201 is
    # the one url_for builds, and GETting it finds the reservation.
    mounted = "http://localhost/tickets/"
    response = client.post(
        "/api/reservations", json={"partnerId": "abc-corp", "seats": 1}, base_url=mounted
    )
    assert response.status_code == 201
    reservation_id = response.get_json()["reservationId"]
    with app.test_request_context("/api/reservations", base_url=mounted):
        built = url_for("reservations.ReservationItem", reservation_id=reservation_id)
    assert response.headers["Location"] == built == f"/tickets/api/reservations/{reservation_id}"
    found = client.get(built.removeprefix("/tickets"), base_url=mounted)
    assert found.status_code == 200 and found.get_json()["reservationId"] == reservation_id


def test_a_reservation_can_be_read_back_confirmed_then_cancelled(client):
    reservation_id = reserve(client, seats=3).get_json()["reservationId"]
    detail = client.get(f"/api/reservations/{reservation_id}")
    assert detail.status_code == 200
    body = detail.get_json()
    assert body["reservationId"] == reservation_id
    assert (body["eventId"], body["partnerId"], body["seats"], body["status"]) == (
        "node-meetup-2025",
        "abc-corp",
        3,
        "confirmed",
    )
    assert body["createdAt"].endswith("+00:00") and body["cancelledAt"] is None

    assert client.delete(f"/api/reservations/{reservation_id}").status_code == 204
    body = client.get(f"/api/reservations/{reservation_id}").get_json()
    assert body["status"] == "cancelled" and body["cancelledAt"] >= body["createdAt"]


def test_unknown_extra_fields_are_ignored(client):
    response = client.post(
        "/api/reservations", json={"partnerId": "abc", "seats": 1, "eventId": "other", "x": [1]}
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"seats": 2},
        {"partnerId": "abc"},
        {"partnerId": "abc", "seats": 2.5},
        {"partnerId": "abc", "seats": True},
        {"partnerId": "abc", "seats": "abc"},
        {"partnerId": "abc", "seats": "2"},
        {"partnerId": "abc", "seats": None},
        {"partnerId": 123, "seats": 2},
        {"partnerId": None, "seats": 2},
        {"partnerId": "abc", "seats": 0},
        {"partnerId": "abc", "seats": 11},
        {"partnerId": "abc", "seats": -1},
        {"partnerId": "", "seats": 2},
        {"partnerId": "   ", "seats": 2},
        {"partnerId": "x" * 129, "seats": 2},
        {"partnerId": "a\u0000b", "seats": 2},
        {"partnerId": "\ud800", "seats": 2},
        [{"partnerId": "abc", "seats": 2}],
        "abc",
        42,
        None,
    ],
)
def test_an_invalid_body_is_a_400_problem_and_changes_nothing(client, body):
    response = client.post(
        "/api/reservations", data=__import__("json").dumps(body), content_type="application/json"
    )
    assert_problem(response, 400)
    assert client.get("/api/reservations").get_json()["version"] == 0


@pytest.mark.parametrize(
    "data, content_type",
    [
        ("{not json", "application/json"),
        ('{"partnerId": "abc", "seats": 2', "application/json"),
        ("", "application/json"),
        ("", None),
        ("partnerId=abc&seats=2", "application/x-www-form-urlencoded"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_400(client, data, content_type):
    response = client.post("/api/reservations", data=data, content_type=content_type)
    body = assert_problem(response, 400)
    assert "Traceback" not in body["detail"]


def test_128_characters_is_the_longest_partner_id(client):
    assert reserve(client, partner="p" * 128).status_code == 201


def test_a_409_only_when_the_seats_are_not_there(client):
    for _ in range(50):
        assert reserve(client, seats=10).status_code == 201
    body = assert_problem(reserve(client, seats=1), 409)
    assert "Not enough seats" in body["detail"]
    summary = client.get("/api/reservations").get_json()
    assert summary["availableSeats"] == 0 and summary["reservationCount"] == 50


def test_a_request_larger_than_what_is_left_is_409_but_a_smaller_one_still_fits(client):
    for _ in range(49):
        reserve(client, seats=10)
    reserve(client, seats=7)
    assert_problem(reserve(client, seats=4), 409)
    assert reserve(client, seats=3).status_code == 201
    assert client.get("/api/reservations").get_json()["availableSeats"] == 0


def test_cancelling_returns_the_seats_and_a_second_cancel_is_404(client):
    reservation_id = reserve(client, seats=4).get_json()["reservationId"]
    response = client.delete(f"/api/reservations/{reservation_id}")
    assert response.status_code == 204 and response.data == b""
    summary = client.get("/api/reservations").get_json()
    assert (summary["availableSeats"], summary["reservationCount"], summary["version"]) == (
        500,
        0,
        2,
    )
    assert_problem(client.delete(f"/api/reservations/{reservation_id}"), 404)
    assert client.get("/api/reservations").get_json()["version"] == 2


def test_unknown_reservation_ids_are_404(client):
    unknown = uuid.uuid4()
    assert_problem(client.delete(f"/api/reservations/{unknown}"), 404)
    assert_problem(client.get(f"/api/reservations/{unknown}"), 404)


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "a1b2c3d4-e5f6-7890-g1h2-i3j4k5l6m7n8"])
def test_an_id_that_is_not_a_uuid_is_400(client, bad_id):
    assert_problem(client.delete(f"/api/reservations/{bad_id}"), 400)
    assert_problem(client.get(f"/api/reservations/{bad_id}"), 400)


def test_unknown_paths_and_wrong_methods_are_problems_too(client):
    assert_problem(client.get("/api/nothing-here"), 404)
    assert_problem(client.get("/"), 404)
    response = client.put("/api/reservations")
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]
    assert_problem(client.patch(f"/api/reservations/{uuid.uuid4()}"), 405)


def test_health_is_up_when_the_database_answers(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "UP"}


def test_an_unreachable_database_is_a_503_with_retry_after_never_a_500():
    app = create_app(
        Settings(
            database_url="postgresql+psycopg2://root@127.0.0.1:1/nowhere",
            retry_after_seconds=7,
            auth_mode="open",
        )
    )
    client = app.test_client()
    for response in (
        client.get("/api/health"),
        client.get("/api/reservations"),
        reserve(client),
        client.delete(f"/api/reservations/{uuid.uuid4()}"),
    ):
        body = assert_problem(response, 503)
        assert response.headers["Retry-After"] == "7"
        assert "Traceback" not in body["detail"]


def test_a_missing_default_event_is_a_404_problem(app):
    client = app.test_client()
    app.config["DEFAULT_EVENT_ID"] = "no-such-event"
    try:
        assert_problem(client.get("/api/reservations"), 404)
        assert_problem(reserve(client), 404)
    finally:
        app.config["DEFAULT_EVENT_ID"] = "node-meetup-2025"


def test_browsers_may_call_the_api_from_any_origin_as_they_could_the_node_service(client):
    response = client.post(
        "/api/reservations",
        json={"partnerId": "abc", "seats": 1},
        headers={"Origin": "https://partner.example"},
    )
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Location" in response.headers["Access-Control-Expose-Headers"]


def test_the_default_event_routes_never_reach_another_events_reservations(app):
    from ticketboss.cli import seed_event

    service = services_of(app).reservations
    seed_event(service.engine, "gala", "Gala", 10, reset=True)
    other = service.reserve("gala", "abc", 3)
    client = app.test_client()
    assert_problem(client.get(f"/api/reservations/{other.reservation_id}"), 404)
    assert_problem(client.delete(f"/api/reservations/{other.reservation_id}"), 404)
    gala = service.summary("gala")
    assert (gala.available_seats, gala.reservation_count, gala.version) == (7, 1, 1)
