"""Each test run gets its own PostgreSQL database, built by the migrations, dropped after."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from support.api import as_operator
from support.database import EVENT_ID, PATIENT, admin_engine, create_partners
from ticketboss import create_app, services_of
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.services import ReservationService
from ticketboss.store.db import make_engine
from ticketboss.store.migrate import upgrade


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this run, migrated to head; dropped afterwards."""
    server, admin = admin_engine()
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
