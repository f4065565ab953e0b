"""Restarts under load, over real keep-alive connections: a graceful reload (`kill -HUP` on the
master) loses nothing and refuses nothing; a SIGTERM answers every request it received before
it exits. Every 201 is in the database."""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from support.servers import serving
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services.partners import create_key
from ticketboss.store.db import make_engine
from ticketboss.store.tables import reservations

EVENT_ID = "node-meetup-2025"


@pytest.fixture
def engine(pg_url):
    engine = make_engine(Settings(database_url=pg_url))
    seed_event(engine, EVENT_ID, "Node.js Meet-up", 1_000_000, reset=True)
    yield engine
    engine.dispose()


class Load:
    """Clients in a closed loop, each on its own keep-alive connection (reopened when the
    server says `Connection: close`), reserving one seat at a time."""

    def __init__(self, port: int, key: str, clients: int = 30):
        self.port, self.key = port, key
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: Counter = Counter()
        self.threads = [threading.Thread(target=self.client) for _ in range(clients)]

    def count(self, outcome) -> None:
        with self.lock:
            self.outcomes[outcome] += 1

    def client(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        body = json.dumps({"partnerId": "p", "seats": 1})
        conn = None
        while not self.stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                try:
                    conn.connect()
                except ConnectionRefusedError:
                    self.count("refused")  # nobody listens any more (after a full stop)
                    conn = None
                    time.sleep(0.05)
                    continue
            try:
                conn.request("POST", "/api/reservations", body, headers)
            except OSError:
                self.count("lost: could not send")
                conn.close()
                conn = None
                continue
            try:
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                self.count("lost: no answer")  # sent, and never answered
                conn.close()
                conn = None
                continue
            self.count(response.status)
            if response.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def booked(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(
            select(func.count())
            .select_from(reservations)
            .where(reservations.c.event_id == EVENT_ID)
        )


def test_a_graceful_reload_under_load_refuses_and_loses_nothing(pg_url, engine, tmp_path_factory):
    key = create_key(engine, "restart-ops", Role.OPERATOR)[1]
    with serving(pg_url, tmp_path_factory) as served:
        with Load(served.port, key) as load:
            time.sleep(1.0)
            served.process.send_signal(signal.SIGHUP)
            time.sleep(4.0)  # new workers boot, the old ones finish and leave
            served.process.send_signal(signal.SIGHUP)
            time.sleep(3.0)
        assert set(load.outcomes) == {201}, load.outcomes
        assert booked(engine) == load.outcomes[201]
        assert served.log.read_text().count("Booting worker") >= 6  # two reloads happened


def test_sigterm_under_load_answers_every_request_it_received(pg_url, engine, tmp_path_factory):
    key = create_key(engine, "restart-ops", Role.OPERATOR)[1]
    with serving(pg_url, tmp_path_factory) as served:
        with Load(served.port, key) as load:
            time.sleep(1.0)
            served.process.send_signal(signal.SIGTERM)
            assert served.process.wait(20) == 0
            time.sleep(0.5)
        # After the stop, new connections are refused (nothing listens); nothing that was
        # sent on a connection the server had taken went unanswered.
        lost = {k: n for k, n in load.outcomes.items() if isinstance(k, str) and "lost" in k}
        assert not lost, load.outcomes
        assert load.outcomes[201] > 0 and set(load.outcomes) <= {201, "refused"}
        assert booked(engine) == load.outcomes[201]
