"""The alembic history upgrades real data without losing it, on both engines."""

import uuid

import pytest
from alembic import command
from alembic.util import CommandError
from sqlalchemy import create_engine, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from ticketboss.config import Settings
from ticketboss.domain import Reservation
from ticketboss.services import ReservationService
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


def _rows(conn, sql: str) -> list:
    return sorted(tuple(row) for row in conn.execute(text(sql)))


def test_partner_ids_become_canonical_everywhere_and_the_rule_holds_from_then_on(
    empty_database_url,
):
    upgrade(empty_database_url, "0006")
    engine = make_engine(Settings(database_url=empty_database_url))
    reservation = uuid.uuid4()
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO events (event_id, name, total_seats, available_seats) "
                    "VALUES ('gala', 'Gala', 10, 10)"
                )
            )
            # ABC-Corp has a key; ｆｕｌｌ (full-width) has none; ok is canonical already.
            for partner_id in ("ABC-Corp", "\uff46\uff55\uff4c\uff4c", "ok"):
                conn.execute(insert(partners).values(partner_id=partner_id))
            conn.execute(
                text(
                    "INSERT INTO api_keys (id, partner_id, role, prefix, key_hash) "
                    "VALUES ('key_1', 'ABC-Corp', 'partner', 'tb_12345678', :hash)"
                ),
                {"hash": "0" * 64},
            )
            # Stranger reserved in AUTH_MODE=open after 0004: no partner, left as it is.
            owners = [(reservation, "ABC-Corp"), (uuid.uuid4(), "ok"), (uuid.uuid4(), "Stranger")]
            for rid, partner_id in owners:
                conn.execute(
                    insert(reservations).values(
                        id=rid, event_id="gala", partner_id=partner_id, seats=1, status="confirmed"
                    )
                )
            for scope in (
                "partner:ABC-Corp:partner:ABC-Corp",  # its key reserved for itself
                "operator:ops:partner:ABC-Corp",  # an operator reserved for it
                f"partner:ABC-Corp:reservation:{reservation}",  # its key cancelled
                "partner:ABC-Corp",  # AUTH_MODE=open: the body's spelling, sent again
            ):
                conn.execute(
                    text(
                        "INSERT INTO idempotency_keys (scope, key, fingerprint, owner, outcome, "
                        "expires_at) VALUES (:scope, 'k', 'f', :owner, 'reserved', "
                        "CURRENT_TIMESTAMP)"
                    ),
                    {"scope": scope, "owner": uuid.uuid4().hex},
                )
        upgrade(empty_database_url)
        with engine.connect() as conn:
            assert _rows(conn, "SELECT partner_id FROM partners") == [
                ("abc-corp",),
                ("full",),
                ("ok",),
            ]
            assert _rows(conn, "SELECT id, partner_id FROM api_keys") == [("key_1", "abc-corp")]
            assert _rows(conn, "SELECT partner_id FROM reservations") == [
                ("Stranger",),
                ("abc-corp",),
                ("ok",),
            ]
            assert _rows(conn, "SELECT scope FROM idempotency_keys") == [
                ("operator:ops:partner:abc-corp",),
                ("partner:ABC-Corp",),
                ("partner:abc-corp:partner:abc-corp",),
                (f"partner:abc-corp:reservation:{reservation}",),
            ]
        # From now on the database keeps the rule, and event ids apart regardless of case.
        for refused in ("Abc", "\u0430bc", "-abc", "a b", "a" * 65, "abc\n"):
            with pytest.raises(IntegrityError), engine.begin() as conn:
                conn.execute(insert(partners).values(partner_id=refused))
        with engine.begin() as conn:
            conn.execute(insert(partners).values(partner_id="a.b_c-9"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO events (event_id, name, total_seats, available_seats) "
                    "VALUES ('GALA', 'Gala', 10, 10)"
                )
            )

        # Down, where the old rules take any id again, and up: it is made canonical again.
        command.downgrade(alembic_config(empty_database_url), "0006")
        with engine.begin() as conn:
            conn.execute(insert(partners).values(partner_id="Again"))
            conn.execute(
                text(
                    "INSERT INTO events (event_id, name, total_seats, available_seats) "
                    "VALUES ('GALA', 'Gala', 10, 10)"
                )
            )
            conn.execute(text("DELETE FROM events WHERE event_id = 'GALA'"))
        upgrade(empty_database_url)
        with engine.connect() as conn:
            assert ("again",) in _rows(conn, "SELECT partner_id FROM partners")
            assert len(conn.execute(select(reservations.c.id)).all()) == 3
    finally:
        engine.dispose()


