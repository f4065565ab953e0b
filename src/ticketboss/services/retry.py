"""The one retry policy of every compare-and-swap batch (tenacity)."""

from __future__ import annotations

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from ticketboss import deadline
from ticketboss.config import Settings
from ticketboss.domain import VersionConflict
from ticketboss.services.unit_of_work import dropped


class RetryAtOnce(Exception):
    """An attempt found that what it works on changed (a request of the batch lost its
    Idempotency-Key claim): the next attempt runs at once, without it and without backoff."""


def _worth_retrying(exc: BaseException) -> bool:
    """A lost compare-and-swap, a batch that changed, or a pooled connection the database
    dropped (e.g. a restart) before we asked it to commit. Never an error of the COMMIT
    itself (OutcomeUnknown), nor a database that did not answer before the deadline."""
    return isinstance(exc, VersionConflict | RetryAtOnce) or dropped(exc)


class _past_deadline(stop_base):  # named as tenacity names its stops
    """Stop once the request's deadline has passed (never, for work no request made)."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        return deadline.remaining(1.0) == 0


class _backoff(wait_random_exponential):  # named as tenacity names its waits
    """Full jitter, a random wait in [0, min(max, 1 ms * 2^attempt)]; none before an attempt
    that runs at once (RetryAtOnce)."""

    def __call__(self, retry_state: RetryCallState) -> float:
        failed = retry_state.outcome.exception() if retry_state.outcome else None
        return 0.0 if isinstance(failed, RetryAtOnce) else super().__call__(retry_state)


class _unless_at_once(stop_base):  # named as tenacity names its stops
    """The policy's stops, except after a RetryAtOnce: the batch shrank by a request (whose
    answer is already "in flight"), so the rest always get their try; it ends, since each
    one removes a request."""

    def __init__(self, stop: stop_base):
        self._stop = stop

    def __call__(self, retry_state: RetryCallState) -> bool:
        failed = retry_state.outcome.exception() if retry_state.outcome else None
        return not isinstance(failed, RetryAtOnce) and self._stop(retry_state)


def attempts(settings: Settings) -> Retrying:
    """The one retry policy of a batch, for `for attempt in attempts(settings): with
    attempt: ...`: capped in attempts, in total time and by the request's deadline. A lost
    swap is counted where it is lost (metrics.CAS_RETRIES), once; an exhausted policy raises
    the last error (VersionConflict: a 503)."""
    return Retrying(
        retry=retry_if_exception(_worth_retrying),
        wait=_backoff(multiplier=0.001, max=settings.cas_backoff_max_seconds),
        stop=_unless_at_once(
            stop_after_attempt(settings.cas_max_attempts)
            | stop_after_delay(settings.cas_max_seconds)
            | _past_deadline()
        ),
        reraise=True,
    )
