"""The API as the tests call it: problem+json checks, reservations, summaries, an operator."""

from __future__ import annotations

from flask.testing import FlaskClient

from ticketboss import services_of
from ticketboss.domain import Role
from ticketboss.services.partners import create_key

PROBLEM = "application/problem+json"


class OperatorClient(FlaskClient):
    """A test client that sends the app's operator key with every request."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        key = self.application.config["TEST_OPERATOR_KEY"]
        self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"


def as_operator(app):
    """Tests of the API's behaviour (not of its keys) run in the default AUTH_MODE=keys, as an
    operator, who may do everything for any partner: every `app.test_client()` sends a new
    operator key. tests/e2e/test_auth.py checks the keys themselves."""
    engine = services_of(app).engine
    app.config["TEST_OPERATOR_KEY"] = create_key(engine, "ops", Role.OPERATOR)[1]
    app.test_client_class = OperatorClient
    return app


def assert_problem(response, status: int, slug: str | None = None) -> dict:
    """The response is an RFC 9457 problem of that status (and type, when given)."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status
    assert body["title"] and body["type"] and body["detail"]
    assert body["error"] == body["detail"]
    if slug:
        assert body["type"] == f"/problems/{slug}"
    return body


def reserve(client, seats=2, partner="abc-corp", *, event_id=None, key=None, headers=None, **body):
    """POST a reservation: of the default event, or of `event_id`; `partner=None` sends no
    partnerId (a partner key's own); `key` is the Idempotency-Key."""
    path = f"/api/events/{event_id}/reservations" if event_id else "/api/reservations"
    payload = {"seats": seats, **body}
    if partner is not None:
        payload["partnerId"] = partner
    headers = dict(headers or {})
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(path, json=payload, headers=headers)


def summary(client, event_id=None) -> dict:
    """The event's summary (the default event's without `event_id`)."""
    return client.get(f"/api/events/{event_id}" if event_id else "/api/reservations").get_json()


def create_event(client, event_id="gala", seats=10, name="Gala"):
    """POST a new event."""
    return client.post("/api/events", json={"eventId": event_id, "name": name, "totalSeats": seats})
