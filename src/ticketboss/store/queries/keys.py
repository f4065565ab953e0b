"""SQL of the partners and api_keys tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Connection,
    bindparam,
    insert,
    or_,
    select,
    update,
)

from ticketboss.store.tables import api_keys, partners

_ACTIVE_KEY = select(
    api_keys.c.id, api_keys.c.partner_id, api_keys.c.role, api_keys.c.key_hash
).where(api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None))
# Never backwards: another worker may have stamped a later use.
_TOUCH_KEY = (
    update(api_keys)
    .where(
        api_keys.c.id == bindparam("key_id"),
        or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < bindparam("used_at")),
    )
    .values(last_used_at=bindparam("used_at"))
)


_PARTNER = select(partners.c.partner_id).where(partners.c.partner_id == bindparam("partner_id"))


def partner_exists(conn: Connection, partner_id: str) -> bool:
    return conn.scalar(_PARTNER, {"partner_id": partner_id}) is not None


def ensure_partner(conn: Connection, partner_id: str) -> bool:
    """Create the partner unless it exists; True if it was created."""
    if partner_exists(conn, partner_id):
        return False
    conn.execute(insert(partners).values(partner_id=partner_id))
    return True


def insert_key(conn: Connection, key_id, partner_id, role, prefix, key_hash, created_at) -> None:
    conn.execute(
        insert(api_keys).values(
            id=key_id,
            partner_id=partner_id,
            role=role,
            prefix=prefix,
            key_hash=key_hash,
            created_at=created_at,
        )
    )


def load_active_key(conn: Connection, key_hash: str):
    """The unrevoked key with that hash: (id, partner_id, role, key_hash), or None."""
    return conn.execute(_ACTIVE_KEY, {"key_hash": key_hash}).first()


def touch_key(conn: Connection, key_id: str, used_at: datetime) -> None:
    conn.execute(_TOUCH_KEY, {"key_id": key_id, "used_at": used_at})


def active_key_with_prefix_exists(conn: Connection, prefix: str) -> bool:
    """Whether any unrevoked key starts with `prefix` (a few rows: no index needed)."""
    query = select(api_keys.c.id).where(
        api_keys.c.revoked_at.is_(None), api_keys.c.prefix.startswith(prefix, autoescape=True)
    )
    return conn.scalar(query.limit(1)) is not None


def list_keys(conn: Connection) -> list:
    """Every partner with its keys (a partner without keys appears once, with None columns)."""
    query = (
        select(
            partners.c.partner_id,
            api_keys.c.id,
            api_keys.c.role,
            api_keys.c.prefix,
            api_keys.c.created_at,
            api_keys.c.last_used_at,
            api_keys.c.revoked_at,
        )
        .select_from(partners.outerjoin(api_keys))
        .order_by(partners.c.partner_id, api_keys.c.created_at)
    )
    return list(conn.execute(query).all())


def revoke_key(conn: Connection, key_id: str, at: datetime) -> bool:
    """Revoke an active key; False if there is no such active key."""
    result = conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=at)
    )
    return result.rowcount == 1
