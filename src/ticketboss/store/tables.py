"""The schema as SQLAlchemy Core tables. Only alembic migrations create it in a database."""

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    Uuid,
    false,
    func,
    text,
)


class UtcDateTime(TypeDecorator):
    """A timestamp that comes back zone-aware in UTC on every engine: SQLite stores it
    without its zone, and every one we write is UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        # Naive from SQLite; in the session's time zone from PostgreSQL: UTC either way.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

events = Table(
    "events",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("total_seats", Integer, nullable=False),
    Column("available_seats", Integer, nullable=False),
    # Rises by one with every committed change of seats: the compare-and-swap guard.
    Column("version", Integer, nullable=False, server_default="0"),
    # Confirmed reservations, written by the same compare-and-swap as the seats so the
    # summary is one row read instead of a count over a hot event's reservations.
    Column("reservation_count", Integer, nullable=False, server_default="0"),
    # Seats of holds as last written, and a time no later than the earliest of their
    # expiries: before it no hold can have lapsed, so the hot path reads no hold.
    Column("held_seats", Integer, nullable=False, server_default="0"),
    Column("next_expiry", UtcDateTime(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False, server_default=func.now()),
    Column("updated_at", UtcDateTime(), nullable=False, server_default=func.now()),
    CheckConstraint("total_seats >= 0", name="total_seats_not_negative"),
    CheckConstraint(
        "available_seats >= 0 AND available_seats + held_seats <= total_seats",
        name="available_seats_in_range",
    ),
    CheckConstraint("reservation_count >= 0", name="reservation_count_not_negative"),
    CheckConstraint("held_seats >= 0", name="held_seats_not_negative"),
    # Ids are exact, but no two may differ only in case (GALA beside gala).
    Index("uq_events_lower_event_id", func.lower(text("event_id")), unique=True),
    # The sweep finds the events whose next expiry has passed.
    Index(
        "ix_events_next_expiry",
        "next_expiry",
        postgresql_where=text("next_expiry IS NOT NULL"),
        sqlite_where=text("next_expiry IS NOT NULL"),
    ),
)

# Seats of an event set aside for one partner. Read in the same statement as their event's
# row and written only in a transaction that won the compare-and-swap on its version: the
# event's version guards them as it guards its seats (a child table keeps the hot row small,
# so its updates stay in place: docs/concurrency.md#one-guard).
allocations = Table(
    "allocations",
    metadata,
    Column("event_id", Text, ForeignKey("events.event_id", ondelete="CASCADE"), primary_key=True),
    Column("partner_id", String(128), primary_key=True),
    Column("seats", Integer, nullable=False),
    Column("taken", Integer, nullable=False, server_default="0"),  # in confirmed reservations
    Column("held", Integer, nullable=False, server_default="0"),  # in holds (as last written)
    Column("overflow", Boolean, nullable=False, server_default=false()),
    Column("max_held_seats", Integer, nullable=True),  # NULL: PARTNER_MAX_HELD_SEATS
    Column("closed", Boolean, nullable=False, server_default=false()),  # deleted, still used
    CheckConstraint("taken >= 0 AND held >= 0 AND taken + held <= seats", name="seats_cover_use"),
)

reservations = Table(
    "reservations",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "event_id",
        Text,
        ForeignKey("events.event_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("partner_id", String(128), nullable=False),
    Column("seats", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False, server_default=func.now()),
    Column("cancelled_at", UtcDateTime(), nullable=True),
    # When a hold lapses (by the database's clock); NULL for confirmed reservations.
    Column("expires_at", UtcDateTime(), nullable=True),
    # Of `seats`, those drawn from the partner's allocation; the rest are the open pool's.
    Column("allocated_seats", Integer, nullable=False, server_default="0"),
    CheckConstraint("seats BETWEEN 1 AND 10", name="seats_in_range"),
    CheckConstraint("status IN ('held', 'confirmed', 'cancelled', 'expired')", name="status_known"),
    CheckConstraint(
        "allocated_seats >= 0 AND allocated_seats <= seats", name="allocated_seats_in_range"
    ),
    # --reset deletes an event's rows; a partner's live holds (its hold limit) and its seats
    # of the open pool (PARTNER_MAX_POOL_SEATS) are one range each.
    Index("ix_reservations_event_id_status_partner_id", "event_id", "status", "partner_id"),
    # Listing an event's reservations pages through (created_at, id).
    Index("ix_reservations_event_id_created_at_id", "event_id", "created_at", "id"),
    # And a partner's own, in the same order, as one range whatever the event's size.
    Index(
        "ix_reservations_event_id_partner_id_created_at_id",
        "event_id",
        "partner_id",
        "created_at",
        "id",
    ),
    # Reclaiming an event's lapsed holds reads only its live holds, earliest first.
    Index(
        "ix_reservations_held_expiry",
        "event_id",
        "expires_at",
        postgresql_where=text("status = 'held'"),
        sqlite_where=text("status = 'held'"),
    ),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # The key is the client's; the scope makes it theirs (a partner, or one reservation).
    Column("scope", Text, primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    # Who is working on it, and until when: a crashed request's claim lapses.
    Column("owner", Uuid, nullable=False),
    Column("locked_until", UtcDateTime(), nullable=True),
    # The answer, written in the same transaction as the change it describes.
    Column("outcome", String(32), nullable=True),
    Column("reservation_id", Uuid, nullable=True),
    Column("seats", Integer, nullable=True),
    Column("held_until", UtcDateTime(), nullable=True),
    Column("detail", Text, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False, server_default=func.now()),
    Column("expires_at", UtcDateTime(), nullable=False),
    Index("ix_idempotency_keys_expires_at", "expires_at"),
)

partners = Table(
    "partners",
    metadata,
    # The partnerId of reservations; a partner exists once it has had a key (before 0004: a
    # reservation). Migration 0007 adds a CHECK per engine that the id obeys
    # domain.access.PARTNER_ID_RULE (ck_partners_partner_id_canonical).
    Column("partner_id", String(128), primary_key=True),
    Column("created_at", UtcDateTime(), nullable=False, server_default=func.now()),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column(
        "partner_id",
        String(128),
        ForeignKey("partners.partner_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("role", String(16), nullable=False),
    # The key's first characters, to recognise it in a list or a leak; never the key itself.
    Column("prefix", String(16), nullable=False),
    # SHA-256 of the key: keys are 256 random bits, so a fast hash is safe and lookups cheap.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False, server_default=func.now()),
    Column("last_used_at", UtcDateTime(), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
    CheckConstraint("role IN ('partner', 'operator')", name="role_known"),
    Index("ix_api_keys_partner_id", "partner_id"),
)

# The outbox: every change's notifications, written by the transaction that makes the change
# (services/outbox.py). `xid` is that transaction's id (PostgreSQL: pg_current_xact_id(); 0
# on SQLite, whose one writer commits in id order): readers page on (xid, id) and see only
# rows below every running transaction's, so no cursor passes a row that commits late
# (docs/concurrency.md#the-changes-feed).
notifications = Table(
    "notifications",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("xid", BigInteger, nullable=False, server_default="0"),
    Column("type", String(32), nullable=False),
    Column("event_id", Text, nullable=False),
    # Whose reservation, hold or allocation it is; NULL: the event's own (every key sees it).
    Column("partner_id", String(128), nullable=True),
    Column("version", Integer, nullable=False),  # the event's, once the change was made
    Column("created_at", UtcDateTime(), nullable=False),
    Column("data", Text, nullable=False),  # JSON: the object as the API shows it (operators)
    Index("ix_notifications_xid_id", "xid", "id"),
    Index("ix_notifications_partner_id_xid_id", "partner_id", "xid", "id"),
    Index("ix_notifications_created_at", "created_at"),
    sqlite_autoincrement=True,  # ids never reused once pruned: cursors stay valid
)

# Where partners want notifications pushed. The secrets sign deliveries, so they are stored
# encrypted (services/secrets.py), never hashed; the previous one still signs until
# `previous_secret_until` after a rotation.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("partner_id", String(128), nullable=False),  # who registered it
    Column("every_partner", Boolean, nullable=False, server_default=false()),  # an operator's
    Column("url", Text, nullable=False),
    Column("types", Text, nullable=True),  # JSON list of types; NULL: every type
    Column("secret", Text, nullable=False),
    Column("previous_secret", Text, nullable=True),
    Column("previous_secret_until", UtcDateTime(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False, server_default=func.now()),
    Column("disabled_at", UtcDateTime(), nullable=True),
    Column("disabled_reason", Text, nullable=True),
    Index("ix_webhook_endpoints_partner_id", "partner_id"),
)

# One notification to one endpoint, until it is delivered or given up; claimed by a
# dispatcher for `leased_until` (a dispatcher that died lets it lapse, and another retries).
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column(
        "endpoint_id",
        String(32),
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column(
        "notification_id",
        BigInteger,
        ForeignKey("notifications.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime(), nullable=True),  # NULL once it is settled
    Column("leased_until", UtcDateTime(), nullable=True),
    Column("lease", Uuid, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False, server_default=func.now()),
    Column("settled_at", UtcDateTime(), nullable=True),
    CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_known"),
    Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
    Index("ix_webhook_deliveries_notification_id", "notification_id"),
    # What is due, in all (the backlog, the endpoints with something due) and per endpoint
    # in the order it is sent (a claim reads one index range, never sorts).
    Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    Index(
        "ix_webhook_deliveries_endpoint_due",
        "endpoint_id",
        "next_attempt_at",
        "id",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
)

# Every attempt of a delivery, as its partner sees it in GET /api/webhooks/{id}/deliveries.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column(
        "delivery_id",
        BigInteger,
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempted_at", UtcDateTime(), nullable=False),
    Column("status_code", Integer, nullable=True),  # NULL: no HTTP answer (see error)
    Column("error", Text, nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime(), nullable=True),  # NULL: no more attempts
    Index("ix_webhook_attempts_delivery_id", "delivery_id"),
)

# How far the dispatchers have turned notifications into deliveries: one row, locked by
# whichever dispatcher fans out (the others skip it).
webhook_fanout = Table(
    "webhook_fanout",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("xid", BigInteger, nullable=False, server_default="0"),
    Column("notification_id", BigInteger, nullable=False, server_default="0"),
)
