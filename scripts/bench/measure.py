"""One load run measured: the load generator, the CAS counters, the books and their
invariants; and pgbench, the one-commit-per-reservation ceiling."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.error import URLError
from urllib.parse import quote
from urllib.request import Request, urlopen

from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from bench import allocations, profile
from bench.report import (
    allocation_checks,
    allocation_lines,
    allocation_spurious,
    books_checks,
    books_line,
    other_5xx,
    pgbench_line,
    reads_line,
)
from bench.service import machine_cpu_seconds, service_cpu
from bench.settings import (
    ALLOCATION_WARMUP_S,
    CARRY_ALLOCATION,
    COUNTERS,
    DRAIN_S,
    EVENT_ID,
    HOT_FEW_CLIENTS,
    HUGE,
    LAPSE_MARGIN_S,
    PGBENCH_CLIENTS,
    READ_HEAVY_SEATS,
    READS,
    RESULTS,
    ROOT,
    SAMPLE,
    SCENARIOS,
    SELLOUT_CAP_S,
    SELLOUT_SEATS,
    SWEEP_CLIENTS,
    TPS,
)
from ticketboss.cli import seed_event
from ticketboss.store.tables import events, reservations


def cas_counters(
    port: int, token: str, names: dict[str, str] = COUNTERS
) -> dict[str, float] | None:
    """Each counter of `names` (the CAS counters unless told) summed over its samples in
    /metrics (scraped with the METRICS_TOKEN `token`), by its short name; None when /metrics
    does not answer."""
    scrape = Request(f"http://127.0.0.1:{port}/metrics")
    scrape.add_header("Authorization", f"Bearer {token}")
    try:
        with urlopen(scrape, timeout=5) as response:
            body = response.read().decode()
    except URLError:
        return None
    totals: dict[str, float] = {}
    for line in body.splitlines():
        sample = SAMPLE.match(line)
        if sample and sample.group(1) in names:
            key = names[sample.group(1)]
            totals[key] = totals.get(key, 0.0) + float(sample.group(2))
    return totals


def run_loadgen(
    port: int,
    scenario: str,
    clients: int,
    duration: float,
    seats: str,
    ids_file,
    keys_file,
    extra: list[str] | None = None,
):
    """scripts/loadgen.py as a separate process (with the `extra` options of its scenario);
    its JSON report."""
    options = f"--port {port} --scenario {scenario} --clients {clients} --duration {duration}"
    options += f" --drain {DRAIN_S} --seats {seats}"
    command = [
        sys.executable,
        ROOT / "scripts" / "loadgen.py",
        *options.split(),
        *(extra or []),
        "--ids-file",
        ids_file,
    ]
    if keys_file is not None:
        command += ["--keys-file", keys_file]
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=duration + DRAIN_S + 30
    )
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def worker_cpu_ms_per_request(
    before: dict[int, float], after: dict[int, float], master: int, requests: int
) -> list[float]:
    """Each worker's CPU over the run's answered requests (those of a worker that was not
    there before and after the run left out)."""
    workers = sorted(pid for pid in after.keys() & before.keys() if pid != master)
    return [1000 * (after[pid] - before[pid]) / max(requests, 1) for pid in workers]


def checkout_options(args: argparse.Namespace) -> list[str]:
    """The load generator's options of a checkout run."""
    return ["--event-id", EVENT_ID, "--hold-ttl", str(args.hold_ttl), "--think-ms", args.think_ms]


def read_summary(port: int, keys_file: Path | None) -> dict:
    """The event's summary, read as a client reads it (with a partner key when the service
    wants one); the service reclaims lapsed holds' seats before it answers."""
    request = Request(f"http://127.0.0.1:{port}/api/events/{quote(EVENT_ID, safe='')}")
    if keys_file is not None:
        request.add_header("Authorization", f"Bearer {keys_file.read_text().split()[0]}")
    try:
        with urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except URLError as exc:  # an HTTPError too: anything but 2xx
        raise RuntimeError(f"GET the summary of {EVENT_ID}: {exc}") from exc


def read_books(engine, event_id: str = EVENT_ID) -> dict:
    """The event's seats and its reservation rows, read straight from the database."""
    with engine.connect() as conn:
        total, available = conn.execute(
            select(events.c.total_seats, events.c.available_seats).where(
                events.c.event_id == event_id
            )
        ).one()
        rows = conn.execute(
            select(reservations.c.id, reservations.c.seats, reservations.c.status).where(
                reservations.c.event_id == event_id
            )
        ).all()
    return {
        "total": total,
        "available": available,
        "confirmed_seats": sum(r.seats for r in rows if r.status == "confirmed"),
        "rows": len(rows),
        "cancelled": sum(r.status == "cancelled" for r in rows),
        "by_status": Counter(r.status for r in rows),
        "ids": {str(r.id) for r in rows},
    }


