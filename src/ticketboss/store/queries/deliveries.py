"""SQL of webhook deliveries as the dispatchers work them: notifications fanned out to the
endpoints that want them, due deliveries claimed under a lease, and each attempt settled."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import orjson
from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)

from ticketboss.store.queries.notifications import settled
from ticketboss.store.tables import (
    notifications,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_fanout,
)

CHANNEL = "ticketboss_webhooks"  # NOTIFY wakes every dispatcher listening on it
MIN_BATCH = 3  # a claim gives each sender at least this many of an endpoint's due deliveries
_PENDING = webhook_deliveries.c.status == "pending"


def wake_dispatchers(conn: Connection) -> None:
    """At commit, wake the dispatchers that LISTEN (PostgreSQL; elsewhere they poll)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SELECT pg_notify('{CHANNEL}', '')"))


def _wants(endpoint, row) -> bool:
    """Whether the endpoint is to receive the notification: an operator's everything, a
    partner's its own and the events' updates, of its types, made since it registered."""
    if endpoint.types is not None and row.type not in orjson.loads(endpoint.types):
        return False
    if row.created_at < endpoint.created_at:
        return False
    return endpoint.every_partner or row.partner_id in (None, endpoint.partner_id)


_CURSOR = select(webhook_fanout).where(webhook_fanout.c.id == 1)
_ENABLED = select(webhook_endpoints).where(webhook_endpoints.c.disabled_at.is_(None))
_MOVE = (
    update(webhook_fanout)
    .where(
        webhook_fanout.c.id == 1,
        webhook_fanout.c.xid == bindparam("was_xid"),
        webhook_fanout.c.notification_id == bindparam("was_id"),
    )
    .values(xid=bindparam("xid"), notification_id=bindparam("id_"))
)


def lock_fanout(conn: Connection) -> None:
    """Wait for any fan-out running now and keep the next ones out until commit: an
    endpoint registered under this lock, stamped with the time after it, is seen by every
    fan-out of a notification it wants (docs/concurrency.md#the-outbox)."""
    conn.execute(_CURSOR.with_for_update()).one()


def fan_out(conn: Connection, now: datetime, limit: int) -> int:
    """Turn the next notifications (in the feed's order) into deliveries for every enabled
    endpoint that wants them; how many notifications were taken (0: none, or another
    dispatcher is at it). The cursor moves only if nobody moved it since it was read. With
    no endpoint enabled, the cursor just moves to the newest notification settled."""
    cursor = conn.execute(_CURSOR.with_for_update(skip_locked=True)).first()
    if cursor is None:
        return 0
    was = {"was_xid": cursor.xid, "was_id": cursor.notification_id}
    endpoints = conn.execute(_ENABLED).all()
    if not endpoints:
        last = conn.execute(
            select(notifications.c.xid, notifications.c.id)
            .where(settled(conn))
            .order_by(notifications.c.xid.desc(), notifications.c.id.desc())
            .limit(1)
        ).first()
        if last is not None and (last.xid, last.id) > (cursor.xid, cursor.notification_id):
            conn.execute(_MOVE, {**was, "xid": last.xid, "id_": last.id})
        return 0
    after = {"xid": cursor.xid, "id": cursor.notification_id, "limit": limit}
    rows = conn.execute(_next_page(conn), after).all()
    if not rows:
        return 0
    deliveries = [
        {"endpoint_id": e.id, "notification_id": row.id, "next_attempt_at": now}
        for row in rows
        for e in endpoints
        if _wants(e, row)
    ]
    if conn.execute(_MOVE, {**was, "xid": rows[-1].xid, "id_": rows[-1].id}).rowcount != 1:
        return 0  # another dispatcher fanned these out first (SQLite has no row locks)
    if deliveries:
        conn.execute(insert(webhook_deliveries), deliveries)
        wake_dispatchers(conn)
    return len(rows)


