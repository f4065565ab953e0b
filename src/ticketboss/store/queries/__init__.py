"""Every SQL statement the service runs, one module per group of tables; callers use
`queries.<name>` whichever module holds it.

The statements are built once, with bind parameters: on the hot path SQLAlchemy then only
looks up their compiled form instead of building and hashing a new statement per call.
"""

from ticketboss.store.queries.claims import (
    delete_claim,
    insert_claim,
    load_claim,
    prune_claims,
    record_outcome,
    take_over_claim,
)
from ticketboss.store.queries.clock import read_database_now
from ticketboss.store.queries.events import (
    compare_and_swap,
    create_event,
    events_with_lapsed_holds,
    list_events,
    load_event,
    load_event_at,
    load_version,
    reset_event,
    write_allocations,
)
from ticketboss.store.queries.keys import (
    active_key_with_prefix_exists,
    ensure_partner,
    insert_key,
    list_keys,
    load_active_key,
    partner_exists,
    revoke_key,
    touch_key,
)
from ticketboss.store.queries.reservations import (
    extend_hold,
    insert_reservations,
    list_reservations,
    load_lapsed,
    load_named,
    load_reservation,
    load_usage,
    mark_cancelled,
    mark_confirmed,
    mark_expired,
)

__all__ = [
    "active_key_with_prefix_exists",
    "compare_and_swap",
    "create_event",
    "delete_claim",
    "ensure_partner",
    "events_with_lapsed_holds",
    "extend_hold",
    "insert_claim",
    "insert_key",
    "insert_reservations",
    "list_events",
    "list_keys",
    "list_reservations",
    "load_active_key",
    "load_claim",
    "load_event",
    "load_event_at",
    "load_lapsed",
    "load_named",
    "load_reservation",
    "load_usage",
    "load_version",
    "mark_cancelled",
    "mark_confirmed",
    "mark_expired",
    "partner_exists",
    "prune_claims",
    "read_database_now",
    "record_outcome",
    "reset_event",
    "revoke_key",
    "take_over_claim",
    "touch_key",
    "write_allocations",
]
