"""gunicorn served as it is deployed, for tests over real sockets."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Served:
    port: int
    log: Path
    process: subprocess.Popen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    environment; yields it, then stops it and checks that it stopped cleanly, having logged
    no more than `max_tracebacks` tracebacks."""
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("prometheus")),
        **settings,
    }
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:ticketboss.gunicorn_conf",
                "ticketboss.wsgi:app",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            if request(port, "GET", "/api/health")[0] == 200:
                break
        except OSError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "gunicorn did not come up"
        time.sleep(0.1)
    try:
        yield Served(port, log, process)
    finally:  # stopped even when the test failed
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0, log.read_text()
    assert tracebacks(log.read_text()) <= max_tracebacks, log.read_text()


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
