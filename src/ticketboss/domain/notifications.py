"""What partners are told: one notification per change, of one of these types."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ticketboss.domain.model import Allocation, Event, Reservation


class Type(enum.StrEnum):
    """A notification's type, as partners filter and receive it."""

    RESERVATION_CONFIRMED = "reservation.confirmed"  # a reservation made, or a hold confirmed
    RESERVATION_CANCELLED = "reservation.cancelled"
    HOLD_CREATED = "hold.created"
    HOLD_EXTENDED = "hold.extended"
    HOLD_RELEASED = "hold.released"
    HOLD_EXPIRED = "hold.expired"
    EVENT_UPDATED = "event.updated"  # renamed or resized by an operator
    ALLOCATION_UPDATED = "allocation.updated"  # set, resized or deleted (then `closed`)


TYPES = frozenset(t.value for t in Type)


@dataclass(frozen=True)
class Note:
    """One notification as the change decides it: its type, the event's version once the
    change was made, and the object it is about (as it then stood). Its partner is the
    subject's (none for an event's own update: every key is told)."""

    type: Type
    version: int
    subject: Reservation | Event | Allocation
    event_id: str

    @property
    def partner_id(self) -> str | None:
        return None if isinstance(self.subject, Event) else self.subject.partner_id
