"""The services of one app (one gunicorn worker): one engine and the use cases over it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from ticketboss.config import Settings
from ticketboss.services.clock import Clock
from ticketboss.services.events import EventService
from ticketboss.services.partners import KeyCache
from ticketboss.services.reservations import ReservationService
from ticketboss.services.webhooks import WebhookService
from ticketboss.store.db import make_engine


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: Engine
    reservations: ReservationService
    events: EventService
    keys: KeyCache
    webhooks: WebhookService

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Services:
        """Create the engine (so call it after fork: each worker has its own pool)."""
        engine = make_engine(settings)
        reservations = ReservationService(engine, settings, clock or Clock())
        return cls(
            settings,
            engine,
            reservations,
            EventService(engine, reservations),
            KeyCache(
                engine,
                settings.auth_cache_seconds,
                settings.auth_failures_per_minute,
                grace=settings.request_deadline_seconds,
            ),
            WebhookService(engine, settings, reservations.clock),
        )
