"""A worker's key cache on PostgreSQL: a key's lookup that waits on the database holds up only
the request that runs it; the key's other requests go on with the answer it had, and a
revoked key is refused once its lookup has run."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from ticketboss.domain import Role
from ticketboss.services.partners import KeyCache, create_key, hash_key, revoke_key
from ticketboss.services.unit_of_work import transaction
from ticketboss.store import queries

TTL = 0.2


@contextmanager
def _lookup_stuck_on_its_row(engine, cache: KeyCache, key: str, key_id: str):
    """The key's row locked by another transaction and a lookup of the key (in a thread)
    waiting on it, to stamp its last use; yields (that thread, its answers). The row is let
    go when the block ends."""
    with engine.connect() as blocker:
        blocker.execute(text("SELECT 1 FROM api_keys WHERE id = :id FOR UPDATE"), {"id": key_id})
        looking = _in_thread(lambda: cache.authenticate(key))
        until = time.monotonic() + 10
        while not _waiting_on_lock(engine, "api_keys"):
            assert time.monotonic() < until, "the lookup never reached the locked row"
            time.sleep(0.02)
        yield looking
        blocker.rollback()


def _waiting_on_lock(engine, table: str) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE :update"
                ),
                {"update": f"UPDATE {table}%"},
            )
        )


def _in_thread(call) -> tuple[threading.Thread, list]:
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    thread.start()
    return thread, answers


def test_a_key_whose_lookup_waits_on_the_database_still_serves_its_other_requests(pg_engine):
    info, key, _ = create_key(pg_engine, f"slow-lookup-{time.monotonic_ns()}", Role.PARTNER)
    cache = KeyCache(pg_engine, TTL, grace=30.0)
    first = cache.authenticate(key)
    assert first is not None and first.partner_id == info.partner_id
    time.sleep(TTL * 2)  # the answer is past its ttl: the next request looks the key up

    with _lookup_stuck_on_its_row(pg_engine, cache, key, info.key_id) as (looking, looked):
        other, answered = _in_thread(lambda: cache.authenticate(key))
        other.join(timeout=10)
        assert not other.is_alive(), "a request of the key queued behind its lookup"
        assert answered == [first]  # the answer it had
        assert looking.is_alive()  # the lookup still waits on the row
    looking.join(timeout=10)
    assert looked == [first]

    assert revoke_key(pg_engine, info.key_id)
    time.sleep(TTL * 2)
    assert cache.authenticate(key) is None  # looked up again: revoked
    assert cache.authenticate(key) is None  # and forgotten, not served from the old answer


def test_without_grace_a_key_past_its_ttl_waits_for_its_lookup(pg_engine):
    info, key, _ = create_key(pg_engine, f"strict-lookup-{time.monotonic_ns()}", Role.PARTNER)
    cache = KeyCache(pg_engine, TTL)  # grace 0: never an answer past its ttl
    assert cache.authenticate(key) is not None
    time.sleep(TTL * 2)
    with _lookup_stuck_on_its_row(pg_engine, cache, key, info.key_id) as (looking, _):
        other, answered = _in_thread(lambda: cache.authenticate(key))
        other.join(timeout=0.5)
        assert other.is_alive() and answered == []  # it waits for the lookup's answer
    looking.join(timeout=10)
    other.join(timeout=10)
    assert answered and answered[0] is not None


def test_the_refresher_keeps_used_keys_fresh_and_forgets_revoked_ones(pg_engine):
    kept, kept_key, _ = create_key(pg_engine, f"kept-{time.monotonic_ns()}", Role.PARTNER)
    _, idle_key, _ = create_key(pg_engine, f"idle-{time.monotonic_ns()}", Role.PARTNER)
    cache = KeyCache(pg_engine, 1.0)
    assert cache.authenticate(idle_key) is not None
    time.sleep(0.6)
    assert cache.authenticate(kept_key) is not None
    # The idle key was taken too long ago, the kept one's answer has most of its ttl left.
    assert cache.refresh_used(within=0.3) == 0
    time.sleep(0.6)  # now the kept key's answer is past half its ttl
    assert cache.refresh_used(within=0.9) == 1  # the kept key only: the idle one lapses
    assert cache._fresh(hash_key(kept_key)) is not None
    assert cache._fresh(hash_key(idle_key)) is None

    assert revoke_key(pg_engine, kept.key_id)
    time.sleep(0.6)
    assert cache.refresh_used(within=10) == 2  # the revoked key is looked up and forgotten
    assert cache._fresh(hash_key(kept_key)) is None
    assert cache._fresh(hash_key(idle_key)) is not None
    assert cache.authenticate(kept_key) is None


def test_a_keys_last_use_is_stamped_when_it_was_taken_and_never_goes_back(pg_engine):
    info, key, _ = create_key(pg_engine, f"stamped-{time.monotonic_ns()}", Role.PARTNER)
    cache = KeyCache(pg_engine, TTL)
    assert cache.authenticate(key) is not None
    taken = datetime.now(UTC)
    time.sleep(TTL * 2)
    stamp = _last_used(pg_engine, info.key_id)
    later = taken + timedelta(hours=1)  # another worker's later use
    with transaction(pg_engine, "test") as conn:
        queries.touch_key(conn, info.key_id, later)
    assert cache.refresh_used(within=10) == 1
    # The refresh stamped the key's last use (before `taken`), which is not after `later`.
    assert stamp is not None and stamp <= taken
    assert _last_used(pg_engine, info.key_id) == later


def _last_used(engine, key_id: str):
    with engine.connect() as conn:
        return conn.scalar(text("SELECT last_used_at FROM api_keys WHERE id = :id"), {"id": key_id})