def checkout_books(summary: dict, books: dict, load: dict) -> dict:
    """What a checkout run's books line is made of: the summary once every hold's ttl has
    passed, the confirmed and still-held rows in the database, and the 200 confirms."""
    return {
        "total": summary["totalSeats"],
        "available": summary["availableSeats"],
        "held": summary["heldSeats"],
        "reservation_count": summary["reservationCount"],
        "confirmed_seats": books["confirmed_seats"],
        "confirmed_rows": books["by_status"]["confirmed"],
        "held_rows": books["by_status"]["held"],
        "expired_rows": books["by_status"]["expired"],
        "confirms": load["checkout"]["confirms"],
    }


def check_invariants(books: dict, load: dict, ids_file: Path) -> dict[str, bool]:
    """The books balance, every 201 is a row (and nothing else is), no 5xx but 503."""
    statuses = load["statuses"]
    checks = {
        "available + confirmed seats = total": (
            books["available"] + books["confirmed_seats"] == books["total"]
        ),
        "reservation rows = 201s received": books["rows"] == statuses.get("201", 0),
        "every 201's reservationId is in the database": (
            set(ids_file.read_text().split()) <= books["ids"]
        ),
        "every request answered": load["unanswered"] == 0 and all(map(str.isdigit, statuses)),
        "no 5xx other than 503": not other_5xx(statuses),
    }
    if "cancel" in load["by_operation"] or "release" in load["by_operation"]:
        checks["cancelled rows = 204s"] = books["cancelled"] == statuses.get("204", 0)
    return checks


def allocation_warm_up(bench: dict, clients: int, seats: str, keys_file: Path | None) -> float:
    """Seats sold a second by the allocations load on the event before it has allocations
    (never running out): what the buckets of the run are sized by."""
    seed_event(bench["engine"], EVENT_ID, "TicketBoss bench", HUGE, reset=True)
    ids_file = bench["workdir"] / f"ids-allocations-warm-up-{clients}.txt"
    load = run_loadgen(
        bench["port"],
        "allocations",
        clients,
        ALLOCATION_WARMUP_S,
        seats,
        ids_file,
        keys_file,
        allocations.options(),
    )
    return load["seats_sold"] / max(load["wall_s"], 1e-3)


