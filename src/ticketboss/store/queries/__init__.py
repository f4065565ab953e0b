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
from ticketboss.store.queries.events import (
    compare_and_swap,
    create_event,
    list_events,
    load_event,
    reset_event,
)
from ticketboss.store.queries.keys import (
    ensure_partner,
    insert_key,
    list_keys,
    load_active_key,
    revoke_key,
    touch_key,
)
from ticketboss.store.queries.reservations import (
    insert_reservations,
    list_reservations,
    load_confirmed_seats,
    load_reservation,
    mark_cancelled,
)

__all__ = [
    "compare_and_swap",
    "create_event",
    "delete_claim",
    "ensure_partner",
    "insert_claim",
    "insert_key",
    "insert_reservations",
    "list_events",
    "list_keys",
    "list_reservations",
    "load_active_key",
    "load_claim",
    "load_confirmed_seats",
    "load_event",
    "load_reservation",
    "mark_cancelled",
    "prune_claims",
    "record_outcome",
    "reset_event",
    "revoke_key",
    "take_over_claim",
    "touch_key",
]
