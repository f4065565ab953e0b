"""The body of every error answer (RFC 9457 problem+json), whoever sends it: the app
(api/errors.py), the gunicorn workers for what they refuse before the app (workers.py), and
the cluster's HAProxy for what it answers itself (scripts/cluster)."""

from __future__ import annotations

from http import HTTPStatus

PROBLEM_JSON = "application/problem+json"


def problem_body(status: int, detail: str, slug: str | None = None, **extra) -> dict:
    """`error` repeats `detail` for clients of the old API."""
    return {
        "type": f"/problems/{slug}" if slug else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "error": detail,
        **extra,
    }
