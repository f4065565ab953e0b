"""Reserve, hold, confirm, extend and cancel seats with a versioned compare-and-swap,
retried by tenacity.

The write path of `POST /api/reservations`, hop by hop (holds, confirms, extends and
cancels take the same path):

1. `api/reservations.py` → `api/writes.reserve`: the key's partner, the Idempotency-Key.
2. `ReservationService.reserve` (below): claims the key (`services/idempotency.claim`),
   then queues the change for its event: `GroupCommit.submit(event, change, commit_batch)`.
3. The request that leads its event's queue runs `ReservationService.commit_batch` for the
   whole batch: one loop (`services/retry.attempts`, tenacity) runs attempts until one
   commits, backing off after a lost swap and at once after a lost claim; each attempt is
   `_attempt`, one `services/unit_of_work.transaction`:
   - `_swap`: `_read` (`store/queries.load_event_at` reads the event and its partners'
     allocations with the database's clock, `load_named` the reservations the changes name,
     `load_lapsed` the event's expired holds, only when the event's row says some may have
     lapsed, and `load_usage` what the holding partners hold now, for their limits), then
     `domain/batch.plan` decides every change of the batch, in order (one rule per kind of
     change), then `store/queries.compare_and_swap` writes the event at the version it
     read, again at once from a fresh read when another batch has just committed;
   - `_write`: `write_allocations` the allocations the batch changed,
     `insert_reservations` the granted rows (**here the reservation is written**), and
     `mark_*` the cancelled, confirmed, extended and expired ones;
   - `services/outbox`: the batch's notifications, one `insert_notifications` for all;
   - `_keep_answers`: `record_outcome` writes the keys' answers;
   - the transaction commits, and every request of the batch gets its outcome.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast
from uuid import UUID, uuid4

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ticketboss import deadline, metrics
from ticketboss.config import Settings
from ticketboss.domain import (
    Allocation,
    DeadlinePassed,
    Event,
    EventNotFound,
    HoldLimitReached,
    IdempotencyKeyInFlight,
    NotEnoughSeats,
    OutcomeUnknown,
    PoolLimitReached,
    Reservation,
    ReservationNotFound,
    Status,
    VersionConflict,
)
from ticketboss.domain.batch import (
    Allot,
    Allotted,
    Answers,
    CancelRequest,
    Change,
    Confirmed,
    ConfirmRequest,
    Extended,
    ExtendRequest,
    Granted,
    HoldRequest,
    Outcome,
    Plan,
    Read,
    Released,
    Resize,
    Resized,
    SeatRequest,
    Tidied,
    Tidy,
    Unallot,
    Unallotted,
    plan,
)
from ticketboss.domain.errors import DomainError
from ticketboss.services import idempotency, outbox
from ticketboss.services.clock import Clock
from ticketboss.services.group_commit import GroupCommit
from ticketboss.services.idempotency import Claim, IdempotencyKey, Kept, Replay
from ticketboss.services.kinds import KEPT_REFUSAL, KINDS
from ticketboss.services.retry import RetryAtOnce, attempts
from ticketboss.services.unit_of_work import connection, transaction
from ticketboss.store import queries

# What a change comes to once it went through, by its kind (domain.batch.Answers): the
# reservation it made or changed, None for a cancel, the event for a resize or an
# allocation's deletion, Allotted, Tidied.
Answer = Reservation | Event | Tidied | Allotted | None
A = TypeVar("A")


@dataclass(frozen=True)
class Submitted:
    """A change as the group commit carries it, with the Idempotency-Key claim that its
    answer is written onto beside it (not inside: the domain knows nothing of keys)."""

    change: Answers[Any]
    claim: Claim | None = None


class _LostClaim(RetryAtOnce):
    """The claim of the request at `index` in the batch (its Idempotency-Key `key`) is no
    longer ours."""

    def __init__(self, index: int, key: str):
        super().__init__(index, key)
        self.index, self.key = index, key


class _Stale(enum.Enum):
    """What `_read` returns when the rows it read are newer than the event it read."""

    STALE = "stale"


def _answer(change: Answers[Any], outcome: Answer | DomainError) -> Replay | None:
    """What an Idempotency-Key keeps of an outcome, or None for outcomes that are not kept
    (the key is released and may be used again)."""
    kind = KINDS[type(change)]
    if isinstance(outcome, Reservation) and kind.kept is not None:
        return Replay(kind.kept, outcome.reservation_id, outcome.seats, outcome.expires_at)
    if outcome is None and isinstance(change, CancelRequest):
        return Replay(Kept.CANCELLED, change.reservation_id)
    kept = KEPT_REFUSAL.get(type(outcome)) if isinstance(outcome, DomainError) else None
    return Replay(kept, detail=str(outcome)) if kept else None


def _event(event_id: str) -> str:
    return f"event '{event_id}'"


class ReservationService:
    """The use cases over one engine. Each write is one transaction, retried whole on conflict.

    Changes of one event that arrive together in this process are group-committed: one
    read, one compare-and-swap, one multi-row INSERT and one UPDATE per kind of change for
    the whole batch.
    """

    def __init__(self, engine: Engine, settings: Settings, clock: Clock | None = None):
        self.engine = engine
        self.settings = settings
        self.clock = clock or Clock()
        self._longest = timedelta(seconds=settings.hold_max_seconds)
        self._max_held = settings.partner_max_held_seats or None
        self._pool_limit = settings.partner_max_pool_seats or None
        self._changes: GroupCommit[Submitted, Answer] = GroupCommit(
            settings.group_commit_max_batch,
            interrupted=lambda event_id: OutcomeUnknown(_event(event_id)),
        )
        # Summaries of one event share a row read the way changes share a commit: a summary
        # only ever joins a read that starts after it arrived, so it never shows a state
        # older than itself (a partner that got its 201 sees its seats gone).
        self._reads: GroupCommit[None, tuple[Event, datetime]] = GroupCommit(
            settings.group_commit_max_batch, interrupted=VersionConflict
        )
        # Called after every commit that wrote notifications: this worker's dispatcher (if
        # it runs one) looks at once instead of at its next poll.
        self.wake_dispatcher: Callable[[], None] = lambda: None

    def summary(self, event_id: str) -> Event:
        """The event's seats, holds, confirmed reservations and version: one row read, unless
        a hold lapsed since the last write (its seats are then reclaimed first, by a write
        of their own, so that the answer and its version agree)."""
        event, database_now = self._reads.submit(event_id, None, self._read_events)
        if not event.has_lapsed_holds(self.clock.now(database_now)):
            return event
        return self._apply(event_id, Tidy()).event

    def _read_events(
        self, event_id: str, readers: list[None]
    ) -> list[tuple[Event, datetime] | EventNotFound]:
        """One read of the event for every summary waiting on it: (event, database time)."""
        with connection(self.engine) as conn:
            read = queries.load_event_at(conn, event_id)
        return [read or EventNotFound(event_id) for _ in readers]

    def get(self, event_id: str, reservation_id: UUID, *, owner: str | None) -> Reservation:
        """A reservation or hold of that event, as it stands now; only one of `owner`'s
        unless it is EVERY_PARTNER (another partner's is not found, exactly as if it did not
        exist)."""
        with connection(self.engine) as conn:
            reservation = queries.load_reservation(conn, reservation_id)
            if reservation is not None and reservation.status is Status.HELD:
                reservation = reservation.seen_at(self.now(conn))
        if (
            reservation is None
            or reservation.event_id != event_id
            or (owner is not None and reservation.partner_id != owner)
        ):
            raise ReservationNotFound(reservation_id)
        return reservation

    def now(self, conn: Connection):
        """The time by which holds are judged (the database's clock)."""
        return self.clock.now(queries.read_database_now(conn))

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
        change = SeatRequest(partner_id, seats, if_versions, self._pool_limit)
        return self._submit(event_id, key, change)

    def hold(
        self,
        event_id: str,
        partner_id: str,
        seats: int,
        ttl_seconds: int | None = None,
        *,
        key: IdempotencyKey | None = None,
    ) -> Reservation | Replay:
        """Hold `seats` for a partner for `ttl_seconds` (HOLD_TTL_SECONDS by default, at
        most HOLD_MAX_SECONDS); NotEnoughSeats as reserve."""
        ttl = timedelta(seconds=ttl_seconds or self.settings.hold_ttl_seconds)
        change = HoldRequest(
            partner_id, seats, ttl, self._longest, self._max_held, self._pool_limit
        )
        return self._submit(event_id, key, change)

    def confirm(
        self,
        event_id: str,
        reservation_id: UUID,
        *,
        owner: str | None,
        key: IdempotencyKey | None = None,
    ) -> Reservation | Replay:
        """A live hold becomes a confirmed reservation (a confirmed one is returned as is):
        HoldExpired after its time, NotHeld once released or cancelled."""
        return self._submit(event_id, key, ConfirmRequest(reservation_id, owner))

    def extend(
        self,
        event_id: str,
        reservation_id: UUID,
        ttl_seconds: int,
        *,
        owner: str | None,
        key: IdempotencyKey | None = None,
    ) -> Reservation | Replay:
        """A live hold ends `ttl_seconds` from now, but never later than HOLD_MAX_SECONDS
        after its creation: HoldExpired after its time, NotHeld if it is not a hold."""
        change = ExtendRequest(reservation_id, timedelta(seconds=ttl_seconds), self._longest, owner)
        return self._submit(event_id, key, change)

    def cancel(
        self,
        event_id: str,
        reservation_id: UUID,
        *,
        owner: str | None,
        key: IdempotencyKey | None = None,
    ) -> Replay | None:
        """Cancel a confirmed reservation or release a live hold of that event (one of
        `owner`'s, when given); its seats return to the pool."""
        return self._submit(event_id, key, CancelRequest(reservation_id, owner))

    def resize(
        self,
        event_id: str,
        *,
        name: str | None = None,
        total_seats: int | None = None,
        if_versions: frozenset[int] | None = None,
    ) -> Event:
        """Rename and/or resize, as one change (the version rises by one):
        PreconditionFailed if the event is not at one of `if_versions`, SeatsAlreadyReserved
        if the new total is below the seats reserved or held."""
        return self._apply(event_id, Resize(name, total_seats, if_versions))

    def allot(
        self,
        event_id: str,
        partner_id: str,
        seats: int,
        *,
        overflow: bool = False,
        max_held_seats: int | None = None,
        if_versions: frozenset[int] | None = None,
    ) -> Allotted:
        """Create, resize or reopen the partner's allocation (the version rises by one unless
        it already was exactly so): AllocationInUse below its taken and held seats,
        AllocationTooLarge beyond what the pool can give, TooManyAllocations,
        PreconditionFailed."""
        change = Allot(partner_id, seats, overflow, max_held_seats, if_versions)
        return self._apply(event_id, change)

    def unallot(
        self, event_id: str, partner_id: str, *, if_versions: frozenset[int] | None = None
    ) -> Event:
        """Delete the partner's allocation: its unused seats are the pool's at once, those
        still taken or held as they come back. AllocationNotFound, PreconditionFailed."""
        return self._apply(event_id, Unallot(partner_id, if_versions))

    def sweep(self) -> int:
        """Expire every lapsed hold (tidiness only: writes reclaim them anyway); returns how
        many were expired."""
        with connection(self.engine) as conn:
            lapsed = queries.events_with_lapsed_holds(conn, self.now(conn))
        expired = 0
        for event_id in lapsed:
            try:
                # A request's time, as if it were one: a batch it leads may carry requests
                # queued behind it, which must not run past theirs.
                with deadline.within(self.settings.request_deadline_seconds):
                    expired += self._apply(event_id, Tidy()).expired
            except (VersionConflict, OutcomeUnknown, DeadlinePassed, EventNotFound):
                continue  # a hot event: its own writes reclaim its holds, and the next sweep
        return expired

    def _apply(self, event_id: str, change: Answers[A]) -> A:
        """A change no Idempotency-Key names (a resize, a tidy), with its batch."""
        # The batch answers each change as its kind says (domain.batch.Answers).
        return cast(A, self._changes.submit(event_id, Submitted(change), self.commit_batch))

    def _submit(self, event_id: str, key: IdempotencyKey | None, change: Answers[A]) -> A | Replay:
        """A change under the request's Idempotency-Key: its stored answer, or the change
        with its batch and the answer written onto the key's claim."""
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
            answer = self._changes.submit(event_id, Submitted(change, held), self.commit_batch)
            return cast(A, answer)  # as its kind says (domain.batch.Answers)
        except (VersionConflict, DeadlinePassed, SQLAlchemyError):
            # Nothing was written: let the client's retry use the key afresh. (After an
            # OutcomeUnknown the claim stays: the answer may be on it, or it lapses.)
            if held is not None:
                idempotency.release_if_possible(self.engine, held)
            raise

    def commit_batch(
        self, event_id: str, requests: Sequence[Submitted | Change]
    ) -> list[Answer | DomainError]:
        """Apply changes of one event in order, as one transaction retried whole (from a
        fresh read) while it loses the CAS: an outcome per request (a Reservation, None for a
        done cancel, the event or the Tidied event, or the error to raise). The group commit
        calls it; anyone may."""
        batch = [r if isinstance(r, Submitted) else Submitted(r) for r in requests]
        answers: dict[int, Answer | DomainError] = {}
        live = list(range(len(batch)))
        try:
            for attempt in attempts(self.settings):
                with attempt:
                    try:
                        outcomes = self._attempt(event_id, [batch[i] for i in live])
                    except _LostClaim as lost:
                        # That request's key now belongs to a retry of it, which will answer:
                        # this one says "in flight", and the rest go on without it, at once.
                        answers[live.pop(lost.index)] = IdempotencyKeyInFlight(lost.key)
                        raise
                    answers.update(zip(live, outcomes, strict=True))
        except VersionConflict:
            metrics.CAS_EXHAUSTED.inc()
            raise
        return [answers[i] for i in range(len(batch))]

    def _attempt(self, event_id: str, batch: list[Submitted]) -> list[Answer | DomainError]:
        """One transaction: read, plan, swap, write, commit. A compare-and-swap lost to a
        batch that has just committed is tried again at once, in the same transaction, from a
        fresh read: at READ COMMITTED each statement sees the latest commit, the lost swap
        wrote nothing and holds no lock, and the winner is done, so no rollback or backoff
        is needed. After CAS_SWAPS_PER_TRANSACTION such losses: VersionConflict (the caller
        rolls back and backs off)."""
        changes = [s.change for s in batch]
        with transaction(self.engine, _event(event_id)) as conn:
            read, decided = self._swap(conn, event_id, changes)
            outcomes = self._write(conn, event_id, read, decided)
            if decided.changes:
                assert read is not None  # there were changes: the event was read
                told = outbox.notes(read, changes, decided, outcomes)
                queries.insert_notifications(conn, outbox.rows(told, read.now))
            self._keep_answers(conn, batch, outcomes)
        metrics.GROUP_COMMIT_BATCH.observe(len(batch))
        if decided.changes:
            self.wake_dispatcher()
            self._count(event_id, decided)
        self._count_refusals(decided)
        return outcomes

    def _swap(
        self, conn: Connection, event_id: str, changes: list[Answers[Any]]
    ) -> tuple[Read | None, Plan]:
        """The batch planned on a fresh read and its event's row swapped, each lost swap
        counted once."""
        for _ in range(self.settings.cas_swaps_per_transaction):
            read = self._read(conn, event_id, changes)
            if read is not _Stale.STALE:
                decided = plan(event_id, read, changes)
                if self._swapped(conn, decided):
                    return read, decided
            metrics.CAS_RETRIES.inc()
        raise VersionConflict(event_id)

    @staticmethod
    def _swapped(conn: Connection, decided: Plan) -> bool:
        """Write the event's row as the plan leaves it, at the version read; False if another
        batch committed first (nothing was written). A plan that writes nothing succeeds."""
        if not decided.writes:
            return True
        assert decided.before is not None and decided.after is not None
        return queries.compare_and_swap(conn, decided.before, decided.after, decided.changes)

    def _read(
        self, conn: Connection, event_id: str, changes: list[Answers[Any]]
    ) -> Read | _Stale | None:
        """The event at the database's time, the reservations the changes name, and the
        lapsed holds when the event's row says there may be some; None when there is no such
        event, STALE when the rows read are newer than the event (a lost swap)."""
        found = queries.load_event_at(conn, event_id)
        if found is None:
            return None
        event, database_now = found
        now = self.clock.now(database_now)
        ids = [
            c.reservation_id
            for c in changes
            if isinstance(c, CancelRequest | ConfirmRequest | ExtendRequest)
        ]
        named = queries.load_named(conn, event_id, ids)
        lapsed = queries.load_lapsed(conn, event_id, now) if event.has_lapsed_holds(now) else None
        limited = self._limited(changes)
        usage = {}
        if limited:
            pool = self._pool_limit is not None
            usage = queries.load_usage(conn, event_id, limited, now, pool=pool)
        # Each statement sees the database as of its own start (READ COMMITTED): rows read
        # after the event may already show a change committed since. Every such change
        # raised the version, so an unchanged version proves the reads agree; a moved one is
        # a lost swap like any other (the hot path, reserving, reads no rows).
        if (ids or lapsed or limited) and queries.load_version(conn, event_id) != event.version:
            return _Stale.STALE
        return Read(event, now, named, lapsed, usage)

    def _limited(self, changes: list[Answers[Any]]) -> list[str]:
        """The partners whose usage the batch's limits need: those holding (the hold limit),
        and with PARTNER_MAX_POOL_SEATS, every partner taking seats."""
        partners: dict[str, None] = {}
        for c in changes:
            if isinstance(c, HoldRequest) or (
                isinstance(c, SeatRequest) and c.pool_limit is not None
            ):
                partners[c.partner_id] = None
        return list(partners)

    def _write(
        self, conn: Connection, event_id: str, read: Read | None, decided: Plan
    ) -> list[Answer | DomainError]:
        """Write the plan's rows (the event's is swapped); the outcome of each change: its
        Reservation, None for a cancel, the Tidied event, or the domain error that refused
        it. A row that changed since the read rolls the batch back for a retry."""
        outcomes = [_outcome(event_id, read, decision) for decision in decided.outcomes]
        if not decided.writes:
            return outcomes
        assert read is not None  # there were changes: the event was read (and swapped)
        assert decided.before is not None and decided.after is not None
        before, after = decided.before.allocations, decided.after.allocations
        if before is not after:
            queries.write_allocations(conn, event_id, before, after)
        if decided.expired:
            _all_or_conflict(event_id, decided.expired, queries.mark_expired(conn, decided.expired))
        granted = [
            o
            for d, o in zip(decided.outcomes, outcomes, strict=True)
            if isinstance(d, Granted) and isinstance(o, Reservation)
        ]
        if granted:
            queries.insert_reservations(conn, granted)
        released = [d.reservation.reservation_id for d in decided.of(Released)]
        if released:
            _all_or_conflict(event_id, released, queries.mark_cancelled(conn, released, read.now))
        confirmed = [d.reservation.reservation_id for d in decided.of(Confirmed) if d.written]
        if confirmed:
            _all_or_conflict(event_id, confirmed, queries.mark_confirmed(conn, confirmed))
        for extended in decided.of(Extended):
            hold = extended.reservation
            if not queries.extend_hold(conn, hold.reservation_id, hold.expires_at):
                metrics.CAS_RETRIES.inc()
                raise VersionConflict(event_id)
        return outcomes

    @staticmethod
    def _count(event_id: str, decided: Plan) -> None:
        metrics.CAS_COMMITS.inc()
        granted = decided.of(Granted)
        holds = sum(isinstance(g.request, HoldRequest) for g in granted)
        metrics.RESERVATIONS.inc(len(granted) - holds)
        metrics.HOLDS_CREATED.inc(holds)
        released = decided.of(Released)
        held = sum(r.reservation.status is Status.HELD for r in released)
        metrics.CANCELLATIONS.inc(len(released) - held)
        metrics.HOLDS_RELEASED.inc(held)
        metrics.HOLDS_CONFIRMED.inc(sum(c.written for c in decided.of(Confirmed)))
        metrics.HOLDS_EXPIRED.inc(len(decided.expired))
        if decided.after is not None:
            after = decided.after
            metrics.AVAILABLE_SEATS.labels(event_id).set(after.available_seats)
            metrics.HELD_SEATS.labels(event_id).set(after.held_seats)
            before = decided.before.allocations if decided.before is not None else {}
            if before or after.allocations:
                _count_allocations(event_id, before, after)

    @staticmethod
    def _count_refusals(decided: Plan) -> None:
        for outcome in decided.outcomes:
            if isinstance(outcome, NotEnoughSeats):
                metrics.REFUSALS.labels(f"not-enough-seats:{outcome.bucket}").inc()
            elif isinstance(outcome, HoldLimitReached):
                metrics.REFUSALS.labels("hold-limit").inc()
            elif isinstance(outcome, PoolLimitReached):
                metrics.REFUSALS.labels("pool-limit").inc()

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
                conn,
                held.key.scope,
                held.key.key,
                held.owner,
                answer.kind.value,
                answer.reservation_id,
                answer.seats,
                answer.held_until,
                answer.detail,
            ):
                # Our claim lapsed and another request took the key over: roll back, and
                # let commit_batch re-run the batch without this request.
                raise _LostClaim(index, held.key.key)


