"""Prometheus scrape endpoint (outside the OpenAPI document, like every exporter's), for
scrapers only: the credentials are checked before the exposition is built."""

import hmac

from flask import Blueprint, Response, request

from ticketboss import metrics
from ticketboss.api import deps
from ticketboss.api.auth import bearer_token
from ticketboss.config import Settings
from ticketboss.domain import Unauthenticated

blp = Blueprint("metrics", __name__)


@blp.get("/metrics")
def scrape():
    """The Prometheus text format, for a scraper with the right credentials."""
    settings = deps.settings()
    _require_scraper(settings)
    body, content_type = metrics.exposition(settings.metrics_cache_seconds)
    return Response(body, content_type=content_type)


def _require_scraper(settings: Settings) -> None:
    """METRICS_TOKEN when it is set; else an operator key (a partner key is Forbidden), or
    nothing with AUTH_MODE=open. Neither is ever echoed or logged."""
    expected = settings.metrics_token
    if not expected and settings.auth_mode == "open":
        return
    token = bearer_token()
    wanted = "the metrics token" if expected else "an operator key"
    if token is None:
        raise Unauthenticated(f"Send {wanted}: Authorization: Bearer <token>.", given=False)
    if expected:
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise Unauthenticated("The metrics token is wrong.", given=True)
        return
    # As for every key: an address that sent too many bad keys lately is a 429, unlooked-up.
    principal = deps.keys().authenticate(token, client=request.remote_addr or "")
    if principal is None:
        raise Unauthenticated("The API key is malformed, unknown or revoked.", given=True)
    principal.require_operator()
