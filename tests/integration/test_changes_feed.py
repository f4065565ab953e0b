"""The changes feed never skips a notification whose transaction commits late: rows are
served in (xid, id) order, and only once every transaction that could still commit one
before them has ended."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from ticketboss.services.changes import START
from ticketboss.store import queries
from ticketboss.store.tables import notifications


def _row(event_id: str) -> dict:
    return {
        "type": "event.updated",
        "event_id": event_id,
        "partner_id": None,
        "version": 1,
        "created_at": datetime.now(UTC),
        "data": "{}",
    }


def _read_all(engine, cursor, event_id):
    """Everything the feed serves after `cursor` now, and the cursor after it."""
    with engine.connect() as conn:
        rows = queries.read_after(conn, cursor, 1000, event_id=event_id)
    return [r.id for r in rows], ((rows[-1].xid, rows[-1].id) if rows else cursor)


def test_a_row_that_commits_after_a_later_one_is_still_read_and_in_order(pg_engine):
    event_id = f"late-{random.randrange(10**9)}"
    with pg_engine.connect() as slow, pg_engine.connect() as fast:
        slow.begin()
        queries.insert_notifications(slow, [_row(event_id)])  # the lower id and xid
        fast.begin()
        queries.insert_notifications(fast, [_row(event_id)])
        fast.commit()  # the higher id commits first
        seen, cursor = _read_all(pg_engine, START, event_id)
        # Nothing yet: the fast row's transaction is above the slow one's, still running.
        assert seen == []
        # Paging on ids alone would have served the fast row, and then skipped the slow one.
        with pg_engine.connect() as conn:
            naive = conn.scalars(
                select(notifications.c.id).where(notifications.c.event_id == event_id)
            ).all()
        assert len(naive) == 1
        slow.commit()
    seen, cursor = _read_all(pg_engine, cursor, event_id)
    assert len(seen) == 2 and seen == sorted(seen)
    assert _read_all(pg_engine, cursor, event_id)[0] == []


@pytest.mark.parametrize("seed", range(3))
def test_a_reader_paging_while_writers_commit_in_any_order_reads_every_row_once(pg_engine, seed):
    writers = 8
    order = list(range(writers))
    random.Random(seed).shuffle(order)  # the order they commit in, unrelated to their ids
    event_id = f"shuffled-{seed}-{random.randrange(10**9)}"
    inserted = threading.Barrier(writers + 1)
    turn = [threading.Event() for _ in range(writers)]
    done = [threading.Event() for _ in range(writers)]
    errors: list[BaseException] = []

    def write(index: int) -> None:
        try:
            with pg_engine.connect() as conn:
                conn.begin()
                queries.insert_notifications(conn, [_row(event_id)])
                inserted.wait(30)  # every writer holds an uncommitted row
                assert turn[index].wait(30)
                conn.commit()
        except BaseException as exc:
            errors.append(exc)
        finally:
            done[index].set()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    inserted.wait(30)
    read: list[int] = []
    cursor = START
    for index in order:  # commit one writer at a time, reading the feed after each commit
        turn[index].set()
        assert done[index].wait(30)
        seen, cursor = _read_all(pg_engine, cursor, event_id)
        read += seen
    for t in threads:
        t.join(30)
    assert not errors
    seen, cursor = _read_all(pg_engine, cursor, event_id)
    read += seen
    with pg_engine.connect() as conn:
        written = conn.scalars(
            select(notifications.c.id).where(notifications.c.event_id == event_id)
        ).all()
    assert len(written) == writers
    assert sorted(read) == sorted(written)  # every row, none twice
