"""Use cases: reserve, cancel, summary, lookup. The only layer that opens transactions."""

from ticketboss.services.reservations import ReservationService, Summary

__all__ = ["ReservationService", "Summary"]
