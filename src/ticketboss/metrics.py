"""Prometheus counters of the compare-and-swap, shared by all gunicorn workers.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn_conf sets it), every worker writes its values
there and /metrics adds them up; without it (tests, scripts) they live in this process.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    multiprocess,
)

CAS_COMMITS = Counter(
    "ticketboss_cas_commits", "Transactions whose compare-and-swap on an event committed."
)
CAS_RETRIES = Counter(
    "ticketboss_cas_retries", "Transactions retried after losing the compare-and-swap."
)
CAS_EXHAUSTED = Counter(
    "ticketboss_cas_exhausted", "Transactions given up (503) after the retries ran out."
)
RESERVATIONS = Counter("ticketboss_reservations_confirmed", "Reservations committed (201).")
CANCELLATIONS = Counter("ticketboss_reservations_cancelled", "Reservations cancelled (204).")
HOLDS_CREATED = Counter("ticketboss_holds_created", "Holds granted (201).")
HOLDS_CONFIRMED = Counter("ticketboss_holds_confirmed", "Holds confirmed as reservations.")
HOLDS_RELEASED = Counter("ticketboss_holds_released", "Holds released by their partner.")
HOLDS_EXPIRED = Counter("ticketboss_holds_expired", "Holds whose time ran out, reclaimed.")
IDEMPOTENT_REPLAYS = Counter(
    "ticketboss_idempotent_replays", "Requests answered from a stored Idempotency-Key outcome."
)
AVAILABLE_SEATS = Gauge(
    "ticketboss_available_seats",
    "Seats left per event, as last written by this service.",
    ["event_id"],
    multiprocess_mode="mostrecent",
)
HELD_SEATS = Gauge(
    "ticketboss_held_seats",
    "Seats of live holds per event, as last written by this service.",
    ["event_id"],
    multiprocess_mode="mostrecent",
)


def exposition() -> tuple[bytes, str]:
    """The text format of every counter, summed over worker processes when there are several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
