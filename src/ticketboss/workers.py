"""gunicorn's workers, hardened for clients that are slow or hostile.

- Errors gunicorn answers itself, before the app sees a request (a bad request line, 414, 431,
  broken framing), are problem+json like every other error, with one JSON access-log line.
- The request line and headers must arrive within `keepalive` seconds, and within
  SHED_SECONDS while the worker holds more than half its `worker_connections`: a flood of
  idle or slow connections is shed quickly, and the worker keeps room to answer
  well-behaved clients (gevent worker; gthread keeps its own connection handling). The
  body's reads are bounded by the app (api/body.py).
- Chunked framing that can never end well is refused as it arrives: a chunk-size line with
  a bare LF, or a size longer than any body we take (gunicorn would wait for the CRLF, or
  for the exabytes, until the body's deadline).
- Shutdown (SIGTERM, or the old workers of a `kill -HUP` reload) stops accepting at once,
  first taking in every connection already waiting in the listen queue (the kernel would
  reset those when the last process closes the socket), answers every request received
  with `Connection: close`, lets idle keep-alive connections end, then exits.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from functools import partial
from http import HTTPStatus

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer
from gunicorn.http import errors, message
from gunicorn.http.body import ChunkedReader
from gunicorn.util import write_nonblock
from gunicorn.workers.ggevent import GeventWorker as _GeventWorker
from gunicorn.workers.gthread import ThreadWorker as _ThreadWorker

from ticketboss.config import ServerSettings
from ticketboss.problems import PROBLEM_JSON, problem_body

# Status of each error gunicorn raises while reading a request; anything else it parses is 400.
_STATUS = {
    errors.LimitRequestLine: 414,
    errors.LimitRequestHeaders: 431,
    errors.ExpectationFailed: 417,
    errors.UnsupportedTransferCoding: 501,
    errors.ForbiddenProxyRequest: 403,
}
# Raised while draining the body of a request the app has already answered (it read as
# much as it could and refused it): there is nothing left to say on that connection.
_BODY_FRAMING = (
    errors.InvalidChunkSize,
    errors.ChunkMissingTerminator,
    errors.InvalidChunkExtension,
    errors.NoMoreData,
)


# Hex digits of the largest chunk size accepted: 16 MiB, past any body MAX_BODY_BYTES allows.
_CHUNK_SIZE_DIGITS = 6
# While a worker stops, how long a kept-alive connection may take to send its next request.
_STOPPING_SECONDS = 0.1
_HEX = re.compile(rb"[0-9A-Fa-f]+")


class StrictChunkedReader(ChunkedReader):
    """gunicorn's chunked body reader, refusing at once what it would otherwise wait on."""

    def parse_chunk_size(self, unreader, data=None):
        size, rest = super().parse_chunk_size(unreader, data)
        if size >= 16**_CHUNK_SIZE_DIGITS:
            raise errors.InvalidChunkSize(b"chunk size over %d hex digits" % _CHUNK_SIZE_DIGITS)
        return size, rest

    def read_into(self, unreader, buf):
        """While a chunk-size line is read: a bare LF can never become its CRLF, and a line
        that is already longer than a size can be is not one."""
        super().read_into(unreader, buf)
        line = bytes(buf).split(b"\r\n", 1)[0]
        if b"\n" in line.rstrip(b"\r"):
            raise errors.InvalidChunkSize(b"bare LF in a chunk line")
        size = line.split(b";", 1)[0].rstrip(b" \t\r")
        if len(size) > _CHUNK_SIZE_DIGITS + 10 and _HEX.fullmatch(size):  # room for zeros
            raise errors.InvalidChunkSize(b"chunk size line too long")


# gunicorn builds each request's chunked reader by this module-level name.
message.ChunkedReader = StrictChunkedReader  # type: ignore[misc]


class ProblemAnswers:
    """What gunicorn answers itself, answered as the app answers: problem+json, logged as
    one JSON line."""

    def handle_error(self, req, client, addr, exc):
        """Answer a request gunicorn could not parse as problem+json, and log it as JSON."""
        if req is None and isinstance(exc, _BODY_FRAMING):
            self.log.debug("Closing a connection whose body broke after the answer: %r", exc)
            return
        status = next((s for t, s in _STATUS.items() if isinstance(exc, t)), None)
        if status is None:
            if not isinstance(exc, errors.ParseException):
                self.log.exception("Error handling request")
            status = 400 if isinstance(exc, errors.ParseException) else 500
        else:
            self.log.debug("Refused request from %s: %r", addr, exc)
        detail = "The request could not be parsed." if status == 400 else HTTPStatus(status).phrase
        if status == 500:
            detail = "An unexpected error occurred."
        request_id = uuid.uuid4().hex
        body = json.dumps(problem_body(status, detail)).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "Connection: close\r\n"
            f"Content-Type: {PROBLEM_JSON}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Request-ID: {request_id}\r\n\r\n"
        )
        from ticketboss.observability import log_unparsed

        log_unparsed(request_id, req, status, (addr or ("",))[0])
        try:
            write_nonblock(client, head.encode() + body)
        except OSError:
            self.log.debug("Failed to send the error response.")


