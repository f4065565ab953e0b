"""Use cases: reserve, cancel, summary, lookup, events. The only layer that opens transactions."""

from ticketboss.services.container import Services
from ticketboss.services.events import EventService
from ticketboss.services.idempotency import IdempotencyKey, Replay
from ticketboss.services.reservations import CancelRequest, ReservationService, SeatRequest

__all__ = [
    "CancelRequest",
    "EventService",
    "IdempotencyKey",
    "Replay",
    "ReservationService",
    "SeatRequest",
    "Services",
]
