"""Settings read from the environment, in one place (docs/operations.md lists every variable)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SQLITE_URL = f"sqlite:///{PROJECT_ROOT / 'var' / 'ticketboss.sqlite3'}"
AUTH_MODES = ("keys", "open")
WORKER_CLASSES = ("gevent", "gthread")
# What store.db can connect to: SQLite, and PostgreSQL through psycopg2 (its default driver).
DATABASE_BACKENDS = ("sqlite", "postgresql")
_DRIVERS = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg2")}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class SettingError(ValueError):
    """A setting that cannot be used: its variable, the value it has and the rule it breaks.
    Its str is the whole story in one line (`HOLD_TTL_SECONDS=900: must be between 1 and
    HOLD_MAX_SECONDS (20)`), for the commands and gunicorn to print alone."""

    def __init__(self, variable: str, value: object, rule: str):
        super().__init__(variable, value, rule)
        self.variable, self.value, self.rule = variable, value, rule

    def __str__(self) -> str:
        return f"{self.variable}={_shown(self.value)}: {self.rule}"


class _Secret:
    """The value of a setting that is a secret, in a SettingError: never the text itself."""

    def __str__(self) -> str:
        return "<secret>"


@dataclass(frozen=True)
class Settings:
    """Every tunable of the service, each read from its upper-cased environment variable."""

    database_url: str = DEFAULT_SQLITE_URL
    default_event_id: str = "node-meetup-2025"
    # Compare-and-swap retries. A transaction whose swap lost to a batch that has just
    # committed reads again and swaps again at once, up to CAS_SWAPS_PER_TRANSACTION times;
    # then tenacity rolls it back and retries it whole, capped in attempts and total time.
    cas_swaps_per_transaction: int = 3
    cas_max_attempts: int = 50
    cas_max_seconds: float = 5.0
    cas_backoff_max_seconds: float = 0.05
    # Reservations of one event arriving together in a worker share one transaction.
    group_commit_max_batch: int = 200
    # Idempotency-Key: how long an answer is kept, and how long a claim may stay unanswered.
    idempotency_ttl_seconds: int = 86_400
    # The lease is short on purpose: a request whose database went away cannot release its
    # claim, and a retry waits at most this long; exactly-once never depends on it (the
    # answer is written only under the claim's current owner).
    idempotency_lease_seconds: int = 3
    # Holds: how long one lasts unless the request says, and the most it can ever last,
    # counted from its creation (extensions included). Each worker also expires lapsed
    # holds every HOLD_SWEEP_SECONDS (0: never) for tidy lists; writes never wait for it.
    hold_ttl_seconds: int = 900
    hold_max_seconds: int = 7200
    hold_sweep_seconds: float = 60.0
    # No partner holds more than this many seats of one event at once (its live holds,
    # whatever it released before; an allocation may set its own): one key cannot lock an
    # event up. 0: no limit.
    partner_max_held_seats: int = 100
    # The most seats of an event's open pool one partner may have (confirmed and held). 0:
    # no cap, as the Node.js contract had it: a confirmed reservation is a sale.
    partner_max_pool_seats: int = 0
    # Connection pool, per worker process.
    db_pool_size: int = 10
    db_max_overflow: int = 20
    db_pool_timeout: float = 5.0
    db_statement_timeout_ms: int = 5000
    # Sent in Retry-After with every 503.
    retry_after_seconds: int = 1
    # No request waits on a dependency longer than this, counted from when it arrived whole
    # (its headers; then its body): a connect, a statement, a COMMIT, a pool checkout or a
    # place in its event's queue. Past it the answer is a 503 with Retry-After (one that may
    # have committed says "outcome unknown": the Idempotency-Key retry finds the truth).
    # DB_STATEMENT_TIMEOUT_MS, DB_POOL_TIMEOUT and CAS_MAX_SECONDS apply within it.
    request_deadline_seconds: float = 3.0
    # A request body is read whole before anything acts on it: at most this big (a
    # reservation is under 1 KB), arriving within this time.
    max_body_bytes: int = 65_536
    body_timeout_seconds: float = 10.0
    # Partner keys: `keys` (every partner route needs one) or `open` (the Node.js service's
    # keyless contract, for a migration period). A worker trusts a key it looked up for this
    # long, which bounds how late a revocation takes effect.
    auth_mode: str = "keys"
    auth_cache_seconds: float = 5.0
    # Failed authentications one client address may make in a minute before its requests
    # with a key are a 429 that touches no database, until the window passes (0 = off).
    # Counted per worker (in memory); behind a proxy every client shares its address.
    auth_failures_per_minute: int = 60
    # Per-partner rate limit (flask-limiter): requests/s sustained and at once; 0 = off.
    # In-memory counters are per worker; RATELIMIT_STORAGE_URI=redis://… shares them.
    partner_rate_limit: int = 0
    partner_rate_burst: int = 0
    ratelimit_storage_uri: str = "memory://"
    # A rate-limit store (Redis) that takes longer than this to connect or answer is treated
    # as gone: each worker then counts alone, allowing its share of the limit (the limit
    # divided by RATELIMIT_FALLBACK_WORKERS; 0: this host's worker count), and says so.
    ratelimit_storage_timeout_seconds: float = 0.05
    ratelimit_fallback_workers: int = 0
    # /metrics: the bearer token scrapers send (unset: an operator key, or nothing with
    # AUTH_MODE=open), and how long a worker serves the exposition it built (0: rebuild).
    metrics_token: str = field(default="", repr=False)  # a secret: never in a repr
    metrics_cache_seconds: float = 1.0
    # Notifications (docs/webhooks.md). Each is kept this many days for GET /api/changes and
    # then pruned (`ticketboss prune-notifications`); deliveries go with it.
    notification_retention_days: int = 30
    # Fernet keys (comma-separated, newest first) that encrypt webhook secrets at rest: the
    # first encrypts, every one decrypts, so a new key is put in front and the old one
    # dropped after `ticketboss webhooks reencrypt`. Unset: no endpoint can be registered.
    webhook_secret_keys: str = field(default="", repr=False)  # a secret: never in a repr
    # Only https URLs whose host resolves to public addresses, unless this is on (local
    # development and tests: http, loopback and private addresses too).
    webhooks_allow_private: bool = False
    # A failed delivery is retried after WEBHOOK_RETRY_BASE_SECONDS × 2^(attempt − 1), with
    # jitter, for WEBHOOK_MAX_ATTEMPTS attempts (30 s and 14: about three days); then its
    # endpoint is disabled.
    webhook_retry_base_seconds: float = 30.0
    webhook_max_attempts: int = 14
    webhook_timeout_seconds: float = 10.0
    # Deliveries in flight at once: to one endpoint (across every worker and host), and per
    # worker in all. 0 dispatchers in a worker (WEBHOOK_DISPATCH=0): it delivers nothing.
    webhook_endpoint_concurrency: int = 4
    webhook_worker_concurrency: int = 32
    webhook_dispatch: bool = True
    # Dispatchers wake on NOTIFY, and look anyway this often (the fallback; SQLite: the way).
    webhook_poll_seconds: float = 1.0
    # LISTEN needs a session of its own: behind pgbouncer's transaction pooling, name the
    # database directly here (unset: DATABASE_URL).
    webhook_listen_url: str = ""
    # After a rotation the previous secret still signs (beside the new one) this long.
    webhook_secret_overlap_seconds: int = 86_400
    webhook_endpoints_per_partner: int = 10

    def __post_init__(self) -> None:
        _above(self, "request_deadline_seconds", 0)
        _at_least(self, "cas_swaps_per_transaction", 1)
        if not 1 <= self.hold_ttl_seconds <= self.hold_max_seconds:
            raise SettingError(
                "HOLD_TTL_SECONDS",
                self.hold_ttl_seconds,
                f"must be between 1 and HOLD_MAX_SECONDS ({self.hold_max_seconds})",
            )
        _at_least(self, "partner_max_held_seats", 0, " (0: no limit)")
        _at_least(self, "partner_max_pool_seats", 0, " (0: no cap)")
        _at_least(self, "webhook_max_attempts", 1)
        _above(self, "webhook_retry_base_seconds", 0)
        _one_of(self, "auth_mode", AUTH_MODES)
        _database_url("DATABASE_URL", self.database_url, DATABASE_BACKENDS)
        if self.webhook_listen_url:  # LISTEN is PostgreSQL's
            _database_url("WEBHOOK_LISTEN_URL", self.webhook_listen_url, ("postgresql",))
        _fernet_keys(self.webhook_secret_keys)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Settings from environment variables (unset or empty ones keep their default);
        SettingError for one that cannot be used, or two that contradict each other."""
        return _from_env(cls, environ)