_PAGES: dict[str, Any] = {}


def _next_page(conn: Connection):
    """The fan-out's page: what `_wants` needs of the next notifications, in feed order."""
    name = conn.dialect.name
    if name not in _PAGES:
        _PAGES[name] = (
            select(
                notifications.c.id,
                notifications.c.xid,
                notifications.c.type,
                notifications.c.partner_id,
                notifications.c.created_at,
            )
            .where(
                tuple_(notifications.c.xid, notifications.c.id)
                > tuple_(bindparam("xid"), bindparam("id")),
                settled(conn),
            )
            .order_by(notifications.c.xid, notifications.c.id)
            .limit(bindparam("limit"))
        )
    return _PAGES[name]


_D = webhook_deliveries
# Due and not leased (a lapsed lease is due again), at the bound time `now`.
_CLAIMABLE = and_(
    _PENDING,
    _D.c.next_attempt_at <= bindparam("now"),
    or_(_D.c.leased_until.is_(None), _D.c.leased_until < bindparam("now")),
)
_DUE_ENDPOINTS = (
    select(_D.c.endpoint_id)
    .where(_CLAIMABLE)
    .group_by(_D.c.endpoint_id)
    .order_by(func.min(_D.c.next_attempt_at))
    .limit(100)
)
# FOR NO KEY UPDATE: it serialises the dispatchers counting one endpoint, but not the
# fan-out's inserts of its deliveries (their foreign key takes KEY SHARE on it).
_LOCK_ENDPOINTS = (
    select(webhook_endpoints.c.id)
    .where(
        webhook_endpoints.c.id.in_(bindparam("ids", expanding=True)),
        webhook_endpoints.c.disabled_at.is_(None),
    )
    .with_for_update(skip_locked=True, key_share=True)
)
# Senders at work on the endpoint: one lease id each, over the deliveries they hold.
_IN_FLIGHT = (
    select(func.count(func.distinct(_D.c.lease)))
    .select_from(_D)
    .where(
        _D.c.endpoint_id == bindparam("endpoint_id"),
        _PENDING,
        _D.c.leased_until >= bindparam("now"),
    )
)
_NEXT_DUE = (
    select(_D.c.id)
    .where(_D.c.endpoint_id == bindparam("endpoint_id"), _CLAIMABLE)
    .order_by(_D.c.next_attempt_at, _D.c.id)
    .limit(bindparam("take"))
    .with_for_update(skip_locked=True)
)
# The lease is taken only if the delivery is still claimable: on SQLite, which has no row
# locks, two dispatchers may have picked the same one; only one UPDATE finds it so.
_LEASE = (
    update(_D)
    .where(_D.c.id.in_(bindparam("ids", expanding=True)), _CLAIMABLE)
    .values(leased_until=bindparam("until"), lease=bindparam("lease"))
    .returning(_D.c.id)
)
_CLAIMED = (
    select(
        _D.c.id,
        _D.c.attempts,
        webhook_endpoints.c.id.label("endpoint_id"),
        webhook_endpoints.c.url,
        webhook_endpoints.c.partner_id.label("endpoint_partner_id"),
        webhook_endpoints.c.every_partner,
        webhook_endpoints.c.secret,
        webhook_endpoints.c.previous_secret,
        webhook_endpoints.c.previous_secret_until,
        notifications.c.id.label("notification_id"),
        notifications.c.type,
        notifications.c.event_id,
        notifications.c.partner_id,
        notifications.c.version,
        notifications.c.created_at,
        notifications.c.data,
    )
    .join(webhook_endpoints, webhook_endpoints.c.id == _D.c.endpoint_id)
    .join(notifications, notifications.c.id == _D.c.notification_id)
    .where(_D.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_D.c.id)
)


