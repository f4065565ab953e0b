"""`ticketboss partner …`, as an operator runs it: the key alone on stdout, messages on
stderr, never the key in a list. `ticketboss allocations …`: the same allocations as the
API's, refusals in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from support.api import create_event, reserve
from ticketboss import services_of
from ticketboss.cli import seed_event
from ticketboss.domain import Reservation
from ticketboss.services.partners import KEY_SHAPE
from ticketboss.store import queries

TICKETBOSS = Path(sys.executable).parent / "ticketboss"


def runner(database_url: str):
    def ticketboss(*args: str, **settings: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "DATABASE_URL": database_url, **settings}
        return subprocess.run(
            [TICKETBOSS, *args], env=env, capture_output=True, text=True, timeout=60
        )

    return ticketboss


@pytest.fixture
def run(database_url):
    """The command on each engine's test database."""
    return runner(database_url)


@pytest.fixture
def run_pg(pg_url):
    """The command on the PostgreSQL test database only (one process start costs ~1 s)."""
    return runner(pg_url)


def test_create_prints_the_key_alone_list_never_shows_it_and_revoke_stops_it(app, run):
    partner_id = f"cli-{uuid.uuid4().hex[:8]}"
    created = run("partner", "create", partner_id)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == f"{key}\n" and KEY_SHAPE.fullmatch(key)
    assert f"created partner {partner_id}" in created.stderr and key not in created.stderr

    operator = run("partner", "create", partner_id, "--operator")
    assert operator.returncode == 0 and "created partner" not in operator.stderr  # it existed
    assert operator.stdout.strip() != key

    listed = run("partner", "list")
    assert listed.returncode == 0
    mine = [line for line in listed.stdout.splitlines() if line.startswith(partner_id)]
    assert len(mine) == 2 and key[:11] in mine[0]
    assert key not in listed.stdout and key[11:] not in listed.stdout
    assert {line.split()[3] for line in mine} == {"partner", "operator"}
    key_id = mine[0].split()[1]

    client = app.test_client()
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/reservations", headers=auth).status_code == 200
    revoked = run("partner", "revoke", key_id)
    assert revoked.returncode == 0 and f"revoked {key_id}" in revoked.stderr
    again = run("partner", "revoke", key_id)
    assert again.returncode == 1 and "no active key" in again.stderr
    # This test's worker still trusts the key for AUTH_CACHE_SECONDS; a new one refuses it.
    from ticketboss import create_app

    fresh = create_app(services_of(app).settings)
    try:
        assert fresh.test_client().get("/api/reservations", headers=auth).status_code == 401
    finally:
        services_of(fresh).engine.dispose()
    assert "-" not in [
        line.split()[-1] for line in run("partner", "list").stdout.splitlines() if key_id in line
    ]


@pytest.mark.parametrize(
    "partner_id", ["", "x" * 65, "-abc", "a b", "abc\n", "\u0430bc-corp", "ABC"]
)
def test_create_refuses_a_partner_id_that_is_not_canonical_in_one_line_with_the_rule(
    run, partner_id
):
    refused = run("partner", "create", "--", partner_id)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "lowercase ASCII letters" in refused.stderr


def test_create_never_folds_case_but_names_the_canonical_spelling(run):
    for given in ("ABC-Corp", "\uff41\uff42\uff43-corp"):  # upper case, full-width letters
        refused = run("partner", "create", given)
        assert refused.returncode == 2
        assert "its canonical spelling is 'abc-corp'" in refused.stderr
    look_alike = run("partner", "create", "\u0430bc-corp")  # a Cyrillic a
    assert "non-ASCII characters (U+0430)" in look_alike.stderr
    listed = {line.split()[0] for line in run("partner", "list").stdout.splitlines()}
    assert not listed & {"ABC-Corp", "\uff41\uff42\uff43-corp", "\u0430bc-corp"}


def test_seed_refuses_an_event_id_differing_only_in_case_in_one_line(app, run):
    event_id = f"Seed-{uuid.uuid4().hex[:8]}"
    assert run("seed", "--event-id", event_id.lower(), "--seats", "5").returncode == 0
    refused = run("seed", "--event-id", event_id, "--seats", "5")
    assert refused.returncode == 1
    assert "differs from it only in case" in refused.stderr
    assert "Traceback" not in refused.stderr


