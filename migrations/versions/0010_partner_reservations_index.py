"""A partner's reservations of an event as one index range

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 20:05:00

`GET /api/events/{id}/reservations` with a partner's key lists that partner's rows in
(created_at, id) order. The index on (event_id, created_at, id) made it walk every row of
the event to find the partner's: 456–555 ms for a partner with 3 rows among 5,000,000.
Indexed on (event_id, partner_id, created_at, id), a partner's page costs the same however
large the event is. Built CONCURRENTLY on PostgreSQL, so writes go on meanwhile.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_reservations_event_id_partner_id_created_at_id"
COLUMNS = ["event_id", "partner_id", "created_at", "id"]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index(INDEX, "reservations", COLUMNS)
        return
    with op.get_context().autocommit_block():
        op.create_index(
            INDEX, "reservations", COLUMNS, postgresql_concurrently=True, if_not_exists=True
        )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="reservations")
