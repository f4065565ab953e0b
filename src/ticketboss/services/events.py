"""Events: create and list them, and list an event's reservations (renaming and resizing
are changes of seats: ReservationService.resize)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from ticketboss.domain import Event, EventExists, EventNotFound, Reservation
from ticketboss.services.reservations import ReservationService
from ticketboss.services.unit_of_work import connection, transaction
from ticketboss.store import queries


class EventService:
    def __init__(self, engine: Engine, seats: ReservationService):
        self.engine = engine
        self.seats = seats  # changes of seats, and summaries that reclaim lapsed holds
        self.clock = seats.clock

    def create(self, event_id: str, name: str, total_seats: int) -> Event:
        """A new event with every seat available, at version 0; EventExists if taken."""
        try:
            with transaction(self.engine, f"event '{event_id}'") as conn:
                queries.create_event(conn, event_id, name, total_seats)
        except IntegrityError as exc:
            raise EventExists(event_id) from exc
        return Event(event_id, name, total_seats, total_seats, version=0)

    def page(self, after: str | None, limit: int) -> list[Event]:
        """Up to `limit` events after the event id `after`, in id order; an event with lapsed
        holds is summarised afresh, so no listed seat is taken by an expired hold."""
        with connection(self.engine) as conn:
            now = self.clock.now(queries.read_database_now(conn))
            listed = queries.list_events(conn, after, limit)
        return [self.seats.summary(e.event_id) if e.has_lapsed_holds(now) else e for e in listed]

    def reservations(
        self,
        event_id: str,
        *,
        partner_id: str | None,
        status: str | None,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Reservation]:
        """A page of the event's reservations in (created_at, id) order, as they stand now
        (a hold past its time is expired); EventNotFound."""
        with connection(self.engine) as conn:
            now = self.clock.now(queries.read_database_now(conn))
            page = queries.list_reservations(
                conn,
                event_id,
                partner_id=partner_id,
                status=status,
                after=after,
                limit=limit,
                now=now,
            )
            # Only an empty page needs a second look: no such event, or nothing (more) there.
            if not page and queries.load_event(conn, event_id) is None:
                raise EventNotFound(event_id)
        return page
