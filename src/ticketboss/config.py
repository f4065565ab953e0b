"""Settings read from the environment, in one place (docs/operations.md lists every variable)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SQLITE_URL = f"sqlite:///{PROJECT_ROOT / 'var' / 'ticketboss.sqlite3'}"
AUTH_MODES = ("keys", "open")


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
        if self.request_deadline_seconds <= 0:
            raise ValueError("REQUEST_DEADLINE_SECONDS must be above 0")
        if self.cas_swaps_per_transaction < 1:
            raise ValueError("CAS_SWAPS_PER_TRANSACTION must be at least 1")
        if not 1 <= self.hold_ttl_seconds <= self.hold_max_seconds:
            raise ValueError("HOLD_TTL_SECONDS must be between 1 and HOLD_MAX_SECONDS")
        if min(self.partner_max_held_seats, self.partner_max_pool_seats) < 0:
            raise ValueError("PARTNER_MAX_HELD_SEATS and PARTNER_MAX_POOL_SEATS are 0 or more")
        if self.webhook_max_attempts < 1 or self.webhook_retry_base_seconds <= 0:
            raise ValueError(
                "WEBHOOK_MAX_ATTEMPTS must be 1 or more, WEBHOOK_RETRY_BASE_SECONDS above 0"
            )
        if self.auth_mode not in AUTH_MODES:
            raise ValueError(
                f"AUTH_MODE must be one of {', '.join(AUTH_MODES)}, not {self.auth_mode!r}"
            )

    @classmethod
    def from_env(cls, environ=os.environ) -> Settings:
        """Settings from environment variables; unset or empty ones keep their default."""
        return cls(**_from_env(cls, environ))


@dataclass(frozen=True)
class ServerSettings:
    """How gunicorn serves the app (gunicorn_conf.py and workers.py read these)."""

    host: str = "127.0.0.1"
    port: int = 8000
    web_concurrency: int = 0  # worker processes; 0: one per core
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
        # gunicorn gives a request's headers no deadline at all with keepalive 0.
        if self.keepalive_seconds < 1:
            raise ValueError("KEEPALIVE_SECONDS must be at least 1 (it bounds header reads)")

    @classmethod
    def from_env(cls, environ=os.environ) -> ServerSettings:
        return cls(**_from_env(cls, environ))

    @property
    def workers(self) -> int:
        return self.web_concurrency or os.cpu_count() or 2

    @property
    def metrics_dir(self) -> str:
        default = PROJECT_ROOT / "var" / f"prometheus-{self.port}"
        return self.prometheus_multiproc_dir or str(default)


@dataclass(frozen=True)
class BenchSettings:
    """`make bench`: the database it drops, recreates and loads (its name must say bench)."""

    bench_database_url: str = "postgresql+psycopg2://root@127.0.0.1:5432/ticketboss_bench"

    @classmethod
    def from_env(cls, environ=os.environ) -> BenchSettings:
        return cls(**_from_env(cls, environ))


def _from_env(cls, environ) -> dict:
    """The fields of a settings class found in the environment (upper-cased names); unset or
    empty ones are left out, so they keep their defaults."""
    values = {}
    for f in fields(cls):
        raw = environ.get(f.name.upper())
        if raw:
            values[f.name] = _parse(type(f.default), raw)
    return values


def _parse(kind: type, raw: str) -> object:
    """An environment variable's text as a setting's type; booleans are 1/0, true/false,
    yes/no, on/off (bool("0") would be True)."""
    if kind is bool:
        value = raw.strip().lower()
        if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"not a boolean: {raw!r}")
        return value in ("1", "true", "yes", "on")
    return kind(raw)
