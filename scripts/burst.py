#!/usr/bin/env python3
"""Fire N simultaneous reservation requests at a running TicketBoss and check the outcome.

    TB_KEY=<operator key> python scripts/burst.py --url http://127.0.0.1:8000 --requests 200

TB_KEY is sent as the bearer key (an operator's: it reserves for partner-0 … partner-6); it is
read from the environment, never from the command line, which `ps` shows to everyone.

Every request is sent at the same instant (threads lined up on a Barrier). Afterwards the
event summary is read back and checked: seats sold = sum of the 201s, and every 409 was
genuine (the request asked for more seats than were left at the end, which in a
reserve-only burst can only be fewer than when it was refused).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

HEADERS = {"Authorization": f"Bearer {os.environ['TB_KEY']}"} if os.environ.get("TB_KEY") else {}


def post(host: str, port: int, seats: int, start: threading.Barrier, results: list, i: int):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.connect()
    body = json.dumps({"partnerId": f"partner-{i % 7}", "seats": seats})
    start.wait()
    began = time.perf_counter()
    try:
        headers = {"Content-Type": "application/json", **HEADERS}
        conn.request("POST", "/api/reservations", body, headers)
        response = conn.getresponse()
        response.read()
        results[i] = (response.status, seats, time.perf_counter() - began)
    except OSError as exc:
        results[i] = (f"error: {exc.__class__.__name__}", seats, time.perf_counter() - began)
    finally:
        conn.close()


def get_json(host: str, port: int, path: str) -> dict:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", path, headers=HEADERS)
    return json.loads(conn.getresponse().read())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seats", default="1-10", help="seats per request: N or MIN-MAX")
    parser.add_argument("--seed", type=int, default=2025)
    args = parser.parse_args()

    url = urlsplit(args.url)
    low, _, high = args.seats.partition("-")
    rng = random.Random(args.seed)
    asks = [rng.randint(int(low), int(high or low)) for _ in range(args.requests)]

    before = get_json(url.hostname, url.port, "/api/reservations")
    results: list = [None] * args.requests
    start = threading.Barrier(args.requests)
    threads = [
        threading.Thread(target=post, args=(url.hostname, url.port, seats, start, results, i))
        for i, seats in enumerate(asks)
    ]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    after = get_json(url.hostname, url.port, "/api/reservations")

    statuses = Counter(status for status, _, _ in results)
    sold = sum(seats for status, seats, _ in results if status == 201)
    spurious = [
        seats for status, seats, _ in results if status == 409 and seats <= after["availableSeats"]
    ]
    latencies = sorted(latency for _, _, latency in results)
    report = {
        "requests": args.requests,
        "seats_asked": sum(asks),
        "statuses": dict(sorted(statuses.items(), key=str)),
        "seats_sold_by_201s": sold,
        "available_before": before["availableSeats"],
        "available_after": after["availableSeats"],
        "books_balance": before["availableSeats"] - sold == after["availableSeats"],
        "version_rise": after["version"] - before["version"],
        "spurious_409s": len(spurious),
        "wall_seconds": round(elapsed, 3),
        "latency_ms": {
            "p50": round(latencies[len(latencies) // 2] * 1000, 1),
            "p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
            "max": round(latencies[-1] * 1000, 1),
        },
    }
    print(json.dumps(report, indent=2))
    healthy = report["books_balance"] and not spurious and set(statuses) <= {201, 409, 503}
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
