"""Apply the alembic migrations (the only way the schema is created)."""

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ticketboss.config import PROJECT_ROOT


def alembic_config(database_url: str) -> Config:
    """The [tool.alembic] settings of pyproject.toml, aimed at `database_url`."""
    config = Config(toml_file=PROJECT_ROOT / "pyproject.toml")
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Create the PostgreSQL database if it is missing, then migrate it to `revision`."""
    create_database_if_missing(database_url)
    command.upgrade(alembic_config(database_url), revision)


def create_database_if_missing(database_url: str) -> None:
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return  # SQLite creates its file on first connect
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}
            )
            if not exists:
                quoted = conn.dialect.identifier_preparer.quote(url.database or "")
                conn.execute(text(f"CREATE DATABASE {quoted}"))
    finally:
        admin.dispose()
