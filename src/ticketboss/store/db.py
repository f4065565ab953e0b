"""Engine construction for PostgreSQL (production) and the embedded SQLite default."""

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from ticketboss.config import Settings


def make_engine(settings: Settings) -> Engine:
    """An engine with a bounded pool; call it after fork so each worker has its own."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings)
    engine = create_engine(
        url,
        # The compare-and-swap relies on it (a lost swap re-reads the latest commit in the
        # same transaction), whatever the server's default is.
        isolation_level="READ COMMITTED",
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        connect_args={
            "connect_timeout": 3,
            # A dead peer (half-open TCP) surfaces as an error within seconds instead of
            # stalling the group commit's leader, and everyone queued behind it, forever.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": 10_000,
            "application_name": "ticketboss",
        },
    )
    timeout = f"SET LOCAL statement_timeout = {int(settings.db_statement_timeout_ms)}"

    @event.listens_for(engine, "begin")
    def _statement_timeout(conn):
        # A stuck statement becomes a 503 instead of a hung worker. Set in each transaction,
        # not per connection (a startup `options` parameter or a session SET): behind
        # pgbouncer in transaction mode, consecutive transactions of one client connection
        # run on different server connections, and pgbouncer refuses `options`.
        conn.exec_driver_sql(timeout)

    return engine


def _sqlite_engine(url, settings: Settings) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        connect_args={"timeout": settings.db_statement_timeout_ms / 1000},
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        # WAL lets readers run beside the single writer; busy_timeout makes the several
        # gunicorn workers queue for the write lock instead of failing at once.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={settings.db_statement_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
