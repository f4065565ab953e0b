"""Use cases: reserve, cancel, summary, lookup. The only layer that opens transactions."""

from ticketboss.services.reservations import ReservationService, SeatRequest

__all__ = ["ReservationService", "SeatRequest"]
