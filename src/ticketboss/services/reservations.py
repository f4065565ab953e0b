"""Reserve and cancel seats with a versioned compare-and-swap, retried by tenacity."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from ticketboss.config import Settings
from ticketboss.domain import (
    Event,
    EventNotFound,
    Reservation,
    ReservationNotFound,
    Status,
    VersionConflict,
)
from ticketboss.store import queries


class CasStats:
    """This process's compare-and-swap outcomes: commits, retries after a lost CAS, and
    requests whose retries ran out (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts = Counter()

    def add(self, **counts: int) -> None:
        with self._lock:
            self._counts.update(counts)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {k: self._counts[k] for k in ("commits", "retries", "exhausted")}


@dataclass(frozen=True)
class Summary:
    event: Event
    reservation_count: int


def _worth_retrying(exc: BaseException) -> bool:
    """A lost compare-and-swap, or a pooled connection the database dropped (e.g. a restart)."""
    if isinstance(exc, VersionConflict):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class ReservationService:
    """The use cases over one engine. Each write is one transaction, retried whole on conflict."""

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self.stats = CasStats()

    def _retrying(self) -> Retrying:
        s = self.settings
        return Retrying(
            retry=retry_if_exception(_worth_retrying),
            # Full jitter: a random wait in [0, min(max, 1 ms * 2^attempt)].
            wait=wait_random_exponential(multiplier=0.001, max=s.cas_backoff_max_seconds),
            stop=stop_after_attempt(s.cas_max_attempts) | stop_after_delay(s.cas_max_seconds),
            reraise=True,
            before_sleep=lambda _state: self.stats.add(retries=1),
        )

    def _with_retries(self, unit_of_work, *args):
        """Run one transaction, retried whole (from a fresh read) while it loses the CAS."""
        try:
            result = self._retrying()(unit_of_work, *args)
        except VersionConflict:
            self.stats.add(exhausted=1)
            raise
        self.stats.add(commits=1)
        return result

    def summary(self, event_id: str) -> Summary:
        with self.engine.connect() as conn:
            found = queries.load_summary(conn, event_id)
        if found is None:
            raise EventNotFound(event_id)
        return Summary(*found)

    def get(self, reservation_id: UUID) -> Reservation:
        with self.engine.connect() as conn:
            reservation = queries.load_reservation(conn, reservation_id)
        if reservation is None:
            raise ReservationNotFound(reservation_id)
        return reservation

    def reserve(self, event_id: str, partner_id: str, seats: int) -> Reservation:
        """Take `seats` for a partner: NotEnoughSeats if they are not there, VersionConflict
        if the retries ran out."""
        return self._with_retries(self._reserve_once, event_id, partner_id, seats)

    def _reserve_once(self, event_id: str, partner_id: str, seats: int) -> Reservation:
        with self.engine.begin() as conn:
            event = queries.load_event(conn, event_id)
            if event is None:
                raise EventNotFound(event_id)
            after = event.reserve(seats)
            queries.compare_and_swap(conn, event, after.available_seats)
            reservation = Reservation(
                reservation_id=uuid4(),
                event_id=event_id,
                partner_id=partner_id,
                seats=seats,
                status=Status.CONFIRMED,
                created_at=datetime.now(UTC),
            )
            queries.insert_reservations(conn, [reservation])
        return reservation

    def cancel(self, reservation_id: UUID) -> None:
        """Cancel a confirmed reservation and return its seats to the pool."""
        self._with_retries(self._cancel_once, reservation_id)

    def _cancel_once(self, reservation_id: UUID) -> None:
        with self.engine.begin() as conn:
            reservation = queries.load_reservation(conn, reservation_id)
            if reservation is None or reservation.status is not Status.CONFIRMED:
                raise ReservationNotFound(reservation_id, confirmed_only=True)
            event = queries.load_event(conn, reservation.event_id)
            queries.compare_and_swap(conn, event, event.release(reservation.seats).available_seats)
            if not queries.mark_cancelled(conn, reservation_id, datetime.now(UTC)):
                # Cancelled by someone else after our read: our event write rolls back too.
                raise VersionConflict(reservation.event_id)
