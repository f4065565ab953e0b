"""Deny by default: every route needs a partner or operator key, except the few listed
public ones. Also the per-partner rate limit (flask-limiter), keyed by the authenticated
partner."""

from __future__ import annotations

import functools
import math
import time

from flask import Flask, current_app, g, request

from ticketboss import services_of
from ticketboss.config import Settings
from ticketboss.domain import ANYONE, Principal, Unauthenticated

# Liveness, readiness, the API document and its viewer, the metrics scrape: no key.
PUBLIC_ENDPOINTS = frozenset({"health.health", "health.ready", "api-docs.openapi_json", "static"})
PUBLIC_BLUEPRINTS = frozenset({"swagger_ui", "metrics"})


def register_auth(app: Flask, settings: Settings) -> None:
    """Authenticate every request to a protected route before anything else looks at it."""
    if settings.auth_mode == "open":
        app.logger.warning(
            "AUTH_MODE=open: no API keys are checked, and every client may do everything "
            "(the Node.js service's contract). Move to AUTH_MODE=keys; see the README."
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
    # Split by hand: Werkzeug's request.authorization parses every scheme's parameters, and
    # this runs on every request.
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("Send an API key: Authorization: Bearer <key>.", given=False)
    principal = services_of().keys.authenticate(token)
    if principal is None:
        # Never echo the key: a client's log would then hold it twice.
        raise Unauthenticated("The API key is malformed, unknown or revoked.", given=True)
    g.principal = principal


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
    """
    if settings.partner_rate_limit <= 0:
        return
    from flask_limiter import Limiter

    rate = settings.partner_rate_limit
    burst = max(settings.partner_rate_burst, rate)
    window = max(1, round(burst / rate))
    limiter = Limiter(
        key_func=_partner,
        application_limits=[f"{burst} per {window} second"],
        storage_uri=settings.ratelimit_storage_uri,
        strategy="moving-window",
        headers_enabled=False,  # its reset header is a timestamp; the IETF one is seconds
        # A rate-limit store that is down must not fail requests: fall back to this worker.
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )
    limiter.request_filter(lambda: not needs_key())
    limiter.init_app(app)
    app.extensions["ticketboss.limiter"] = limiter
    app.after_request(_rate_limit_headers)


def _partner() -> str:
    """The budget's owner: the key's partner (open mode: the client's address)."""
    who = g.get("principal")
    if who is not None and who.partner_id is not None:
        return f"partner:{who.partner_id}"
    return f"addr:{request.remote_addr}"


def _rate_limit_headers(response):
    """RateLimit-Policy and RateLimit (IETF httpapi draft), Retry-After on a 429."""
    current = current_app.extensions["ticketboss.limiter"].current_limit
    if current is None:
        return response
    item = current.limit
    reset = max(0, math.ceil(current.reset_at - time.time()))
    response.headers["RateLimit-Policy"] = f'"partner";q={item.amount};w={item.get_expiry()}'
    response.headers["RateLimit"] = f'"partner";r={current.remaining};t={reset}'
    if response.status_code == 429:
        response.headers["Retry-After"] = str(max(1, reset))
    return response
