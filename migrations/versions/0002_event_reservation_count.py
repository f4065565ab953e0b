"""events.reservation_count: confirmed reservations, kept by the compare-and-swap

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 17:05:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(
            sa.Column("reservation_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch.create_check_constraint(
            op.f("ck_events_reservation_count_not_negative"), "reservation_count >= 0"
        )
    # Existing events start from what their reservations say.
    op.execute(
        "UPDATE events SET reservation_count = (SELECT count(*) FROM reservations r "
        "WHERE r.event_id = events.event_id AND r.status = 'confirmed')"
    )


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint(op.f("ck_events_reservation_count_not_negative"), type_="check")
        batch.drop_column("reservation_count")
