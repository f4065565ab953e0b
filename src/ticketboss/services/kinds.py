"""Every kind of change in one table: its request, what the planner's rule decides when it
goes through (the rule itself is registered beside the request, domain/batch.RULES), what an
Idempotency-Key keeps of it, and how the API answers it; and every refusal a key keeps.

Kept values are stored in idempotency_keys: an on-disk format. Every value ever written is
a member of Kept, and tests/e2e/test_stored_answers.py replays each one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ticketboss.domain import (
    HoldExpired,
    HoldLimitReached,
    NotEnoughSeats,
    NotHeld,
    PoolLimitReached,
    ReservationNotFound,
    Status,
)
from ticketboss.domain.batch import (
    Allot,
    Allotted,
    CancelRequest,
    Confirmed,
    ConfirmRequest,
    Extended,
    ExtendRequest,
    Granted,
    HoldRequest,
    Released,
    Resize,
    Resized,
    SeatRequest,
    Tidied,
    Tidy,
    Unallot,
    Unallotted,
)
from ticketboss.domain.errors import DomainError
from ticketboss.services.idempotency import Kept


@dataclass(frozen=True)
class Kind:
    """A kind of change."""

    request: type  # the change as the planner takes it (domain.batch)
    done: type  # the planner's outcome when it goes through
    kept: Kept | None  # what an Idempotency-Key keeps of it done; None: it takes no key
    status: int  # the HTTP status of its answer when done
    shows: Status | None  # the reservation status that answer says (None: no reservation)


KINDS: dict[type, Kind] = {
    kind.request: kind
    for kind in (
        Kind(SeatRequest, Granted, Kept.RESERVED, 201, Status.CONFIRMED),
        Kind(HoldRequest, Granted, Kept.HELD, 201, Status.HELD),
        Kind(ConfirmRequest, Confirmed, Kept.CONFIRMED, 200, Status.CONFIRMED),
        Kind(ExtendRequest, Extended, Kept.EXTENDED, 200, Status.HELD),
        Kind(CancelRequest, Released, Kept.CANCELLED, 204, None),
        Kind(Resize, Resized, None, 200, None),
        Kind(Allot, Allotted, None, 200, None),  # 201 when it created the allocation
        Kind(Unallot, Unallotted, None, 204, None),
        Kind(Tidy, Tidied, None, 200, None),  # a summary's: it answers the event
    )
}
# The kind of each done answer a key keeps.
DONE: dict[Kept, Kind] = {kind.kept: kind for kind in KINDS.values() if kind.kept is not None}
# The refusals a key keeps, so that a retry is refused the same way (the API's one error
# table says each in HTTP); other refusals release the key.
REFUSALS: dict[Kept, type[DomainError]] = {
    Kept.NOT_ENOUGH_SEATS: NotEnoughSeats,
    Kept.RESERVATION_NOT_FOUND: ReservationNotFound,
    Kept.HOLD_EXPIRED: HoldExpired,
    Kept.NOT_HELD: NotHeld,
    Kept.HOLD_LIMIT_REACHED: HoldLimitReached,
    Kept.POOL_LIMIT_REACHED: PoolLimitReached,
}
KEPT_REFUSAL: dict[type[DomainError], Kept] = {error: kept for kept, error in REFUSALS.items()}
