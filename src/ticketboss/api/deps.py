"""What views depend on, found in one place: the app's services and who the request acts as
(FastAPI's deps.py is the model). Views never reach into a sibling view module for them."""

from __future__ import annotations

from ticketboss import services_of
from ticketboss.api.auth import principal
from ticketboss.services import EventService, ReservationService
from ticketboss.services.partners import KeyCache


def reservations() -> ReservationService:
    return services_of().reservations


def events() -> EventService:
    return services_of().events


def keys() -> KeyCache:
    return services_of().keys


__all__ = ["events", "keys", "principal", "reservations"]