def run_scenario(bench: dict, scenario: str, clients: int, duration: float) -> dict:
    """Reseed the event, drive one load run, and measure and check what it did."""
    args, engine, port = bench["args"], bench["engine"], bench["port"]
    checkout = scenario == "checkout"
    seats = {"checkout": args.hold_seats, "read-heavy": READ_HEAVY_SEATS}.get(scenario, args.seats)
    total = {"sellout": SELLOUT_SEATS, "checkout": args.checkout_seats}.get(scenario, HUGE)
    allocating = scenario == "allocations"
    keys_file, setup = bench["keys_file"], None
    if allocating:  # buckets sized by a warm-up's rate, for a run of this duration
        keys_file = allocations.keys(bench)
        rate = allocation_warm_up(bench, clients, seats, keys_file)
        plan = allocations.planned(duration, rate)
        total = allocations.pool_seats(duration, rate) + sum(a["seats"] for a in plan.values())
    seed_event(engine, EVENT_ID, "TicketBoss bench", total, reset=True)
    ids_file = bench["workdir"] / f"ids-{scenario.replace('/', '-')}-{clients}.txt"
    if allocating:  # before the counters: the operator's PUTs are no part of the run
        setup = allocations.prepare(bench, plan, keys_file, rate)
    carried = None
    if scenario.partition("/")[0] in CARRY_ALLOCATION:  # "reads/summary": a reads run
        carried = allocations.carry(bench)
    before = cas_counters(port, bench["metrics_token"])
    loadgen_scenario = {"sweep": "hot", "ceiling": "refused"}.get(scenario, scenario)
    extra = checkout_options(args) if checkout else None
    if allocating:
        extra = allocations.options()
    read = scenario.partition("reads/")[2]  # a run of the reads comparison: what it GETs
    if read:
        loadgen_scenario, extra = "read", ["--path", READS[read][0]]
    master = bench["service"].pid
    cpu_before = service_cpu(master), machine_cpu_seconds()
    sampling = None
    if args.profile:  # py-spy on each worker for the run's time
        workers = [pid for pid in cpu_before[0] if pid != master]
        out = RESULTS / "profiles" / f"{scenario.replace('/', '-')}-{clients}"
        sampling = profile.start(workers, duration, out)
    load = run_loadgen(port, loadgen_scenario, clients, duration, seats, ids_file, keys_file, extra)
    cpu_after = service_cpu(master), machine_cpu_seconds()
    after = cas_counters(port, bench["metrics_token"])
    sampled = profile.finish(sampling) if sampling is not None else None
    summary = None
    if checkout:
        # Every hold was taken before the load generator exited: once the ttl has passed
        # again, each one was confirmed, released or has lapsed, and reading the summary
        # reclaims the lapsed ones' seats.
        time.sleep(args.hold_ttl + LAPSE_MARGIN_S)
        summary = read_summary(port, bench["keys_file"])
    books = read_books(engine)
    invariants = check_invariants(books, load, ids_file)
    books_at_end = checkout_books(summary, books, load) if summary is not None else None
    if books_at_end is not None:
        invariants.update(books_checks(books_at_end))
    if read:
        path, status = READS[read]
        answered = load["statuses"] == {str(status): load["requests"]}
        invariants[f"every GET {path} answered {status}"] = answered
    if scenario == "ceiling":
        refused = load["statuses"] == {"400": load["requests"]}
        invariants['every {"seats": 0} answered 400'] = refused
    by_bucket = allocations.books(bench, setup, load) if setup is not None else None
    if by_bucket is not None:
        invariants.update(allocation_checks(by_bucket))
    if scenario == "read-heavy":
        seen = load["reads"]["read_your_writes"]
        fresh = seen["stale_after_write"] == seen["went_back"] == 0
        invariants["no summary older than what its client had read or written"] = fresh
    del load["reservation_ids"]["file"]  # a temporary file, gone after the run

    statuses, confirmed = load["statuses"], load["confirmed"]
    measured = before is not None and after is not None
    cas = {k: after[k] - before.get(k, 0) for k in after} if measured else None
    commits, retries = (cas or {}).get("commits"), (cas or {}).get("retries")
    # In a run that only reserves, available never rises: a 409 that asked for no more than
    # is left at the end had its seats there when it was refused. In a checkout run seats
    # come back, but never fewer are available than the total less the seats of every hold.
    floor = total - load["seats_sold"] if checkout else books["available"]
    spurious = sum(n for asked, n in load["asked_409"].items() if int(asked) <= floor)
    if by_bucket is not None:  # each 409 against the bucket that answered it
        spurious = allocation_spurious(by_bucket)
    # Changes written: reservations and holds (201), cancels and releases (204), confirms.
    written = statuses.get("201", 0) + statuses.get("204", 0) + (confirmed if checkout else 0)
    run = {
        "scenario": scenario,
        "clients": clients,
        "seats": "-" if read else seats,
        "load": load,
        "total_seats": total,
        "final_available": books["available"],
        "spurious_409": spurious,
        # asked_409 counts the 409s that said the seats were not there (every 409 but a
        # checkout run's hold-expired and not-held).
        "genuine_409": sum(load["asked_409"].values()) - spurious,
        "pct_503": 100 * statuses.get("503", 0) / max(load["requests"], 1),
        "other_5xx": other_5xx(statuses),
        "cas": cas,
        "retries_per_confirmed": retries / confirmed if retries is not None and confirmed else None,
        # CPU per answered request: the service's (gunicorn master and workers), and the whole
        # machine's (service, PostgreSQL, load generator and anything else running).
        "service_cpu_ms_per_request": 1000
        * (sum(cpu_after[0].values()) - sum(cpu_before[0].values()))
        / max(load["requests"], 1),
        "worker_cpu_ms_per_request": worker_cpu_ms_per_request(
            cpu_before[0], cpu_after[0], master, load["requests"]
        ),
        "machine_cpu_ms_per_request": 1000
        * (cpu_after[1] - cpu_before[1])
        / max(load["requests"], 1),
        "reservations_per_commit": written / commits if commits else None,
        "invariants": invariants,
        "ok": all(invariants.values()),
    }
    if books_at_end is not None:
        run["books"] = books_at_end
    if carried is not None:
        run["carried_allocation"] = carried
    if sampled is not None:
        run["profile"] = sampled
    if by_bucket is not None:
        run["allocations"] = by_bucket
    return run


