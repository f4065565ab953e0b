"""The `ticketboss` command: migrate, seed, partner keys, for operators and the Makefile."""

import click
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from ticketboss.config import Settings
from ticketboss.store import queries
from ticketboss.store.db import make_engine
from ticketboss.store.migrate import upgrade


class Refused(click.ClickException):
    """A usage error said in one line, without the usage (exit status 2, as click's own)."""

    exit_code = 2


@click.group()
def main() -> None:
    """TicketBoss operations. DATABASE_URL picks the database (SQLite under var/ if unset)."""


@main.command()
def migrate() -> None:
    """Apply the alembic migrations to DATABASE_URL (creating a PostgreSQL database if absent)."""
    from alembic.util import CommandError

    settings = Settings.from_env()
    try:
        upgrade(settings.database_url)
    except CommandError as exc:  # a revision that stopped, saying why and what to do
        raise click.ClickException(str(exc)) from exc
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
    except IntegrityError as exc:  # the unique index on lower(event_id)
        raise click.ClickException(
            f"event '{event_id}' cannot be created: another event's id differs from it only in case"
        ) from exc
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


@main.group()
def holds() -> None:
    """Holds that expire."""


@holds.command("sweep")
def holds_sweep() -> None:
    """Mark lapsed holds expired, so lists and metrics are tidy. Never needed for
    correctness: the next write on an event reclaims its lapsed holds' seats itself."""
    from ticketboss.services import Services

    services = Services.build(Settings.from_env())
    try:
        click.echo(f"expired {services.reservations.sweep()} lapsed holds")
    finally:
        services.engine.dispose()


@main.group()
def partner() -> None:
    """Partners' API keys: create (shown once), list, revoke."""


@partner.command("create")
@click.argument("partner_id")
@click.option("--operator", is_flag=True, help="An operator key: every partner, and the events.")
def partner_create(partner_id: str, operator: bool) -> None:
    """Print a new key for PARTNER_ID (created if absent) on stdout, alone; store its hash.
    PARTNER_ID: 1-64 lowercase ASCII letters, digits, '-', '_', '.'; a letter or digit first."""
    from ticketboss.domain import InvalidPartnerId, Role, check_partner_id
    from ticketboss.services.partners import create_key

    try:
        check_partner_id(partner_id)  # before the database is touched
    except InvalidPartnerId as exc:
        raise Refused(str(exc)) from exc
    engine = make_engine(Settings.from_env())
    try:
        info, key, created = create_key(
            engine, partner_id, Role.OPERATOR if operator else Role.PARTNER
        )
    finally:
        engine.dispose()
    if created:
        click.echo(f"created partner {partner_id}", err=True)
    click.echo(
        f"created {info.role} key {info.key_id} ({info.prefix}…) for {partner_id}; "
        "it is shown only now:",
        err=True,
    )
    click.echo(key)


@partner.command("list")
def partner_list() -> None:
    """Partners and their keys: id, prefix, role, created, last used, revoked. Never a key."""
    from ticketboss.services.partners import list_keys

    engine = make_engine(Settings.from_env())
    try:
        rows = list_keys(engine)
    finally:
        engine.dispose()
    click.echo(
        f"{'PARTNER':24} {'KEY ID':20} {'PREFIX':12} {'ROLE':8} "
        f"{'CREATED':20} {'LAST USED':20} REVOKED"
    )
    for partner_id, info in rows:
        if info is None:
            click.echo(f"{partner_id:24} (no keys)")
            continue
        click.echo(
            f"{partner_id:24} {info.key_id:20} {info.prefix:12} {info.role:8} "
            f"{_when(info.created_at):20} {_when(info.last_used_at):20} {_when(info.revoked_at)}"
        )


@partner.command("revoke")
@click.argument("key_id")
def partner_revoke(key_id: str) -> None:
    """Revoke a key: every worker refuses it within AUTH_CACHE_SECONDS."""
    from ticketboss.services.partners import revoke_key

    engine = make_engine(Settings.from_env())
    try:
        revoked = revoke_key(engine, key_id)
    finally:
        engine.dispose()
    if not revoked:
        raise click.ClickException(f"no active key {key_id}")
    click.echo(f"revoked {key_id}", err=True)


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def seed_event(engine: Engine, event_id: str, name: str, seats: int, reset: bool) -> str:
    """Create or reset one event in one transaction; returns what was done, for the operator."""
    from ticketboss.services.unit_of_work import transaction

    with transaction(engine, f"event '{event_id}'") as conn:
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
