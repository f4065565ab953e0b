"""Deny by default: every route needs a partner or operator key, except the few listed
public ones. Also the per-partner rate limit (flask-limiter), keyed by the authenticated
partner."""

from __future__ import annotations

import functools
import logging
import math
import time

from flask import Flask, current_app, g, request

from ticketboss import metrics, services_of
from ticketboss.config import Settings
from ticketboss.domain import ANYONE, Principal, Unauthenticated

log = logging.getLogger(__name__)

# Liveness, readiness, the API document and its viewer, the metrics scrape: no key.
PUBLIC_ENDPOINTS = frozenset({"health.health", "health.ready", "api-docs.openapi_json", "static"})
PUBLIC_BLUEPRINTS = frozenset({"swagger_ui", "metrics"})


def register_auth(app: Flask, settings: Settings) -> None:
    """Authenticate every request to a protected route before anything else looks at it."""
    if settings.auth_mode == "open":
        app.logger.warning(
            "AUTH_MODE=open: no API keys are checked, and every client may do everything "
            "(the Node.js service's contract). Move to AUTH_MODE=keys; see "
            "docs/operations.md#partner-keys."
        )
    app.config["AUTH_MODE"] = settings.auth_mode
    app.before_request(_authenticate)


def needs_key() -> bool:
    """False for public routes, CORS preflights and unrouted requests (404/405 as usual)."""
    if request.url_rule is None or request.method == "OPTIONS":
        return False
    return request.endpoint not in PUBLIC_ENDPOINTS and request.blueprint not in PUBLIC_BLUEPRINTS


def _authenticate() -> None:
    if not needs_key():
        return
    if current_app.config["AUTH_MODE"] == "open":
        g.principal = ANYONE
        return
    token = bearer_token()
    if token is None:
        raise Unauthenticated("Send an API key: Authorization: Bearer <key>.", given=False)
    # An address that sent too many bad keys lately is a 429 here, before any lookup.
    principal = services_of().keys.authenticate(token, client=request.remote_addr or "")
    if principal is None:
        # Never echo the key: a client's log would then hold it twice.
        raise Unauthenticated("The API key is malformed, unknown or revoked.", given=True)
    g.principal = principal


def bearer_token() -> str | None:
    """The request's `Authorization: Bearer <token>`, or None. Split by hand: Werkzeug's
    request.authorization parses every scheme's parameters, and this runs on every request."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def principal() -> Principal:
    """Who the current request acts as (set for every route that needs a key)."""
    return g.principal


def operator_only(view):
    """The view is for operator keys; a partner key gets 403."""

    @functools.wraps(view)
    def guarded(*args, **kwargs):
        principal().require_operator()
        return view(*args, **kwargs)

    return guarded


# Rate limit -------------------------------------------------------------------------------


def register_rate_limit(app: Flask, settings: Settings) -> None:
    """One budget per partner across every protected route, when PARTNER_RATE_LIMIT is set.

    flask-limiter has no token bucket; a moving window of BURST requests per BURST/RATE
    seconds behaves like one: up to BURST at once, RATE per second sustained.

    A shared store (Redis) that refuses, or does not answer within
    RATELIMIT_STORAGE_TIMEOUT_SECONDS, is treated as gone: each worker then counts alone,
    allowing its share of the budget (split over RATELIMIT_FALLBACK_WORKERS, this host's
    workers by default), logs one warning, and sets ticketboss_ratelimit_storage_up to 0;
    flask-limiter pings the store again after 1, 2, 4… 32 s and goes back to it by itself.
    """
    metrics.RATELIMIT_STORAGE_UP.set(1)  # 0 only while a worker counts alone
    if settings.partner_rate_limit <= 0:
        return
    from flask_limiter import Limiter

    from ticketboss.config import ServerSettings

    rate = settings.partner_rate_limit
    burst = max(settings.partner_rate_burst, rate)
    window = max(1, round(burst / rate))
    workers = settings.ratelimit_fallback_workers or ServerSettings.from_env().workers(
        settings.database_url
    )
    timeout = settings.ratelimit_storage_timeout_seconds
    shared = settings.ratelimit_storage_uri.startswith("redis")
    limiter = Limiter(
        key_func=_partner,
        application_limits=[f"{burst} per {window} second"],
        storage_uri=settings.ratelimit_storage_uri,
        storage_options=_storage_options(timeout) if shared else {},
        strategy="moving-window",
        headers_enabled=False,  # its reset header is a timestamp; the IETF one is seconds
        # A rate-limit store that is down must not fail requests: fall back to this worker.
        in_memory_fallback=[f"{math.ceil(burst / workers)} per {window} second"],
        swallow_errors=True,
    )
    limiter.request_filter(lambda: not needs_key())
    limiter.init_app(app)
    app.extensions["ticketboss.limiter"] = limiter
    app.after_request(_rate_limit_headers)


def _storage_options(timeout: float) -> dict:
    """redis-py's connect and read timeouts: a stalled Redis costs a request this, once."""
    return {"socket_connect_timeout": timeout, "socket_timeout": timeout}


def _partner() -> str:
    """The budget's owner: the key's partner (open mode: the client's address)."""
    who = g.get("principal")
    if who is not None and who.partner_id is not None:
        return f"partner:{who.partner_id}"
    return f"addr:{request.remote_addr}"


def _rate_limit_headers(response):
    """RateLimit-Policy and RateLimit (IETF httpapi draft), Retry-After on a 429; and whether
    the limiter has just fallen back to this worker's memory, or gone back to the store."""
    limiter = current_app.extensions["ticketboss.limiter"]
    _note_storage(limiter)
    current = limiter.current_limit
    if current is None:
        return response
    item = current.limit
    try:  # the window is read from the store: it may have gone away since the request began
        reset = max(0, math.ceil(current.reset_at - time.time()))
    except Exception as exc:
        log.debug("rate-limit headers left out: %s", type(exc).__name__)
        return response
    response.headers["RateLimit-Policy"] = f'"partner";q={item.amount};w={item.get_expiry()}'
    response.headers["RateLimit"] = f'"partner";r={current.remaining};t={reset}'
    if response.status_code == 429:
        response.headers["Retry-After"] = str(max(1, reset))
    return response


_storage_lost_at: float | None = None  # this worker's limiter counts alone since then


def _note_storage(limiter) -> None:
    """One warning when a worker's limiter falls back to its memory, one when it is back."""
    global _storage_lost_at
    # flask-limiter keeps no public flag: `_storage_dead` is what its fallback switches on
    # (tests/e2e/test_hangs.py fails if it stops meaning that).
    dead = getattr(limiter, "_storage_dead", False)
    if dead == (_storage_lost_at is not None):
        return
    if dead:
        _storage_lost_at = time.monotonic()
        log.warning(
            "rate-limit storage unreachable: this worker now counts alone (its share of the "
            "limit) until the storage answers again"
        )
    else:
        lost_for = time.monotonic() - (_storage_lost_at or 0.0)
        log.warning(
            "rate-limit storage answers again after %.1f s: limits are shared again", lost_for
        )
        _storage_lost_at = None
    metrics.RATELIMIT_STORAGE_UP.set(0 if dead else 1)