def _outcome(event_id: str, read: Read | None, decision: Outcome) -> Answer | DomainError:
    """A decision as the service answers it: the Reservation a grant creates (stamped with
    the database's time of the read, which follows commit order: the CAS orders one
    event's batches), the reservation a confirm or extend leaves, None for a cancel, the
    Tidied decision, or the refusal."""
    if isinstance(decision, Granted):
        assert read is not None
        request, expires_at = decision.request, decision.expires_at
        status = Status.CONFIRMED if expires_at is None else Status.HELD
        return Reservation(
            uuid4(),
            event_id,
            request.partner_id,
            request.seats,
            status,
            read.now,
            expires_at=expires_at,
            allocated_seats=decision.allocated,
        )
    if isinstance(decision, Confirmed | Extended):
        return decision.reservation
    if isinstance(decision, Resized | Unallotted):
        return decision.event
    if isinstance(decision, Released):
        return None
    return decision


def _count_allocations(event_id: str, before: Mapping[str, Allocation], after: Event) -> None:
    """The allocations' gauges, for those the batch changed (a deleted one reads 0)."""
    metrics.POOL_AVAILABLE_SEATS.labels(event_id).set(after.pool_available)
    for partner_id in set(before) | set(after.allocations):
        now = after.allocations.get(partner_id)
        if now is not None and now == before.get(partner_id):
            continue
        figures = (now.seats, now.taken, now.held, now.available) if now else (0, 0, 0, 0)
        for figure, value in zip(("seats", "taken", "held", "available"), figures, strict=True):
            metrics.ALLOCATION_SEATS.labels(event_id, partner_id, figure).set(value)


def _all_or_conflict(event_id: str, ids: list[UUID], changed: int) -> None:
    if changed != len(ids):
        metrics.CAS_RETRIES.inc()  # a lost race like a lost swap, counted once, here
        raise VersionConflict(event_id)  # changed elsewhere after our read: roll back
