"""Use cases: reserve, cancel, summary, lookup. The only layer that opens transactions."""

from ticketboss.services.reservations import ReservationService, SeatRequest, Summary

__all__ = ["ReservationService", "SeatRequest", "Summary"]
