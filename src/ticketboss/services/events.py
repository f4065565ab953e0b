"""Events: create, list, rename and resize (through the same compare-and-swap), and list an
event's reservations."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from uuid import UUID

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from ticketboss import metrics
from ticketboss.config import Settings
from ticketboss.domain import Event, EventExists, EventNotFound, PreconditionFailed, Reservation
from ticketboss.services.retry import with_retries
from ticketboss.services.unit_of_work import transaction
from ticketboss.store import queries


class EventService:
    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings

    def create(self, event_id: str, name: str, total_seats: int) -> Event:
        """A new event with every seat available, at version 0; EventExists if taken."""
        try:
            with transaction(self.engine, f"event '{event_id}'") as conn:
                queries.create_event(conn, event_id, name, total_seats)
        except IntegrityError as exc:
            raise EventExists(event_id) from exc
        return Event(event_id, name, total_seats, total_seats, version=0)

    def page(self, after: str | None, limit: int) -> list[Event]:
        """Up to `limit` events after the event id `after`, in id order."""
        with self.engine.connect() as conn:
            return queries.list_events(conn, after, limit)

    def update(
        self,
        event_id: str,
        *,
        name: str | None = None,
        total_seats: int | None = None,
        if_versions: frozenset[int] | None = None,
    ) -> Event:
        """Rename and/or resize, as one compare-and-swap (the version rises by one):
        PreconditionFailed if the event is not at one of `if_versions`, SeatsAlreadyReserved
        if the new total is below the reserved seats."""
        return with_retries(
            self.settings, self._update_once, event_id, name, total_seats, if_versions
        )

    def _update_once(self, event_id, name, total_seats, if_versions) -> Event:
        with transaction(self.engine, f"event '{event_id}'") as conn:
            event = queries.load_event(conn, event_id)
            if event is None:
                raise EventNotFound(event_id)
            if if_versions is not None and event.version not in if_versions:
                raise PreconditionFailed(event_id, event.version)
            after = event if total_seats is None else event.resize(total_seats)
            after = after if name is None else replace(after, name=name)
            queries.compare_and_swap(conn, event, after, changes=1)
        metrics.AVAILABLE_SEATS.labels(event_id).set(after.available_seats)
        return replace(after, version=event.version + 1)

    def reservations(
        self,
        event_id: str,
        *,
        partner_id: str | None,
        status: str | None,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Reservation]:
        """A page of the event's reservations in (created_at, id) order; EventNotFound."""
        with self.engine.connect() as conn:
            page = queries.list_reservations(
                conn, event_id, partner_id=partner_id, status=status, after=after, limit=limit
            )
            # Only an empty page needs a second look: no such event, or nothing (more) there.
            if not page and queries.load_event(conn, event_id) is None:
                raise EventNotFound(event_id)
        return page