def claim(
    conn: Connection,
    now: datetime,
    lease_seconds: float,
    per_endpoint: int,
    slots: int,
    batch: int,
) -> list[tuple[UUID, list[Any]]]:
    """Lease due deliveries for up to `slots` senders, each up to `batch` of one endpoint's
    under a lease id of its own, never more than `per_endpoint` senders at once to one
    endpoint across every dispatcher (its row is locked while they are counted; endpoints
    another dispatcher is counting are skipped). Each sender's rows: the delivery, its
    endpoint's url, partner and secrets, and its notification."""
    endpoint_ids = list(conn.scalars(_DUE_ENDPOINTS, {"now": now}))
    if not endpoint_ids:
        return []
    claimed: list[tuple[UUID, list[Any]]] = []
    for endpoint_id in list(conn.scalars(_LOCK_ENDPOINTS, {"ids": endpoint_ids})):
        senders = conn.scalar(_IN_FLIGHT, {"endpoint_id": endpoint_id, "now": now}) or 0
        free = min(per_endpoint - senders, slots - len(claimed))
        if free <= 0:
            continue
        params = {"endpoint_id": endpoint_id, "now": now, "take": free * batch}
        due = list(conn.scalars(_NEXT_DUE, params))
        # Shared among the free senders (a slow endpoint's deliveries go out side by side),
        # but at least a few each: a sender costs a transaction per batch.
        size = max(min(len(due), MIN_BATCH), -(-len(due) // free))
        for start in range(0, len(due), size):
            lease = uuid4()
            rows = _lease(conn, due[start : start + size], now, lease, lease_seconds)
            if rows:
                claimed.append((lease, rows))
        if len(claimed) >= slots:
            break
    return claimed


def claim_next(
    conn: Connection,
    endpoint_id: str,
    now: datetime,
    lease: UUID,
    lease_seconds: float,
    batch: int,
) -> list[Any]:
    """Lease the endpoint's next due deliveries for a sender that just settled its own, under
    its lease id (so the endpoint's count of senders stays as it was)."""
    params = {"endpoint_id": endpoint_id, "now": now, "take": batch}
    return _lease(conn, list(conn.scalars(_NEXT_DUE, params)), now, lease, lease_seconds)


def _lease(
    conn: Connection, claimed: list[int], now: datetime, lease: UUID, lease_seconds: float
) -> list[Any]:
    """Lease those of the deliveries still claimable; each with its endpoint's url, partner
    and secrets, and its notification."""
    if not claimed:
        return []
    until = now + timedelta(seconds=lease_seconds)
    params = {"ids": claimed, "now": now, "until": until, "lease": lease}
    leased = list(conn.scalars(_LEASE, params))
    return list(conn.execute(_CLAIMED, {"ids": leased})) if leased else []


_SETTLE = (
    update(_D)
    .where(_D.c.id == bindparam("id_"), _D.c.lease == bindparam("lease_"))
    .values(
        status=bindparam("status_"),
        attempts=_D.c.attempts + 1,
        next_attempt_at=bindparam("next_"),
        leased_until=None,
        lease=None,
        settled_at=bindparam("settled_"),
    )
    .returning(_D.c.id)
)
_DELIVERED = (
    update(_D)
    .where(_D.c.id.in_(bindparam("ids", expanding=True)), _D.c.lease == bindparam("lease_"))
    .values(
        status="delivered",
        attempts=_D.c.attempts + 1,
        next_attempt_at=None,
        leased_until=None,
        lease=None,
        settled_at=bindparam("settled_"),
    )
    .returning(_D.c.id)
)
_RELEASE = (
    update(_D)
    .where(_D.c.id.in_(bindparam("ids", expanding=True)), _D.c.lease == bindparam("lease_"))
    .values(leased_until=None, lease=None)
)


def settle(
    conn: Connection,
    lease: UUID,
    attempts: Sequence[dict[str, Any]],
    *,
    unsent: Sequence[int] = (),
    now: datetime,
) -> set[int]:
    """Record a sender's attempts (each: delivery_id, status, next_attempt_at and the
    attempt's columns) and what follows each (delivered, failed, or pending until its next
    attempt), and give back the deliveries it did not get to; the ids settled (one missing:
    its lease had lapsed and another dispatcher owns it now, so nothing of it is recorded)."""
    delivered = [a["delivery_id"] for a in attempts if a["status"] == "delivered"]
    settled: set[int] = set()
    if delivered:  # the common case, for every delivery in one statement
        params = {"ids": delivered, "lease_": lease, "settled_": now}
        settled.update(conn.scalars(_DELIVERED, params))
    for a in attempts:
        if a["status"] == "delivered":
            continue
        params = {
            "id_": a["delivery_id"],
            "lease_": lease,
            "status_": a["status"],
            "next_": a["next_attempt_at"],
            "settled_": None if a["status"] == "pending" else now,
        }
        settled.update(conn.scalars(_SETTLE, params))
    if unsent:
        conn.execute(_RELEASE, {"ids": list(unsent), "lease_": lease})
    columns = ("delivery_id", "attempted_at", "status_code", "error", "latency_ms")
    recorded = [
        {**{c: a[c] for c in columns}, "next_attempt_at": a["next_attempt_at"]}
        for a in attempts
        if a["delivery_id"] in settled
    ]
    if recorded:
        conn.execute(insert(webhook_attempts), recorded)
    return settled


def disable_endpoint(conn: Connection, endpoint_id: str, reason: str, now: datetime) -> None:
    conn.execute(
        update(webhook_endpoints)
        .where(webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.disabled_at.is_(None))
        .values(disabled_at=now, disabled_reason=reason)
    )


_BACKLOG = (
    select(func.count())
    .select_from(_D.join(webhook_endpoints, webhook_endpoints.c.id == _D.c.endpoint_id))
    .where(
        _PENDING,
        _D.c.next_attempt_at <= bindparam("now"),
        webhook_endpoints.c.disabled_at.is_(None),
    )
)


def count_backlog(conn: Connection, now: datetime) -> int:
    """Deliveries pending and due to enabled endpoints (leased ones included: they are
    being tried)."""
    return conn.scalar(_BACKLOG, {"now": now}) or 0


def fanned_out(conn: Connection) -> Sequence[Any]:
    """Where the fan-out cursor stands (xid, notification id)."""
    row = conn.execute(select(webhook_fanout).where(webhook_fanout.c.id == 1)).one()
    return (row.xid, row.notification_id)


def recover(conn: Connection, endpoint_id: str, since: datetime, now: datetime) -> int:
    """Queue, for an endpoint being enabled again, what it missed while disabled: the
    notifications since `since` that it wants and that the fan-out has already passed
    (those after the fan-out's cursor it will queue itself). The cursor's row is locked, so
    no fan-out runs meanwhile with the endpoint still seen as disabled. How many."""
    cursor = conn.execute(
        select(webhook_fanout).where(webhook_fanout.c.id == 1).with_for_update()
    ).one()
    endpoint = conn.execute(
        select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
    ).one()
    queued = select(_D.c.id).where(
        _D.c.endpoint_id == endpoint_id, _D.c.notification_id == notifications.c.id
    )
    missed = conn.execute(
        select(
            notifications.c.id,
            notifications.c.type,
            notifications.c.partner_id,
            notifications.c.created_at,
        )
        .where(
            notifications.c.created_at >= since,
            tuple_(notifications.c.xid, notifications.c.id)
            <= tuple_(literal(cursor.xid), literal(cursor.notification_id)),
            ~queued.exists(),
        )
        .order_by(notifications.c.xid, notifications.c.id)
    ).all()
    rows = [
        {"endpoint_id": endpoint_id, "notification_id": row.id, "next_attempt_at": now}
        for row in missed
        if _wants(endpoint, row)
    ]
    if rows:
        conn.execute(insert(_D), rows)
    return len(rows)
