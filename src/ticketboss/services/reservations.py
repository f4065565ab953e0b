"""Reserve and cancel seats with a versioned compare-and-swap, retried by tenacity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ticketboss import metrics
from ticketboss.config import Settings
from ticketboss.domain import (
    Event,
    EventNotFound,
    IdempotencyKeyInFlight,
    NotEnoughSeats,
    OutcomeUnknown,
    PreconditionFailed,
    Reservation,
    ReservationNotFound,
    Status,
    VersionConflict,
)
from ticketboss.services import idempotency
from ticketboss.services.group_commit import GroupCommit
from ticketboss.services.idempotency import Claim, IdempotencyKey, Replay
from ticketboss.services.retry import commit, with_retries
from ticketboss.store import queries


@dataclass(frozen=True)
class SeatRequest:
    """Reserve `seats` for a partner; only at one of `if_versions` when given (If-Match)."""

    partner_id: str
    seats: int
    if_versions: frozenset[int] | None = None
    claim: Claim | None = None


@dataclass(frozen=True)
class CancelRequest:
    """Cancel a confirmed reservation; only one of `owner`'s when given (a partner key)."""

    reservation_id: UUID
    claim: Claim | None = None
    owner: str | None = None


Change = SeatRequest | CancelRequest


class _LostClaim(Exception):
    """The claim of the request at `index` in the batch is no longer ours."""

    def __init__(self, index: int):
        super().__init__(index)
        self.index = index