def fresh_event(client, seats: int = 100) -> str:
    event_id = f"cli-{uuid.uuid4().hex[:8]}"
    assert create_event(client, event_id, seats).status_code == 201
    return event_id


def rows(listed: subprocess.CompletedProcess) -> dict[str, list[str]]:
    """`allocations list`'s table by its first column (the pool's: "(open"), header and last
    line left out."""
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == [
        "PARTNER", "SEATS", "TAKEN", "HELD", "AVAILABLE", "OVERFLOW", "MAX", "HELD", "CLOSED"
    ]  # fmt: skip
    return {line.split()[0]: line.split()[1:] for line in lines[1:-1]}


def test_allocations_set_list_and_delete_through_the_cli_are_the_ones_the_api_shows(app, run):
    client = app.test_client()
    event_id = fresh_event(client)
    alpha = run("allocations", "set", event_id, "alpha", "30")
    assert alpha.returncode == 0, alpha.stderr
    assert alpha.stdout.startswith(f"created the allocation of alpha in {event_id}: 30 seats")
    assert alpha.stdout.endswith("70 seats left in the open pool, version 1\n")
    beta = run("allocations", "set", event_id, "beta", "20", "--overflow", "--max-held", "5")
    assert beta.returncode == 0 and "overflow, max held 5;" in beta.stdout

    shown = client.get(f"/api/events/{event_id}/allocations")
    assert shown.headers["ETag"] == '"2"'
    assert shown.get_json() == {
        "items": [
            {"partnerId": "alpha", "seats": 30, "taken": 0, "held": 0, "available": 30,
             "overflow": False, "maxHeldSeats": None, "closed": False},
            {"partnerId": "beta", "seats": 20, "taken": 0, "held": 0, "available": 20,
             "overflow": True, "maxHeldSeats": 5, "closed": False},
        ],
        "pool": {"seats": 50, "taken": 0, "held": 0, "available": 50},
    }  # fmt: skip
    booked = reserve(client, 4, "alpha", event_id=event_id)
    assert booked.status_code == 201
    assert rows(run("allocations", "list", event_id)) == {
        "alpha": ["30", "4", "0", "26", "no", "100", "(default)", "no"],
        "beta": ["20", "0", "0", "20", "yes", "5", "no"],
        "(open": ["pool)", "50", "0", "0", "50"],
    }
    again = run("allocations", "set", event_id, "alpha", "30")
    assert again.stdout.startswith("unchanged: ") and again.stdout.endswith("version 3\n")

    # Deleted while 4 of its seats are taken: its 26 others are the pool's at once, it keeps
    # the 4 (closed) until they come back, and then it is gone.
    deleted = run("allocations", "delete", event_id, "alpha")
    assert deleted.returncode == 0, deleted.stderr
    assert "(76 left); 4 seats still taken or held from it go to the pool" in deleted.stdout
    closed = client.get(f"/api/events/{event_id}/allocations/alpha").get_json()
    assert closed == {**closed, "seats": 4, "taken": 4, "available": 0, "closed": True}
    assert rows(run("allocations", "list", event_id))["alpha"][-1] == "yes"
    reservation_id = booked.get_json()["reservationId"]
    assert client.delete(f"/api/events/{event_id}/reservations/{reservation_id}").status_code == 204
    listed = rows(run("allocations", "list", event_id))
    assert set(listed) == {"beta", "(open"} and listed["(open"] == ["pool)", "80", "0", "0", "80"]