@dataclass(frozen=True)
class ServerSettings:
    """How gunicorn serves the app (gunicorn_conf.py and workers.py read these)."""

    host: str = "127.0.0.1"
    port: int = 8000
    web_concurrency: int = 0  # worker processes; 0: one per core (one on SQLite)
    worker_class: str = "gevent"  # or gthread
    gunicorn_threads: int = 64  # with gthread only
    worker_connections: int = 4096
    keepalive_seconds: int = 5
    shed_seconds: float = 1.0
    send_timeout_seconds: float = 10.0
    reuse_port: bool = True
    access_log: str = ""
    log_level: str = "info"
    prometheus_multiproc_dir: str = ""  # default: var/prometheus-<port>

    def __post_init__(self) -> None:
        _between(self, "port", 1, 65_535)
        _one_of(self, "worker_class", WORKER_CLASSES)
        # gunicorn gives a request's headers no deadline at all with keepalive 0.
        _at_least(self, "keepalive_seconds", 1, " (it bounds how long headers may take)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ServerSettings:
        return _from_env(cls, environ)

    def workers(self, database_url: str) -> int:
        """WEB_CONCURRENCY, else one per core; on SQLite one. SQLite lets one writer in at a
        time and makes the others poll for its lock (busy_timeout), which gave two workers'
        reservations a tail near 1 s; one process queues every write in its group commit
        instead, holding the tail for a fifth to a third less rate
        (docs/performance.md#the-embedded-default)."""
        if self.web_concurrency:
            return self.web_concurrency
        return 1 if database_url.startswith("sqlite") else os.cpu_count() or 2

    @property
    def metrics_dir(self) -> str:
        default = PROJECT_ROOT / "var" / f"prometheus-{self.port}"
        return self.prometheus_multiproc_dir or str(default)


@dataclass(frozen=True)
class BenchSettings:
    """`make bench`: the database it drops, recreates and loads (its name must say bench)."""

    bench_database_url: str = "postgresql+psycopg2://root@127.0.0.1:5432/ticketboss_bench"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BenchSettings:
        return _from_env(cls, environ)


def _from_env(cls: Any, environ: Mapping[str, str]) -> Any:
    """A settings class built from the environment (upper-cased names); unset or empty
    variables keep their defaults. SettingError names a number as it was typed."""
    given = {f.name: environ[f.name.upper()] for f in fields(cls) if environ.get(f.name.upper())}
    kinds = {f.name: type(f.default) for f in fields(cls)}
    values = {name: _parse(name.upper(), kinds[name], raw) for name, raw in given.items()}
    try:
        return cls(**values)
    except SettingError as exc:
        name = exc.variable.lower()
        if name in given and kinds[name] in (int, float):  # 3, not 3.0
            raise SettingError(exc.variable, given[name], exc.rule) from None
        raise


def _parse(variable: str, kind: type, raw: str) -> object:
    """An environment variable's text as a setting's type; booleans are 1/0, true/false,
    yes/no, on/off (bool("0") would be True)."""
    if kind is bool:
        value = raw.strip().lower()
        if value not in _TRUE + _FALSE:
            raise SettingError(variable, raw, "must be 1 or 0 (or true/false, yes/no, on/off)")
        return value in _TRUE
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise SettingError(variable, raw, "must be a whole number") from None
    if kind is float:
        try:
            number = float(raw)
        except ValueError:
            raise SettingError(variable, raw, "must be a number") from None
        if not math.isfinite(number):
            raise SettingError(variable, raw, "must be a finite number")
        return number
    return raw


def _shown(value: object) -> str:
    """A value as an operator can read it back: quoted when it is empty or has spaces or
    control characters, which would otherwise be invisible."""
    if isinstance(value, str) and (not value or not value.isprintable() or value != value.strip()):
        return repr(value)
    return str(value)


def _at_least(settings: object, name: str, least: float, note: str = "") -> None:
    value = getattr(settings, name)
    if value < least:
        raise SettingError(name.upper(), value, f"must be {least} or more{note}")


def _above(settings: object, name: str, bound: float) -> None:
    value = getattr(settings, name)
    if not value > bound:
        raise SettingError(name.upper(), value, f"must be above {bound}")


def _between(settings: object, name: str, low: int, high: int) -> None:
    value = getattr(settings, name)
    if not low <= value <= high:
        raise SettingError(name.upper(), value, f"must be between {low} and {high}")


def _one_of(settings: object, name: str, choices: Collection[str]) -> None:
    value = getattr(settings, name)
    if value not in choices:
        raise SettingError(name.upper(), value, f"must be one of {', '.join(choices)}")


def _database_url(variable: str, url: str, backends: Collection[str]) -> None:
    """A URL that store.db (or the dispatcher's LISTEN) can connect to; shown without its
    password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    examples = {
        "sqlite": "sqlite:///<file>",
        "postgresql": "postgresql+psycopg2://<user>:<password>@<host>:5432/<name>",
    }
    rule = f"must be a URL like {' or '.join(examples[b] for b in backends)}"
    try:
        parsed = make_url(url)
    except ArgumentError:  # not a URL at all: mask what looks like a password
        raise SettingError(variable, re.sub(r":[^:/@]*@", ":***@", url), rule) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in backends or driver not in _DRIVERS[backend]:
        raise SettingError(variable, parsed.render_as_string(hide_password=True), rule)


def _fernet_keys(keys: str) -> None:
    """WEBHOOK_SECRET_KEYS as services.secrets reads them: comma-separated Fernet keys."""
    pieces = [piece.strip() for piece in keys.split(",")]
    pieces = [piece for piece in pieces if piece]  # a trailing comma is not a key
    if not pieces:
        return
    from cryptography.fernet import Fernet

    for number, piece in enumerate(pieces, start=1):
        try:
            Fernet(piece)
        except ValueError:  # binascii.Error is one too
            # `from None`: the chained error and its traceback must not carry the key.
            raise SettingError(
                "WEBHOOK_SECRET_KEYS",
                _Secret(),
                f"key {number} of {len(pieces)} is not a Fernet key "
                "(32 url-safe base64-encoded bytes, as Fernet.generate_key() makes)",
            ) from None
