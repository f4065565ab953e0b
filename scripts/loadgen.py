#!/usr/bin/env python3
"""Closed-loop load on TicketBoss over raw keep-alive HTTP/1.1; prints one JSON report.

    python scripts/loadgen.py --port 8765 --scenario hot --clients 100 --duration 10

Each client owns one connection and sends its next request as soon as the previous response
has arrived. At the deadline no new request starts; the ones in flight get at most --drain
seconds, so every request sent is either answered or counted as unanswered. Scenarios:

- hot:     every request reserves seats; with --events, of a random one of those events
  (POST /api/events/<id>/reservations) rather than the default one (/api/reservations);
- sellout: like hot, but a client stops once a 409 says 0 seats are available;
- mixed:   70 % reserve, 20 % summary, 10 % cancel one of the client's own reservations;
- read-heavy: 90 % summary, 10 % reserve; each client checks that a summary it reads shows
  at least the version it last read, plus one for each of its own 201s since (read your writes);
- read:    every request is GET --path (a summary, an unknown path, the OpenAPI document);
- checkout: hold seats for --hold-ttl seconds, think, then confirm (80 %), release (10 %) or
  abandon the hold to let it lapse (10 %). At the deadline no new checkout starts; one under
  way finishes.
- allocations: like hot, on --event-id's route; client i acts for partner i modulo the keys
  (or --partners, named partner-<n> in the body without keys), and the report tallies each
  partner's 201s and seats and its 409s by the bucket their problem body names.

Plain asyncio streams and hand-written request bytes keep the generator cheap, so that it
measures the service rather than itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import resource
import time
from collections import Counter, defaultdict
from urllib.parse import quote

PATH = "/api/reservations"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
CONNECTION_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
NOT_ENOUGH = re.compile(rb"(\d+) requested, (\d+) available")
VERSION = re.compile(rb'"version":\s*(\d+)')
PROBLEM_TYPE = re.compile(rb'"type":\s*"/problems/([\w-]+)"')
CONFIRM, RELEASE = 0.8, 0.1  # of checkouts; the rest abandon their hold
# Each scenario that mixes operations: (operation, upper bound of its share of a roll).
MIXES = {
    "mixed": (("reserve", 0.7), ("summary", 0.9), ("cancel", 1.0)),
    "read-heavy": (("summary", 0.9), ("reserve", 1.0)),
}


class Tally:
    """What every client saw: statuses per operation, latencies, 409s, confirmed ids."""

    def __init__(self):
        self.sent = 0
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.asked_409: Counter = Counter()
        # --events: statuses and the seats of 409s, per event.
        self.by_event: dict[str, Counter] = defaultdict(Counter)
        self.asked_409_by_event: dict[str, Counter] = defaultdict(Counter)
        self.problems_409: Counter = Counter()  # checkout: 409s by problem type
        self.abandoned = 0
        self.ids: list[str] = []
        self.seats_sold = 0
        self.clients_sold_out = 0
        self.last_stop = 0.0
        # read-heavy: summaries read after the client's own 201; those whose version was
        # below what that 201 made it; those below a version the client had read already.
        self.after_write = 0
        self.stale_after_write = 0
        self.went_back = 0
        # allocations: by partner, its 201s and their seats, and its not-enough-seats 409s by
        # (bucket, seats asked); 409 bodies that lack a member or contradict themselves.
        self.partner_201: Counter = Counter()
        self.partner_seats: Counter = Counter()
        self.partner_409: dict[int, Counter] = defaultdict(Counter)
        self.unnamed_409 = 0
        self.contradicting_409 = 0

    def refused(self, partner: int, seats: int, body: bytes) -> None:
        """An allocations run's 409: by problem type, and a not-enough-seats one by the
        bucket its body names ("?" when it names none) and the seats the client asked."""
        kind = problem_type(body)
        self.problems_409[kind] += 1
        if kind != "not-enough-seats":
            return
        try:
            problem = json.loads(body)
            bucket = problem.get("bucket")
            available, requested = problem.get("available"), problem.get("requested")
        except (ValueError, AttributeError):
            bucket = available = requested = None
        if not isinstance(bucket, str) or requested != seats or not isinstance(available, int):
            self.unnamed_409 += 1
        elif available >= requested:  # "not enough" with enough there
            self.contradicting_409 += 1
        self.partner_409[partner][bucket if isinstance(bucket, str) else "?", seats] += 1


def request_bytes(method: str, path: str, host: str, body: bytes = b"", key: str = "") -> bytes:
    """One HTTP/1.1 request, with the client's API key if it has one; keep-alive is the
    HTTP/1.1 default."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if key:
        head += f"Authorization: Bearer {key}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server will close the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = CONTENT_LENGTH.search(head)
    body = await reader.readexactly(int(length.group(1))) if length else b""
    return int(head[9:12]), body, bool(CONNECTION_CLOSE.search(head))