def _answer(request: Change, outcome: object) -> tuple[int, UUID | None, str | None] | None:
    """What an Idempotency-Key keeps of an outcome: (status, reservation id, detail), or None
    for outcomes that are not kept (the key is released and may be used again)."""
    if isinstance(outcome, Reservation):
        return 201, outcome.reservation_id, None
    if outcome is None:
        return 204, request.reservation_id, None
    if isinstance(outcome, NotEnoughSeats):
        return 409, None, str(outcome)
    if isinstance(outcome, ReservationNotFound):
        return 404, None, str(outcome)
    return None


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

    def summary(self, event_id: str) -> Event:
        """The event's seats, confirmed reservations and version, as one row read."""
        with self.engine.connect() as conn:
            event = queries.load_event(conn, event_id)
        if event is None:
            raise EventNotFound(event_id)
        return event

    def get(self, event_id: str, reservation_id: UUID, *, owner: str | None = None) -> Reservation:
        """A reservation of that event, confirmed or cancelled; only one of `owner`'s when
        given (another partner's is not found, exactly as if it did not exist)."""
        with self.engine.connect() as conn:
            reservation = queries.load_reservation(conn, reservation_id)
        if (
            reservation is None
            or reservation.event_id != event_id
            or (owner is not None and reservation.partner_id != owner)
        ):
            raise ReservationNotFound(reservation_id)
        return reservation

    def reserve(
        self,
        event_id: str,
        partner_id: str,
        seats: int,
        *,
        if_versions: frozenset[int] | None = None,
        key: IdempotencyKey | None = None,
    ) -> Reservation | Replay:
        """Take `seats` for a partner: NotEnoughSeats if they are not there,
        PreconditionFailed if the event is not at one of `if_versions`, VersionConflict if
        the retries ran out; with a key already answered, that answer (a Replay)."""
        return self._submit(
            event_id, key, lambda held: SeatRequest(partner_id, seats, if_versions, held)
        )

    def cancel(
        self,
        event_id: str,
        reservation_id: UUID,
        *,
        owner: str | None = None,
        key: IdempotencyKey | None = None,
    ) -> Replay | None:
        """Cancel a confirmed reservation of that event (one of `owner`'s, when given); its
        seats return to the pool."""
        return self._submit(event_id, key, lambda held: CancelRequest(reservation_id, held, owner))

    def _submit(self, event_id: str, key: IdempotencyKey | None, request_for):
        held = None
        if key is not None:
            held = idempotency.claim(self.engine, self.settings, key)
            if isinstance(held, Replay):
                metrics.IDEMPOTENT_REPLAYS.inc()
                return held
        try:
            return self._changes.submit(event_id, request_for(held))
        except (VersionConflict, SQLAlchemyError):
            # Nothing was written: let the client's retry use the key afresh. (After an
            # OutcomeUnknown the claim stays: the answer may be on it, or it lapses.)
            if held is not None:
                idempotency.release(self.engine, held)
            raise

    def commit_batch(self, event_id: str, requests: list[Change]) -> list[object]:
        """Apply reservations and cancellations of one event in order, as one transaction
        retried whole on conflict: an outcome per request (a Reservation, None for a done
        cancel, or the error to raise). The group commit calls it; anyone may."""
        lost: dict[int, Exception] = {}
        while True:
            live = [i for i in range(len(requests)) if i not in lost]
            try:
                outcomes = with_retries(
                    self.settings, self._commit_batch_once, event_id, [requests[i] for i in live]
                )
            except _LostClaim as exc:
                # That request's key now belongs to a retry of it, which will answer: this
                # one says "in flight", and the rest of the batch goes on without it.
                index = live[exc.index]
                lost[index] = IdempotencyKeyInFlight(requests[index].claim.key.key)
                continue
            answered = dict(zip(live, outcomes, strict=True))
            return [lost[i] if i in lost else answered[i] for i in range(len(requests))]

    def _commit_batch_once(self, event_id: str, requests: list[Change]) -> list[object]:
        with self.engine.connect() as conn:  # rolls back unless commit() ran
            event = queries.load_event(conn, event_id)
            if event is None:
                outcomes = [EventNotFound(event_id) for _ in requests]
                self._keep_answers(conn, event_id, requests, outcomes)
                commit(conn, event_id)
                return outcomes
            cancellable = queries.load_confirmed_seats(
                conn, event_id, [r.reservation_id for r in requests if isinstance(r, CancelRequest)]
            )
            current, outcomes, granted, cancelled = event, [], [], []
            for request in requests:
                # Each request sees the event as the requests ahead of it in the batch left it.
                version = event.version + len(granted) + len(cancelled)
                if isinstance(request, CancelRequest):
                    found = cancellable.get(request.reservation_id)
                    if found is None or request.owner not in (None, found[1]):
                        # Another partner's reservation is not found, as if it did not exist.
                        refused = ReservationNotFound(request.reservation_id, confirmed_only=True)
                        outcomes.append(refused)
                        continue
                    # A second cancel of the same reservation in this batch finds nothing.
                    del cancellable[request.reservation_id]
                    current = current.release(found[0])
                    cancelled.append(request.reservation_id)
                    outcomes.append(None)
                    continue
                if request.if_versions is not None and version not in request.if_versions:
                    outcomes.append(PreconditionFailed(event_id, version))
                    continue
                try:
                    current = current.reserve(request.seats)
                except NotEnoughSeats as refused:
                    outcomes.append(refused)
                    continue
                granted.append(len(outcomes))
                outcomes.append(request)  # becomes its Reservation once stamped, below
            if granted or cancelled:
                queries.compare_and_swap(conn, event, current, len(granted) + len(cancelled))
                # Stamped after the compare-and-swap, which orders one event's commits:
                # created_at then follows commit order, so paging never skips a late row.
                now = datetime.now(UTC)
                for i in granted:
                    seat_request = outcomes[i]
                    outcomes[i] = Reservation(
                        uuid4(),
                        event_id,
                        seat_request.partner_id,
                        seat_request.seats,
                        Status.CONFIRMED,
                        now,
                    )
                if granted:
                    queries.insert_reservations(conn, [outcomes[i] for i in granted])
                if cancelled and queries.mark_cancelled(conn, cancelled, now) != len(cancelled):
                    # Cancelled elsewhere after our read: our whole write rolls back.
                    raise VersionConflict(event_id)
            self._keep_answers(conn, event_id, requests, outcomes)
            commit(conn, event_id)
        if granted or cancelled:
            metrics.CAS_COMMITS.inc()
            metrics.RESERVATIONS.inc(len(granted))
            metrics.CANCELLATIONS.inc(len(cancelled))
            metrics.AVAILABLE_SEATS.labels(event_id).set(current.available_seats)
        return outcomes

    def _keep_answers(self, conn, event_id: str, requests: list[Change], outcomes: list) -> None:
        """Write each keyed request's answer onto its claim, in the batch's transaction."""
        for index, (request, outcome) in enumerate(zip(requests, outcomes, strict=True)):
            held = request.claim
            if held is None:
                continue
            answer = _answer(request, outcome)
            if answer is None:
                queries.delete_claim(conn, held.key.scope, held.key.key, held.owner)
            elif not queries.record_outcome(
                conn, held.key.scope, held.key.key, held.owner, *answer
            ):
                # Our claim lapsed and another request took the key over: roll back, and
                # let commit_batch re-run the batch without this request.
                raise _LostClaim(index)
