"""Cursor pagination: opaque cursors we give out, and pages cut from one extra row."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime, timedelta

from werkzeug.exceptions import BadRequest

from ticketboss.api.schemas import storable


def encode_cursor(*values) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode()


def decode_cursor(cursor: str, *types: Callable[[str], object]) -> list:
    """The values of a cursor we made (strings), each converted by its type; a 400 for
    anything else."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(values, list) or len(values) != len(types):
            raise ValueError
        if not all(isinstance(value, str) and storable(value) for value in values):
            raise ValueError
        return [convert(value) for convert, value in zip(types, values, strict=True)]
    except (TypeError, ValueError) as exc:
        raise BadRequest("cursor: Not a cursor this API gave out.") from exc


def utc_timestamp(text: str) -> datetime:
    """A cursor's timestamp: ISO 8601 in UTC, as we write them (any other offset, even one
    Python accepts, could be out of the database's range)."""
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() != timedelta(0):
        raise ValueError("not UTC")
    return moment


def page(fetched: list, limit: int, key: Callable) -> dict:
    """A page of `limit` items out of `limit + 1` fetched, with a cursor after its last item
    when there is more (so the last page's nextCursor is null)."""
    items = fetched[:limit]
    cursor = encode_cursor(*key(items[-1])) if len(fetched) > limit else None
    return {"items": items, "next_cursor": cursor}
