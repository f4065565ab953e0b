"""A partner's list of its own reservations costs the same however large the event is: on
PostgreSQL, with 200,000 rows of other partners in the event, a page of the partner's 3 rows
reads a handful of index and heap pages (EXPLAIN ANALYZE's buffer counts), not the event's
rows. Counted in pages rather than timed: the count does not depend on the machine."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, event, text

from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.store import queries
from ticketboss.store.db import make_engine

EVENT_ID = "partner-reads"
OTHERS = 200_000


@pytest.fixture(scope="module")
def engine(pg_url):
    service = make_engine(Settings(database_url=pg_url))
    seed_event(service, EVENT_ID, "Large", 10_000_000, reset=True)
    service.dispose()
    # Straight in SQL, without the service's statement timeout: 200,000 rows at once.
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reservations (id, event_id, partner_id, seats, status, created_at)"
                " SELECT gen_random_uuid(), :event, 'other-' || (i % 100), 1, 'confirmed',"
                "        now() - make_interval(secs => i)"
                " FROM generate_series(1, :n) AS i"
            ),
            {"event": EVENT_ID, "n": OTHERS},
        )
        conn.execute(
            text(
                "INSERT INTO reservations (id, event_id, partner_id, seats, status, created_at)"
                " SELECT gen_random_uuid(), :event, 'mine', 2, 'confirmed',"
                "        now() - make_interval(secs => i * 50000)"
                " FROM generate_series(1, 3) AS i"
            ),
            {"event": EVENT_ID},
        )
        conn.execute(text("ANALYZE reservations"))
    yield engine
    with engine.begin() as conn:  # the session's database is shared: leave it as it was
        conn.execute(text("DELETE FROM reservations WHERE event_id = :e"), {"e": EVENT_ID})
        conn.execute(text("DELETE FROM events WHERE event_id = :e"), {"e": EVENT_ID})
    engine.dispose()


def _pages_read(engine, partner_id: str | None) -> tuple[int, int]:
    """(shared buffers the listing's query touched, rows it returned), from EXPLAIN
    (ANALYZE, BUFFERS) of the statement the service really runs."""
    seen: list = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "FROM reservations" in statement:
            seen.append((statement, parameters))

    with engine.connect() as conn:
        event.listen(conn, "before_cursor_execute", capture)
        found = queries.list_reservations(
            conn,
            EVENT_ID,
            partner_id=partner_id,
            status=None,
            after=None,
            limit=50,
            now=datetime.now(UTC),
        )
        event.remove(conn, "before_cursor_execute", capture)
        statement, parameters = seen[-1]
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
        plan = cursor.fetchone()[0]
    plan = plan if isinstance(plan, list) else json.loads(plan)
    top = plan[0]["Plan"]
    return top["Shared Hit Blocks"] + top["Shared Read Blocks"], len(found)


def test_a_partners_page_reads_a_few_pages_whatever_the_events_size(engine):
    pages, rows = _pages_read(engine, "mine")
    assert rows == 3
    # One descent of the (event, partner, created_at, id) index and the 3 rows' heap pages.
    # Walking the event's rows in (created_at, id) order to filter on partner read thousands.
    assert pages <= 20, pages


def test_an_events_first_page_reads_a_few_pages_too(engine):
    pages, rows = _pages_read(engine, None)
    assert rows == 50
    assert pages <= 60, pages
