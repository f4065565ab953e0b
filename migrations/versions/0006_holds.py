"""Holds that expire: held seats on events, expiry on reservations, answers of hold routes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 21:00:00

Additive: the columns are new (held_seats defaults to 0) and the widened checks accept every
existing row, so workers of the previous release keep serving reservations while it is
applied. They know no holds (a hold's row would be an error to them): finish rolling the new
release out before partners start holding.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HELD = sa.text("status = 'held'")
HOLD_ANSWERS = "('held', 'confirmed', 'extended', 'hold-expired', 'not-held')"


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("held_seats", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("next_expiry", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint(op.f("ck_events_available_seats_in_range"), type_="check")
        batch.create_check_constraint(
            op.f("ck_events_available_seats_in_range"),
            "available_seats >= 0 AND available_seats + held_seats <= total_seats",
        )
        batch.create_check_constraint(op.f("ck_events_held_seats_not_negative"), "held_seats >= 0")
    with op.batch_alter_table("reservations") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint(op.f("ck_reservations_status_known"), type_="check")
        batch.create_check_constraint(
            op.f("ck_reservations_status_known"),
            "status IN ('held', 'confirmed', 'cancelled', 'expired')",
        )
    # The sweep looks for events whose next expiry has passed.
    op.create_index(
        "ix_events_next_expiry",
        "events",
        ["next_expiry"],
        postgresql_where=sa.text("next_expiry IS NOT NULL"),
        sqlite_where=sa.text("next_expiry IS NOT NULL"),
    )
    op.create_index(
        "ix_reservations_held_expiry",
        "reservations",
        ["event_id", "expires_at"],
        postgresql_where=HELD,
        sqlite_where=HELD,
    )
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.add_column(sa.Column("seats", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("held_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Holds have no meaning before this revision: live ones are released, and rows that
    # the old status check would refuse become cancelled.
    op.execute("UPDATE events SET available_seats = available_seats + held_seats, held_seats = 0")
    op.execute(
        "UPDATE reservations SET status = 'cancelled', cancelled_at = COALESCE(expires_at, "
        "created_at) WHERE status IN ('held', 'expired')"
    )
    # Answers of the hold routes would be unknown kinds to the code before: forget them.
    op.execute(f"DELETE FROM idempotency_keys WHERE outcome IN {HOLD_ANSWERS}")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("held_until")
        batch.drop_column("seats")
    op.drop_index("ix_reservations_held_expiry", table_name="reservations")
    op.drop_index("ix_events_next_expiry", table_name="events")
    with op.batch_alter_table("reservations") as batch:
        batch.drop_constraint(op.f("ck_reservations_status_known"), type_="check")
        batch.create_check_constraint(
            op.f("ck_reservations_status_known"), "status IN ('confirmed', 'cancelled')"
        )
        batch.drop_column("expires_at")
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint(op.f("ck_events_held_seats_not_negative"), type_="check")
        batch.drop_constraint(op.f("ck_events_available_seats_in_range"), type_="check")
        batch.create_check_constraint(
            op.f("ck_events_available_seats_in_range"),
            "available_seats >= 0 AND available_seats <= total_seats",
        )
        batch.drop_column("next_expiry")
        batch.drop_column("held_seats")
