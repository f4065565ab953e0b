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
# At most one pass per this long in a worker, however often it is woken (five a second: a
# notification waits at most this much longer for its first attempt).
PASS_INTERVAL_SECONDS = 0.2
# A slot sends at most this many of one endpoint's deliveries in a row, then goes back to
# the claim, where every endpoint with deliveries due has its turn.
CHAIN = 50


# A claimed delivery is another dispatcher's to retry once its lease lapses: twice the
# attempt's own timeout and a second, so a live dispatcher always settles first.
def _lease_seconds(timeout: float) -> float:
    return 2 * timeout + 1.0


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
        self._lease = uuid.uuid4()  # this dispatcher's: settles only what it claimed
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
        now = self._now()
        while True:
            with transaction(self.engine, "webhook fan-out") as conn:
                taken = deliveries.fan_out(conn, now, FAN_OUT_BATCH)
            if taken < FAN_OUT_BATCH:
                break
        if self.box is None:
            return 0  # no endpoint can have been registered: nothing could sign
        with self._free_lock:
            room = self._free
        if room <= 0:
            return 0
        lease_seconds = _lease_seconds(self.settings.webhook_timeout_seconds)
        with transaction(self.engine, "webhook claim") as conn:
            claimed = deliveries.claim(
                conn,
                now,
                self._lease,
                lease_seconds,
                self.settings.webhook_endpoint_concurrency,
                room,
            )
            metrics.WEBHOOK_BACKLOG.set(deliveries.count_backlog(conn, now))
        clock = _Clock(now)
        for row in claimed:
            self._take_slot()
            if wait:
                self._send(row, clock)
            else:
                threading.Thread(target=self._send, args=(row, clock), daemon=True).start()
        return len(claimed)

    def _take_slot(self) -> None:
        self._slots.acquire()
        with self._free_lock:
            self._free -= 1

    def _give_slot(self) -> None:
        with self._free_lock:
            self._free += 1
        self._slots.release()

    def _send(self, row, clock: _Clock) -> None:
        """Send the delivery, then the endpoint's next due one in the same slot (settled
        and claimed in one transaction), until it has none; the slot is given back
        whatever happens."""
        try:
            for left in reversed(range(CHAIN)):
                row = self._attempt(row, clock, more=left > 0)
                if row is None:
                    break
        except Exception as exc:  # unsettled: its lease lapses and it is sent again
            self._warn("webhook delivery not settled: %s: %s", type(exc).__name__, exc)
        finally:
            self._give_slot()
            self.wake()  # room for the next one

    def _attempt(self, row, clock: _Clock, *, more: bool):
        """One attempt of the delivery, settled; the endpoint's next due delivery, or None."""
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
            sent = outbound.post(
                row.url,
                body,
                headers,
                timeout=self.settings.webhook_timeout_seconds,
                allow_private=self.settings.webhooks_allow_private,
            )
        metrics.WEBHOOK_LATENCY.observe(sent.latency_ms / 1000)
        return self._settle(row, sent, clock, more=more)

    def _secrets(self, row, now: datetime) -> list[str]:
        """The endpoint's secret, and its previous one while a rotation's overlap lasts."""
        assert self.box is not None
        secrets = [self.box.decrypt(row.secret)]
        until = row.previous_secret_until
        if row.previous_secret is not None and until is not None and until > now:
            secrets.append(self.box.decrypt(row.previous_secret))
        return secrets

    def _settle(self, row, sent: outbound.Sent, clock: _Clock, *, more: bool):
        """Record the attempt and what follows it; the endpoint's next due delivery, leased
        in the same transaction (None: there is none, or the endpoint is now disabled)."""
        now = clock.now()
        attempts = row.attempts + 1
        disable: str | None = None
        next_at: datetime | None = None
        if sent.status is not None and 200 <= sent.status < 300:
            status, result = "delivered", "delivered"
        elif sent.status == 410:
            status, result, disable = "failed", "failed", "410 Gone from the endpoint"
        elif attempts >= self.settings.webhook_max_attempts:
            status, result = "failed", "failed"
            disable = f"{attempts} attempts failed (last: {_said(sent)})"
        else:
            status, result = "pending", "retrying"
            next_at = now + timedelta(seconds=self._backoff(attempts, sent.retry_after))
        attempt = {
            "attempted_at": now,
            "status_code": sent.status,
            "error": sent.error,
            "latency_ms": sent.latency_ms,
            "next_attempt_at": next_at,
        }
        following = None
        lease_seconds = _lease_seconds(self.settings.webhook_timeout_seconds)
        with transaction(self.engine, "webhook settle") as conn:
            if not deliveries.settle(
                conn, row.id, self._lease, attempt, status=status, next_attempt_at=next_at, now=now
            ):
                return None  # our lease lapsed: the delivery is another dispatcher's now
            if disable is not None:
                deliveries.disable_endpoint(conn, row.endpoint_id, disable, now)
            elif more and result == "delivered":  # a failing endpoint waits for its backoff
                following = deliveries.claim_next(
                    conn, row.endpoint_id, now, self._lease, lease_seconds
                )
        metrics.WEBHOOK_ATTEMPTS.labels(result).inc()
        webhook_log.info(
            "webhook attempt",
            extra={
                "fields": {
                    "webhook_id": f"ntf_{row.notification_id}",
                    "endpoint_id": row.endpoint_id,
                    "delivery_id": row.id,
                    "attempt": attempts,
                    "status": sent.status,
                    "error": sent.error,
                    "latency_ms": sent.latency_ms,
                    "result": result,
                    "next_attempt_at": next_at.isoformat() if next_at else None,
                }
            },
        )
        if disable is not None:
            log.warning("webhook endpoint %s disabled: %s", row.endpoint_id, disable)
        return following

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
