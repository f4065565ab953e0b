"""Partners' webhook endpoints: register, list, read, delete, rotate a secret, and read and
retry their deliveries (the dispatcher sends them)."""

from __future__ import annotations

import builtins
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, Row

from ticketboss.config import Settings
from ticketboss.domain import (
    TooManyWebhookEndpoints,
    WebhookDeliveryNotFound,
    WebhookEndpointNotFound,
    WebhooksNotConfigured,
)
from ticketboss.services.clock import Clock
from ticketboss.services.outbound import check_url
from ticketboss.services.secrets import SecretBox, new_webhook_secret
from ticketboss.services.unit_of_work import connection, transaction
from ticketboss.store import queries
from ticketboss.store.queries.deliveries import lock_fanout, recover, wake_dispatchers

ENDPOINT_ID_PREFIX = "we_"
# A delivery retried again and again keeps every attempt; a page shows its latest ones.
ATTEMPTS_SHOWN = 20
# How often `reencrypt` reads again the endpoints rotated while it ran.
_REENCRYPT_PASSES = 3


@dataclass(frozen=True)
class Endpoint:
    """An endpoint as its owner sees it: never its secrets."""

    endpoint_id: str
    partner_id: str  # who registered it
    every_partner: bool  # an operator's: told of every partner's changes
    url: str
    types: tuple[str, ...] | None  # None: every type
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
    secret_rotated_until: datetime | None  # the previous secret still signs until then

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None


@dataclass(frozen=True)
class Attempt:
    attempted_at: datetime
    status_code: int | None  # None: no HTTP answer (see error)
    error: str | None
    latency_ms: int
    next_attempt_at: datetime | None  # None: no more attempts


@dataclass(frozen=True)
class Delivery:
    """One notification to one endpoint, with its latest attempts (newest first)."""

    delivery_id: int
    notification_id: int
    type: str
    status: str  # pending, delivered or failed
    attempts: int  # since it was created or last retried
    next_attempt_at: datetime | None
    created_at: datetime
    settled_at: datetime | None
    history: tuple[Attempt, ...]


class WebhookService:
    def __init__(self, engine: Engine, settings: Settings, clock: Clock):
        self.engine = engine
        self.settings = settings
        self.clock = clock
        # Built once: bad WEBHOOK_SECRET_KEYS stop the app at start, not at a registration.
        self.box: SecretBox | None = SecretBox.from_settings(settings)

    def register(
        self, partner_id: str, every_partner: bool, url: str, types: builtins.list[str] | None
    ) -> tuple[Endpoint, str]:
        """A new endpoint of `partner_id` (an operator's with `every_partner`), and its secret:
        shown now and never again. UnsafeUrl, then WebhooksNotConfigured (a request is
        judged before the service's state: a bad one is the client's to fix either way),
        TooManyWebhookEndpoints."""
        # Before any connection is taken: resolving the host can take a while.
        check_url(url, allow_private=self.settings.webhooks_allow_private)
        box = self._box()
        secret = new_webhook_secret()
        endpoint_id = ENDPOINT_ID_PREFIX + secrets.token_urlsafe(18)  # 24 characters
        listed = None if types is None else json.dumps(sorted(set(types)))
        most = self.settings.webhook_endpoints_per_partner
        with transaction(self.engine, f"webhook endpoints of '{partner_id}'") as conn:
            queries.lock_registrations(conn, partner_id)
            if queries.count_endpoints(conn, partner_id) >= most:
                raise TooManyWebhookEndpoints(most)
            # Registered between two fan-outs, stamped after the earlier one: every fan-out
            # of a notification made from now on sees it (deliveries.lock_fanout).
            lock_fanout(conn)
            now = self._now(conn)
            queries.insert_endpoint(
                conn,
                endpoint_id=endpoint_id,
                partner_id=partner_id,
                every_partner=every_partner,
                url=url,
                types=listed,
                secret=box.encrypt(secret),
                created_at=now,
            )
            row = self._load(conn, endpoint_id, None)
        return _endpoint(row, now), secret

    def list(self, partner_id: str | None, every_partner: bool) -> builtins.list[Endpoint]:
        """Every endpoint (`every_partner`: an operator), or only the partner's own."""
        owner = None if every_partner else partner_id
        with connection(self.engine) as conn:
            now = self._now(conn)
            return [_endpoint(row, now) for row in queries.list_endpoints(conn, owner)]

    def get(self, endpoint_id: str, owner: str | None) -> Endpoint:
        """The endpoint, if `owner` may see it (None: an operator); WebhookEndpointNotFound."""
        with connection(self.engine) as conn:
            return _endpoint(self._load(conn, endpoint_id, owner), self._now(conn))

    def delete(self, endpoint_id: str, owner: str | None) -> None:
        """Delete the endpoint with its deliveries; WebhookEndpointNotFound (also for another
        partner's)."""
        with transaction(self.engine, f"webhook endpoint '{endpoint_id}'") as conn:
            if not queries.delete_endpoint(conn, endpoint_id, owner):
                raise WebhookEndpointNotFound(endpoint_id)

    def rotate_secret(self, endpoint_id: str, owner: str | None) -> tuple[Endpoint, str]:
        """A new secret for the endpoint (shown now only); the one it replaces still signs,
        beside it, for WEBHOOK_SECRET_OVERLAP_SECONDS. A secret replaced earlier than that
        stops signing now. WebhookEndpointNotFound, then WebhooksNotConfigured."""
        secret = new_webhook_secret()
        overlap = timedelta(seconds=self.settings.webhook_secret_overlap_seconds)
        with transaction(self.engine, f"webhook endpoint '{endpoint_id}'") as conn:
            self._load(conn, endpoint_id, owner)
            box = self._box()
            now = self._now(conn)
            queries.rotate_secret(conn, endpoint_id, box.encrypt(secret), now + overlap)
            row = self._load(conn, endpoint_id, owner)
        return _endpoint(row, now), secret

    def deliveries(
        self, endpoint_id: str, owner: str | None, after: int | None, limit: int
    ) -> builtins.list[Delivery]:
        """Up to `limit` of the endpoint's deliveries, newest first, older than the delivery
        `after`; WebhookEndpointNotFound."""
        with connection(self.engine) as conn:
            self._load(conn, endpoint_id, owner)
            rows = queries.list_deliveries(conn, endpoint_id, after, limit)
            attempts = queries.load_attempts(conn, [r.id for r in rows], ATTEMPTS_SHOWN)
        history: dict[int, builtins.list[Attempt]] = {}
        for attempt in attempts:
            history.setdefault(attempt.delivery_id, []).append(_attempt(attempt))
        return [_delivery(row, history.get(row.id, [])) for row in rows]

    def retry(self, endpoint_id: str, delivery_id: int, owner: str | None) -> Delivery:
        """Send the delivery again from its first attempt, now, and enable its endpoint if it
        was disabled (its partner says it is back), queueing what it missed meanwhile;
        WebhookEndpointNotFound, WebhookDeliveryNotFound."""
        with transaction(self.engine, f"webhook delivery {delivery_id}") as conn:
            endpoint = self._load(conn, endpoint_id, owner)
            now = self._now(conn)
            if not queries.retry_delivery(conn, endpoint_id, delivery_id, now):
                raise WebhookDeliveryNotFound(endpoint_id, delivery_id)
            if endpoint.disabled_at is not None:
                recover(conn, endpoint_id, endpoint.disabled_at, now)
                queries.enable_endpoint(conn, endpoint_id)
            wake_dispatchers(conn)  # delivered at commit, to those listening
            row = queries.load_delivery(conn, endpoint_id, delivery_id)
            attempts = queries.load_attempts(conn, [delivery_id], ATTEMPTS_SHOWN)
        assert row is not None  # updated in this very transaction
        return _delivery(row, [_attempt(a) for a in attempts])

    def _box(self) -> SecretBox:
        if self.box is None:
            raise WebhooksNotConfigured()
        return self.box

    def _now(self, conn) -> datetime:
        return self.clock.now(queries.read_database_now(conn))

    @staticmethod
    def _load(conn, endpoint_id: str, owner: str | None) -> Row:
        row = queries.load_endpoint(conn, endpoint_id, owner)
        if row is None:
            raise WebhookEndpointNotFound(endpoint_id)
        return row


