"""Partner accounts and their API keys, after Stripe's and pretix's: a key is a prefixed random
token, shown once, stored only as its SHA-256, rotatable (a partner may hold several) and
revocable. Workers cache what a key resolves to for a few seconds, so the check costs no
database round trip in steady state and a revocation reaches every worker within that time.
A key ends with a checksum of its random part (as GitHub's tokens do), so a made-up or
mistyped key is refused without the database; so are bad keys from an address that sent too
many of them in the last minute.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import random
import re
import secrets
import string
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import Engine

from ticketboss import deadline
from ticketboss.domain import (
    DeadlinePassed,
    Principal,
    Role,
    TooManyAuthFailures,
    check_partner_id,
    is_partner_id,
)
from ticketboss.services.unit_of_work import connection, retry_when_dropped, transaction
from ticketboss.store import queries

KEY_PREFIX = "tbk_"
# tbk_, 32 random bytes as 43 base62 characters, then their CRC32 as 6 base62 characters.
KEY_SHAPE = re.compile(r"tbk_[0-9A-Za-z]{49}")
_RANDOM, _CHECKSUM = 43, 6
# Keys made before the checksum stay valid: tb_ + 32 random bytes, URL-safe base64.
OLD_KEY_PREFIX = "tb_"
OLD_KEY_SHAPE = re.compile(r"tb_[A-Za-z0-9_-]{43}")
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SHOWN_PREFIX = 11  # the prefix and 7 or 8 characters: enough to tell keys apart in a list
_CACHE_LIMIT = 10_000  # distinct keys a worker remembers; past that the cache starts over
_LOOKUP_LOCKS = 64  # lookups of keys that share a lock run one at a time
_LOOKUP_SECONDS = 3.0  # the refresher's time for one lookup when no grace is set

log = logging.getLogger(__name__)


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


def new_key() -> str:
    """The prefix, 256 random bits in base62, and the checksum of those."""
    random_part = _base62(int.from_bytes(secrets.token_bytes(32)), _RANDOM)
    return KEY_PREFIX + random_part + _checksum(random_part)


def checksum_matches(key: str) -> bool:
    """Whether the key has the current shape and its own checksum. The checksum is no secret
    (anyone can compute a CRC32): it tells a made-up or mistyped key without the database."""
    if KEY_SHAPE.fullmatch(key) is None:
        return False
    return _checksum(key[len(KEY_PREFIX) : -_CHECKSUM]) == key[-_CHECKSUM:]


def _checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode()), _CHECKSUM)


def _base62(number: int, width: int) -> str:
    """`number` as exactly `width` base62 digits, zero-padded (it must fit)."""
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


def create_key(engine: Engine, partner_id: str, role: Role) -> tuple[KeyInfo, str, bool]:
    """A new key for the partner (created if absent): its info, the key (shown only now),
    and whether the partner was new. InvalidPartnerId for an id that breaks the rule."""
    check_partner_id(partner_id)
    key = new_key()
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


class FailureLimit:
    """At most `amount` failed authentications per client address in a moving window of
    `seconds` (limits, in this process's memory: each worker counts alone); 0: no limit."""

    def __init__(self, amount: int, seconds: int = 60):
        self._item = RateLimitItemPerSecond(amount, seconds) if amount > 0 else None
        self._window = MovingWindowRateLimiter(MemoryStorage())

    def retry_after(self, client: str) -> int | None:
        """Seconds until the oldest counted failure leaves the window; None if none is due."""
        if self._item is None or self._window.test(self._item, client):
            return None
        reset = self._window.get_window_stats(self._item, client).reset_time
        return max(1, math.ceil(reset - time.time()))

    def failed(self, client: str) -> None:
        if self._item is not None:
            self._window.hit(self._item, client)


class KeyCache:
    """Resolves keys to principals, remembering each answer for `ttl` seconds per worker;
    also which partners exist, and whether any key of the old format is still active."""

    def __init__(
        self, engine: Engine, ttl: float, failures_per_minute: int = 0, grace: float = 0.0
    ):
        self.engine = engine
        self.ttl = ttl
        # How long past its ttl an answer still serves while its key's lookup runs (that
        # lookup's own time, at most a request's deadline): a revoked key works at most
        # ttl + grace.
        self.grace = grace
        self.failures = FailureLimit(failures_per_minute)
        self._known: dict[str, tuple[Principal, float]] = {}
        self._used: dict[str, float] = {}  # when this worker last took each key (monotonic)
        self._partners: dict[str, float] = {}
        # Whether an unrevoked old-format key exists, and until when that answer holds.
        self._old_keys = (False, 0.0)
        self._old_keys_lock = threading.Lock()
        # When a key's entry expires, the many requests that carry it must not all look it up
        # at once (and all stamp its row): one does, the others wait for its answer. (Under
        # gunicorn's gevent workers, threading's locks are cooperative.)
        self._locks = [threading.Lock() for _ in range(_LOOKUP_LOCKS)]

    def authenticate(self, key: str, client: str | None = None) -> Principal | None:
        """The principal of an active key; None for a malformed, unknown or revoked one. A
        `client` (address) that sent too many bad keys lately is TooManyAuthFailures before
        anything else is looked at, and each key refused counts against it."""
        if client is not None:
            retry_after = self.failures.retry_after(client)
            if retry_after is not None:
                raise TooManyAuthFailures(retry_after)
        principal = self._resolve(key)
        if principal is None and client is not None:
            self.failures.failed(client)
        return principal

    @retry_when_dropped
    def has_partner(self, partner_id: str) -> bool:
        """Whether a partner account has this id: remembered for `ttl` once seen, looked up
        otherwise (so a partner created just now counts at once)."""
        if self._partners.get(partner_id, 0.0) > time.monotonic():
            return True
        if not is_partner_id(partner_id):
            return False  # no account can have it
        with connection(self.engine) as conn:
            exists = queries.partner_exists(conn, partner_id)
        if exists:
            if len(self._partners) >= _CACHE_LIMIT:
                self._partners.clear()
            self._partners[partner_id] = time.monotonic() + self.ttl
        return exists

    def _resolve(self, key: str) -> Principal | None:
        if not (checksum_matches(key) or (OLD_KEY_SHAPE.fullmatch(key) and self._old_keys_live())):
            return None  # no key we issued could look like this: no lookup
        digest = hash_key(key)
        now = time.monotonic()
        known = self._known.get(digest)
        if known is not None:
            self._used[digest] = now
            if known[1] > now:
                return known[0]
        lock = self._locks[int(digest[:8], 16) % _LOOKUP_LOCKS]
        if known is not None and known[1] + self.grace > now:
            # Just past its ttl: one request looks it up again, and while it waits on the
            # database (a busy worker answers its round trips late) the others go on with
            # the answer it had, instead of queueing behind it.
            if not lock.acquire(blocking=False):
                return known[0]
            try:
                return self._fresh(digest) or self._refresh(digest)
            finally:
                lock.release()
        with _held(lock, "a key's lookup"):
            principal = self._fresh(digest) or self._refresh(digest)
        if principal is not None:
            self._used[digest] = now
        return principal

    def refresh_used(self, within: float) -> int:
        """Look up again every key taken in the last `within` seconds whose answer is past
        half its ttl, so that its requests find it fresh rather than wait on a lookup, after
        a quiet spell too (the first burst of an on-sale). Run by each worker's refresher
        (start_refreshing); a key revoked meanwhile is forgotten here. How many it looked up."""
        now = time.monotonic()
        looked_up = 0
        for digest, (_, until) in list(self._known.items()):
            if self._used.get(digest, 0.0) < now - within or until - now > self.ttl / 2:
                continue
            lock = self._locks[int(digest[:8], 16) % _LOOKUP_LOCKS]
            if not lock.acquire(blocking=False):
                continue  # a request is looking it up
            try:
                # On a request's time: a database that does not answer holds the key's lock
                # no longer than the requests waiting for it would wait.
                with deadline.within(self.grace or _LOOKUP_SECONDS):
                    self._refresh(digest)
                looked_up += 1
            finally:
                lock.release()
        return looked_up

    @retry_when_dropped
    def _old_keys_live(self) -> bool:
        """Whether any unrevoked key of the old format (no checksum) exists: one query per
        `ttl`, so random old-shaped keys cost no lookup once the last old key is revoked."""
        live, until = self._old_keys
        if until > time.monotonic():
            return live
        with _held(self._old_keys_lock, "the old keys' check"):
            live, until = self._old_keys
            if until <= time.monotonic():
                with connection(self.engine) as conn:
                    live = queries.active_key_with_prefix_exists(conn, OLD_KEY_PREFIX)
                self._old_keys = (live, time.monotonic() + self.ttl)
        return live

    def _fresh(self, digest: str) -> Principal | None:
        known = self._known.get(digest)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        return None

    def _refresh(self, digest: str) -> Principal | None:
        principal = self._look_up(digest, self._last_used(digest))
        if principal is None:
            # Unknown keys are not remembered: a new key works at once, and random guesses
            # cannot fill the cache. Revoked ones are forgotten here.
            self._known.pop(digest, None)
            self._used.pop(digest, None)
            return None
        if len(self._known) >= _CACHE_LIMIT:
            self._known.clear()
            self._used.clear()
        self._known[digest] = (principal, time.monotonic() + self.ttl)
        return principal

    def _last_used(self, digest: str) -> datetime:
        """When this worker last took the key (now, for a key it has not taken yet)."""
        ago = time.monotonic() - self._used.get(digest, time.monotonic())
        return datetime.now(UTC) - timedelta(seconds=max(ago, 0.0))

    @retry_when_dropped
    def _look_up(self, digest: str, used_at: datetime) -> Principal | None:
        """One indexed read by hash, and its last use stamped (once per lookup per worker)."""
        with transaction(self.engine, "a key's last use") as conn:
            row = queries.load_active_key(conn, digest)
            # The index found it by hash; compare in constant time all the same.
            if row is None or not hmac.compare_digest(row.key_hash, digest):
                return None
            queries.touch_key(conn, row.id, used_at)
        return Principal(row.partner_id, Role(row.role))


def start_refreshing(keys: KeyCache, within: float = 900.0) -> None:
    """Keep the keys this worker took in the last `within` seconds fresh, in a daemon thread
    (a greenlet under gevent): about every half ttl, KeyCache.refresh_used. A failed pass is
    tried at the next (requests then look their keys up themselves, as without it)."""

    def refresh_forever() -> None:
        quiet_until = 0.0  # one warning a minute while the database is away, not one a pass
        while True:
            time.sleep(keys.ttl / 2 * random.uniform(0.8, 1.0))
            try:
                keys.refresh_used(within)
            except Exception as exc:  # the database is away: requests will look up
                if time.monotonic() >= quiet_until:
                    quiet_until = time.monotonic() + 60.0
                    log.warning("key refresh failed: %s: %s", type(exc).__name__, exc)

    threading.Thread(target=refresh_forever, name="key-refresher", daemon=True).start()


@contextmanager
def _held(lock: threading.Lock, what: str) -> Iterator[None]:
    """The lock, waited for no longer than the request's deadline (whoever holds it is
    waiting on the database under its own)."""
    if not lock.acquire(timeout=deadline.remaining(-1.0) or 0.0):
        raise DeadlinePassed(what)
    try:
        yield
    finally:
        lock.release()
