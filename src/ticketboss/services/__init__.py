"""Use cases: reserve, cancel, summary, lookup. The only layer that opens transactions."""

from ticketboss.services.reservations import CancelRequest, ReservationService, SeatRequest

__all__ = ["CancelRequest", "ReservationService", "SeatRequest"]
