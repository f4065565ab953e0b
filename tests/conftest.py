"""Each test run gets its own PostgreSQL database, built by the migrations, dropped after."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import datetime, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from ticketboss import create_app, services_of
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services import ReservationService
from ticketboss.services.clock import Clock
from ticketboss.services.partners import create_key
from ticketboss.store import queries
from ticketboss.store.db import make_engine
from ticketboss.store.migrate import upgrade

DEFAULT_SERVER = "postgresql+psycopg2://root@127.0.0.1:5432/postgres"
EVENT_ID = "node-meetup-2025"
# The partners the tests reserve for as operators: in AUTH_MODE=keys an operator reserves
# only for partners that have an account. Every test database has them.
TEST_PARTNERS = ("abc-corp", "alpha", "beta", "late", "p", *(f"p{i}" for i in range(40)))

# Generous retry limits: the tests prove that contention is retried, never refused.
# Pools stay small (three apps share the server's 100 connections) but wait long for a connection.
PATIENT = {
    "cas_max_attempts": 10_000,
    "cas_max_seconds": 60.0,
    "db_pool_size": 8,
    "db_max_overflow": 4,
    "db_pool_timeout": 60.0,
    "request_deadline_seconds": 60.0,
}


def _admin_engine():
    server = make_url(os.environ.get("TEST_DATABASE_URL") or DEFAULT_SERVER)
    return server, create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this run, migrated to head; dropped afterwards."""
    server, admin = _admin_engine()
    name = f"ticketboss_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.exit(
            f"No PostgreSQL answers at {server.render_as_string(hide_password=True)}: {exc.orig}\n"
            "Start one (on this machine: pg_ctlcluster --skip-systemctl-redirect "
            "$(ls /etc/postgresql) main start), or point TEST_DATABASE_URL at a server, e.g. "
            "TEST_DATABASE_URL=postgresql+psycopg2://user:pass@host:5432/postgres make test",
            returncode=3,
        )
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        create_partners(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'ticketboss.sqlite3'}"
    upgrade(url)
    create_partners(url)
    return url


def create_partners(url: str) -> None:
    engine = make_engine(Settings(database_url=url))
    try:
        with engine.begin() as conn:
            for partner_id in TEST_PARTNERS:
                queries.ensure_partner(conn, partner_id)
    finally:
        engine.dispose()


@pytest.fixture(scope="session", params=["postgresql", "sqlite"])
def database_url(request):
    """The API tests run on both engines."""
    return request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")


@pytest.fixture(scope="session")
def pg_settings(pg_url) -> Settings:
    return Settings(database_url=pg_url, **PATIENT)


@pytest.fixture(scope="session")
def pg_engine(pg_settings):
    engine = make_engine(pg_settings)
    yield engine
    engine.dispose()


@pytest.fixture
def service(pg_engine, pg_settings) -> ReservationService:
    """The services on PostgreSQL, with the default event reset to 500 seats."""
    seed_event(pg_engine, EVENT_ID, "Node.js Meet-up", 500, reset=True)
    return ReservationService(pg_engine, pg_settings)


class JumpingClock(Clock):
    """The database's clock, moved forward by the tests to jump past hold expiries."""

    def __init__(self):
        self.skew = timedelta(0)
        self._lock = threading.Lock()  # concurrent jumps: time never goes back

    def now(self, database_now: datetime) -> datetime:
        return database_now + self.skew

    def jump(self, seconds: float) -> None:
        with self._lock:
            self.skew += timedelta(seconds=seconds)


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


@pytest.fixture(scope="session")
def session_app(database_url):
    app = as_operator(create_app(Settings(database_url=database_url, **PATIENT)))
    yield app
    services_of(app).engine.dispose()


@pytest.fixture
def app(session_app):
    """The app on one engine, with the default event reset to 500 seats."""
    seed_event(services_of(session_app).engine, EVENT_ID, "Node.js Meet-up", 500, True)
    return session_app


@pytest.fixture
def client(app):
    return app.test_client()


# The API client helpers every test file uses ----------------------------------------------

PROBLEM = "application/problem+json"


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
    return client.post("/api/events", json={"eventId": event_id, "name": name, "totalSeats": seats})
