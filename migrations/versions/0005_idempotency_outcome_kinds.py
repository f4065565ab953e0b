"""Idempotency-Keys keep the kind of their answer, not an HTTP status

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 19:25:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = {
    201: "reserved",
    204: "cancelled",
    409: "not-enough-seats",
    404: "reservation-not-found",
}


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("outcome", sa.String(length=32), nullable=True))
    for status, kind in KINDS.items():
        op.execute(f"UPDATE idempotency_keys SET outcome = '{kind}' WHERE status_code = {status}")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("status_code")


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("status_code", sa.Integer(), nullable=True))
    for status, kind in KINDS.items():
        op.execute(f"UPDATE idempotency_keys SET status_code = {status} WHERE outcome = '{kind}'")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("outcome")
