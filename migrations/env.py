"""Alembic environment: the URL comes from the caller (`ticketboss migrate`), else DATABASE_URL."""

from dataclasses import replace

from alembic import context

from ticketboss.config import Settings
from ticketboss.store.db import make_engine
from ticketboss.store.tables import metadata

config = context.config
url = config.attributes.get("database_url") or Settings.from_env().database_url


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # The environment's settings (DB_STATEMENT_TIMEOUT_MS: a migration on a large table may
    # need more than a request does), on the URL being migrated.
    engine = make_engine(replace(Settings.from_env(), database_url=url))
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                # Batch mode drops and recreates tables; with foreign keys enforced, dropping
                # `events` would cascade to the reservations.
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()  # end the autobegun transaction; alembic runs its own
            context.configure(
                connection=connection,
                target_metadata=metadata,
                # SQLite alters tables by copying them; batch mode does that for us.
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
