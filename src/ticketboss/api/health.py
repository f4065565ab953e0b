"""Liveness that also proves the database answers."""

from flask_smorest import Blueprint
from sqlalchemy import text

from ticketboss.api import service
from ticketboss.api.schemas import Health, Problem

blp = Blueprint("health", __name__, url_prefix="/api", description="Service health")


@blp.get("/health")
@blp.response(200, Health)
@blp.alt_response(503, schema=Problem, description="The database does not answer.")
def health():
    """200 when the database answers a trivial query."""
    with service().engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return {"status": "UP"}
