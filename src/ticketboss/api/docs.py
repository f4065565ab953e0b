"""OpenAPI fragments the routes share: response headers, request headers that Werkzeug
parses itself, and the problem responses each route documents."""

from __future__ import annotations

from ticketboss.api.errors import PROBLEM_JSON
from ticketboss.api.schemas import Problem

RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}
ETAG = {"ETag": {"schema": {"type": "string"}, "description": 'The event\'s version: "<n>".'}}
LOCATION = {"Location": {"schema": {"type": "string"}, "description": "The reservation."}}
REPLAYED = {
    "Idempotent-Replayed": {
        "schema": {"type": "string", "enum": ["true"]},
        "description": "Present when this is the stored answer to an earlier request.",
    }
}


def _header_doc(name: str, description: str) -> dict:
    """`blp.doc` keywords documenting a request header that Werkzeug parses (no schema is
    parsed for it, so reads pay no second parse)."""
    header = {"in": "header", "name": name, "schema": {"type": "string"}}
    return {"parameters": [{**header, "description": description}]}


IF_MATCH = _header_doc("If-Match", 'The event\'s ETag ("<version>"): write only at that version.')
IF_NONE_MATCH = _header_doc(
    "If-None-Match", "The ETag you have: 304 while the event is still at it."
)

# Status → (description, extra headers) of the problem responses routes document.
_PROBLEMS = {
    400: ("The request is not valid (body, path, query or header).", {}),
    403: ("The key may not do this (another partner's partnerId, or an operator's route).", {}),
    404: ("No such event, reservation or allocation (allocation-not-found).", REPLAYED),
    409: (
        "Not enough seats (`bucket` says which ran out: the partner's allocation, the open "
        "pool, or both), the partner's hold limit of the event (hold-limit-reached) or its cap "
        "on the open pool (pool-limit-reached) reached, an allocation beyond what the event can "
        "give (allocation-too-large), below the seats taken and held from it "
        "(allocation-in-use) or one too many (too-many-allocations), the id is taken, the hold "
        "expired or is not held, or the Idempotency-Key is in flight.",
        {**RETRY_AFTER, **REPLAYED},
    ),
    412: ("If-Match names a version the event no longer has; nothing was written.", {}),
    422: (
        "The Idempotency-Key was used with a different request, or an operator named a "
        "partnerId that has no partner account.",
        {},
    ),
    503: ("Overloaded, or the database is unreachable: retry after Retry-After.", RETRY_AFTER),
}


def problems(blp, *statuses: int, described: dict[int, str] | None = None):
    """Document problem+json responses of a route (decorator); `described`: descriptions
    of its own for some statuses (the defaults are the seats' routes')."""

    def decorate(view):
        for status in statuses:
            description, headers = _PROBLEMS[status]
            description = (described or {}).get(status, description)
            view = blp.alt_response(
                status,
                schema=Problem,
                content_type=PROBLEM_JSON,
                description=description,
                headers=headers or None,
            )(view)
        return view

    return decorate