def _endpoint(row: Row, now: datetime) -> Endpoint:
    """The endpoint of a row as it stands at `now`: its previous secret's time only while that
    secret still signs."""
    until = row.previous_secret_until
    if until is not None and until <= now:
        until = None
    return Endpoint(
        endpoint_id=row.id,
        partner_id=row.partner_id,
        every_partner=row.every_partner,
        url=row.url,
        types=None if row.types is None else tuple(json.loads(row.types)),
        created_at=row.created_at,
        disabled_at=row.disabled_at,
        disabled_reason=row.disabled_reason,
        secret_rotated_until=until,
    )


def _attempt(row: Row) -> Attempt:
    return Attempt(
        attempted_at=row.attempted_at,
        status_code=row.status_code,
        error=row.error,
        latency_ms=row.latency_ms,
        next_attempt_at=row.next_attempt_at,
    )


def _delivery(row: Row, history: builtins.list[Attempt]) -> Delivery:
    return Delivery(
        delivery_id=row.id,
        notification_id=row.notification_id,
        type=row.type,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        settled_at=row.settled_at,
        history=tuple(history),
    )


def reencrypt(engine: Engine, settings: Settings) -> int:
    """Encrypt every endpoint's secrets again under the first of WEBHOOK_SECRET_KEYS (so the
    older keys can be dropped); how many endpoints were. WebhooksNotConfigured without keys.
    An endpoint rotated meanwhile is read again, a few times at most: run it again if the
    count is short."""
    box = SecretBox.from_settings(settings)
    if box is None:
        raise WebhooksNotConfigured()
    done: set[str] = set()
    for _ in range(_REENCRYPT_PASSES):
        with connection(engine) as conn:
            pending = [row for row in queries.load_secrets(conn) if row.id not in done]
        for row in pending:
            previous = None if row.previous_secret is None else box.rotate(row.previous_secret)
            with transaction(engine, f"webhook endpoint '{row.id}'") as conn:
                if queries.rewrap_secrets(conn, row, box.rotate(row.secret), previous):
                    done.add(row.id)
        if all(row.id in done for row in pending):
            break
    return len(done)
