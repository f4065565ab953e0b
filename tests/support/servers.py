"""gunicorn served as it is deployed, for tests over real sockets."""

from __future__ import annotations

import http.client
import json
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cluster.parts import Host

# The METRICS_TOKEN of every server these tests start (unless a test sets its own).
METRICS_TOKEN = "metrics-token-of-the-tests"


@dataclass(frozen=True)
class Served:
    port: int
    log: Path
    process: subprocess.Popen


def request(port, method, path, body=None, key=None, full=False, headers=None):
    """(status, body) of one request over a new connection; with `full`, also the headers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = dict(headers or {})
        if body is not None:
            headers["Content-Type"] = "application/json"
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = conn.getresponse()
        if full:
            return response.status, response.read(), response.headers
        return response.status, response.read()
    finally:
        conn.close()


def serve(database_url, tmp_path_factory, max_tracebacks=0, **settings):
    """gunicorn with the project's config on a free port, two workers, `settings` in its
    environment (started as `make cluster` starts a host); yields it, then stops it and
    checks that it stopped cleanly, having logged no more than `max_tracebacks` tracebacks."""
    settings = {"METRICS_TOKEN": METRICS_TOKEN, **settings}
    host = Host("gunicorn", tmp_path_factory.mktemp("gunicorn"), database_url, 2, **settings)
    host.start()
    assert host.process is not None
    try:
        yield Served(host.port, host.log_path, host.process)
    finally:  # stopped even when the test failed
        host.stop()
    log = host.log_path.read_text()
    assert host.process.returncode == 0, log
    assert tracebacks(log) <= max_tracebacks, log


serving = contextmanager(serve)


def tracebacks(text: str) -> int:
    """Logged tracebacks, counting a chain of exceptions ("The above exception was the direct
    cause…") as one."""
    lines = text.splitlines()
    chained = ("The above exception", "During handling of the above exception")
    return sum(
        1
        for i, line in enumerate(lines)
        if line.startswith("Traceback") and not (i >= 2 and lines[i - 2].startswith(chained))
    )
