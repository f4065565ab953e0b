"""Connections the pool hands out are usable, whatever state the last user left them in."""

from sqlalchemy import text
from sqlalchemy.pool.base import reset_none

from ticketboss.config import Settings
from ticketboss.services.unit_of_work import connection, transaction
from ticketboss.store.db import make_engine


def test_a_pooled_connection_left_inside_a_failed_transaction_is_replaced(pg_url):
    engine = make_engine(Settings(database_url=pg_url, db_pool_size=1, db_max_overflow=0))
    try:
        raw = engine.raw_connection()
        cursor = raw.cursor()
        try:
            cursor.execute("SELECT 1 / 0")
        except Exception:
            pass  # the transaction is now aborted: 25P02 for every statement until ROLLBACK
        pool = engine.pool
        reset, pool._reset_on_return = pool._reset_on_return, reset_none
        raw.close()  # back in the pool as it is, as if its reset had been lost
        pool._reset_on_return = reset

        with connection(engine) as conn:
            assert conn.execute(text("SELECT 42")).scalar() == 42
        with transaction(engine, "a test") as conn:
            assert conn.execute(text("SELECT 43")).scalar() == 43
    finally:
        engine.dispose()
