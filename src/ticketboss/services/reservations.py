"""Reserve and cancel seats with a versioned compare-and-swap, retried by tenacity.

The write path of `POST /api/reservations`, hop by hop:

1. `api/reservations.py` → `api/writes.reserve`: the key's partner, the Idempotency-Key.
2. `ReservationService.reserve` (below): claims the key (`services/idempotency.claim`),
   then queues the change for its event: `GroupCommit.submit(event, change, commit_batch)`.
3. The request that leads its event's queue runs `ReservationService.commit_batch` for the
   whole batch, retried whole by `services/retry.with_retries` when it loses the CAS;
   each attempt is `_commit_batch_once`, one `services/unit_of_work.transaction`:
   - `store/queries.load_event` and `load_confirmed_seats` read;
   - `domain/batch.plan` decides every change of the batch, in order;
   - `store/queries.compare_and_swap` writes the event at the version it read,
     `insert_reservations` the granted rows (**here the reservation is written**),
     `mark_cancelled` the released ones, `record_outcome` the keys' answers;
   - the transaction commits, and every request of the batch gets its outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ticketboss import metrics
from ticketboss.config import Settings
from ticketboss.domain import (
    Event,
    EventNotFound,
    IdempotencyKeyInFlight,
    NotEnoughSeats,
    OutcomeUnknown,
    Reservation,
    ReservationNotFound,
    Status,
    VersionConflict,
)
from ticketboss.domain.batch import (
    CancelRequest,
    Change,
    Confirmed,
    Granted,
    Plan,
    Released,
    SeatRequest,
    plan,
)
from ticketboss.services import idempotency
from ticketboss.services.group_commit import GroupCommit
from ticketboss.services.idempotency import Claim, IdempotencyKey, Kept, Replay
from ticketboss.services.retry import with_retries
from ticketboss.services.unit_of_work import transaction
from ticketboss.store import queries


@dataclass(frozen=True)
class Submitted:
    """A change as the group commit carries it, with the Idempotency-Key claim that its
    answer is written onto beside it (not inside: the domain knows nothing of keys)."""

    change: Change
    claim: Claim | None = None


class _LostClaim(Exception):
    """The claim of the request at `index` in the batch is no longer ours."""

    def __init__(self, index: int):
        super().__init__(index)
        self.index = index


def _answer(change: Change, outcome: object) -> tuple[Kept, UUID | None, str | None] | None:
    """What an Idempotency-Key keeps of an outcome: (kind, reservation id, detail), or None
    for outcomes that are not kept (the key is released and may be used again)."""
    if isinstance(outcome, Reservation):
        return Kept.RESERVED, outcome.reservation_id, None
    if outcome is None and isinstance(change, CancelRequest):
        return Kept.CANCELLED, change.reservation_id, None
    if isinstance(outcome, NotEnoughSeats):
        return Kept.NOT_ENOUGH_SEATS, None, str(outcome)
    if isinstance(outcome, ReservationNotFound):
        return Kept.RESERVATION_NOT_FOUND, None, str(outcome)
    return None


def _event(event_id: str) -> str:
    return f"event '{event_id}'"


class ReservationService:
    """The use cases over one engine. Each write is one transaction, retried whole on conflict.

    Reservations and cancellations of one event that arrive together in this process are
    group-committed: one read, one compare-and-swap, one multi-row INSERT and one UPDATE of
    the cancelled rows for the whole batch.
    """

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self._changes: GroupCommit[Submitted] = GroupCommit(
            settings.group_commit_max_batch,
            interrupted=lambda event_id: OutcomeUnknown(_event(event_id)),
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
        return self._submit(event_id, key, SeatRequest(partner_id, seats, if_versions))

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
        return self._submit(event_id, key, CancelRequest(reservation_id, owner))

    def _submit(self, event_id: str, key: IdempotencyKey | None, change: Change):
        held: Claim | None = None
        if key is not None:
            claimed = idempotency.claim(self.engine, self.settings, key)
            if isinstance(claimed, Replay):
                metrics.IDEMPOTENT_REPLAYS.inc()
                return claimed
            held = claimed
        try:
            # Queued with the changes of this event; whichever request leads the batch runs
            # commit_batch (below) for all of them.
            return self._changes.submit(event_id, Submitted(change, held), self.commit_batch)
        except (VersionConflict, SQLAlchemyError):
            # Nothing was written: let the client's retry use the key afresh. (After an
            # OutcomeUnknown the claim stays: the answer may be on it, or it lapses.)
            if held is not None:
                idempotency.release(self.engine, held)
            raise

    def commit_batch(self, event_id: str, requests: Sequence[Submitted | Change]) -> list[object]:
        """Apply reservations and cancellations of one event in order, as one transaction
        retried whole on conflict: an outcome per request (a Reservation, None for a done
        cancel, or the error to raise). The group commit calls it; anyone may."""
        batch = [r if isinstance(r, Submitted) else Submitted(r) for r in requests]
        lost: dict[int, Exception] = {}
        while True:
            live = [i for i in range(len(batch)) if i not in lost]
            try:
                outcomes = with_retries(
                    self.settings, self._commit_batch_once, event_id, [batch[i] for i in live]
                )
            except _LostClaim as exc:
                # That request's key now belongs to a retry of it, which will answer: this
                # one says "in flight", and the rest of the batch goes on without it.
                index = live[exc.index]
                claim = batch[index].claim
                assert claim is not None  # only a keyed request can lose its claim
                lost[index] = IdempotencyKeyInFlight(claim.key.key)
                continue
            answered = dict(zip(live, outcomes, strict=True))
            return [lost[i] if i in lost else answered[i] for i in range(len(batch))]

    def _commit_batch_once(self, event_id: str, batch: list[Submitted]) -> list[object]:
        """One attempt: read, plan, write, commit."""
        changes = [s.change for s in batch]
        with transaction(self.engine, _event(event_id)) as conn:
            event = queries.load_event(conn, event_id)
            decided = plan(event_id, event, changes, self._confirmed(conn, event, changes))
            outcomes = self._write(conn, event_id, decided)
            self._keep_answers(conn, batch, outcomes)
        if decided.changes:
            self._count(event_id, decided)
        return outcomes

    def _confirmed(self, conn: Connection, event: Event | None, changes) -> dict:
        """The still confirmed reservations that the batch's cancels name."""
        ids = [c.reservation_id for c in changes if isinstance(c, CancelRequest)]
        if event is None or not ids:
            return {}
        found = queries.load_confirmed_seats(conn, event.event_id, ids)
        return {rid: Confirmed(seats, partner) for rid, (seats, partner) in found.items()}

    def _write(self, conn: Connection, event_id: str, decided: Plan) -> list[object]:
        """Write the plan (CAS, new rows, cancelled rows); the outcome of each change: its
        Reservation, None for a cancel, or the domain error that refused it."""
        if not decided.changes:
            return list(decided.outcomes)
        assert decided.before is not None and decided.after is not None  # there were changes
        queries.compare_and_swap(conn, decided.before, decided.after, decided.changes)
        # Stamped after the compare-and-swap, which orders one event's commits: created_at
        # then follows commit order, so paging never skips a late row.
        now = datetime.now(UTC)
        outcomes: list[object] = []
        for decision in decided.outcomes:
            outcome: object = decision
            if isinstance(decision, Granted):
                request = decision.request
                outcome = Reservation(
                    uuid4(), event_id, request.partner_id, request.seats, Status.CONFIRMED, now
                )
            elif isinstance(decision, Released):
                outcome = None
            outcomes.append(outcome)
        granted = [o for o in outcomes if isinstance(o, Reservation)]
        if granted:
            queries.insert_reservations(conn, granted)
        released = decided.released
        if released and queries.mark_cancelled(conn, released, now) != len(released):
            raise VersionConflict(event_id)  # cancelled elsewhere after our read: roll back
        return outcomes

    @staticmethod
    def _count(event_id: str, decided: Plan) -> None:
        metrics.CAS_COMMITS.inc()
        metrics.RESERVATIONS.inc(len(decided.granted))
        metrics.CANCELLATIONS.inc(len(decided.released))
        if decided.after is not None:
            metrics.AVAILABLE_SEATS.labels(event_id).set(decided.after.available_seats)

    def _keep_answers(self, conn, batch: list[Submitted], outcomes: list) -> None:
        """Write each keyed request's answer onto its claim, in the batch's transaction."""
        for index, (submitted, outcome) in enumerate(zip(batch, outcomes, strict=True)):
            held = submitted.claim
            if held is None:
                continue
            answer = _answer(submitted.change, outcome)
            if answer is None:
                queries.delete_claim(conn, held.key.scope, held.key.key, held.owner)
            elif not queries.record_outcome(
                conn, held.key.scope, held.key.key, held.owner, *answer
            ):
                # Our claim lapsed and another request took the key over: roll back, and
                # let commit_batch re-run the batch without this request.
                raise _LostClaim(index)
