"""One place that turns every failure into an RFC 9457 problem+json response."""

from __future__ import annotations

import logging
from http import HTTPStatus

from flask import Flask, current_app, json
from sqlalchemy.exc import DataError, InterfaceError, InternalError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from ticketboss.domain import (
    AllocationInUse,
    AllocationNotFound,
    AllocationTooLarge,
    DeadlinePassed,
    EventExists,
    EventNotFound,
    Forbidden,
    HoldExpired,
    HoldLimitReached,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    NotEnoughSeats,
    NotHeld,
    OutcomeUnknown,
    PoolLimitReached,
    PreconditionFailed,
    ReservationNotFound,
    SeatsAlreadyReserved,
    TooManyAllocations,
    TooManyAuthFailures,
    TooManyWebhookEndpoints,
    Unauthenticated,
    UnknownPartner,
    VersionConflict,
    WebhookDeliveryNotFound,
    WebhookEndpointNotFound,
    WebhooksNotConfigured,
)
from ticketboss.outages import outage
from ticketboss.problems import PROBLEM_JSON, problem_body
from ticketboss.services.outbound import UnsafeUrl

log = logging.getLogger(__name__)


# Domain errors → (status, problem type slug). VersionConflict only reaches the API once the
# tenacity retries are spent: the event is too contended right now, so the client should retry.
_DOMAIN_STATUS = {
    NotEnoughSeats: (409, "not-enough-seats"),
    HoldLimitReached: (409, "hold-limit-reached"),
    PoolLimitReached: (409, "pool-limit-reached"),
    AllocationNotFound: (404, "allocation-not-found"),
    AllocationInUse: (409, "allocation-in-use"),
    AllocationTooLarge: (409, "allocation-too-large"),
    TooManyAllocations: (409, "too-many-allocations"),
    HoldExpired: (409, "hold-expired"),
    NotHeld: (409, "not-held"),
    ReservationNotFound: (404, "reservation-not-found"),
    EventNotFound: (404, "event-not-found"),
    EventExists: (409, "event-exists"),
    Forbidden: (403, "forbidden"),
    UnknownPartner: (422, "unknown-partner"),
    SeatsAlreadyReserved: (409, "seats-reserved"),
    PreconditionFailed: (412, "precondition-failed"),
    IdempotencyKeyInFlight: (409, "idempotency-key-in-flight"),
    IdempotencyKeyReused: (422, "idempotency-key-reused"),
    VersionConflict: (503, "too-busy"),
    DeadlinePassed: (503, "too-busy"),
    OutcomeUnknown: (503, "outcome-unknown"),
    UnsafeUrl: (400, "webhook-url-refused"),
    TooManyWebhookEndpoints: (409, "too-many-webhook-endpoints"),
    WebhookEndpointNotFound: (404, "webhook-endpoint-not-found"),
    WebhookDeliveryNotFound: (404, "webhook-delivery-not-found"),
    WebhooksNotConfigured: (503, "webhooks-not-configured"),
}


def problem_type(error: type[Exception]) -> tuple[int, str]:
    """The status and problem type slug of a domain error (replays of stored refusals)."""
    return _DOMAIN_STATUS[error]


# Answers after which the same request may succeed later: they say when to try again.
_RETRY_LATER = {"idempotency-key-in-flight", "too-busy", "outcome-unknown", "unavailable"}
# RFC 6750: a 401 names the scheme, and says whether the key that came was bad.
_NO_KEY = {"WWW-Authenticate": 'Bearer realm="ticketboss"'}
_BAD_KEY = {"WWW-Authenticate": 'Bearer realm="ticketboss", error="invalid_token"'}


def problem(status: int, detail: str, slug: str | None = None, headers=None, **extra):
    """A problem+json response."""
    body = problem_body(status, detail, slug, **extra)
    headers = dict(headers or {})
    if status == 503 or slug in _RETRY_LATER:
        headers["Retry-After"] = str(current_app.config["RETRY_AFTER_SECONDS"])
    return current_app.response_class(
        json.dumps(body), status=status, mimetype=PROBLEM_JSON, headers=headers
    )


def http_problem(exc: HTTPException):
    """Routing errors (404, 405), aborts and webargs validation failures (400)."""
    status = exc.code or 500
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    messages = (getattr(exc, "data", None) or {}).get("messages")
    if messages:
        # webargs nests messages under the location: {"json": {"seats": [...]}}.
        errors = {
            ("body" if k == "_schema" else k): v
            for location in messages.values()
            for k, v in _as_dict(location).items()
        }
        detail = "; ".join(f"{name}: {' '.join(_flat(msgs))}" for name, msgs in errors.items())
        return problem(
            status, f"Invalid request: {detail}", "invalid-request", headers, errors=errors
        )
    return problem(status, exc.description or HTTPStatus(status).description, None, headers)


