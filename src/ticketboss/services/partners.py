"""Partner accounts and their API keys, after Stripe's and pretix's: a key is a prefixed random
token, shown once, stored only as its SHA-256, rotatable (a partner may hold several) and
revocable. Workers cache what a key resolves to for a few seconds, so the check costs no
database round trip in steady state and a revocation reaches every worker within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from ticketboss.domain import Principal, Role
from ticketboss.services.unit_of_work import transaction
from ticketboss.store import queries

KEY_PREFIX = "tb_"
# tb_ + 32 random bytes, URL-safe base64 without padding: 43 characters.
KEY_SHAPE = re.compile(r"tb_[A-Za-z0-9_-]{43}")
_SHOWN_PREFIX = 11  # "tb_" and 8 characters: enough to tell keys apart in a list
_CACHE_LIMIT = 10_000  # distinct keys a worker remembers; past that the cache starts over
_LOOKUP_LOCKS = 64  # lookups of keys that share a lock run one at a time


@dataclass(frozen=True)
class KeyInfo:
    """What is known of a key after it was created: everything but the key itself."""

    key_id: str
    partner_id: str
    role: Role
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(engine: Engine, partner_id: str, role: Role) -> tuple[KeyInfo, str, bool]:
    """A new key for the partner (created if absent): its info, the key (shown only now),
    and whether the partner was new."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    info = KeyInfo(
        key_id="key_" + secrets.token_hex(8),
        partner_id=partner_id,
        role=role,
        prefix=key[:_SHOWN_PREFIX],
        created_at=datetime.now(UTC),
    )
    with transaction(engine, f"partner '{partner_id}'") as conn:
        created = queries.ensure_partner(conn, partner_id)
        queries.insert_key(
            conn, info.key_id, partner_id, role.value, info.prefix, hash_key(key), info.created_at
        )
    return info, key, created


def list_keys(engine: Engine) -> list[tuple[str, KeyInfo | None]]:
    """Every partner, with each of its keys (None for a partner without any)."""
    with engine.connect() as conn:
        rows = queries.list_keys(conn)
    return [
        (
            row.partner_id,
            None
            if row.id is None
            else KeyInfo(
                row.id,
                row.partner_id,
                Role(row.role),
                row.prefix,
                row.created_at,
                row.last_used_at,
                row.revoked_at,
            ),
        )
        for row in rows
    ]


def revoke_key(engine: Engine, key_id: str) -> bool:
    """Revoke an active key; False if no active key has that id."""
    with transaction(engine, f"key '{key_id}'") as conn:
        return queries.revoke_key(conn, key_id, datetime.now(UTC))


class KeyCache:
    """Resolves keys to principals, remembering each answer for `ttl` seconds per worker."""

    def __init__(self, engine: Engine, ttl: float):
        self.engine = engine
        self.ttl = ttl
        self._known: dict[str, tuple[Principal, float]] = {}
        # When a key's entry expires, the many requests that carry it must not all look it up
        # at once (and all stamp its row): one does, the others wait for its answer. (Under
        # gunicorn's gevent workers, threading's locks are cooperative.)
        self._locks = [threading.Lock() for _ in range(_LOOKUP_LOCKS)]

    def authenticate(self, key: str) -> Principal | None:
        """The principal of an active key; None for a malformed, unknown or revoked one."""
        if not KEY_SHAPE.fullmatch(key):
            return None
        digest = hash_key(key)
        principal = self._fresh(digest)
        if principal is not None:
            return principal
        with self._locks[int(digest[:8], 16) % _LOOKUP_LOCKS]:
            return self._fresh(digest) or self._refresh(digest)

    def _fresh(self, digest: str) -> Principal | None:
        known = self._known.get(digest)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        return None

    def _refresh(self, digest: str) -> Principal | None:
        principal = self._look_up(digest)
        if principal is None:
            # Unknown keys are not remembered: a new key works at once, and random guesses
            # cannot fill the cache. Revoked ones are forgotten here.
            self._known.pop(digest, None)
            return None
        if len(self._known) >= _CACHE_LIMIT:
            self._known.clear()
        self._known[digest] = (principal, time.monotonic() + self.ttl)
        return principal

    def _look_up(self, digest: str) -> Principal | None:
        """One indexed read by hash, and last-used stamped (once per ttl per worker)."""
        with transaction(self.engine, "a key's last use") as conn:
            row = queries.load_active_key(conn, digest)
            # The index found it by hash; compare in constant time all the same.
            if row is None or not hmac.compare_digest(row.key_hash, digest):
                return None
            queries.touch_key(conn, row.id, datetime.now(UTC))
        return Principal(row.partner_id, Role(row.role))
