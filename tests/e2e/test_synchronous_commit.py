"""Never a 201 for a commit the synchronous standby may not have. A COMMIT waiting for a
synchronous standby commits on the primary first; if its wait ends any other way than the
standby's confirmation, a failover could lose it:

- the statement timeout does not cancel that wait, so the request's deadline does (the
  client gives up on the COMMIT: its outcome is unknown; the backend goes on waiting,
  its commit invisible, until the standby confirms or is no longer waited for);
- a cancel (pg_cancel_backend, a client's cancel) ends the wait with a success and only a
  WARNING, "might not have been replicated": the service answers that as unknown too.

Both are a 503 with Retry-After, and the Idempotency-Key's retry finds the truth once the
standby is back. Over real sockets against gunicorn, on a PostgreSQL of the test's own whose
`synchronous_standby_names` names a standby that never connects."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import create_engine, func, select, text

from support.database import create_partners
from support.faults import PrivatePostgres, wait_until
from support.servers import request, serving
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.store.db import make_engine
from ticketboss.store.migrate import upgrade
from ticketboss.store.tables import reservations

EVENT = "sync-gala"
PATH = f"/api/events/{EVENT}/reservations"


@pytest.fixture(scope="module")
def primary():
    """(an AUTOCOMMIT engine on the server, the URL of its migrated database)."""
    server = PrivatePostgres().start()
    admin = create_engine(server.url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE ticketboss"))
        url = server.url("ticketboss")
        upgrade(url)
        create_partners(url)
        yield admin, url
    finally:
        admin.dispose()
        server.remove()


@pytest.fixture(scope="module")
def served(primary, tmp_path_factory):
    _, url = primary
    engine = make_engine(Settings(database_url=url))
    seed_event(engine, EVENT, "Sync gala", 100, reset=True)
    engine.dispose()
    with serving(
        url,
        tmp_path_factory,
        AUTH_MODE="open",
        REQUEST_DEADLINE_SECONDS="2",
        HOLD_SWEEP_SECONDS="0",
        WEBHOOK_DISPATCH="0",
    ) as service:
        yield service


@pytest.fixture
def lonely(primary):
    """Every COMMIT waits for a standby named 'absent', which never comes; reset after."""
    admin, _ = primary
    _standby(admin, "absent")
    yield admin
    _standby(admin, None)


def _standby(admin, name: str | None) -> None:
    with admin.connect() as conn:
        if name is None:
            conn.execute(text("ALTER SYSTEM RESET synchronous_standby_names"))
        else:
            conn.execute(text(f"ALTER SYSTEM SET synchronous_standby_names = '{name}'"))
        conn.execute(text("SELECT pg_reload_conf()"))
    time.sleep(0.3)  # each backend reads the new setting at its next command


def _rows(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            where = reservations.c.event_id == EVENT
            return conn.scalar(select(func.count()).select_from(reservations).where(where))
    finally:
        engine.dispose()


def _waiting_for_standby(admin) -> list[int]:
    with admin.connect() as conn:
        query = text("SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
        return list(conn.scalars(query))


def test_a_commit_still_waiting_for_the_standby_at_the_deadline_is_a_503(primary, served, lonely):
    _, url = primary
    before = _rows(url)
    began = time.monotonic()
    status, body, headers = request(
        served.port, "POST", PATH, {"partnerId": "p", "seats": 2}, full=True
    )
    assert status == 503, body
    assert headers["Retry-After"] and time.monotonic() - began < 4
    # Its commit record is written on this primary, but nobody sees it while its backend
    # waits for the standby; once no standby is waited for, it lands: exactly the commit a
    # failover to the standby would have lost.
    assert _rows(url) == before
    _standby(lonely, None)
    wait_until(lambda: _rows(url) == before + 1, 5)


def test_a_commit_whose_wait_was_cancelled_is_a_503_though_it_succeeded(primary, served, lonely):
    _, url = primary
    before = _rows(url)
    answers: list = []
    post = threading.Thread(
        target=lambda: answers.append(
            request(served.port, "POST", PATH, {"partnerId": "p", "seats": 1}, full=True)
        )
    )
    post.start()
    wait_until(lambda: _waiting_for_standby(lonely), 1.5)
    with lonely.connect() as conn:
        for pid in _waiting_for_standby(lonely):
            conn.execute(text("SELECT pg_cancel_backend(:pid)"), {"pid": pid})
    post.join(10)
    status, body, headers = answers[0]
    assert headers["Retry-After"]
    # The cancelled wait returns success with a WARNING; without reading it, this was a 201.
    assert status == 503, body
    assert json.loads(body)["type"].endswith("outcome-unknown")
    assert _rows(url) == before + 1


def test_the_key_of_an_unconfirmed_reservation_answers_its_truth_once_the_standby_is_back(
    primary, served
):
    admin, url = primary
    before = _rows(url)
    key = {"Idempotency-Key": "sync-1"}
    body = {"partnerId": "p", "seats": 1}
    _standby(admin, "absent")
    try:
        assert request(served.port, "POST", PATH, body, headers=key)[0] == 503
    finally:
        _standby(admin, None)
    deadline = time.monotonic() + 10
    while True:  # a claim the first attempt left is in flight until its lease lapses (409)
        status, answer = request(served.port, "POST", PATH, body, headers=key)
        if status != 409 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 201, answer
    again = request(served.port, "POST", PATH, body, headers=key)
    assert again[0] == 201 and json.loads(again[1]) == json.loads(answer)
    assert _rows(url) == before + 1  # one reservation for the key, whatever the first did


def test_a_stored_answer_is_given_again_only_once_the_standby_has_it(primary, served):
    """A key's stored 201 may be committed here and not on the standby (its request's wait
    was cancelled, or the primary crashed mid-wait and came back); the service cannot tell
    which, so a replay first waits until the standby has everything up to it. Here the
    reservation is stored, then no standby confirms anything: the retry is not a 201."""
    admin, url = primary
    before = _rows(url)
    key = {"Idempotency-Key": "sync-replay"}
    body = {"partnerId": "p", "seats": 1}
    first = request(served.port, "POST", PATH, body, headers=key)
    assert first[0] == 201, first
    _standby(admin, "absent")
    try:
        status, answer, headers = request(served.port, "POST", PATH, body, headers=key, full=True)
        # Without the wait this is the stored 201, replayed.
        assert status == 503 and headers["Retry-After"], answer
    finally:
        _standby(admin, None)
    status, answer, headers = request(served.port, "POST", PATH, body, headers=key, full=True)
    assert status == 201 and headers["Idempotent-Replayed"] == "true", answer
    assert json.loads(answer) == json.loads(first[1])
    assert _rows(url) == before + 1


def _read_only(admin, on: bool) -> None:
    """Every new transaction read-only, as on a standby (or not)."""
    with admin.connect() as conn:
        if on:
            conn.execute(text("ALTER SYSTEM SET default_transaction_read_only = on"))
        else:
            conn.execute(text("ALTER SYSTEM RESET default_transaction_read_only"))
        conn.execute(text("SELECT pg_reload_conf()"))
    time.sleep(0.3)


def test_a_database_that_takes_no_writes_is_not_ready_and_writes_are_503s(primary, served):
    admin, url = primary
    before = _rows(url)
    assert request(served.port, "GET", "/api/ready")[0] == 200
    _read_only(admin, True)
    try:
        status, body, headers = request(served.port, "GET", "/api/ready", full=True)
        assert status == 503 and headers["Retry-After"], body
        assert "takes no writes" in json.loads(body)["detail"]
        status, body, headers = request(
            served.port, "POST", PATH, {"partnerId": "p", "seats": 1}, full=True
        )
        assert status == 503 and headers["Retry-After"], body  # never a 500
    finally:
        _read_only(admin, False)
    assert request(served.port, "GET", "/api/ready")[0] == 200
    assert request(served.port, "POST", PATH, {"partnerId": "p", "seats": 1})[0] == 201
    assert _rows(url) == before + 1
