"""Partner allocations: an event's shares set aside for partners, and the seats of each
reservation drawn from one

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 12:40:00

Additive: a new table, and `reservations.allocated_seats` 0 (every seat from the open pool)
on every existing row, which is what they were. Workers of the previous release keep serving
while it is applied, but they know no allocations and would take allocated seats for anyone:
finish rolling the new release out before an operator sets the first allocation.

The index of an event's reservations by status also names the partner, so that a partner's
live holds (its hold limit) and its seats of the open pool (PARTNER_MAX_POOL_SEATS) are one
index range each. On PostgreSQL it is built CONCURRENTLY and the new CHECK validated after it
is added, so writes go on while a large reservations table is scanned.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIMIT_ANSWERS = "('hold-limit-reached', 'pool-limit-reached')"
CHECK = "ck_reservations_allocated_seats_in_range"
INDEX, INDEX_COLUMNS = (
    "ix_reservations_event_id_status_partner_id",
    ["event_id", "status", "partner_id"],
)
OLD_INDEX = "ix_reservations_event_id_status"


def upgrade() -> None:
    op.create_table(
        "allocations",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("partner_id", sa.String(length=128), nullable=False),
        sa.Column("seats", sa.Integer(), nullable=False),
        sa.Column("taken", sa.Integer(), server_default="0", nullable=False),
        sa.Column("held", sa.Integer(), server_default="0", nullable=False),
        sa.Column("overflow", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("max_held_seats", sa.Integer(), nullable=True),
        sa.Column("closed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.CheckConstraint(
            "taken >= 0 AND held >= 0 AND taken + held <= seats",
            name=op.f("ck_allocations_seats_cover_use"),
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["events.event_id"],
            name=op.f("fk_allocations_event_id_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", "partner_id", name=op.f("pk_allocations")),
    )
    # A plain ADD COLUMN on both engines: SQLite would otherwise rebuild the table from its
    # reflection, which knows neither the expression index on events nor the WHERE of the
    # partial indexes. SQLite (development only) therefore goes without the new check.
    op.add_column(
        "reservations",
        sa.Column("allocated_seats", sa.Integer(), server_default="0", nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.create_index(INDEX, "reservations", INDEX_COLUMNS)
        op.drop_index(OLD_INDEX, table_name="reservations")
        return
    # On PostgreSQL nothing here may stop writes for the length of a scan of reservations:
    # the CHECK is added NOT VALID (instant) and then validated (a scan that lets writes
    # through), and the index is built and the old one dropped CONCURRENTLY, outside the
    # migration's transaction.
    op.execute(
        f"ALTER TABLE reservations ADD CONSTRAINT {CHECK} "
        "CHECK (allocated_seats >= 0 AND allocated_seats <= seats) NOT VALID"
    )
    op.execute(f"ALTER TABLE reservations VALIDATE CONSTRAINT {CHECK}")
    with op.get_context().autocommit_block():
        op.create_index(
            INDEX, "reservations", INDEX_COLUMNS, postgresql_concurrently=True, if_not_exists=True
        )
        op.drop_index(
            OLD_INDEX, table_name="reservations", postgresql_concurrently=True, if_exists=True
        )


def downgrade() -> None:
    # Allocations have no meaning before this revision: their seats are the pool's again
    # (available_seats always counted them), and so are the seats drawn from them.
    op.execute(f"DELETE FROM idempotency_keys WHERE outcome IN {LIMIT_ANSWERS}")
    op.create_index(OLD_INDEX, "reservations", ["event_id", "status"])
    op.drop_index(INDEX, table_name="reservations")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f(CHECK), "reservations", type_="check")
    op.drop_column("reservations", "allocated_seats")  # SQLite 3.35+ drops columns itself
    op.drop_table("allocations")
