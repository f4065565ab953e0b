"""How the API shows each object, as plain data: a summary as the key that asks may see it,
and a notification's `data` (services/outbox.py writes what these dump). No Flask here, so
that the outbox, the feed and the dispatcher show an object exactly as its route does."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson
from marshmallow import Schema, fields

from ticketboss.api import schemas
from ticketboss.domain import Allocation, Event, Pool, Reservation
from ticketboss.domain.notifications import TYPES, Type


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


def summarise(event: Event, partner_id: str | None) -> Summary:
    """The summary for a partner (None: an operator, or everyone with AUTH_MODE=open)."""
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


_RESERVATION = schemas.ReservationDetail()
_SUMMARY = schemas.EventSummary()
_ALLOCATION = schemas.Allocation()


def shown(subject: Reservation | Event | Allocation, partner_id: str | None = None) -> dict:
    """The object as its GET route shows it (an event: to `partner_id`, None an operator)."""
    if isinstance(subject, Reservation):
        return _RESERVATION.dump(subject)
    if isinstance(subject, Event):
        return _SUMMARY.dump(summarise(subject, partner_id))
    return _ALLOCATION.dump(subject)


def summary_seen_by(data: dict[str, Any], partner_id: str) -> dict[str, Any]:
    """An operator's summary (as `shown` dumps it) as `partner_id` would see it: the event
    is rebuilt from what the summary says and summarised again, by the same rules."""
    if "allocations" not in data:
        return data  # no allocations: every key sees the same summary
    allocations = {
        a["partnerId"]: Allocation(
            a["partnerId"],
            a["seats"],
            a["overflow"],
            a["taken"],
            a["held"],
            a["maxHeldSeats"],
            a["closed"],
        )
        for a in data["allocations"]
    }
    event = Event(
        data["eventId"],
        data["name"],
        data["totalSeats"],
        data["availableSeats"],
        version=data["version"],
        reservation_count=data["reservationCount"],
        held_seats=data["heldSeats"],
        allocations=allocations,
    )
    return shown(event, partner_id)


@dataclass(frozen=True)
class Notice:
    """A notification as a partner gets it, by webhook or from GET /api/changes."""

    id: str
    type: str
    created_at: datetime
    event_id: str
    partner_id: str | None
    version: int
    data: dict[str, Any]


class Notification(Schema):
    id = fields.String(
        metadata={"description": "Unique: the webhook-id of its deliveries (deduplicate on it)."}
    )
    type = fields.String(metadata={"enum": sorted(TYPES)})
    created_at = fields.AwareDateTime(data_key="createdAt")
    event_id = fields.String(data_key="eventId")
    partner_id = fields.String(
        data_key="partnerId",
        allow_none=True,
        metadata={"description": "Whose reservation, hold or allocation; null: the event's."},
    )
    version = fields.Integer(
        metadata={
            "description": "The event's version once the change was made: drop a "
            "notification older than one you already applied."
        }
    )
    data = fields.Dict(
        metadata={"description": "The object as its GET route shows it to you, as it then stood."}
    )


NOTIFICATION = Notification()


def notice(row, viewer: str | None) -> Notice:
    """An outbox row as `viewer` sees it (None: an operator): an event's summary is shown
    as that partner's GET would show it."""
    data = orjson.loads(row.data)
    if viewer is not None and row.type == Type.EVENT_UPDATED:
        data = summary_seen_by(data, viewer)
    return Notice(
        f"ntf_{row.id}", row.type, row.created_at, row.event_id, row.partner_id, row.version, data
    )