def pgbench_ceiling(bench: dict, clients: int, duration: float) -> dict:
    """tps of the reserve transaction run by pgbench straight against PostgreSQL."""
    engine, url = bench["engine"], make_url(bench["url"])
    seed_event(engine, EVENT_ID, "TicketBoss bench", HUGE, reset=True)
    low, _, high = bench["args"].seats.partition("-")
    event = EVENT_ID.replace("'", "''")
    script = bench["workdir"] / "reserve.sql"
    script.write_text(
        f"\\set seats random({low}, {high or low})\n"
        "BEGIN;\n"
        "UPDATE events SET available_seats = available_seats - :seats, version = version + 1 "
        f"WHERE event_id = '{event}';\n"
        "INSERT INTO reservations (id, event_id, partner_id, seats, status, created_at) "
        f"VALUES (gen_random_uuid(), '{event}', 'pgbench', :seats, 'confirmed', now());\n"
        "END;\n"
    )
    with engine.connect() as conn:
        free = conn.scalar(
            text(
                "SELECT current_setting('max_connections')::int - count(*) "
                "FROM pg_stat_activity WHERE backend_type = 'client backend'"
            )
        )
    # The service's idle pools hold connections too: stay under max_connections.
    used = max(1, min(clients, free - 2))
    seconds = max(1, round(duration))
    options = f"-n -c {used} -j {min(2, used)} -T {seconds} -h {url.host or '127.0.0.1'}"
    options += f" -p {url.port or 5432} -U {url.username or 'root'}"
    pgbench = shutil.which("pgbench") or "/usr/bin/pgbench"
    command = [pgbench, *options.split(), "-f", script, url.database]
    env = {**os.environ, "PGPASSWORD": url.password} if url.password else None
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, env=env, timeout=seconds + 60
    )
    seed_event(engine, EVENT_ID, "TicketBoss bench", HUGE, reset=True)
    tps = TPS.search(done.stdout)
    return {
        "clients": used,
        "clients_asked": clients,
        "duration_s": seconds,
        "tps": float(tps.group(1)) if tps else None,
        "error": None if tps else (done.stderr or done.stdout)[-1000:],
    }


def plan(args: argparse.Namespace) -> list[tuple[str, int, float]]:
    """(scenario, clients, seconds) of every load run, in order. A round of an A/B run
    (--round-json) runs hot only at --clients."""
    runs = []
    for scenario in SCENARIOS if args.scenario == "all" else (args.scenario,):
        if scenario == "sweep":
            runs += [("sweep", c, args.duration) for c in SWEEP_CLIENTS]
        elif scenario == "reads":
            runs += [(f"reads/{read}", args.clients, args.duration) for read in READS]
        elif scenario == "hot" and not args.round_json:
            clients = sorted({HOT_FEW_CLIENTS, args.clients})
            runs += [("hot", c, args.duration) for c in clients]
            # The same POST refused by validation before the database: the stack's ceiling.
            runs.append(("ceiling", args.clients, args.duration))
        else:
            runs.append(
                (scenario, args.clients, SELLOUT_CAP_S if scenario == "sellout" else args.duration)
            )
    return runs


def run_all(bench: dict) -> tuple[list[dict], list[dict] | None]:
    """Every planned run (and pgbench at each of its client counts after hot at --clients,
    but not in a round of an A/B run), printing progress."""
    args = bench["args"]
    runs, ceiling = [], None
    for scenario, clients, seconds in plan(args):
        print(f"== {scenario}: {clients} clients, up to {seconds:g} s", flush=True)
        run = run_scenario(bench, scenario, clients, seconds)
        if bench["service"].poll() is not None:
            raise RuntimeError(f"gunicorn exited during {scenario} ({bench['service'].returncode})")
        load = run["load"]
        print(
            f"   {load['requests_per_s']:.0f} req/s, {load['confirmed_per_s']:.0f} confirmed/s, "
            f"p99 {load['latency_ms']['p99']:.1f} ms, statuses {load['statuses']}"
        )
        for name, ok in run["invariants"].items():
            print(f"   {'PASS' if ok else 'FAIL'}  {name}", flush=True)
        if "books" in run:
            print(f"   {books_line(run['books'])}", flush=True)
        if "allocations" in run:
            for line in allocation_lines(run):
                print(f"   {line.partition(': ')[2]}", flush=True)
        if "reads" in load:
            print(f"   {reads_line(run)}", flush=True)
        for line in profile.lines(run["profile"]) if "profile" in run else ():
            print(f"   {line}", flush=True)
        runs.append(run)
        if scenario == "hot" and clients == args.clients and not args.round_json:
            # One row takes commits fastest from a few clients: the best count is the ceiling.
            counts = sorted({*PGBENCH_CLIENTS, clients})
            print(f"== pgbench ceiling: {counts} clients, {seconds:g} s each", flush=True)
            ceiling = [pgbench_ceiling(bench, c, seconds) for c in counts]
            print(f"   {pgbench_line(ceiling)}", flush=True)
    return runs, ceiling
