"""The one retry policy of every compare-and-swap transaction (tenacity)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from ticketboss import deadline, metrics
from ticketboss.config import Settings
from ticketboss.domain import VersionConflict
from ticketboss.services.unit_of_work import dropped

T = TypeVar("T")


def _worth_retrying(exc: BaseException) -> bool:
    """A lost compare-and-swap, or a pooled connection the database dropped (e.g. a restart)
    before we asked it to commit. Never an error of the COMMIT itself (OutcomeUnknown), nor
    a database that did not answer before the deadline."""
    return isinstance(exc, VersionConflict) or dropped(exc)


class _past_deadline(stop_base):  # named as tenacity names its stops
    """Stop once the request's deadline has passed (never, for work no request made)."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        return deadline.remaining(1.0) == 0


def with_retries(settings: Settings, unit_of_work: Callable[..., T], *args) -> T:
    """Run one transaction, retried whole (from a fresh read) while it loses the CAS:
    exponential backoff with full jitter, capped in attempts and in total time."""
    retrying = Retrying(
        retry=retry_if_exception(_worth_retrying),
        # Full jitter: a random wait in [0, min(max, 1 ms * 2^attempt)].
        wait=wait_random_exponential(multiplier=0.001, max=settings.cas_backoff_max_seconds),
        stop=stop_after_attempt(settings.cas_max_attempts)
        | stop_after_delay(settings.cas_max_seconds)
        | _past_deadline(),
        reraise=True,
        before_sleep=lambda _state: metrics.CAS_RETRIES.inc(),
    )
    try:
        return retrying(unit_of_work, *args)
    except VersionConflict:
        metrics.CAS_EXHAUSTED.inc()
        raise
