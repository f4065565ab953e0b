"""One gevent worker shares itself among its connections: a connection whose next request is
always waiting (a fast client, a balancer's busy connection) gets a turn like any other, not
the worker until it runs dry. Over real sockets, against gunicorn with one worker."""

from __future__ import annotations

import json
import socket
import time

from support.servers import serving

PIPELINED = 300  # requests the busy connection sends at once


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


def _answers(sock: socket.socket, count: int) -> int:
    """Read until `count` HTTP answers have arrived (each a 404 with its body)."""
    received, data = 0, b""
    sock.settimeout(30)
    while received < count:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
        received = data.count(b"HTTP/1.1 ")
    return received


def test_a_connection_with_requests_always_waiting_does_not_keep_the_worker(
    pg_url, tmp_path_factory
):
    with serving(pg_url, tmp_path_factory, WEB_CONCURRENCY="1") as server:  # gevent
        busy = socket.create_connection(("127.0.0.1", server.port))
        other = socket.create_connection(("127.0.0.1", server.port))
        try:
            # Paths no route has: answered 404 without the database, each logged with its path.
            busy.sendall(b"".join(_get(f"/busy-{i}") for i in range(PIPELINED)))
            other.sendall(_get("/other"))
            assert _answers(other, 1) == 1
            assert _answers(busy, PIPELINED) == PIPELINED
        finally:
            busy.close()
            other.close()
        time.sleep(0.5)  # the access log's last lines
        paths = [
            json.loads(line)["path"]
            for line in server.log.read_text().splitlines()
            if line.startswith("{") and '"path"' in line
        ]
    order = [p for p in paths if p.startswith(("/busy-", "/other"))]
    assert len(order) == PIPELINED + 1, order[-5:]
    # Served in turns: the other connection's one request comes among the busy one's first
    # few, not after all of them (as it did when a greenlet read its buffered next request at
    # once, without a switch).
    assert order.index("/other") < PIPELINED // 10, order.index("/other")
