"""A partner's webhook receiver over real HTTP on loopback: it verifies every delivery with
the `standardwebhooks` library (an implementation independent of ours) and keeps them."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int  # the status the receiver gave

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def notification(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers `status` (200 unless told) after `delay` seconds; `secret` verifies."""

    secret: str | None = None
    status: int = 200
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                time.sleep(receiver.delay)
                status = receiver.status
                receiver.keep(headers, body, status)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def keep(self, headers: dict[str, str], body: bytes, status: int) -> None:
        verified = False
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                pass
        with self.lock:
            self.received.append(Received(headers, body, verified, status))

    def unique(self) -> dict[str, Received]:
        """What arrived, deduplicated by webhook-id as a receiver must (at least once)."""
        with self.lock:
            return {r.id: r for r in self.received if r.answered < 300}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
