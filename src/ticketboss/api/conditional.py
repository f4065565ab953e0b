"""Conditional requests (RFC 9110): ETags are event versions; If-None-Match and If-Match."""

from __future__ import annotations

import re

from flask import Response, request

from ticketboss.api import summaries
from ticketboss.domain import Event

_VERSION = re.compile(r"0|[1-9][0-9]{0,17}")  # the exact text of an ETag we send


def etag(event: Event) -> str:
    return str(event.version)


def etag_header(event: Event) -> dict[str, str]:
    return {"ETag": f'"{etag(event)}"'}


def if_match_versions() -> frozenset[int] | None:
    """The versions If-Match allows (None: no If-Match, or `*`); a tag that is not one of our
    ETags allows none, so the write is refused with 412."""
    if "If-Match" not in request.headers or request.if_match.star_tag:
        return None
    # Strong comparison: only the exact text of one of our tags matches; a malformed
    # header matches nothing, so the write is refused rather than done unconditionally.
    return frozenset(int(t) for t in request.if_match.as_set() if t and _VERSION.fullmatch(t))


def not_modified(event: Event) -> Response | None:
    """304 when If-None-Match already has the event's ETag (weak comparison, as RFC 9110
    asks: a proxy may have weakened our tag); None otherwise."""
    tag = etag(event)
    if request.if_none_match.contains_weak(tag) or request.if_none_match.star_tag:
        response = Response(status=304)
        response.set_etag(tag)
        return response
    return None


def summary_response(event: Event):
    """The event's summary as the key may see it, with its ETag; or 304 (not_modified)."""
    unchanged = not_modified(event)
    if unchanged is not None:
        return unchanged
    return summaries.seen_by_key(event), 200, etag_header(event)
