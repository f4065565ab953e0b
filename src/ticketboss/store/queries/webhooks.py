"""SQL of the webhook endpoints, their deliveries and attempts, as partners manage and read
them through the API."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    Connection,
    Row,
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    literal,
    select,
    update,
)

from ticketboss.store.tables import (
    notifications,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
)

# The first key of the advisory lock that serialises one partner's registrations (the second
# is a hash of its id), apart from any other advisory lock.
_REGISTRATION_LOCK = 0x7762_6831  # "wbh1"

_ENDPOINT_COLUMNS = (
    webhook_endpoints.c.id,
    webhook_endpoints.c.partner_id,
    webhook_endpoints.c.every_partner,
    webhook_endpoints.c.url,
    webhook_endpoints.c.types,
    webhook_endpoints.c.created_at,
    webhook_endpoints.c.disabled_at,
    webhook_endpoints.c.disabled_reason,
    webhook_endpoints.c.previous_secret_until,
)
# A partner's own endpoints; never an operator's, though its key may share the operator's
# partner id: those receive every partner's notifications.
_OWNED = and_(
    webhook_endpoints.c.partner_id == bindparam("owner"),
    webhook_endpoints.c.every_partner == false(),
)
_THE_ENDPOINT = webhook_endpoints.c.id == bindparam("endpoint_id")

_COUNT_ENDPOINTS = select(func.count()).where(
    webhook_endpoints.c.partner_id == bindparam("partner_id")
)
_LOCK_REGISTRATIONS = select(
    func.pg_advisory_xact_lock(literal(_REGISTRATION_LOCK), func.hashtext(bindparam("partner_id")))
)
_INSERT_ENDPOINT = insert(webhook_endpoints)
_ANY_ENDPOINT = select(*_ENDPOINT_COLUMNS).where(_THE_ENDPOINT)
_OWN_ENDPOINT = _ANY_ENDPOINT.where(_OWNED)
_ALL_ENDPOINTS = select(*_ENDPOINT_COLUMNS).order_by(
    webhook_endpoints.c.created_at, webhook_endpoints.c.id
)
_OWN_ENDPOINTS = _ALL_ENDPOINTS.where(_OWNED)
_DELETE_ANY = delete(webhook_endpoints).where(_THE_ENDPOINT)
_DELETE_OWN = _DELETE_ANY.where(_OWNED)
# The current secret becomes the previous one in the same statement (SET reads the row as it
# was), so no rotation racing another loses a secret that still signs.
_ROTATE = (
    update(webhook_endpoints)
    .where(_THE_ENDPOINT)
    .values(
        previous_secret=webhook_endpoints.c.secret,
        secret=bindparam("secret_"),
        previous_secret_until=bindparam("until_"),
    )
)
_ENABLE = (
    update(webhook_endpoints)
    .where(_THE_ENDPOINT, webhook_endpoints.c.disabled_at.is_not(None))
    .values(disabled_at=None, disabled_reason=None)
)

_DELIVERY_COLUMNS = (
    webhook_deliveries.c.id,
    webhook_deliveries.c.notification_id,
    notifications.c.type,
    webhook_deliveries.c.status,
    webhook_deliveries.c.attempts,
    webhook_deliveries.c.next_attempt_at,
    webhook_deliveries.c.created_at,
    webhook_deliveries.c.settled_at,
)
_DELIVERIES = (
    select(*_DELIVERY_COLUMNS)
    .select_from(webhook_deliveries.join(notifications))
    .where(webhook_deliveries.c.endpoint_id == bindparam("endpoint_id"))
    .order_by(webhook_deliveries.c.id.desc())
    .limit(bindparam("limit"))
)
_DELIVERIES_BEFORE = _DELIVERIES.where(webhook_deliveries.c.id < bindparam("before"))
_DELIVERY = (
    select(*_DELIVERY_COLUMNS)
    .select_from(webhook_deliveries.join(notifications))
    .where(
        webhook_deliveries.c.id == bindparam("delivery_id"),
        webhook_deliveries.c.endpoint_id == bindparam("endpoint_id"),
    )
)
# Due at once, from its first attempt again, and no dispatcher's any more: one that is still
# sending it finds its lease gone and records nothing.
_RETRY = (
    update(webhook_deliveries)
    .where(
        webhook_deliveries.c.id == bindparam("delivery_id"),
        webhook_deliveries.c.endpoint_id == bindparam("endpoint_id_"),  # a column's name
    )
    .values(
        status="pending",
        attempts=0,
        next_attempt_at=bindparam("now"),
        leased_until=None,
        lease=None,
        settled_at=None,
    )
)

# The latest attempts of each delivery of a page: a delivery retried again and again keeps
# every attempt, but a page shows a bounded number of them.
_RANKED_ATTEMPTS = (
    select(
        webhook_attempts.c.delivery_id,
        webhook_attempts.c.attempted_at,
        webhook_attempts.c.status_code,
        webhook_attempts.c.error,
        webhook_attempts.c.latency_ms,
        webhook_attempts.c.next_attempt_at,
        func.row_number()
        .over(
            partition_by=webhook_attempts.c.delivery_id,
            order_by=webhook_attempts.c.id.desc(),
        )
        .label("rank"),
    )
    .where(webhook_attempts.c.delivery_id.in_(bindparam("delivery_ids", expanding=True)))
    .subquery()
)
_ATTEMPTS = (
    select(
        _RANKED_ATTEMPTS.c.delivery_id,
        _RANKED_ATTEMPTS.c.attempted_at,
        _RANKED_ATTEMPTS.c.status_code,
        _RANKED_ATTEMPTS.c.error,
        _RANKED_ATTEMPTS.c.latency_ms,
        _RANKED_ATTEMPTS.c.next_attempt_at,
    )
    .where(_RANKED_ATTEMPTS.c.rank <= bindparam("most"))
    .order_by(_RANKED_ATTEMPTS.c.delivery_id, _RANKED_ATTEMPTS.c.rank)
)


def lock_registrations(conn: Connection, partner_id: str) -> None:
    """Hold, until the transaction ends, the lock that one partner's registrations take in
    turn, so that two at once cannot both pass its limit. (SQLite has one writer at a time:
    of two that read the same count, the second cannot write.)"""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_REGISTRATIONS, {"partner_id": partner_id})


def count_endpoints(conn: Connection, partner_id: str) -> int:
    """How many endpoints the partner (or operator) `partner_id` has registered."""
    return conn.scalar(_COUNT_ENDPOINTS, {"partner_id": partner_id}) or 0


def insert_endpoint(
    conn: Connection,
    *,
    endpoint_id: str,
    partner_id: str,
    every_partner: bool,
    url: str,
    types: str | None,
    secret: str,
    created_at: datetime,
) -> None:
    """A new endpoint; `types` is a JSON list (None: every type), `secret` encrypted."""
    conn.execute(
        _INSERT_ENDPOINT,
        {
            "id": endpoint_id,
            "partner_id": partner_id,
            "every_partner": every_partner,
            "url": url,
            "types": types,
            "secret": secret,
            "created_at": created_at,
        },
    )


def load_endpoint(conn: Connection, endpoint_id: str, owner: str | None) -> Row | None:
    """The endpoint without its secrets, if `owner` may see it (None: anyone's)."""
    if owner is None:
        return conn.execute(_ANY_ENDPOINT, {"endpoint_id": endpoint_id}).first()
    return conn.execute(_OWN_ENDPOINT, {"endpoint_id": endpoint_id, "owner": owner}).first()


def list_endpoints(conn: Connection, owner: str | None) -> list[Row]:
    """The endpoints `owner` may see (None: every one), oldest first, without secrets."""
    if owner is None:
        return list(conn.execute(_ALL_ENDPOINTS).all())
    return list(conn.execute(_OWN_ENDPOINTS, {"owner": owner}).all())


def delete_endpoint(conn: Connection, endpoint_id: str, owner: str | None) -> bool:
    """Delete the endpoint with its deliveries and attempts; False if `owner` has no such
    endpoint."""
    if owner is None:
        return conn.execute(_DELETE_ANY, {"endpoint_id": endpoint_id}).rowcount == 1
    params = {"endpoint_id": endpoint_id, "owner": owner}
    return conn.execute(_DELETE_OWN, params).rowcount == 1


def rotate_secret(conn: Connection, endpoint_id: str, secret: str, until: datetime) -> None:
    """The endpoint signs with `secret` (encrypted) from now on, and with the secret it had
    until `until`."""
    conn.execute(_ROTATE, {"endpoint_id": endpoint_id, "secret_": secret, "until_": until})


def enable_endpoint(conn: Connection, endpoint_id: str) -> bool:
    """A disabled endpoint is enabled again; False if it was not disabled."""
    return conn.execute(_ENABLE, {"endpoint_id": endpoint_id}).rowcount == 1


def list_deliveries(
    conn: Connection, endpoint_id: str, before: int | None, limit: int
) -> list[Row]:
    """Up to `limit` of the endpoint's deliveries, newest first (ids below `before`), each
    with its notification's type."""
    params = {"endpoint_id": endpoint_id, "limit": limit}
    if before is None:
        return list(conn.execute(_DELIVERIES, params).all())
    return list(conn.execute(_DELIVERIES_BEFORE, {**params, "before": before}).all())


def load_delivery(conn: Connection, endpoint_id: str, delivery_id: int) -> Row | None:
    """The endpoint's delivery with its notification's type; None if it is not the
    endpoint's."""
    params = {"endpoint_id": endpoint_id, "delivery_id": delivery_id}
    return conn.execute(_DELIVERY, params).first()


def load_attempts(conn: Connection, delivery_ids: Sequence[int], most: int) -> list[Row]:
    """The latest `most` attempts of each delivery, newest first (grouped by delivery)."""
    if not delivery_ids:
        return []
    return list(conn.execute(_ATTEMPTS, {"delivery_ids": list(delivery_ids), "most": most}))


def retry_delivery(conn: Connection, endpoint_id: str, delivery_id: int, now: datetime) -> bool:
    """The delivery is pending and due at `now`, from its first attempt, unleased; False if
    the endpoint has no such delivery."""
    params = {"endpoint_id_": endpoint_id, "delivery_id": delivery_id, "now": now}
    return conn.execute(_RETRY, params).rowcount == 1


_SECRETS = select(
    webhook_endpoints.c.id, webhook_endpoints.c.secret, webhook_endpoints.c.previous_secret
).order_by(webhook_endpoints.c.id)
# Only if neither secret changed since they were read: a rotation in between is kept.
_REWRAP = (
    update(webhook_endpoints)
    .where(
        _THE_ENDPOINT,
        webhook_endpoints.c.secret == bindparam("seen_secret"),
        webhook_endpoints.c.previous_secret.is_not_distinct_from(bindparam("seen_previous")),
    )
    .values(secret=bindparam("secret_"), previous_secret=bindparam("previous_"))
)


def load_secrets(conn: Connection) -> list[Row]:
    """Every endpoint's encrypted secrets: (id, secret, previous_secret)."""
    return list(conn.execute(_SECRETS).all())


def rewrap_secrets(conn: Connection, seen: Row, secret: str, previous: str | None) -> bool:
    """Store the endpoint's secrets encrypted anew; False if they changed since `seen`."""
    params = {
        "endpoint_id": seen.id,
        "seen_secret": seen.secret,
        "seen_previous": seen.previous_secret,
        "secret_": secret,
        "previous_": previous,
    }
    return conn.execute(_REWRAP, params).rowcount == 1
