"""The `ticketboss` command: migrate and seed, for operators and the Makefile."""

import click
from sqlalchemy import Engine

from ticketboss.config import Settings
from ticketboss.store import queries
from ticketboss.store.db import make_engine
from ticketboss.store.migrate import upgrade


@click.group()
def main() -> None:
    """TicketBoss operations. DATABASE_URL picks the database (SQLite under var/ if unset)."""


@main.command()
def migrate() -> None:
    """Apply the alembic migrations to DATABASE_URL (creating a PostgreSQL database if absent)."""
    settings = Settings.from_env()
    upgrade(settings.database_url)
    click.echo(f"migrated {_safe(settings.database_url)} to head")


@main.command()
@click.option("--event-id", default=None, help="Defaults to DEFAULT_EVENT_ID.")
@click.option("--name", default="Node.js Meet-up", show_default=True)
@click.option("--seats", type=click.IntRange(min=0), default=500, show_default=True)
@click.option("--reset", is_flag=True, help="Delete its reservations and restore every seat.")
def seed(event_id: str | None, name: str, seats: int, reset: bool) -> None:
    """Create the event if it is absent; with --reset, start it over at version 0."""
    settings = Settings.from_env()
    event_id = event_id or settings.default_event_id
    engine = make_engine(settings)
    try:
        click.echo(seed_event(engine, event_id, name, seats, reset))
    finally:
        engine.dispose()


@main.command("prune-keys")
def prune_keys() -> None:
    """Delete Idempotency-Keys older than IDEMPOTENCY_TTL_SECONDS (24 h by default)."""
    from ticketboss.services.idempotency import prune

    engine = make_engine(Settings.from_env())
    try:
        click.echo(f"pruned {prune(engine)} expired idempotency keys")
    finally:
        engine.dispose()


def seed_event(engine: Engine, event_id: str, name: str, seats: int, reset: bool) -> str:
    """Create or reset one event in one transaction; returns what was done, for the operator."""
    with engine.begin() as conn:
        existing = queries.load_event(conn, event_id)
        if existing is None:
            queries.create_event(conn, event_id, name, seats)
            return f"created {event_id}: {seats} seats"
        if reset:
            queries.reset_event(conn, event_id, name, seats)
            return f"reset {event_id}: {seats} seats, version 0, no reservations"
        return (
            f"{event_id} exists ({existing.available_seats}/{existing.total_seats} seats left, "
            f"version {existing.version}); unchanged (use --reset to start it over)"
        )


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