class Link:
    """A client's keep-alive connection: opened when needed, dropped when the server closes
    it or it breaks. Every request sent through it is tallied."""

    def __init__(self, args, tally: Tally):
        self.args, self.tally = args, tally
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, operation: str, raw: bytes) -> tuple[int, bytes] | None:
        """The response's status and body; None when no answer came (tallied as such)."""
        tally = self.tally
        if self.writer is None:
            try:
                self.reader, self.writer = await asyncio.open_connection(
                    self.args.host, self.args.port
                )
            except OSError:
                tally.statuses[operation]["connect-error"] += 1
                await asyncio.sleep(0.05)  # a refused connect fails at once: don't spin
                return None
        assert self.reader is not None
        tally.sent += 1
        began = time.perf_counter()
        try:
            self.writer.write(raw)
            status, body, close = await read_response(self.reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            tally.statuses[operation]["connection-lost"] += 1
            self.close()
            return None
        tally.latencies[operation].append(time.perf_counter() - began)
        tally.statuses[operation][str(status)] += 1
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def pick(mix, roll: float) -> str:
    """The operation of a mix whose share contains the roll."""
    return next((operation for operation, bound in mix if roll < bound), mix[-1][0])


def next_request(scenario, rng, reserves, own_ids, host, key, read=b""):
    """The client's next (operation, request bytes, seats asked); `read` is what the read
    and refused scenarios send every time."""
    if scenario in ("read", "refused"):
        return scenario, read, 0
    operation = pick(MIXES[scenario], rng.random()) if scenario in MIXES else "reserve"
    if operation == "summary":
        return "summary", request_bytes("GET", PATH, host, key=key), 0
    if operation == "cancel" and own_ids:
        reservation_id = own_ids.pop(rng.randrange(len(own_ids)))
        return "cancel", request_bytes("DELETE", f"{PATH}/{reservation_id}", host, key=key), 0
    seats, raw = rng.choice(reserves)
    return "reserve", raw, seats


async def client(i: int, args, tally: Tally, deadline: float) -> None:
    """One closed-loop client on its own keep-alive connection."""
    host = f"{args.host}:{args.port}"
    rng = random.Random(f"{args.seed}-{i}")
    low, _, high = args.seats.partition("-")
    # With keys, client i acts for the partner of key i (modulo their number), which the
    # service takes from the key; without, it names itself as the Node.js clients did.
    key = args.keys[i % len(args.keys)] if args.keys else ""
    body = b'{"seats": %d}' if key else b'{"partnerId": "client-%d", "seats": %%d}' % i
    # The reserve requests by event: None is the default event's route. Without --events
    # no event is drawn, so the random sequence (and the load) stay what they were.
    paths = {e: f"/api/events/{quote(e, safe='')}/reservations" for e in args.events}
    allocations = args.scenario == "allocations"
    partner = i % (len(args.keys) or args.partners)  # allocations: whom the client acts for
    if allocations:
        paths = {None: f"/api/events/{quote(args.event_id, safe='')}/reservations"}
        if not key:
            body = b'{"partnerId": "partner-%d", "seats": %%d}' % partner
    reserves = {
        event: [
            (s, request_bytes("POST", path, host, body % s, key))
            for s in range(int(low), int(high or low) + 1)
        ]
        for event, path in (paths or {None: PATH}).items()
    }
    read = request_bytes("GET", args.path, host, key=key)
    if args.scenario == "refused":  # the reservation's POST, refused by validation (400)
        read = request_bytes("POST", PATH, host, body % 0, key)
    own_ids: list[str] = []
    # read-heavy: the version this client's next summary must show at least (each of its
    # 201s committed after it had read `seen`, and each commit raised the version).
    seen = due = 0
    link = Link(args, tally)
    try:
        while time.perf_counter() < deadline:
            event = rng.choice(args.events) if args.events else None
            operation, raw, seats = next_request(
                args.scenario, rng, reserves[event], own_ids, host, key, read
            )
            answer = await link.send(operation, raw)
            if answer is None:
                continue
            status, body = answer
            if event is not None:
                tally.by_event[event][str(status)] += 1
                if status == 409:
                    tally.asked_409_by_event[event][seats] += 1
            if args.scenario == "read-heavy" and operation == "summary" and status == 200:
                version = int(VERSION.search(body).group(1))
                tally.went_back += version < seen
                tally.after_write += due > seen
                tally.stale_after_write += seen <= version < due
                seen = due = max(seen, version)
            if allocations:
                if status == 201:
                    tally.partner_201[partner] += 1
                    tally.partner_seats[partner] += seats
                elif status == 409:
                    tally.refused(partner, seats, body)
            if status == 201:
                due += 1
                reservation_id = json.loads(body)["reservationId"]
                tally.ids.append(reservation_id)
                tally.seats_sold += seats
                own_ids.append(reservation_id)
            elif status == 409:
                tally.asked_409[seats] += 1
                left = NOT_ENOUGH.search(body)
                if args.scenario == "sellout" and left and int(left.group(2)) == 0:
                    tally.clients_sold_out += 1
                    break
    finally:
        tally.last_stop = max(tally.last_stop, time.perf_counter())
        link.close()


def span(text: str) -> tuple[int, int]:
    """(low, high) of "N" or "MIN-MAX"."""
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def problem_type(body: bytes) -> str:
    """The slug of a problem+json body's type ("not-enough-seats"), or "?" without one."""
    found = PROBLEM_TYPE.search(body)
    return found.group(1).decode() if found else "?"


async def checkout_client(i: int, args, tally: Tally, deadline: float) -> None:
    """Checkouts one after another on one keep-alive connection: hold, think, then confirm,
    release or abandon the hold. A checkout under way at the deadline finishes, so that
    every hold ends the way its client chose."""
    host = f"{args.host}:{args.port}"
    rng = random.Random(f"{args.seed}-{i}")
    key = args.keys[i % len(args.keys)] if args.keys else ""
    event = f"/api/events/{quote(args.event_id, safe='')}"
    hold_body = b'{"seats": %d, "ttlSeconds": %d}'
    if not key:  # as in client(): without keys, the body names the partner
        hold_body = b'{"partnerId": "client-%d", "seats": %%d, "ttlSeconds": %%d}' % i
    low, high = span(args.seats)
    holds = [
        (s, request_bytes("POST", f"{event}/holds", host, hold_body % (s, args.hold_ttl), key))
        for s in range(low, high + 1)
    ]
    think_low, think_high = span(args.think_ms)
    link = Link(args, tally)
    try:
        while time.perf_counter() < deadline:
            seats, raw = rng.choice(holds)
            answer = await link.send("hold", raw)
            if answer is None:
                continue
            status, body = answer
            if status == 409:
                kind = problem_type(body)
                tally.problems_409[kind] += 1
                if kind == "not-enough-seats":
                    tally.asked_409[seats] += 1
            if status != 201:
                continue
            reservation_id = json.loads(body)["reservationId"]
            tally.ids.append(reservation_id)
            tally.seats_sold += seats
            await asyncio.sleep(rng.uniform(think_low, think_high) / 1000)
            path = f"{event}/reservations/{reservation_id}"
            roll = rng.random()
            if roll < CONFIRM:
                answer = await link.send(
                    "confirm", request_bytes("POST", f"{path}/confirm", host, key=key)
                )
            elif roll < CONFIRM + RELEASE:
                answer = await link.send("release", request_bytes("DELETE", path, host, key=key))
            else:
                tally.abandoned += 1
                continue
            if answer is not None and answer[0] == 409:
                tally.problems_409[problem_type(answer[1])] += 1
    finally:
        tally.last_stop = max(tally.last_stop, time.perf_counter())
        link.close()


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted samples, in milliseconds."""
    if not ordered:
        return 0.0
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 2)


def cpu_seconds() -> float:
    """User + system CPU time of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(args) -> tuple[dict, list[str]]:
    """Drive the clients until the deadline (or sell-out), drain; the report and the 201 ids."""
    tally = Tally()
    cpu_before = cpu_seconds()
    start = time.perf_counter()
    deadline = start + args.duration
    drive = checkout_client if args.scenario == "checkout" else client
    tasks = [asyncio.create_task(drive(i, args, tally, deadline)) for i in range(args.clients)]
    _, pending = await asyncio.wait(tasks, timeout=args.duration + args.drain)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - start
    cpu = cpu_seconds() - cpu_before

    statuses = sum(tally.statuses.values(), Counter())
    answered = sum(v for k, v in statuses.items() if k.isdigit())
    ordered = sorted(t for samples in tally.latencies.values() for t in samples)
    # A checkout run's confirmed reservations are its confirms; the others' are their 201s.
    if args.scenario == "checkout":
        confirmed = tally.statuses["confirm"]["200"]
    else:
        confirmed = statuses["201"]
    report = {
        "scenario": args.scenario,
        "clients": args.clients,
        "seats": args.seats,
        "duration_s": args.duration,
        "wall_s": round(wall, 3),
        "requests": answered,
        "sent": tally.sent,
        "unanswered": tally.sent - answered,
        "statuses": dict(sorted(statuses.items())),
        "by_operation": {op: dict(sorted(c.items())) for op, c in sorted(tally.statuses.items())},
        "latency_ms": {
            "p50": percentile(ordered, 0.50),
            "p90": percentile(ordered, 0.90),
            "p99": percentile(ordered, 0.99),
            "max": percentile(ordered, 1.0),
        },
        "requests_per_s": round(answered / wall, 1),
        "confirmed": confirmed,
        "confirmed_per_s": round(confirmed / wall, 1),
        "seats_sold": tally.seats_sold,
        "conflicts_409": statuses["409"],
        "asked_409": {str(k): v for k, v in sorted(tally.asked_409.items())},
        "reservation_ids": {"count": len(set(tally.ids)), "file": args.ids_file},
        "cpu_s": round(cpu, 3),
        "cpu_percent": round(100 * cpu / wall, 1),
    }
    if args.scenario == "sellout":
        report["sold_out"] = tally.clients_sold_out == args.clients
        report["sellout_s"] = round(tally.last_stop - start, 3)
    if args.scenario == "checkout":
        report["checkout"] = checkout_figures(args, tally)
    if args.scenario in ("read", "read-heavy"):
        report["reads"] = read_figures(args, tally, wall)
    if args.scenario == "allocations":
        report["allocations"] = allocation_figures(args, tally)
    if args.events:
        report["events"] = {
            event: {
                "statuses": dict(sorted(tally.by_event[event].items())),
                "asked_409": {
                    str(k): v for k, v in sorted(tally.asked_409_by_event[event].items())
                },
            }
            for event in args.events
        }
    return report, tally.ids


def checkout_figures(args, tally: Tally) -> dict:
    """What only a checkout run has: its settings, how its checkouts ended, its 409s by
    problem type, and the latency of each kind of request."""
    done = tally.statuses
    latency = {}
    for operation in ("hold", "confirm", "release"):
        ordered = sorted(tally.latencies[operation])
        latency[operation] = {"p50": percentile(ordered, 0.50), "p99": percentile(ordered, 0.99)}
    return {
        "hold_ttl_s": args.hold_ttl,
        "think_ms": args.think_ms,
        "holds": done["hold"]["201"],
        "seats_held": tally.seats_sold,
        "confirms": done["confirm"]["200"],
        "releases": done["release"]["204"],
        "abandoned": tally.abandoned,
        "problems_409": dict(sorted(tally.problems_409.items())),
        "latency_ms": latency,
    }


def allocation_figures(args, tally: Tally) -> dict:
    """What only an allocations run has: by partner index, its 201s, their seats and its
    not-enough-seats 409s as {bucket: {seats asked: count}}; 409s by problem type; and the
    409 bodies that named no bucket (or not the seats asked) or said enough were available."""
    partners = len(args.keys) or args.partners
    by_partner = {}
    for partner in range(partners):
        refused: dict[str, dict[str, int]] = defaultdict(dict)
        for (bucket, seats), n in sorted(tally.partner_409[partner].items()):
            refused[bucket][str(seats)] = n
        by_partner[str(partner)] = {
            "201": tally.partner_201[partner],
            "seats": tally.partner_seats[partner],
            "409": dict(refused),
        }
    return {
        "partners": partners,
        "by_partner": by_partner,
        "problems_409": dict(sorted(tally.problems_409.items())),
        "unnamed_409": tally.unnamed_409,
        "contradicting_409": tally.contradicting_409,
    }


def read_figures(args, tally: Tally, wall: float) -> dict:
    """What only a read run has: summaries (or GETs of --path) answered a second, the latency
    of each operation, and read-heavy's read-your-writes tally."""
    answers = tally.statuses["summary" if args.scenario == "read-heavy" else "read"]
    reads = sum(n for status, n in answers.items() if status.isdigit())
    latency = {}
    for operation, samples in sorted(tally.latencies.items()):
        ordered = sorted(samples)
        latency[operation] = {"p50": percentile(ordered, 0.50), "p99": percentile(ordered, 0.99)}
    figures = {"path": args.path, "reads": reads, "reads_per_s": round(reads / wall, 1)}
    figures["latency_ms"] = latency
    if args.scenario == "read-heavy":
        figures["read_your_writes"] = {
            "after_write": tally.after_write,
            "stale_after_write": tally.stale_after_write,
            "went_back": tally.went_back,
        }
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--scenario",
        choices=(
            "hot",
            "sellout",
            "mixed",
            "read-heavy",
            "read",
            "refused",
            "checkout",
            "allocations",
        ),
        default="hot",
    )
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (sellout: the cap)")
    parser.add_argument("--drain", type=float, default=10.0, help="max wait for in-flight requests")
    parser.add_argument("--seats", default="1-10", help="seats per reservation: N or MIN-MAX")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument(
        "--event-id", default="node-meetup-2025", help="checkout's and allocations' event"
    )
    parser.add_argument(
        "--partners",
        type=int,
        default=20,
        help="allocations without keys: client i names partner-<i modulo this> in its body",
    )
    parser.add_argument("--hold-ttl", type=int, default=2, help="checkout: ttlSeconds of holds")
    parser.add_argument(
        "--think-ms", default="50-250", help="checkout: think time before confirming, N or MIN-MAX"
    )
    parser.add_argument("--path", default=PATH, help="read: the path every request GETs")
    parser.add_argument(
        "--events",
        type=lambda text: [e for e in text.split(",") if e],
        default=[],
        help="hot: reserve on a random one of these event ids (comma-separated) each time",
    )
    parser.add_argument("--ids-file", help="write the reservationId of every 201 here")
    parser.add_argument(
        "--keys-file", help="API keys, one per line (not on the command line, which ps shows)"
    )
    args = parser.parse_args()
    if args.events and args.scenario != "hot":
        parser.error("--events is for the hot scenario")
    args.keys = []
    if args.keys_file:
        with open(args.keys_file) as keys:
            args.keys = [line.strip() for line in keys if line.strip()]
    try:
        report, ids = asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    if args.ids_file:
        with open(args.ids_file, "w") as out:
            out.writelines(f"{reservation_id}\n" for reservation_id in ids)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
