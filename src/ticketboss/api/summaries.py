"""An event's summary as the key that asks may see it: operators the totals and every
allocation; a partner the seats it can actually get, the open pool, and its own allocation.
An event without allocations is summarised as before they existed (one pool: the event)."""

from __future__ import annotations

from ticketboss.api.deps import principal
from ticketboss.api.views import Summary, for_partner, summarise
from ticketboss.domain import Event


def seen_by_key(event: Event) -> Summary:
    """The summary for the request's key (AUTH_MODE=open: everyone is an operator)."""
    return summarise(event, principal().owner())


__all__ = ["Summary", "for_partner", "seen_by_key"]
