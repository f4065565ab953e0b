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
    OutcomeUnknown,
    Reservation,
    ReservationNotFound,
    Status,
    VersionConflict,
)
from ticketboss.services.group_commit import GroupCommit
from ticketboss.store import queries


@dataclass(frozen=True)
class SeatRequest:
    """Reserve `seats` for a partner."""

    partner_id: str
    seats: int


@dataclass(frozen=True)
class CancelRequest:
    """Cancel a confirmed reservation."""

    reservation_id: UUID


Change = SeatRequest | CancelRequest


def _worth_retrying(exc: BaseException) -> bool:
    """A lost compare-and-swap, or a pooled connection the database dropped (e.g. a restart)
    before we asked it to commit. Never an error of the COMMIT itself (OutcomeUnknown)."""
    if isinstance(exc, VersionConflict):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _commit(conn, event_id: str) -> None:
    """COMMIT; if the connection fails now, the changes may or may not have landed."""
    try:
        conn.commit()
    except DBAPIError as exc:
        raise OutcomeUnknown(event_id) from exc


class ReservationService:
    """The use cases over one engine. Each write is one transaction, retried whole on conflict.

    Reservations and cancellations of one event that arrive together in this process are
    group-committed: one read, one compare-and-swap, one multi-row INSERT and one UPDATE of
    the cancelled rows for the whole batch.
    """

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self._changes = GroupCommit(
            self.commit_batch, settings.group_commit_max_batch, interrupted=OutcomeUnknown
        )

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

    def get(self, event_id: str, reservation_id: UUID) -> Reservation:
        """A reservation of that event, confirmed or cancelled."""
        with self.engine.connect() as conn:
            reservation = queries.load_reservation(conn, reservation_id)
        if reservation is None or reservation.event_id != event_id:
            raise ReservationNotFound(reservation_id)
        return reservation

    def reserve(self, event_id: str, partner_id: str, seats: int) -> Reservation:
        """Take `seats` for a partner: NotEnoughSeats if they are not there, VersionConflict
        if the retries ran out."""
        return self._changes.submit(event_id, SeatRequest(partner_id, seats))

    def cancel(self, event_id: str, reservation_id: UUID) -> None:
        """Cancel a confirmed reservation of that event; its seats return to the pool."""
        self._changes.submit(event_id, CancelRequest(reservation_id))

    def commit_batch(self, event_id: str, requests: list[Change]) -> list[object]:
        """Apply reservations and cancellations of one event in order, as one transaction
        retried whole on conflict: an outcome per request (a Reservation, None for a done
        cancel, or the error to raise). The group commit calls it; anyone may."""
        return self._with_retries(self._commit_batch_once, event_id, requests)

    def _commit_batch_once(self, event_id: str, requests: list[Change]) -> list[object]:
        now = datetime.now(UTC)
        with self.engine.connect() as conn:  # rolls back unless _commit() ran
            event = queries.load_event(conn, event_id)
            if event is None:
                return [EventNotFound(event_id) for _ in requests]
            cancellable = queries.load_confirmed_seats(
                conn, event_id, [r.reservation_id for r in requests if isinstance(r, CancelRequest)]
            )
            current, outcomes, granted, cancelled = event, [], [], []
            for request in requests:
                if isinstance(request, CancelRequest):
                    # pop: a second cancel of the same reservation in this batch finds nothing.
                    seats = cancellable.pop(request.reservation_id, None)
                    if seats is None:
                        refused = ReservationNotFound(request.reservation_id, confirmed_only=True)
                        outcomes.append(refused)
                        continue
                    current = current.release(seats)
                    cancelled.append(request.reservation_id)
                    outcomes.append(None)
                    continue
                try:
                    current = current.reserve(request.seats)
                except NotEnoughSeats as refused:
                    outcomes.append(refused)
                    continue
                reservation = Reservation(
                    uuid4(), event_id, request.partner_id, request.seats, Status.CONFIRMED, now
                )
                granted.append(reservation)
                outcomes.append(reservation)
            if granted or cancelled:
                queries.compare_and_swap(conn, event, current, len(granted) + len(cancelled))
                if granted:
                    queries.insert_reservations(conn, granted)
                if cancelled and queries.mark_cancelled(conn, cancelled, now) != len(cancelled):
                    # Cancelled elsewhere after our read: our whole write rolls back.
                    raise VersionConflict(event_id)
                _commit(conn, event_id)
        if granted or cancelled:
            metrics.CAS_COMMITS.inc()
            metrics.RESERVATIONS.inc(len(granted))
            metrics.CANCELLATIONS.inc(len(cancelled))
        return outcomes