class _HeadersWithBody:
    """The connection as gunicorn writes one answer to it: the status line and headers (its
    first write) wait for the first body bytes, so a small answer leaves in one send, not
    two. Anything else asked of the socket sends what waits first."""

    def __init__(self, sock):
        self._sock = sock
        self._waiting: bytes | None = None
        self._writes = 0

    def sendall(self, data: bytes) -> None:
        self._writes += 1
        if self._writes == 1:
            self._waiting = bytes(data)
            return
        waiting, self._waiting = self._waiting, None
        self._sock.sendall(waiting + data if waiting else data)

    def flush(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting:
            self._sock.sendall(waiting)

    def __getattr__(self, name):  # sendfile, fileno, shutdown, close…: in order, on the socket
        self.flush()
        return getattr(self._sock, name)


class GeventWorker(ProblemAnswers, _GeventWorker):
    server_settings = ServerSettings.from_env()
    shed_seconds = server_settings.shed_seconds
    send_timeout = server_settings.send_timeout_seconds

    def init_process(self):
        self.connections = 0
        super().init_process()

    def handle(self, listener, client, addr):
        """One connection, counted while it is open."""
        self.connections += 1
        try:
            super().handle(listener, client, addr)
        finally:
            self.connections -= 1

    def handle_request(self, listener_name, req, sock, addr):
        """One request: its answer must be taken by the client within SEND_TIMEOUT_SECONDS
        of each write, or the connection is dropped (a reader that never reads would hold
        the greenlet forever)."""
        sock.settimeout(self.send_timeout)
        wire = _HeadersWithBody(sock)
        try:
            try:
                answered = super().handle_request(listener_name, req, wire, addr)
            finally:  # answered, or closing after the answer (StopIteration): send it all
                wire.flush()
        except TimeoutError:
            self.log.debug("Dropped a client that stopped reading its answer")
            raise StopIteration() from None
        finally:
            sock.settimeout(None)  # the next request's headers are timeout_ctx's to time
        # The connection's next request may be waiting already (a fast client, a balancer's
        # busy connection): read at once it would need no switch, and this connection would
        # keep the worker while the others wait. They have their turn first.
        gevent.sleep(0)
        return answered

    def timeout_ctx(self):
        """How long the next request's line and headers may take to arrive: while stopping,
        only what is already on its way (a connection kept alive after a request that was
        running at SIGTERM ends at once, not `keepalive` seconds later)."""
        if not self.alive:
            return gevent.Timeout(_STOPPING_SECONDS, False)
        crowded = self.connections > self.worker_connections // 2
        return gevent.Timeout(self.shed_seconds if crowded else self.cfg.keepalive, False)

    def run(self):
        """gunicorn's gevent run loop (plain HTTP), with a prompt and lossless shutdown."""
        if self.cfg.is_ssl:  # this loop does not set TLS up: refuse rather than serve plain
            raise RuntimeError("ticketboss workers serve plain HTTP: terminate TLS in front")
        servers = []
        for listener in self.sockets:
            listener.setblocking(1)
            # Handlers only ask the listener its name; they may run after it is closed.
            server = StreamServer(
                listener,
                handle=partial(self.handle, _Named(listener.getsockname())),
                spawn=Pool(self.worker_connections),
            )
            if self.cfg.workers > 1:
                server.max_accept = 1  # share new connections with the other workers
            server.start()
            servers.append((listener, server))

        while self.alive:
            self.notify()
            gevent.sleep(0.1)  # notice a stop signal within 0.1 s, not gunicorn's 1 s

        for listener, server in servers:
            server.stop_accepting()
            self._take_in_waiting(listener, server)
            server.close()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while any(server.pool.free_count() != server.pool.size for _, server in servers):
            if time.monotonic() > deadline:
                self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
                for _, server in servers:
                    server.stop(timeout=1)
                return
            self.notify()
            gevent.sleep(0.1)

    def _take_in_waiting(self, listener, server):
        """Accept the connections already queued on the listening socket and serve them
        (their requests get `Connection: close`); closing it would reset them."""
        listener.setblocking(0)
        # Bounded: connections keep arriving until the socket closes, and the arbiter needs
        # our heartbeat.
        deadline = time.monotonic() + self.cfg.graceful_timeout / 2
        while time.monotonic() < deadline and server.pool.free_count() > 0:
            try:
                client, addr = listener.accept()
            except OSError:  # nothing waiting (EAGAIN), or the socket is gone
                return
            server.pool.spawn(server.handle, client, addr)
            self.notify()


class ThreadWorker(ProblemAnswers, _ThreadWorker):
    pass


class _Named:
    """A closed listener's name: all a connection's handler asks of its listener."""

    def __init__(self, name):
        self._name = name

    def getsockname(self):
        return self._name
