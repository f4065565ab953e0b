"""A worker's account of a database outage (a restart, a failover, a route to a standby) in
a few log lines rather than one per failed request: the first failure, with its traceback
at most once a minute; then, while requests keep failing, a line every REPORT_EVERY_SECONDS
with how many were answered 503; and one when a transaction commits again."""

from __future__ import annotations

import logging
import time

from ticketboss import metrics

log = logging.getLogger("ticketboss.api.errors")

REPORT_EVERY_SECONDS = 10.0
TRACEBACK_EVERY_SECONDS = 60.0


class Outage:
    def __init__(self) -> None:
        self.since: float | None = None  # monotonic time of the first failure, None if none
        self.failures = 0
        self.reported = 0.0
        self.traceback_at = -TRACEBACK_EVERY_SECONDS

    def failed(self, reason: str, exc: BaseException | None = None) -> None:
        """A request answered 503 because the database did not take it; `exc`'s traceback
        is logged with the first failure (at most once a minute). Each one is counted
        (ticketboss_database_unavailable_total), however few lines it gets."""
        metrics.DATABASE_UNAVAILABLE.inc()
        now = time.monotonic()
        if self.since is None:
            self.since, self.failures, self.reported = now, 1, now
            with_traceback = exc is not None and now - self.traceback_at >= TRACEBACK_EVERY_SECONDS
            self.traceback_at = now if with_traceback else self.traceback_at
            log.warning(
                "database unavailable: %s", reason, exc_info=exc if with_traceback else None
            )
            return
        self.failures += 1
        if now - self.reported >= REPORT_EVERY_SECONDS:
            self.reported = now
            log.warning(
                "database still unavailable after %.1f s: %d requests answered 503 (last: %s)",
                now - self.since,
                self.failures,
                reason,
            )

    def over(self) -> None:
        """A transaction committed: if there was an outage, say how long it lasted."""
        if self.since is None:
            return
        log.warning(
            "database answering again after %.1f s: %d requests answered 503 meanwhile",
            time.monotonic() - self.since,
            self.failures,
        )
        self.since = None


outage = Outage()  # one per worker process
