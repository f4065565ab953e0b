"""Prometheus counters of the compare-and-swap, shared by all gunicorn workers.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn_conf sets it), every worker writes its values
there and /metrics adds them up; without it (tests, scripts) they live in this process.
"""

import math
import os
import threading
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CAS_COMMITS = Counter(
    "ticketboss_cas_commits", "Transactions whose compare-and-swap on an event committed."
)
CAS_RETRIES = Counter(
    "ticketboss_cas_retries",
    "Compare-and-swaps lost (or rows changed under a batch), each tried again: at once in "
    "the same transaction, or after a rollback and a backoff.",
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
POOL_AVAILABLE_SEATS = Gauge(
    "ticketboss_pool_available_seats",
    "Seats left in each event's open pool (what no allocation sets aside), as last written.",
    ["event_id"],
    multiprocess_mode="mostrecent",
)
# One series per allocation and figure: at most MAX_ALLOCATIONS_PER_EVENT per event. A
# deleted allocation's series read 0 (a worker cannot take back what it wrote).
ALLOCATION_SEATS = Gauge(
    "ticketboss_allocation_seats",
    "Seats of each partner's allocation, as last written: its size (figure=seats) and its "
    "taken, held and available seats.",
    ["event_id", "partner_id", "figure"],
    multiprocess_mode="mostrecent",
)
REFUSALS = Counter(
    "ticketboss_refusals",
    "Reservations and holds refused (409), by reason: the bucket that ran out "
    "(not-enough-seats:pool|allocation|allocation+pool), hold-limit or pool-limit.",
    ["reason"],
)
DATABASE_UNAVAILABLE = Counter(
    "ticketboss_database_unavailable",
    "Requests answered 503 because the database did not take them: unreachable, restarting, "
    "too slow, its connection pool exhausted, or read-only (a standby); /api/health and "
    "/api/ready included. Counted where a worker logs its outage (ticketboss.outages).",
)
# One sample per committed transaction of an event's changes; GROUP_COMMIT_MAX_BATCH (200 by
# default) bounds it.
GROUP_COMMIT_BATCH = Histogram(
    "ticketboss_group_commit_batch_size",
    "Requests of one event committed together in one transaction by its group commit "
    "(changes and the refusals answered with them).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200),
)
RATELIMIT_STORAGE_UP = Gauge(
    "ticketboss_ratelimit_storage_up",
    "1 while the shared rate-limit storage (Redis) answers; 0 while a worker counts alone.",
    multiprocess_mode="livemin",
)


# The multi-process exposition this worker built last: (time.monotonic() then, the text).
_built: tuple[float, bytes] = (-math.inf, b"")
_building = threading.Lock()


def exposition(max_age: float = 0.0) -> tuple[bytes, str]:
    """The text format of every counter. Summed over worker processes when there are several,
    and then built at most once per `max_age` seconds in this worker: adding up every
    worker's files is what makes a scrape costly, and a flood of scrapes must not cost the
    requests. In one process: the live values."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    global _built
    with _building:  # threads that find it stale together wait for one build
        built_at, body = _built
        if time.monotonic() - built_at >= max_age:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            body = generate_latest(registry)
            _built = (time.monotonic(), body)
    return body, CONTENT_TYPE_LATEST


WEBHOOK_ATTEMPTS = Counter(
    "ticketboss_webhook_attempts",
    "Webhook delivery attempts, by result: delivered (2xx), retrying, failed (given up, or "
    "410 Gone: its endpoint is then disabled).",
    ["result"],
)
WEBHOOK_LATENCY = Histogram(
    "ticketboss_webhook_attempt_seconds",
    "Time of one delivery attempt, from checking the URL's addresses to the endpoint's "
    "answer (or the timeout).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBHOOK_BACKLOG = Gauge(
    "ticketboss_webhook_backlog",
    "Deliveries waiting (pending and due), as a dispatcher last counted them.",
    multiprocess_mode="mostrecent",
)
