"""An event's summary as the key that asks may see it: operators the totals and every
allocation; a partner the seats it can actually get, the open pool, and its own allocation.
An event without allocations is summarised as before they existed (one pool: the event)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ticketboss.api.deps import principal
from ticketboss.domain import Allocation, Event, Pool


@dataclass(frozen=True)
class Summary:
    """What the summary schemas dump (NodeSummary: the Node.js fields only)."""

    event_id: str
    name: str
    total_seats: int
    available_seats: int
    reservation_count: int
    version: int
    held_seats: int
    pool: Pool | None = None  # both None: the event has no allocations
    allocations: list[Allocation] | None = None


def seen_by_key(event: Event) -> Summary:
    """The summary for the request's key (AUTH_MODE=open: everyone is an operator)."""
    partner_id = principal().owner()
    if not event.allocations:
        return Summary(
            event.event_id,
            event.name,
            event.total_seats,
            event.available_seats,
            event.reservation_count,
            event.version,
            event.held_seats,
        )
    if partner_id is None:
        available, allocations = event.available_seats, list(event.allocations.values())
        pool = event.pool
    else:
        available = event.available_to(partner_id)
        own = event.allocations.get(partner_id)
        allocations = [own] if own is not None else []
        pool = for_partner(event.pool)
    return Summary(
        event.event_id,
        event.name,
        event.total_seats,
        available,
        event.reservation_count,
        event.version,
        event.held_seats,
        pool,
        sorted(allocations, key=lambda a: a.partner_id),
    )


def for_partner(pool: Pool) -> Pool:
    """What a partner key sees of the pool: only its available seats. Its size, taken and
    held seats, beside the event's total, would tell what the other partners' allocations
    add up to."""
    return replace(pool, seats=None, taken=None, held=None)  # type: ignore[arg-type]
