"""Per-request observability: a request id, one JSON access-log line, Prometheus HTTP metrics.

Import this module only after PROMETHEUS_MULTIPROC_DIR is set (create_app imports it lazily):
prometheus_client picks its multi-process value store once, when it is first imported.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
import uuid
from datetime import UTC, datetime

import orjson
from flask import Flask, g, request
from prometheus_client import Counter, Histogram

REQUEST_ID_HEADER = "X-Request-ID"
# Visible ASCII only: a client's id goes into a response header and a log line unescaped.
_VALID_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
# Anything else a client sends as a method is counted as "OTHER", so labels stay bounded.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Prometheus scrapes would otherwise count themselves and skew the request rate.
_NOT_COUNTED = frozenset({"metrics.scrape"})

HTTP_REQUESTS = Counter(
    "ticketboss_http_requests",
    "HTTP requests answered, by URL rule (`unmatched` when none), method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "ticketboss_http_request_duration_seconds",
    "Time from the first before_request hook to the last after_request hook.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0),
)

# Each label set's child metric, looked up once: labels() validates and locks on every call.
_REQUESTS: dict[tuple[str, str, int], Counter] = {}
_LATENCY: dict[tuple[str, str], Histogram] = {}

access_log = logging.getLogger("ticketboss.access")
# One JSON line per webhook delivery attempt (services/dispatcher.py), beside the access log.
webhook_log = logging.getLogger("ticketboss.webhooks")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601 UTC), level, then the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line = {"ts": ts, "level": record.levelname.lower(), **getattr(record, "fields", {})}
        # Both escape newlines and control characters: a line stays one line. orjson is
        # several times faster; it refuses lone surrogates, which json escapes.
        try:
            return orjson.dumps(line).decode()
        except TypeError:
            return json.dumps(line)


class _StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is at each record (as logging.lastResort does): pytest swaps
    sys.stderr per test, and a handler bound to an old stream would write to a closed file."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


_HANDLER = _StderrHandler()
_HANDLER.setFormatter(JsonFormatter())


def register_observability(app: Flask) -> None:
    """Give every request an id, a JSON access-log line and its Prometheus samples."""
    # One module-level handler, however many apps the process builds (the tests build many):
    # addHandler ignores a handler the logger already has.
    for log in (access_log, webhook_log):
        log.addHandler(_HANDLER)
        log.setLevel(logging.INFO)
        # The lines are complete here; propagating would print them again under any root
        # handler.
        log.propagate = False
    app.before_request(_start)
    app.after_request(_finish)


def request_id() -> str:
    """The current request's id: the client's X-Request-ID if well-formed, else a new one."""
    if "request_id" not in g:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = given if _VALID_REQUEST_ID.fullmatch(given) else _new_request_id()
    return g.request_id


_ids = itertools.count()
_prefix = ("", 0)  # (random hex, the pid it was drawn in): a forked worker draws its own


def _new_request_id() -> str:
    """32 hex digits like a UUID's: a random prefix per process and a counter, unique without
    a call for random bytes per request (the id needs to be unique, not secret)."""
    global _prefix
    prefix, pid = _prefix
    if pid != os.getpid():
        _prefix = prefix, pid = uuid.uuid4().hex[:16], os.getpid()
    return f"{prefix}{next(_ids) & 0xFFFFFFFFFFFFFFFF:016x}"


def _start() -> None:
    g.request_started = time.perf_counter()
    request_id()


def _finish(response):
    """Runs for every response, problem+json errors included (Flask finalizes those too)."""
    # An earlier before_request hook that answered itself skips ours: fall back to "now".
    seconds = time.perf_counter() - g.get("request_started", time.perf_counter())
    rid = request_id()
    response.headers[REQUEST_ID_HEADER] = rid
    rule = request.url_rule
    # The URL rule, never the raw path: one series per route, not per reservation id.
    route = rule.rule if rule is not None else "unmatched"
    if rule is None or rule.endpoint not in _NOT_COUNTED:
        method = request.method if request.method in _METHODS else "OTHER"
        status = response.status_code
        counted = _REQUESTS.get((route, method, status))
        if counted is None:
            counted = _REQUESTS[route, method, status] = HTTP_REQUESTS.labels(route, method, status)
        timed = _LATENCY.get((route, method))
        if timed is None:
            timed = _LATENCY[route, method] = HTTP_LATENCY.labels(route, method)
        counted.inc()
        timed.observe(seconds)
    _log_line(
        rid,
        request.method,
        request.path,
        route,
        response.status_code,
        round(seconds * 1000, 3),
        request.remote_addr,
    )
    return response


def log_unparsed(request_id: str, req, status: int, remote_addr: str) -> None:
    """The access-log line of a request the server refused before the app saw it (route
    `unparsed`; method and path as far as they were read)."""
    method = getattr(req, "method", None)
    path = getattr(req, "path", None)
    _log_line(request_id, method, path, "unparsed", status, None, remote_addr)


def _log_line(request_id, method, path, route, status, duration_ms, remote_addr) -> None:
    level = logging.WARNING if status >= 500 else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    fields = {
        "request_id": request_id,
        "method": method,
        "path": path,
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
        "remote_addr": remote_addr,
    }
    # makeRecord + handle, not log(): log() walks the stack to find the caller on every
    # request, which the JSON line does not use.
    access_log.handle(
        access_log.makeRecord(
            access_log.name,
            level,
            __file__,
            0,
            "%s %s %s",
            (method, path, status),
            None,
            extra={"fields": fields},
        )
    )