def _as_dict(messages) -> dict:
    return messages if isinstance(messages, dict) else {"_schema": messages}


def _flat(messages):
    if isinstance(messages, dict):
        for value in messages.values():
            yield from _flat(value)
    elif isinstance(messages, (list, tuple)):
        for value in messages:
            yield from _flat(value)
    else:
        yield str(messages)


def register_errorhandlers(app: Flask) -> None:
    for error_type, (status, slug) in _DOMAIN_STATUS.items():
        app.register_error_handler(
            error_type, lambda exc, status=status, slug=slug: problem(status, str(exc), slug)
        )
    app.register_error_handler(NotEnoughSeats, _not_enough_seats)
    app.register_error_handler(HoldLimitReached, _hold_limit_reached)
    app.register_error_handler(PoolLimitReached, _pool_limit_reached)
    app.register_error_handler(UnsafeUrl, _webhook_url_refused)
    # Pool exhausted, database down or restarting, statement timeout, SQLite busy: all transient.
    for error_type in (PoolTimeout, OperationalError, InterfaceError):
        app.register_error_handler(error_type, _unavailable)
    app.register_error_handler(DataError, _data_error)
    app.register_error_handler(InternalError, _internal_error)
    app.register_error_handler(Unauthenticated, _unauthenticated)
    app.register_error_handler(TooManyAuthFailures, _too_many_auth_failures)
    app.register_error_handler(429, _rate_limited)
    app.register_error_handler(Exception, _unexpected)


def _not_enough_seats(exc: NotEnoughSeats):
    """Which bucket ran out, and what it had: a partner can tell its allocation from the pool."""
    return problem(
        409,
        str(exc),
        "not-enough-seats",
        bucket=exc.bucket,
        requested=exc.requested,
        available=exc.available,
    )


def _hold_limit_reached(exc: HoldLimitReached):
    """What the partner holds, and its limit: it knows how much to release."""
    members = {"requested": exc.requested, "held": exc.held, "limit": exc.limit}
    return problem(409, str(exc), "hold-limit-reached", **members)


def _pool_limit_reached(exc: PoolLimitReached):
    members = {"requested": exc.requested, "used": exc.used, "limit": exc.limit}
    return problem(409, str(exc), "pool-limit-reached", **members)


def _webhook_url_refused(exc: UnsafeUrl):
    """Why the URL was refused, as a sentence; never the URL itself (it may carry a token)."""
    return problem(400, f"The webhook URL was refused: {exc}.", "webhook-url-refused")


def _data_error(exc: DataError):
    """The database refused a value as out of range: input validation let it through, so
    it is logged, but it is the client's input all the same."""
    log.warning("the database refused a value: %s", exc.orig.__class__.__name__)
    return problem(400, "A value in the request is out of range.", "invalid-request")


# SQLSTATE 25006: a write reached a server that is read-only, a standby (the route still
# points at a demoted primary, mid-failover) or one set read-only: transient, like a restart.
READ_ONLY = "25006"


def _internal_error(exc: InternalError):
    if getattr(exc.orig, "pgcode", None) != READ_ONLY:
        return _unexpected(exc)
    # Nothing here is broken: the route leads to no primary yet.
    outage.failed(f"it takes no writes (a standby?): {str(exc.orig).strip()}")
    return problem(
        503, "The database takes no writes right now (a failover?); retry later.", "unavailable"
    )


def _unauthenticated(exc: Unauthenticated):
    return problem(401, str(exc), "unauthenticated", _BAD_KEY if exc.given else _NO_KEY)


def _too_many_auth_failures(exc: TooManyAuthFailures):
    retry_after = {"Retry-After": str(exc.retry_after)}
    return problem(429, str(exc), "too-many-auth-failures", retry_after)


def _rate_limited(exc: HTTPException):
    """flask-limiter's 429; the RateLimit headers and Retry-After are added after it."""
    return problem(429, f"Rate limit exceeded ({exc.description}); retry later.", "rate-limited")


def _unavailable(exc: Exception):
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    outage.failed(f"{exc.__class__.__name__}: {reason[0] if reason else ''}", exc)
    return problem(
        503, "The service is overloaded or its database is unreachable; retry later.", "unavailable"
    )


def _unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return http_problem(exc)
    log.exception("unhandled error")
    return problem(500, "An unexpected error occurred.")
