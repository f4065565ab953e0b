"""What views depend on, found in one place: the app's services and who the request acts as
(FastAPI's deps.py is the model). Views never reach into a sibling view module for them."""

from __future__ import annotations

from sqlalchemy import Engine

from ticketboss import services_of
from ticketboss.api.auth import principal
from ticketboss.config import Settings
from ticketboss.services import EventService, ReservationService
from ticketboss.services.partners import KeyCache
from ticketboss.services.webhooks import WebhookService


def reservations() -> ReservationService:
    return services_of().reservations


def events() -> EventService:
    return services_of().events


def keys() -> KeyCache:
    return services_of().keys


def webhooks() -> WebhookService:
    return services_of().webhooks


def settings() -> Settings:
    return services_of().settings


def engine() -> Engine:
    """The app's engine, for the health probes (everything else goes through a service)."""
    return services_of().engine


__all__ = ["engine", "events", "keys", "principal", "reservations", "settings", "webhooks"]
