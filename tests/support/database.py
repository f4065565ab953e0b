"""The tests' databases: the server they are made on, what each holds, the apps' settings."""

from __future__ import annotations

import os

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine, make_url

from ticketboss.config import Settings
from ticketboss.store import queries
from ticketboss.store.db import make_engine

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


def admin_engine() -> tuple[URL, Engine]:
    """The server the test databases are made on (TEST_DATABASE_URL or the local one), and an
    engine on its `postgres` database to create and drop them."""
    server = make_url(os.environ.get("TEST_DATABASE_URL") or DEFAULT_SERVER)
    return server, create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")


def create_partners(url: str) -> None:
    """Every one of TEST_PARTNERS, in the database at `url`."""
    engine = make_engine(Settings(database_url=url))
    try:
        with engine.begin() as conn:
            for partner_id in TEST_PARTNERS:
                queries.ensure_partner(conn, partner_id)
    finally:
        engine.dispose()
