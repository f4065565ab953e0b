"""Webhook delivery, in the background of every worker: never in a request's path.

A dispatcher loop wakes on this worker's own commits (ReservationService.wake_dispatcher), on
NOTIFY from any other (PostgreSQL: LISTEN on a session of its own), and every
WEBHOOK_POLL_SECONDS whatever happens (the fallback, and SQLite's only way). Each pass:

1. fans the outbox out (`queries.fan_out`): the next notifications, in the changes feed's
   commit-safe order, become one delivery per endpoint that wants them;
2. claims due deliveries under a lease (`queries.claim`): at most WEBHOOK_ENDPOINT_CONCURRENCY
   in flight to one endpoint across every worker, and WEBHOOK_WORKER_CONCURRENCY in this one,
   so a slow or dead endpoint holds only its own share;
3. sends each in a thread (a greenlet under gevent), signed per Standard Webhooks over the
   exact bytes sent, and settles it: 2xx delivered; 410 failed and its endpoint disabled;
   anything else retried after WEBHOOK_RETRY_BASE_SECONDS × 2^(attempts − 1), jittered, until
   WEBHOOK_MAX_ATTEMPTS, after which the endpoint is disabled.

At least once: a delivery is settled only after its answer, so a worker killed mid-send
leaves a lease that lapses, and another dispatcher sends it again (same webhook-id).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta

import orjson
from sqlalchemy.engine import make_url

from ticketboss import metrics
from ticketboss.api.views import NOTIFICATION, notice
from ticketboss.config import Settings
from ticketboss.observability import webhook_log
from ticketboss.services import outbound, signing
from ticketboss.services.clock import Clock
from ticketboss.services.secrets import SecretBox
from ticketboss.services.unit_of_work import connection, transaction
from ticketboss.store import queries
from ticketboss.store.db import make_engine
from ticketboss.store.queries import deliveries

log = logging.getLogger(__name__)

FAN_OUT_BATCH = 500
# At most one pass per this long in a worker, however often it is woken (twice a second: a
# notification waits at most this much longer for its first attempt; a sender already at
# work on its endpoint takes it sooner).
PASS_INTERVAL_SECONDS = 0.5
# A sender leases up to BATCH of one endpoint's deliveries at a time, sends them one after
# another and settles them in one transaction, which leases the next ones: a busy endpoint
# costs a few statements per BATCH deliveries, not per delivery. After CHAIN batches the
# sender goes back to the claim, where every endpoint with deliveries due has its turn.
BATCH = 20
CHAIN = 5


# A sender's deliveries are another dispatcher's to retry once its lease lapses. A sender
# starts an attempt only while it can end it, timeout included, a second before the lease
# lapses; the rest of its batch is given back unsent. So a dead worker's deliveries are
# sent again within this long, and a live one's never.
def lease_seconds(timeout: float) -> float:
    """How long a sender holds its deliveries before another dispatcher may send them."""
    return 4 * timeout + 1.0


class Dispatcher:
    """Fans out, claims and sends this worker's share of webhook deliveries."""

    def __init__(self, settings: Settings, clock: Clock | None = None):
        # A small pool of its own: deliveries never take the requests' connections. Its
        # commits are not waited on to be flushed: a crash that loses one only means a
        # notification fanned out or sent again (at least once: receivers deduplicate).
        pool = replace(settings, db_pool_size=2, db_max_overflow=6)
        self.engine = make_engine(pool, durable=False)
        self.settings = settings
        self.clock = clock or Clock()
        self.box = SecretBox.from_settings(settings)
        self._wake = threading.Event()
        self._slots = threading.BoundedSemaphore(settings.webhook_worker_concurrency)
        self._free = settings.webhook_worker_concurrency
        self._free_lock = threading.Lock()
        self._quiet_until = 0.0  # rate-limits the warnings of a database that is away

    def wake(self) -> None:
        """Look for work now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        """Run the loop, and on PostgreSQL the listener, in daemon threads."""
        threading.Thread(target=self._loop, name="webhook-dispatcher", daemon=True).start()
        if self.engine.dialect.name == "postgresql":
            threading.Thread(target=self._listen, name="webhook-listener", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.settings.webhook_poll_seconds * random.uniform(0.8, 1.2))
            self._wake.clear()
            try:
                self.pump()
            except Exception as exc:  # the database is away: the next pass will do
                self._warn("webhook dispatch failed: %s: %s", type(exc).__name__, exc)
            # Wake-ups that come meanwhile are one pass: a hot event commits hundreds of
            # batches a second, and a pass per commit would cost the requests their CPU.
            time.sleep(PASS_INTERVAL_SECONDS)

    def pump(self, *, wait: bool = False) -> int:
        """One pass: fan out every notification there is, then claim and send what this
        worker has room for. `wait`: send in this thread, one after another (tests, the
        CLI). Returns how many deliveries it started."""
        # The database's time, read once and moved on by this process's clock: a lease
        # taken at clock.now() ends when the sender reckons it does.
        clock = _Clock(self._now())
        while True:
            with transaction(self.engine, "webhook fan-out") as conn:
                taken = deliveries.fan_out(conn, clock.now(), FAN_OUT_BATCH)
            if taken < FAN_OUT_BATCH:
                break
        if self.box is None:
            return 0  # no endpoint can have been registered: nothing could sign
        with self._free_lock:
            room = self._free
        if room <= 0:
            return 0
        leased_for = lease_seconds(self.settings.webhook_timeout_seconds)
        with transaction(self.engine, "webhook claim") as conn:
            now = clock.now()
            claimed = deliveries.claim(
                conn,
                now,
                leased_for,
                self.settings.webhook_endpoint_concurrency,
                room,
                BATCH,
            )
            metrics.WEBHOOK_BACKLOG.set(deliveries.count_backlog(conn, now))
        for lease, rows in claimed:
            self._take_slot()
            if wait:
                self._send(lease, rows, clock)
            else:
                args = (lease, rows, clock)
                threading.Thread(target=self._send, args=args, daemon=True).start()
        return sum(len(rows) for _, rows in claimed)

    def _take_slot(self) -> None:
        self._slots.acquire()
        with self._free_lock:
            self._free -= 1

    def _give_slot(self) -> None:
        with self._free_lock:
            self._free += 1
        self._slots.release()

    def _send(self, lease: uuid.UUID, rows: list, clock: _Clock) -> None:
        """One sender: its batch, then the endpoint's next ones (leased when it settles),
        up to CHAIN batches, over one kept-alive connection while the receiver keeps it;
        the slot is given back whatever happens."""
        session = outbound.Session(
            rows[0].url,
            timeout=self.settings.webhook_timeout_seconds,
            allow_private=self.settings.webhooks_allow_private,
        )
        try:
            for left in reversed(range(CHAIN)):
                rows = self._send_batch(lease, rows, clock, session, more=left > 0)
                if not rows:
                    break
        except Exception as exc:  # unsettled: its leases lapse and it is all sent again
            self._warn("webhook deliveries not settled: %s: %s", type(exc).__name__, exc)
        finally:
            session.close()
            self._give_slot()
            self.wake()  # room for the next one

    def _send_batch(
        self, lease: uuid.UUID, rows: list, clock: _Clock, session: outbound.Session, *, more: bool
    ) -> list:
        """Send the batch in order, stopping at the first failure (an endpoint in trouble
        gets its backoff, not the rest of the batch) or when the lease could lapse before
        another attempt ends; settle it; the endpoint's next batch, or []."""
        timeout = self.settings.webhook_timeout_seconds
        # The lease was taken a moment ago, at the latest: stop in time by that reckoning.
        longest = timeout + outbound.RESOLVE_SECONDS + 1.0  # an attempt, its lookup, a margin
        lease_ends = clock.now() + timedelta(seconds=lease_seconds(timeout) - longest)
        attempts: list[dict] = []
        for row in rows:
            if clock.now() >= lease_ends:
                break
            attempts.append(self._attempt(row, clock, session))
            if attempts[-1]["status"] != "delivered":
                break
        unsent = [row.id for row in rows[len(attempts) :]]
        now = clock.now()
        endpoint_id = rows[0].endpoint_id
        disable = next((a["disable"] for a in attempts if a["disable"]), None)
        following: list = []
        with transaction(self.engine, "webhook settle") as conn:
            settled = deliveries.settle(conn, lease, attempts, unsent=unsent, now=now)
            if disable is not None and settled:
                deliveries.disable_endpoint(conn, endpoint_id, disable, now)
            elif more and not unsent and all(a["status"] == "delivered" for a in attempts):
                leased_for = lease_seconds(timeout)
                following = deliveries.claim_next(conn, endpoint_id, now, lease, leased_for, BATCH)
        for row, attempt in zip(rows, attempts, strict=False):
            if row.id in settled:
                self._log(row, attempt)
        if disable is not None and settled:
            log.warning("webhook endpoint %s disabled: %s", endpoint_id, disable)
        return following

    def _attempt(self, row, clock: _Clock, session: outbound.Session) -> dict:
        """Send one delivery: what it came to, as `deliveries.settle` records it."""
        assert self.box is not None
        viewer = None if row.every_partner else row.endpoint_partner_id
        shown = NOTIFICATION.dump(notice(_Row(row), viewer))
        body = orjson.dumps(shown, option=orjson.OPT_SORT_KEYS)
        try:
            secrets = self._secrets(row, clock.now())
        except ValueError as exc:
            sent = outbound.Sent(None, 0, f"cannot sign: {exc}")
        else:
            msg_id = f"ntf_{row.notification_id}"
            headers = signing.headers(secrets, msg_id, int(time.time()), body)
            sent = session.post(body, headers)
        metrics.WEBHOOK_LATENCY.observe(sent.latency_ms / 1000)
        return self._outcome(row, sent, clock.now())

    def _secrets(self, row, now: datetime) -> list[str]:
        """The endpoint's secret, and its previous one while a rotation's overlap lasts."""
        assert self.box is not None
        secrets = [self.box.decrypt(row.secret)]
        until = row.previous_secret_until
        if row.previous_secret is not None and until is not None and until > now:
            secrets.append(self.box.decrypt(row.previous_secret))
        return secrets

    def _outcome(self, row, sent: outbound.Sent, now: datetime) -> dict:
        """An attempt and what follows it: delivered (2xx); failed and the endpoint disabled
        (410, or the last attempt); else pending until the next attempt."""
        attempts = row.attempts + 1
        disable: str | None = None
        next_at: datetime | None = None
        if sent.status is not None and 200 <= sent.status < 300:
            status = "delivered"
        elif sent.status == 410:
            status, disable = "failed", "410 Gone from the endpoint"
        elif attempts >= self.settings.webhook_max_attempts:
            status = "failed"
            disable = f"{attempts} attempts failed (last: {_said(sent)})"
        else:
            status = "pending"
            next_at = now + timedelta(seconds=self._backoff(attempts, sent.retry_after))
        return {
            "delivery_id": row.id,
            "status": status,
            "next_attempt_at": next_at,
            "attempted_at": now,
            "status_code": sent.status,
            "error": sent.error,
            "latency_ms": sent.latency_ms,
            "disable": disable,
        }

    @staticmethod
    def _log(row, attempt: dict) -> None:
        result = {"pending": "retrying"}.get(attempt["status"], attempt["status"])
        metrics.WEBHOOK_ATTEMPTS.labels(result).inc()
        next_at = attempt["next_attempt_at"]
        webhook_log.info(
            "webhook attempt",
            extra={
                "fields": {
                    "webhook_id": f"ntf_{row.notification_id}",
                    "endpoint_id": row.endpoint_id,
                    "delivery_id": row.id,
                    "attempt": row.attempts + 1,
                    "status": attempt["status_code"],
                    "error": attempt["error"],
                    "latency_ms": attempt["latency_ms"],
                    "result": result,
                    "next_attempt_at": next_at.isoformat() if next_at else None,
                }
            },
        )

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        """Seconds before the next attempt: exponential with ±25 % jitter (so that endpoints
        that failed together do not come back together), and no sooner than a Retry-After."""
        base = self.settings.webhook_retry_base_seconds
        delay = base * 2 ** (attempts - 1) * random.uniform(0.75, 1.25)
        if retry_after is not None:
            delay = max(delay, min(retry_after, base * 2**12))
        return delay

    def _now(self) -> datetime:
        with connection(self.engine) as conn:
            return self.clock.now(queries.read_database_now(conn))

    def _listen(self) -> None:
        """LISTEN on a session of its own and wake the loop on every NOTIFY; reconnect after
        a failure. Polling goes on meanwhile, so nothing here is needed for correctness."""
        import select

        import psycopg2

        url = make_url(self.settings.webhook_listen_url or self.settings.database_url)
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                conn = psycopg2.connect(dsn, connect_timeout=5)
                try:
                    conn.autocommit = True
                    with conn.cursor() as cursor:
                        cursor.execute(f"LISTEN {deliveries.CHANNEL}")
                        while True:
                            if select.select([conn], [], [], 30.0) == ([], [], []):
                                cursor.execute("SELECT 1")  # still there?
                                continue
                            conn.poll()
                            if conn.notifies:
                                conn.notifies.clear()
                                self.wake()
                finally:
                    conn.close()
            except Exception as exc:
                self._warn("webhook listener: %s: %s (polling meanwhile)", type(exc).__name__, exc)
                time.sleep(5 * self.settings.webhook_poll_seconds)

    def _warn(self, message: str, *args) -> None:
        """A warning at most every 10 s: an outage is a few lines, not one per pass."""
        if time.monotonic() >= self._quiet_until:
            self._quiet_until = time.monotonic() + 10.0
            log.warning(message, *args)


class _Clock:
    """The database's time as read at a claim, moved on by this process's monotonic clock:
    an attempt's times without a round trip each."""

    def __init__(self, at: datetime):
        self._at, self._read = at, time.monotonic()

    def now(self) -> datetime:
        return self._at + timedelta(seconds=time.monotonic() - self._read)


class _Row:
    """A claimed delivery's notification, shaped as the outbox row `notice` reads."""

    __slots__ = ("created_at", "data", "event_id", "id", "partner_id", "type", "version")

    def __init__(self, row):
        self.id, self.type, self.event_id = row.notification_id, row.type, row.event_id
        self.partner_id, self.version = row.partner_id, row.version
        self.created_at, self.data = row.created_at, row.data


def _said(sent: outbound.Sent) -> str:
    return f"HTTP {sent.status}" if sent.status is not None else (sent.error or "no answer")


def start_dispatching(dispatcher: Dispatcher, reservations) -> None:
    """Deliver in the background of this worker, woken by its own commits too."""
    reservations.wake_dispatcher = dispatcher.wake
    dispatcher.start()
