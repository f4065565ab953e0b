"""The alembic history upgrades real data without losing it, on both engines."""

import uuid

import pytest
from alembic import command
from sqlalchemy import create_engine, insert, select, text

from ticketboss.config import Settings
from ticketboss.store.db import make_engine
from ticketboss.store.migrate import alembic_config, upgrade
from ticketboss.store.tables import events, partners, reservations


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_database_url(request, pg_url, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
        return
    url = pg_url.rsplit("/", 1)[0] + f"/ticketboss_migrations_{uuid.uuid4().hex[:8]}"
    yield url
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def test_upgrading_from_the_first_revision_keeps_reservations_and_counts_them(
    empty_database_url,
):
    upgrade(empty_database_url, "0001")
    engine = make_engine(Settings(database_url=empty_database_url))
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO events (event_id, name, total_seats, available_seats, version) "
                    "VALUES ('e', 'E', 10, 7, 3)"
                )
            )
            conn.execute(
                insert(reservations),
                [
                    {
                        "id": uuid.uuid4(),
                        "event_id": "e",
                        "partner_id": "p",
                        "seats": seats,
                        "status": status,
                    }
                    for seats, status in [(2, "confirmed"), (1, "confirmed"), (4, "cancelled")]
                ],
            )
        upgrade(empty_database_url)
        with engine.connect() as conn:
            assert conn.scalar(select(events.c.reservation_count)) == 2
            # Their partner became a partner: its keys will see them.
            assert conn.execute(select(partners.c.partner_id)).scalars().all() == ["p"]
            assert conn.scalar(select(events.c.version)) == 3
            assert len(conn.execute(select(reservations.c.id)).all()) == 3

        # And back down and up again, still without losing a row.
        command.downgrade(alembic_config(empty_database_url), "0001")
        upgrade(empty_database_url)
        with engine.connect() as conn:
            assert len(conn.execute(select(reservations.c.id)).all()) == 3
            assert conn.scalar(select(events.c.reservation_count)) == 2
    finally:
        engine.dispose()


def test_holds_arrive_without_touching_existing_rows_and_leave_releasing_their_seats(
    empty_database_url,
):
    upgrade(empty_database_url, "0005")
    engine = make_engine(Settings(database_url=empty_database_url))
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO events (event_id, name, total_seats, available_seats, version, "
                    "reservation_count) VALUES ('e', 'E', 10, 7, 1, 1)"
                )
            )
            conn.execute(
                insert(reservations).values(
                    id=uuid.uuid4(), event_id="e", partner_id="p", seats=3, status="confirmed"
                )
            )
        upgrade(empty_database_url)
        with engine.begin() as conn:
            row = conn.execute(select(events.c.available_seats, events.c.held_seats)).one()
            assert tuple(row) == (7, 0)
            # A hold of 2 seats, as the service writes it.
            conn.execute(text("UPDATE events SET available_seats = 5, held_seats = 2, version = 2"))
            conn.execute(
                insert(reservations).values(
                    id=uuid.uuid4(), event_id="e", partner_id="p", seats=2, status="held"
                )
            )
            for outcome in ("held", "reserved"):  # a hold's stored answer, a reservation's
                conn.execute(
                    text(
                        "INSERT INTO idempotency_keys (scope, key, fingerprint, owner, outcome, "
                        "expires_at) VALUES ('s', :key, 'f', :owner, :key, CURRENT_TIMESTAMP)"
                    ),
                    {"key": outcome, "owner": uuid.uuid4().hex},
                )
        command.downgrade(alembic_config(empty_database_url), "0005")
        with engine.connect() as conn:
            assert conn.scalar(select(events.c.available_seats)) == 7  # the hold's seats back
            kept = conn.execute(text("SELECT outcome FROM idempotency_keys")).scalars().all()
            assert kept == ["reserved"]  # the old code knows no hold answers
            statuses = conn.execute(text("SELECT status FROM reservations ORDER BY seats")).all()
            assert [s for (s,) in statuses] == ["cancelled", "confirmed"]
        upgrade(empty_database_url)
    finally:
        engine.dispose()
