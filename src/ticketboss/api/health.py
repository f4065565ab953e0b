"""Liveness that also proves the database answers, and readiness: the schema is this code's.
Each waits at most PROBE_SECONDS for the database (a pool checkout included), so a stalled
database is a prompt 503 and a balancer takes the host out, never a probe left hanging."""

from functools import cache

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from ticketboss import deadline
from ticketboss.api import deps
from ticketboss.api.body import Blueprint
from ticketboss.api.errors import problem
from ticketboss.api.schemas import Health, Problem
from ticketboss.services.unit_of_work import connection
from ticketboss.store.migrate import alembic_config

blp = Blueprint("health", __name__, url_prefix="/api", description="Service health")

PROBE_SECONDS = 1.0
# "on" in a standby (recovery) and wherever writes are refused.
_READ_ONLY = text("SELECT current_setting('transaction_read_only')")
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}


@blp.get("/health")
@blp.doc(operationId="getHealth", security=[])
@blp.response(200, Health)
@blp.alt_response(
    503, schema=Problem, headers=_RETRY_AFTER, description="The database does not answer."
)
def health():
    """200 when the database answers a trivial query within a second."""
    with deadline.within(PROBE_SECONDS), connection(deps.engine()) as conn:
        conn.execute(text("SELECT 1"))
    return {"status": "UP"}


@blp.get("/ready")
@blp.doc(operationId="getReadiness", security=[])
@blp.response(200, Health, description="The database is migrated to this code's head revision.")
@blp.alt_response(
    503,
    schema=Problem,
    headers=_RETRY_AFTER,
    description="The database is not migrated to this code's head revision, does not answer, "
    "or takes no writes (a standby: no writable primary, as during a failover).",
)
def ready():
    """200 when the database takes writes and its alembic revision is the head of this
    code's migrations, read within a second."""
    # A database that does not answer raises here; errors.py turns that into a 503 as well.
    with deadline.within(PROBE_SECONDS), connection(deps.engine()) as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        read_only = conn.dialect.name == "postgresql" and conn.scalar(_READ_ONLY) == "on"
    if read_only:
        return problem(503, "The database takes no writes (a standby, or read-only).", "not-ready")
    head = head_revision()
    if current != head:
        return problem(
            503, f"The database is at revision {current}; this code needs {head}.", "not-ready"
        )
    return {"status": "READY"}


@cache
def head_revision() -> str:
    """The head of migrations/, read from disk once per process (it changes only on deploy)."""
    # The head is a property of the scripts, so the config's database URL is never used.
    return ScriptDirectory.from_config(alembic_config("")).get_current_head() or "base"