def test_the_migration_stops_naming_what_it_cannot_make_canonical_and_changes_nothing(
    empty_database_url,
):
    upgrade(empty_database_url, "0006")
    engine = make_engine(Settings(database_url=empty_database_url))
    unfit = ["Partner A", "\u0430bc-corp", "x" * 65]  # a space, a Cyrillic a, too long
    taken = ["ABC", "Abc", "Zed"]  # ABC and Abc would be one; zed reserved without an account
    try:
        with engine.begin() as conn:
            for partner_id in ["abc", "ok", *unfit, *taken]:
                conn.execute(insert(partners).values(partner_id=partner_id))
            for event_id in ("gala", "GALA", "other"):
                conn.execute(
                    text(
                        "INSERT INTO events (event_id, name, total_seats, available_seats) "
                        "VALUES (:id, 'E', 10, 10)"
                    ),
                    {"id": event_id},
                )
            conn.execute(
                insert(reservations).values(
                    id=uuid.uuid4(), event_id="other", partner_id="zed", seats=1, status="confirmed"
                )
            )
            before = _rows(conn, "SELECT partner_id FROM partners")

        with pytest.raises(CommandError) as stopped:
            upgrade(empty_database_url)
        message = str(stopped.value)
        assert "nothing was changed" in message and "Then migrate again." in message
        for partner_id in unfit + taken:
            assert repr(partner_id) in message
        assert "'abc'" not in message and "'ok'" not in message  # canonical: nothing to do
        assert "'GALA', 'gala'" in message and "'other'" not in message
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == "0006"
            assert _rows(conn, "SELECT partner_id FROM partners") == before

        # Done as the message says, it goes through.
        with engine.begin() as conn:
            for partner_id in unfit + taken:
                conn.execute(text("DELETE FROM partners WHERE partner_id = :p"), {"p": partner_id})
            conn.execute(text("DELETE FROM events WHERE event_id = 'GALA'"))
        upgrade(empty_database_url)
        with engine.connect() as conn:
            assert _rows(conn, "SELECT partner_id FROM partners") == [("abc",), ("ok",)]
            assert _rows(conn, "SELECT partner_id FROM reservations") == [("zed",)]
    finally:
        engine.dispose()


def _columns(engine, table: str) -> set[str]:
    return {column["name"] for column in inspect(engine).get_columns(table)}


def _indexes(engine, table: str) -> set[str]:
    return {index["name"] for index in inspect(engine).get_indexes(table)}