def test_allocations_refusals_are_one_line_with_status_1_and_write_nothing(
    service, pg_engine, run_pg
):
    event_id, full = f"cli-{uuid.uuid4().hex[:8]}", f"cli-{uuid.uuid4().hex[:8]}"
    seed_event(pg_engine, event_id, "Gala", 100, reset=False)
    service.allot(event_id, "alpha", 30)
    assert isinstance(service.reserve(event_id, "alpha", 4), Reservation)
    # An event with MAX_ALLOCATIONS_PER_EVENT (50) allocations already.
    seed_event(pg_engine, full, "Full", 100, reset=False)
    for i in range(50):
        service.allot(full, f"cap-{i}", 1)
    with pg_engine.begin() as conn:
        queries.ensure_partner(conn, "cli-cap-50")
    refusals = [
        (("set", event_id, "alpha", "3"), "cannot be 3 seats: 4 are taken or held from it"),
        (("set", event_id, "beta", "71"), f"event '{event_id}' can give it at most 70"),
        (("set", event_id, "nobody-at-all", "1"), "Partner 'nobody-at-all' has no account"),
        (("set", full, "cli-cap-50", "1"), "already has 50 allocations, the most it may"),
        (("delete", event_id, "beta"), f"Event '{event_id}' has no allocation for partner 'beta'"),
        (("list", "no-such-event"), "Event 'no-such-event' does not exist."),
    ]
    for args, says in refusals:
        refused = run_pg("allocations", *args)
        assert refused.returncode == 1 and refused.stdout == "", (args, refused.stdout)
        assert refused.stderr.startswith("Error: ") and refused.stderr.count("\n") == 1, args
        assert says in refused.stderr, (args, refused.stderr)
    assert service.summary(event_id).version == 2 and service.summary(full).version == 50


def test_allocations_usage_errors_are_refused_before_the_database_in_one_line():
    nowhere = runner("postgresql+psycopg2://nobody@127.0.0.1:1/none")  # never reached
    for args, says in [
        (("set", "gala", "alpha", "many"), "'many' is not a valid integer range"),
        (("set", "gala", "alpha", "1000001"), "1000001 is not in the range 0<=x<=1000000"),
        (("set", "gala/x", "alpha", "1"), "invalid event_id: 1-128 letters, digits"),
    ]:
        refused = nowhere("allocations", *args)
        assert refused.returncode == 2 and says in refused.stderr, (args, refused.stderr)
        assert "Traceback" not in refused.stderr


def test_allocations_need_a_partner_account_only_with_keys(service, pg_engine, run_pg):
    event_id = f"cli-{uuid.uuid4().hex[:8]}"
    seed_event(pg_engine, event_id, "Open", 10, reset=False)
    opened = run_pg("allocations", "set", event_id, "no-account-yet", "3", AUTH_MODE="open")
    assert opened.returncode == 0, opened.stderr
    assert service.summary(event_id).allocations["no-account-yet"].seats == 3


def test_prune_notifications_deletes_only_those_past_the_retention_with_their_deliveries(
    database_url, run
):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import func, insert, select

    from ticketboss.config import Settings
    from ticketboss.store.db import make_engine
    from ticketboss.store.tables import notifications, webhook_deliveries, webhook_endpoints

    engine = make_engine(Settings(database_url=database_url))
    event_id = f"prune-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    ages = {"old": 31, "kept": 29}
    try:
        with engine.begin() as conn:
            ids = {}
            for name, days in ages.items():
                ids[name] = conn.execute(
                    insert(notifications).values(
                        type="event.updated",
                        event_id=event_id,
                        partner_id=None,
                        version=1,
                        created_at=now - timedelta(days=days),
                        data="{}",
                    )
                ).inserted_primary_key[0]
            endpoint_id = f"we_{uuid.uuid4().hex[:24]}"
            conn.execute(
                insert(webhook_endpoints).values(
                    id=endpoint_id, partner_id="p", url="https://example.com/", secret="x"
                )
            )
            conn.execute(
                insert(webhook_deliveries),
                [{"endpoint_id": endpoint_id, "notification_id": i} for i in ids.values()],
            )
        done = run("prune-notifications")
        assert done.returncode == 0, done.stderr
        assert "older than 30 days" in done.stdout
        with engine.connect() as conn:
            left = conn.scalars(
                select(notifications.c.id).where(notifications.c.event_id == event_id)
            ).all()
            queued = conn.scalar(
                select(func.count()).where(webhook_deliveries.c.endpoint_id == endpoint_id)
            )
        assert left == [ids["kept"]] and queued == 1
    finally:
        engine.dispose()
