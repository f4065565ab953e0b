"""A clock the tests move forward, to jump past hold expiries without waiting."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from ticketboss.services.clock import Clock


class JumpingClock(Clock):
    """The database's clock, moved forward by the tests to jump past hold expiries."""

    def __init__(self):
        self.skew = timedelta(0)
        self._lock = threading.Lock()  # concurrent jumps: time never goes back

    def now(self, database_now: datetime) -> datetime:
        return database_now + self.skew

    def jump(self, seconds: float) -> None:
        with self._lock:
            self.skew += timedelta(seconds=seconds)
