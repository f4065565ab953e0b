"""TicketBoss: seat reservations guarded by a versioned compare-and-swap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, current_app

from ticketboss.config import Settings

if TYPE_CHECKING:
    from ticketboss.services import Services
    from ticketboss.services.clock import Clock


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> Flask:
    """Build the app; the engine is created here so every gunicorn worker has its own pool.
    `clock` decides hold expiry (the database's by default; tests move it)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    from ticketboss.api.encoding import OrjsonProvider

    app.json = OrjsonProvider(app)
    register_config(app, settings)
    register_observability(app)
    register_paths(app)
    register_deadline(app, settings)
    register_extensions(app, settings, clock)
    register_security(app, settings)
    register_body_limits(app, settings)
    register_blueprints(app)
    register_errorhandlers(app)
    return app


def services_of(app: Flask | None = None) -> Services:
    """The app's services (the current app's by default): views, health checks and tests
    all find them here."""
    return (app or current_app).extensions["ticketboss"]


def register_config(app: Flask, settings: Settings) -> None:
    app.config.update(
        DEFAULT_EVENT_ID=settings.default_event_id,
        RETRY_AFTER_SECONDS=settings.retry_after_seconds,
        HOLD_MAX_SECONDS=settings.hold_max_seconds,
        API_TITLE="TicketBoss",
        API_VERSION="1.0.0",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
    )


def register_observability(app: Flask) -> None:
    """Request ids, the JSON access log and the HTTP metrics; registered first, so its
    after_request hook runs last and sees the finished response."""
    # Imported here, like the others: prometheus_client must not load before gunicorn_conf sets
    # PROMETHEUS_MULTIPROC_DIR (it imports this package first).
    from ticketboss import observability

    observability.register_observability(app)


def register_paths(app: Flask) -> None:
    """A path Werkzeug would redirect, or one with an encoded slash, is refused before
    anything else looks at the request."""
    from ticketboss.api import paths

    paths.register_paths(app)


def register_deadline(app: Flask, settings: Settings) -> None:
    """No request waits on a dependency past REQUEST_DEADLINE_SECONDS (ticketboss.deadline)."""
    from ticketboss.api.deadlines import register_deadline

    register_deadline(app, settings)


def register_extensions(app: Flask, settings: Settings, clock: Clock | None = None) -> None:
    from flask_cors import CORS

    from ticketboss.services import Services

    app.extensions["ticketboss"] = Services.build(settings, clock)
    # Browser-based partner tools called the Node.js API cross-origin (it ran cors()).
    CORS(
        app,
        resources={r"/api/*": {"origins": "*"}},
        send_wildcard=True,
        expose_headers=[
            "Location",
            "Retry-After",
            "ETag",
            "Idempotent-Replayed",
            "X-Request-ID",
            "RateLimit",
            "RateLimit-Policy",
        ],
    )


def register_security(app: Flask, settings: Settings) -> None:
    """API keys first (deny by default), then the per-partner rate limit, which needs to know
    the partner."""
    from ticketboss.api.auth import register_auth, register_rate_limit

    register_auth(app, settings)
    register_rate_limit(app, settings)


def register_body_limits(app: Flask, settings: Settings) -> None:
    """Bodies are read whole, within MAX_BODY_BYTES and BODY_TIMEOUT_SECONDS, before a view
    acts on them."""
    from ticketboss.api import body

    body.register_body_limits(app, settings)


def register_blueprints(app: Flask) -> None:
    from ticketboss import api

    api.register_blueprints(app)


def register_errorhandlers(app: Flask) -> None:
    from ticketboss import api

    api.register_errorhandlers(app)
