"""Idempotency-Key on reservations and cancellations, on PostgreSQL and SQLite."""

from dataclasses import replace

import pytest

from support.api import as_operator, reserve
from ticketboss import create_app, services_of
from ticketboss.cli import seed_event
from ticketboss.services import IdempotencyKey, idempotency
from ticketboss.store.tables import idempotency_keys

EVENT = "node-meetup-2025"
# Where the client's keys live: the clients send the operator key of "ops"
# (support.api.as_operator), and reserve for abc-corp.
SCOPE = "operator:ops:partner:abc-corp"


@pytest.fixture
def client(app):
    with services_of(app).engine.begin() as conn:
        conn.execute(idempotency_keys.delete())
    return app.test_client()


def books(client):
    summary = client.get("/api/reservations").get_json()
    return summary["availableSeats"], summary["reservationCount"], summary["version"]


def test_a_retried_post_gets_the_first_answer_and_books_once(client):
    first = reserve(client, key="order-17")
    again = reserve(client, key="order-17")
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert books(client) == (498, 1, 1)


def test_replays_hold_across_workers_and_restarts(app, client):
    first = reserve(client, key="order-17")
    # Another worker, or the service after a restart: a new app on the same database.
    other = as_operator(create_app(services_of(app).settings))
    try:
        again = reserve(other.test_client(), key="order-17")
    finally:
        services_of(other).engine.dispose()
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert books(client) == (498, 1, 1)


def test_the_same_key_with_another_body_is_a_422(client):
    reserve(client, key="order-17", seats=2)
    response = reserve(client, key="order-17", seats=3)
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert books(client) == (498, 1, 1)


def test_a_409_is_replayed_even_once_seats_are_back(app, client):
    seed_event(services_of(app).engine, EVENT, "Node.js Meet-up", 2, reset=True)
    refused = reserve(client, key="big-order", seats=3)
    assert refused.status_code == 409
    client.patch(f"/api/events/{EVENT}", json={"totalSeats": 10})
    again = reserve(client, key="big-order", seats=3)
    assert again.status_code == 409 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["detail"] == refused.get_json()["detail"]
    assert reserve(client, key="another-key", seats=3).status_code == 201


def test_keys_belong_to_a_partner(client):
    a = reserve(client, key="k", partner="alpha")
    b = reserve(client, key="k", partner="beta")
    assert a.status_code == b.status_code == 201
    assert a.get_json()["reservationId"] != b.get_json()["reservationId"]


def test_without_the_header_nothing_changes(client):
    assert (
        reserve(client).get_json()["reservationId"] != reserve(client).get_json()["reservationId"]
    )
    assert books(client) == (496, 2, 2)


def test_a_key_still_in_flight_is_a_409_with_retry_after(app, client):
    service = services_of(app).reservations
    body = {"eventId": EVENT, "partnerId": "abc-corp", "seats": 2}
    # Another request holds the key (its lease has not lapsed).
    idempotency.claim(service.engine, service.settings, IdempotencyKey.of(SCOPE, "busy", body))
    response = reserve(client, key="busy")
    assert response.status_code == 409 and "Retry-After" in response.headers
    assert response.get_json()["type"] == "/problems/idempotency-key-in-flight"
    assert books(client) == (500, 0, 0)


def test_a_claim_whose_request_died_is_taken_over_after_its_lease(app, client):
    service = services_of(app).reservations
    body = {"eventId": EVENT, "partnerId": "abc-corp", "seats": 2}
    no_lease = replace(service.settings, idempotency_lease_seconds=0)
    idempotency.claim(service.engine, no_lease, IdempotencyKey.of(SCOPE, "died", body))
    response = reserve(client, key="died")
    assert response.status_code == 201
    assert reserve(client, key="died").headers["Idempotent-Replayed"] == "true"
    assert books(client) == (498, 1, 1)


def test_a_cancel_with_a_key_is_replayed_instead_of_a_404(client):
    reservation_id = reserve(client).get_json()["reservationId"]
    path = f"/api/reservations/{reservation_id}"
    first = client.delete(path, headers={"Idempotency-Key": "cancel-1"})
    again = client.delete(path, headers={"Idempotency-Key": "cancel-1"})
    assert first.status_code == again.status_code == 204
    assert again.headers["Idempotent-Replayed"] == "true"
    assert client.delete(path).status_code == 404
    assert books(client) == (500, 0, 2)


def test_an_unanswered_request_releases_its_key(client):
    # The event does not exist: nothing is kept, the key can be used for a real request.
    missing = reserve(client, key="k1", event_id="nope")
    assert missing.status_code == 404
    assert reserve(client, key="k1", event_id="nope").status_code == 404
    assert "Idempotent-Replayed" not in missing.headers


@pytest.mark.parametrize("key", ["", "x" * 256])
def test_a_key_must_be_1_to_255_characters(client, key):
    response = client.post(
        "/api/reservations",
        json={"partnerId": "abc-corp", "seats": 2},
        headers={"Idempotency-Key": key},
    )
    assert response.status_code == 400
    assert books(client) == (500, 0, 0)


def test_expired_keys_are_forgotten_and_pruned_but_never_while_their_request_runs(app, client):
    service = services_of(app).reservations
    running = replace(service.settings, idempotency_ttl_seconds=0)
    expiring = replace(running, idempotency_lease_seconds=0)
    body = {"eventId": EVENT, "partnerId": "abc-corp", "seats": 2}
    key = IdempotencyKey.of(SCOPE, "old", body)
    idempotency.claim(service.engine, running, key)
    assert idempotency.prune(service.engine) == 0  # expired, but its request still runs
    assert reserve(client, key="old").status_code == 409  # ... so the key is still in flight
    with service.engine.begin() as conn:
        conn.execute(idempotency_keys.delete())
    idempotency.claim(service.engine, expiring, key)
    assert idempotency.prune(service.engine) == 1
    assert idempotency.prune(service.engine) == 0
    # An expired key is used afresh.
    idempotency.claim(service.engine, expiring, key)
    assert reserve(client, key="old").status_code == 201
    assert books(client) == (498, 1, 1)
