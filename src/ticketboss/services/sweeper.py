"""The periodic sweep of lapsed holds inside the service (HOLD_SWEEP_SECONDS)."""

from __future__ import annotations

import logging
import random
import threading
import time

from ticketboss.services.reservations import ReservationService

log = logging.getLogger(__name__)


def start_sweeping(reservations: ReservationService, every_seconds: float) -> None:
    """Expire lapsed holds about every `every_seconds`, in a daemon thread (a greenlet under
    gevent). Only tidiness depends on it, so a failed sweep is logged and tried next time."""
    if every_seconds <= 0:
        return

    def sweep_forever() -> None:
        while True:
            # Jittered, so that the workers of a host (and the hosts) do not sweep in step.
            time.sleep(every_seconds * random.uniform(0.5, 1.5))
            try:
                expired = reservations.sweep()
            except Exception as exc:  # the database is away: the next sweep will do
                log.warning("hold sweep failed: %s: %s", type(exc).__name__, exc)
                continue
            if expired:
                log.info("hold sweep expired %d lapsed holds", expired)

    threading.Thread(target=sweep_forever, name="hold-sweeper", daemon=True).start()
