"""The `ticketboss` command: migrate, seed, partner keys and allocations, for operators and
the Makefile."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from ticketboss.config import SettingError, Settings
from ticketboss.domain import Allocation, UnknownPartner
from ticketboss.domain.errors import DomainError
from ticketboss.store import queries
from ticketboss.store.db import make_engine

if TYPE_CHECKING:
    from ticketboss.services import Services

# As the API's PUT takes them (api.schemas.AllocationPut).
MAX_ALLOCATION_SEATS = 1_000_000


class Refused(click.ClickException):
    """A usage error said in one line, without the usage (exit status 2, as click's own)."""

    exit_code = 2


class Commands(click.Group):
    """The command group: a setting that cannot be used (from whichever command read it) is
    said in one line, `ticketboss: VARIABLE=value: rule`, exit status 2, with no traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SettingError as exc:
            click.echo(f"ticketboss: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=Commands)
def main() -> None:
    """TicketBoss operations. DATABASE_URL picks the database (SQLite under var/ if unset)."""


@main.command()
def migrate() -> None:
    """Apply the alembic migrations to DATABASE_URL (creating a PostgreSQL database if absent)."""
    from alembic.util import CommandError

    from ticketboss.store.migrate import upgrade  # alembic: only this command needs it

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


@main.command("prune-notifications")
def prune_notifications() -> None:
    """Delete notifications (and their deliveries) older than NOTIFICATION_RETENTION_DAYS
    (30 by default): GET /api/changes then starts from the oldest kept."""
    from ticketboss.services.changes import prune

    settings = Settings.from_env()
    engine = make_engine(settings)
    try:
        pruned = prune(engine, settings.notification_retention_days)
        click.echo(
            f"pruned {pruned} notifications older than {settings.notification_retention_days} days"
        )
    finally:
        engine.dispose()


@main.group()
def webhooks() -> None:
    """Partners' webhook endpoints."""


@webhooks.command("reencrypt")
def webhooks_reencrypt() -> None:
    """Re-encrypt every endpoint's secrets under the first of WEBHOOK_SECRET_KEYS: after a
    new key is put in front, run this, then drop the old key (docs/operations.md)."""
    from ticketboss.services.webhooks import reencrypt

    settings = Settings.from_env()
    engine = make_engine(settings)
    try:
        click.echo(f"re-encrypted the secrets of {reencrypt(engine, settings)} endpoints")
    finally:
        engine.dispose()


@webhooks.command("local-key")
def webhooks_local_key() -> None:
    """Print this checkout's own key for WEBHOOK_SECRET_KEYS, made once in var/ (make run
    and make cluster use it when the variable is unset; production sets its own)."""
    from cryptography.fernet import Fernet

    from ticketboss.config import PROJECT_ROOT

    path = PROJECT_ROOT / "var" / "webhook-secret-keys"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(Fernet.generate_key().decode() + "\n")
    click.echo(path.read_text().strip())


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


@main.group()
def allocations() -> None:
    """Partners' shares of an event (seats set aside for one partner): set, list, delete.
    The same planner and compare-and-swap as the API's /api/events/<id>/allocations."""


@allocations.command("set")
@click.argument("event_id")
@click.argument("partner_id")
@click.argument("seats", type=click.IntRange(0, MAX_ALLOCATION_SEATS))
@click.option("--overflow", is_flag=True, help="Also take from the open pool once it is used up.")
@click.option(
    "--max-held",
    type=click.IntRange(1, MAX_ALLOCATION_SEATS),
    default=None,
    help="Its own limit on seats held at once (1 or more). Default: PARTNER_MAX_HELD_SEATS.",
)
def allocations_set(
    event_id: str, partner_id: str, seats: int, overflow: bool, max_held: int | None
) -> None:
    """Create, resize or reopen PARTNER_ID's allocation of EVENT_ID: SEATS set aside for it
    alone. Like the API's PUT, it says everything: without --overflow it does not overflow,
    without --max-held it has the default limit. Never below the seats taken and held from
    it, never beyond what the event can give."""
    _check_path(event_id, partner_id)
    with _services() as services:
        if services.settings.auth_mode == "keys" and not services.keys.has_partner(partner_id):
            raise _refused(UnknownPartner(partner_id))
        try:
            done = services.reservations.allot(
                event_id, partner_id, seats, overflow=overflow, max_held_seats=max_held
            )
        except DomainError as exc:
            raise _refused(exc) from exc
        default = services.settings.partner_max_held_seats
    a = done.allocation
    what = "created" if done.created else "set" if done.written else "unchanged:"
    click.echo(
        f"{what} the allocation of {partner_id} in {event_id}: {a.seats} seats "
        f"({a.taken} taken, {a.held} held, {a.available} available), "
        f"{'overflow' if a.overflow else 'no overflow'}, max held {_limit(a, default)}; "
        f"{done.event.pool_available} seats left in the open pool, version {done.event.version}"
    )


@allocations.command("list")
@click.argument("event_id")
def allocations_list(event_id: str) -> None:
    """EVENT_ID's allocations and its open pool: seats set aside, taken (confirmed), held,
    available; whether each overflows, its hold limit, whether it is closed (deleted while
    seats were still used from it)."""
    with _services() as services:
        try:
            event = services.reservations.summary(event_id)
        except DomainError as exc:
            raise _refused(exc) from exc
        default = services.settings.partner_max_held_seats
    click.echo(
        f"{'PARTNER':24} {'SEATS':>7} {'TAKEN':>7} {'HELD':>7} {'AVAILABLE':>9}  "
        f"{'OVERFLOW':8} {'MAX HELD':13} CLOSED"
    )
    for a in sorted(event.allocations.values(), key=lambda a: a.partner_id):
        click.echo(
            f"{a.partner_id:24} {a.seats:7} {a.taken:7} {a.held:7} {a.available:9}  "
            f"{_yes(a.overflow):8} {_limit(a, default):13} {_yes(a.closed)}"
        )
    pool = event.pool
    click.echo(f"{'(open pool)':24} {pool.seats:7} {pool.taken:7} {pool.held:7} {pool.available:9}")
    click.echo(
        f"{event_id}: {event.total_seats} seats, {event.available_seats} available in all, "
        f"{len(event.allocations)} allocation{'' if len(event.allocations) == 1 else 's'}, "
        f"version {event.version}"
    )


@allocations.command("delete")
@click.argument("event_id")
@click.argument("partner_id")
def allocations_delete(event_id: str, partner_id: str) -> None:
    """Delete PARTNER_ID's allocation of EVENT_ID: its unused seats go back to the open pool at
    once; seats still taken or held from it stay the partner's (a closed allocation), and
    each one cancelled, released or lapsed then goes to the pool."""
    with _services() as services:
        try:
            event = services.reservations.unallot(event_id, partner_id)
        except DomainError as exc:
            raise _refused(exc) from exc
    kept = event.allocations.get(partner_id)
    still = (
        f"; {kept.used} seats still taken or held from it go to the pool as they come back"
        if kept is not None
        else ""
    )
    click.echo(
        f"deleted the allocation of {partner_id} in {event_id}: its unused seats are the open "
        f"pool's ({event.pool_available} left){still}; version {event.version}"
    )


@contextmanager
def _services() -> Iterator[Services]:
    """The services as a worker builds them (Settings.from_env()), disposed of afterwards."""
    from ticketboss.services import Services

    services = Services.build(Settings.from_env())
    try:
        yield services
    finally:
        services.engine.dispose()


def _check_path(event_id: str, partner_id: str) -> None:
    """The ids as the API's path takes them (before the database is touched)."""
    from ticketboss.api.schemas import EventAndPartnerPath

    errors = EventAndPartnerPath().validate({"event_id": event_id, "partner_id": partner_id})
    if errors:
        said = "; ".join(f"{name}: {' '.join(why)}" for name, why in sorted(errors.items()))
        raise Refused(f"invalid {said}")


def _refused(exc: Exception) -> click.ClickException:
    """A domain refusal in one line, exit status 1."""
    return click.ClickException(str(exc))


def _limit(allocation: Allocation, default: int) -> str:
    """Its hold limit: its own, or PARTNER_MAX_HELD_SEATS's (0 there: no limit)."""
    if allocation.max_held_seats is not None:
        return str(allocation.max_held_seats)
    return f"{default or 'none'} (default)"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def seed_event(engine: Engine, event_id: str, name: str, seats: int, reset: bool) -> str:
    """Create or reset one event in one transaction; returns what was done, for the operator.
    A reset that deadlocks with the running service (its webhook dispatcher settling the
    deliveries the reset deletes) was rolled back whole, and is tried again."""
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random

    retrying = Retrying(
        retry=retry_if_exception(_deadlocked),
        stop=stop_after_attempt(5),
        wait=wait_random(0.05, 0.5),
        reraise=True,
    )
    return retrying(_seed_event, engine, event_id, name, seats, reset)


def _deadlocked(exc: BaseException) -> bool:
    """PostgreSQL chose this transaction to break a deadlock (SQLSTATE 40P01)."""
    return getattr(getattr(exc, "orig", None), "pgcode", None) == "40P01"


def _seed_event(engine: Engine, event_id: str, name: str, seats: int, reset: bool) -> str:
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
