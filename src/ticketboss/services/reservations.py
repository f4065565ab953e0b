"""Reserve and cancel seats with a versioned compare-and-swap, retried by tenacity."""

from __future__ import annotations

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

from ticketboss import metrics
from ticketboss.config import Settings
from ticketboss.domain import (
    Event,
    EventNotFound,
    NotEnoughSeats,
    Reservation,
    ReservationNotFound,
    Status,
    VersionConflict,
)
from ticketboss.services.group_commit import GroupCommit
from ticketboss.store import queries


@dataclass(frozen=True)
class SeatRequest:
    partner_id: str
    seats: int


def _worth_retrying(exc: BaseException) -> bool:
    """A lost compare-and-swap, or a pooled connection the database dropped (e.g. a restart)."""
    if isinstance(exc, VersionConflict):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class ReservationService:
    """The use cases over one engine. Each write is one transaction, retried whole on conflict.

    Reservations of one event that arrive together in this process are group-committed:
    one read, one compare-and-swap and one multi-row INSERT for the whole batch.
    """

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self._reservations = GroupCommit(self.reserve_batch, settings.group_commit_max_batch)

    def _retrying(self) -> Retrying:
        s = self.settings
        return Retrying(
            retry=retry_if_exception(_worth_retrying),
            # Full jitter: a random wait in [0, min(max, 1 ms * 2^attempt)].
            wait=wait_random_exponential(multiplier=0.001, max=s.cas_backoff_max_seconds),
            stop=stop_after_attempt(s.cas_max_attempts) | stop_after_delay(s.cas_max_seconds),
            reraise=True,
            before_sleep=lambda _state: metrics.CAS_RETRIES.inc(),
        )

    def _with_retries(self, unit_of_work, *args):
        """Run one transaction, retried whole (from a fresh read) while it loses the CAS."""
        try:
            return self._retrying()(unit_of_work, *args)
        except VersionConflict:
            metrics.CAS_EXHAUSTED.inc()
            raise

    def summary(self, event_id: str) -> Event:
        """The event's seats, confirmed reservations and version, as one row read."""
        with self.engine.connect() as conn:
            event = queries.load_event(conn, event_id)
        if event is None:
            raise EventNotFound(event_id)
        return event

    def get(self, reservation_id: UUID) -> Reservation:
        with self.engine.connect() as conn:
            reservation = queries.load_reservation(conn, reservation_id)
        if reservation is None:
            raise ReservationNotFound(reservation_id)
        return reservation

    def reserve(self, event_id: str, partner_id: str, seats: int) -> Reservation:
        """Take `seats` for a partner: NotEnoughSeats if they are not there, VersionConflict
        if the retries ran out."""
        return self._reservations.submit(event_id, SeatRequest(partner_id, seats))

    def reserve_batch(
        self, event_id: str, requests: list[SeatRequest]
    ) -> list[Reservation | NotEnoughSeats]:
        """Commit requests as one batch (retried whole on conflict): an outcome per request,
        in order. The group commit calls it; anyone may."""
        return self._with_retries(self._reserve_batch_once, event_id, requests)

    def _reserve_batch_once(
        self, event_id: str, requests: list[SeatRequest]
    ) -> list[Reservation | NotEnoughSeats] | list[EventNotFound]:
        with self.engine.begin() as conn:
            event = queries.load_event(conn, event_id)
            if event is None:
                return [EventNotFound(event_id) for _ in requests]
            after, refusals = event.reserve_each([r.seats for r in requests])
            now = datetime.now(UTC)
            outcomes = [
                refusal
                or Reservation(uuid4(), event_id, r.partner_id, r.seats, Status.CONFIRMED, now)
                for r, refusal in zip(requests, refusals, strict=True)
            ]
            granted = [o for o in outcomes if isinstance(o, Reservation)]
            if granted:
                queries.compare_and_swap(conn, event, after, len(granted))
                queries.insert_reservations(conn, granted)
        if granted:
            metrics.CAS_COMMITS.inc()
            metrics.RESERVATIONS.inc(len(granted))
        return outcomes

    def cancel(self, reservation_id: UUID) -> None:
        """Cancel a confirmed reservation and return its seats to the pool."""
        self._with_retries(self._cancel_once, reservation_id)
        metrics.CAS_COMMITS.inc()
        metrics.CANCELLATIONS.inc()

    def _cancel_once(self, reservation_id: UUID) -> None:
        with self.engine.begin() as conn:
            reservation = queries.load_reservation(conn, reservation_id)
            if reservation is None or reservation.status is not Status.CONFIRMED:
                raise ReservationNotFound(reservation_id, confirmed_only=True)
            event = queries.load_event(conn, reservation.event_id)
            queries.compare_and_swap(conn, event, event.release(reservation.seats))
            if not queries.mark_cancelled(conn, reservation_id, datetime.now(UTC)):
                # Cancelled by someone else after our read: our event write rolls back too.
                raise VersionConflict(reservation.event_id)
