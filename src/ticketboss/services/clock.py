"""What time it is for holds."""

from __future__ import annotations

from datetime import datetime


class Clock:
    """Hold expiry is judged by the database's clock, read in the same statement as the
    event: every worker and host then agrees whether a hold is alive, whatever their own
    clocks say. A subclass may move it (the tests jump past expiries)."""

    def now(self, database_now: datetime) -> datetime:
        return database_now
