"""--webhook: the bench with one webhook endpoint registered, served by a receiver in the
bench's own process, and what it received (issue 20: a slow or dead endpoint must not slow
reservations; the dispatcher's own rate goes in docs/performance.md)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import func, select

MODES = ("none", "partner", "sleeping", "all")
SLEEP_SECONDS = 30.0  # "sleeping": longer than the delivery timeout (10 s): every attempt times out


class Receiver:
    """Answers 200 at once, or after SLEEP_SECONDS; counts the webhook-ids it got."""

    def __init__(self, sleeping: bool):
        self.ids: set[str] = set()
        self.first = self.last = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps connections, as receivers behind a proxy do

            def do_POST(self):  # http.server calls it by this name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if sleeping:
                    time.sleep(SLEEP_SECONDS)
                with receiver.lock:
                    receiver.ids.add(self.headers["webhook-id"])
                    receiver.last = time.monotonic()
                    receiver.first = receiver.first or receiver.last
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def register(port: int, key: str, url: str) -> str:
    """Register `url` with `key` (a partner's: its own notifications; an operator's: all)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/webhooks",
        data=json.dumps({"url": url}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())["id"]


def drained(engine, receiver: Receiver, endpoint_id: str, started: float, wait: float) -> dict:
    """After the load: wait up to `wait` s for the endpoint's deliveries to settle, then the
    figures (notifications written during the run, delivered, the delivery rate)."""
    # Here, not at the top: an A/B's arm A may serve a revision that has no such tables.
    from ticketboss.store.tables import notifications, webhook_deliveries

    deadline = time.monotonic() + wait
    pending = select(func.count()).where(
        webhook_deliveries.c.endpoint_id == endpoint_id, webhook_deliveries.c.status == "pending"
    )
    with engine.connect() as conn:
        while conn.scalar(pending) and time.monotonic() < deadline:
            conn.rollback()
            time.sleep(0.2)
        left = conn.scalar(pending)
        total = conn.scalar(
            select(func.count()).where(webhook_deliveries.c.endpoint_id == endpoint_id)
        )
        written = conn.scalar(select(func.count()).select_from(notifications))
    with receiver.lock:
        got, first, last = len(receiver.ids), receiver.first, receiver.last
    span = last - first
    return {
        "notifications": written,
        "deliveries": total,
        "received": got,
        "pending_after_s": wait if left else round(last - started, 1) if last else None,
        "still_pending": left,
        "delivered_per_s": round(got / span, 1) if got > 1 and span > 0 else None,
    }