def test_allocations_arrive_without_touching_existing_rows_and_leave_with_every_seat_counted(
    empty_database_url,
):
    upgrade(empty_database_url, "0007")
    settings = Settings(database_url=empty_database_url)
    engine = make_engine(settings)
    old = uuid.uuid4()
    try:
        with engine.begin() as conn:  # a confirmed reservation of 3 seats, before 0008
            conn.execute(
                text(
                    "INSERT INTO events (event_id, name, total_seats, available_seats, version, "
                    "reservation_count) VALUES ('gala', 'Gala', 20, 17, 1, 1)"
                )
            )
            conn.execute(
                insert(reservations).values(
                    id=old, event_id="gala", partner_id="p", seats=3, status="confirmed"
                )
            )
        upgrade(empty_database_url)
        with engine.connect() as conn:
            assert _rows(conn, "SELECT * FROM allocations") == []
            assert _rows(conn, "SELECT allocated_seats FROM reservations") == [(0,)]
            row = conn.execute(text("SELECT available_seats, version FROM events")).one()
            assert tuple(row) == (17, 1)
        assert "ix_reservations_event_id_status_partner_id" in _indexes(engine, "reservations")

        # Allocations, and a reservation and a hold drawn from them, as the service writes them.
        service = ReservationService(engine, settings)
        service.allot("gala", "alpha", 8, overflow=True, max_held_seats=5)
        service.allot("gala", "beta", 4)
        from_allocation = service.reserve("gala", "alpha", 6)
        straddling = service.hold("gala", "alpha", 4, 3600)  # 2 of alpha's, 2 of the pool's
        assert isinstance(from_allocation, Reservation) and isinstance(straddling, Reservation)
        assert (from_allocation.allocated_seats, straddling.allocated_seats) == (6, 2)
        with engine.begin() as conn:
            for outcome in ("hold-limit-reached", "pool-limit-reached", "reserved"):
                conn.execute(
                    text(
                        "INSERT INTO idempotency_keys (scope, key, fingerprint, owner, outcome, "
                        "expires_at) VALUES ('s', :key, 'f', :owner, :key, CURRENT_TIMESTAMP)"
                    ),
                    {"key": outcome, "owner": uuid.uuid4().hex},
                )
        with engine.connect() as conn:
            query = (
                "SELECT event_id, partner_id, seats, taken, held, overflow, max_held_seats, "
                "closed FROM allocations"
            )
            assert [
                (e, p, s, t, h, bool(o), m, bool(c))
                for e, p, s, t, h, o, m, c in _rows(conn, query)
            ] == [
                ("gala", "alpha", 8, 6, 2, True, 5, False),
                ("gala", "beta", 4, 0, 0, False, None, False),
            ]
            query = select(reservations.c.id, reservations.c.allocated_seats)
            allocated = dict(conn.execute(query).all())
            assert allocated == {
                old: 0,
                from_allocation.reservation_id: 6,
                straddling.reservation_id: 2,
            }
        # The database keeps the books of a bucket too: no allocation is overdrawn, and no
        # reservation draws more from one than its seats (SQLite: no new check on reservations).
        overdrawn = "UPDATE allocations SET taken = 9 WHERE partner_id = 'alpha'"
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(overdrawn))
        if engine.dialect.name == "postgresql":
            with pytest.raises(IntegrityError), engine.begin() as conn:
                conn.execute(
                    insert(reservations).values(
                        id=uuid.uuid4(),
                        event_id="gala",
                        partner_id="p",
                        seats=2,
                        status="confirmed",
                        allocated_seats=3,
                    )
                )
        before = service.summary("gala")
        assert (before.available_seats, before.held_seats, before.version) == (7, 4, 5)

        # Down: no allocations, and their seats the pool's (available_seats always counted them).
        command.downgrade(alembic_config(empty_database_url), "0007")
        assert not inspect(engine).has_table("allocations")
        assert "allocated_seats" not in _columns(engine, "reservations")
        assert "ix_reservations_event_id_status" in _indexes(engine, "reservations")
        with engine.connect() as conn:
            figures = "total_seats, available_seats, held_seats, reservation_count, version"
            row = conn.execute(text(f"SELECT {figures} FROM events")).one()
            assert tuple(row) == (20, 7, 4, 2, 5)
            statuses = _rows(conn, "SELECT seats, status FROM reservations")
            assert statuses == [(3, "confirmed"), (4, "held"), (6, "confirmed")]
            kept = conn.execute(text("SELECT outcome FROM idempotency_keys")).scalars().all()
            assert kept == ["reserved"]  # the old code knows no limit answers

        # And up again: the same rows, every seat of them from the open pool.
        upgrade(empty_database_url)
        with engine.connect() as conn:
            assert _rows(conn, "SELECT * FROM allocations") == []
            assert _rows(conn, "SELECT allocated_seats FROM reservations") == [(0,), (0,), (0,)]
        service = ReservationService(engine, settings)
        after = service.summary("gala")
        assert not after.allocations and after.pool_available == after.available_seats == 7
        again = service.reserve("gala", "beta", 7)
        assert isinstance(again, Reservation) and again.allocated_seats == 0
    finally:
        engine.dispose()
