#!/usr/bin/env python3
"""Benchmark TicketBoss end to end: a fresh PostgreSQL database, real gunicorn, closed-loop load.

    make bench                                                    # every scenario, 4–5 minutes
    make bench ARGS="--scenario hot --clients 100 --duration 10"
    make bench ARGS="--scenario checkout --hold-ttl 2 --duration 10"
    make bench ARGS="--scenario reads --duration 5"
    make bench ARGS="--scenario allocations --duration 8"         # partners' own shares + pool
    make bench ARGS="--ab HEAD --scenario hot --rounds 3"         # HEAD's code against ours
    make bench ARGS="--cluster 1,2,4 --duration 8"                # N hosts behind HAProxy
    make bench ARGS="--scenario scale --scale-rows 5000000"       # reads as the tables grow

Each scenario reseeds the default event, runs scripts/loadgen.py in its own process (so its
CPU is its own), reads the CAS counters of /metrics before and after, and checks the books in
the database (after `checkout`, once every hold's ttl has passed, against the event's summary
too; after `allocations`, per bucket, against the operator's listing of the allocations).
`hot` runs at 10 clients and at --clients, then `ceiling`: the same POST at --clients with
`{"seats": 0}`, parsed, authenticated and refused by validation (400) before the database,
the stack's own ceiling, against which hot's confirmed/s is the headline; right after it,
pgbench runs the same transaction straight against PostgreSQL at several client counts: its
best is the database's ceiling. `reads` GETs the summary, then an unknown path (no database), then
the OpenAPI document, each for the same time. The report goes to stdout and to results/. Exit
status 1 if an invariant failed; targets are only printed.

With --ab REV, each round is a whole bench run of one scenario (without pgbench) whose service
imports ticketboss from a git worktree of REV (arm A) or from the working tree (arm B), the
arms alternating A, B, A, B...; then a table compares them (results/ab-*).

With --cluster N,N,..., instead of the scenarios: for each N, under round robin and then
event affinity, a cluster (scripts/cluster: pgbouncer, N gunicorn hosts of one worker,
HAProxy) on a fresh database, and through HAProxy at --clients for --duration: `hot` (every
request reserves on one event) and `mix20` (each on a random one of 20 events). The table has
a row per (workload, N, balance) with each host's share of the confirmed reservations, from
the hosts' /metrics (results/cluster-*).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from bench.ab import run_ab
from bench.growth import run_growth
from bench.measure import run_all
from bench.report import plot_sweep, render, targets, write_results
from bench.scale import run_cluster_bench
from bench.service import (
    free_port,
    fresh_database,
    machine_facts,
    operator_key,
    partner_keys,
    served_from,
    start_service,
    stop_service,
    wait_healthy,
)
from bench.settings import EVENT_ID, HUGE, RESULTS, SCENARIOS
from bench.webhooks import MODES, Receiver, drained, register
from ticketboss.config import BenchSettings, Settings
from ticketboss.store.db import make_engine


def host_counts(text: str) -> list[int]:
    """--cluster's "1,2,4" as [1, 2, 4]; each at least 1."""
    counts = [int(n) for n in text.split(",") if n.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("host counts are whole numbers of at least 1: 1,2,4")
    return counts


def parse_args(argv=None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario",
        choices=(*SCENARIOS, "all", "scale"),
        default="all",
        help="all: every one of the first; scale (never part of all): reads on an empty "
        "database against one with --scale-rows reservations",
    )
    parser.add_argument("--scale-rows", type=int, default=1_000_000, help="scale: reservations")
    parser.add_argument("--scale-partners", type=int, default=1_000, help="scale: their partners")
    parser.add_argument("--scale-events", type=int, default=100_000, help="scale: other events")
    parser.add_argument(
        "--clients",
        type=int,
        default=100,
        help="of hot (besides 10), sellout, mixed, read-heavy, reads, checkout and allocations",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds of each timed run: hot, pgbench, mixed, read-heavy, each of reads, "
        "checkout, allocations (its event is sized for it), every sweep step",
    )
    parser.add_argument("--seats", default="1-10", help="seats per reservation: N or MIN-MAX")
    parser.add_argument("--hold-seats", default="1-4", help="checkout: seats per hold")
    parser.add_argument(
        "--hold-ttl", type=int, default=2, help="checkout: seconds each hold lasts (ttlSeconds)"
    )
    parser.add_argument(
        "--think-ms", default="50-250", help="checkout: think time before confirming or releasing"
    )
    parser.add_argument(
        "--checkout-seats",
        type=int,
        default=HUGE,
        help="checkout: the event's total seats (default: it never runs out)",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="taken if free, else any free one (0: any)"
    )
    parser.add_argument(
        "--auth",
        choices=("keys", "open"),
        default="keys",
        help="AUTH_MODE of the service: keys (the default; clients send partner keys) or open",
    )
    parser.add_argument(
        "--ab",
        metavar="REV",
        help="compare the service at git revision REV (A) with the working tree (B), round by "
        "round, on one --scenario",
    )
    parser.add_argument(
        "--webhook",
        choices=MODES,
        help="register one webhook endpoint on a receiver of the bench's: partner-0's "
        "(partner, the default with keys: every feature on), one that sleeps 30 s per "
        "delivery (sleeping), an operator's that gets every notification (all: the "
        "dispatcher's own rate), or none",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy on every worker during each run: each layer's share of the samples "
        "(it takes CPU of its own: read the shares, not the rates)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--ab: timed runs of each arm")
    parser.add_argument(
        "--b-webhook",
        choices=MODES,
        help="--ab: arm B alone runs with this --webhook (A with none), on the same code "
        "when REV is HEAD and the tree is clean",
    )
    parser.add_argument(
        "--cluster",
        type=host_counts,
        metavar="N,N,...",
        help="instead of the scenarios: clusters of these many one-worker hosts behind HAProxy, "
        "each under round robin and event affinity, running hot and mix20 at --clients",
    )
    # A round of an A/B run: no pgbench, hot at --clients only, the report to this file.
    parser.add_argument("--round-json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.webhook is None:  # the targets are measured with every feature on (#23)
        keyed = args.auth == "keys" and args.scenario != "scale" and not args.cluster
        args.webhook = "partner" if keyed else "none"
    if args.hold_ttl < 1:
        parser.error("--hold-ttl must be at least 1 second")
    if args.ab and args.scenario == "all":
        parser.error("--ab compares one --scenario")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.webhook != "none" and args.auth != "keys":
        parser.error("--webhook registers its endpoint with a key: --auth keys")
    if args.scenario == "scale" and (args.ab or args.auth != "keys" or args.webhook != "none"):
        parser.error("--scenario scale runs alone, with partner keys: no --ab, no --webhook")
    if args.cluster and (args.ab or args.scenario != "all"):
        parser.error("--cluster runs its own workloads: no --ab, no --scenario")
    return args


def hook(args: argparse.Namespace, bench: dict, port: int):
    """--webhook: the bench's receiver and the endpoint registered on it, or None."""
    if args.webhook == "none":
        return None
    receiver = Receiver(sleeping=args.webhook == "sleeping")
    if args.webhook == "all":
        key = operator_key(bench["engine"], "bench-operator")
    else:
        key = bench["keys_file"].read_text().split()[0]  # partner-0's
    return receiver, register(port, key, receiver.url)


def main(argv=None) -> int:
    """Run the benchmark; 0 if every invariant held, 1 otherwise."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops gunicorn
    if args.ab:
        return run_ab(args)
    if args.cluster:
        return run_cluster_bench(args)
    url = BenchSettings.from_env().bench_database_url
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    fresh_database(url)
    engine = make_engine(Settings(database_url=url))
    port = free_port(args.port)
    log_path = RESULTS / f"service-{stamp}.log"
    with tempfile.TemporaryDirectory(prefix="ticketboss-bench-") as workdir:
        metrics_dir = Path(workdir) / "prometheus"
        metrics_dir.mkdir()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "AUTH_MODE": args.auth,
            "METRICS_TOKEN": os.environ.get("METRICS_TOKEN") or secrets.token_urlsafe(32),
        }
        if args.webhook != "none":
            from cryptography.fernet import Fernet

            env["WEBHOOKS_ALLOW_PRIVATE"] = "1"
            env["WEBHOOK_SECRET_KEYS"] = Fernet.generate_key().decode()
        bench = {"args": args, "url": url, "engine": engine, "port": port, "workdir": Path(workdir)}
        bench["metrics_token"] = env["METRICS_TOKEN"]
        bench["keys_file"] = partner_keys(engine, Path(workdir)) if args.auth == "keys" else None
        print(
            f"bench database {make_url(url).database}, service on 127.0.0.1:{port}, log {log_path}"
        )
        service = bench["service"] = start_service(env, log_path)
        try:
            wait_healthy(service, port, log_path)
            code = served_from(service.pid)
            print(f"ticketboss served from {Path(code).parent}", flush=True)
            if args.scenario == "scale":
                return run_growth(bench)
            hooked = hook(args, bench, port)
            started = time.monotonic()
            runs, ceiling = run_all(bench)
            if hooked is not None:
                receiver, endpoint_id = hooked
                wait = 5.0 if args.webhook == "sleeping" else 60.0
                webhook = drained(engine, receiver, endpoint_id, started, wait)
                webhook["mode"] = args.webhook
                receiver.close()
                print(f"   webhook ({args.webhook}): {webhook}", flush=True)
        finally:
            stop_service(service)
    machine = machine_facts(engine, env)
    engine.dispose()

    sweep = [r for r in runs if r["scenario"] == "sweep"]
    plot = f"sweep-{stamp}.png" if sweep and not args.round_json else None
    if plot:
        title = (
            f"hot sweep, seats {args.seats}, {machine['nproc']} CPUs, "
            f"gunicorn {machine['gunicorn']}"
        )
        plot_sweep(sweep, RESULTS / plot, title)
    report = {
        "timestamp": stamp,
        "machine": machine,
        "config": {
            "scenario": args.scenario,
            "clients": args.clients,
            "duration_s": args.duration,
            "seats": args.seats,
            "auth": args.auth,
            "event_id": EVENT_ID,
            "port": port,
            "database": make_url(url).render_as_string(hide_password=True),
        },
        "runs": runs,
        "webhook": webhook if hooked is not None else None,
        "pgbench": ceiling,
        "targets": [
            dict(zip(("target", "measured", "met"), t, strict=True)) for t in targets(runs, ceiling)
        ],
        "ok": all(r["ok"] for r in runs),
        "plot": plot,
        "service_log": str(log_path),
        "service_code": code,
    }
    if args.round_json:  # the A/B run reports the rounds together
        args.round_json.write_text(json.dumps(report, default=str))
        return 0 if report["ok"] else 1
    write_results(report, stamp)
    print()
    print(render(report), end="")
    print(
        f"\nwrote {RESULTS}/bench-{stamp}.md, .json"
        + (f", {plot}" if plot else "")
        + " and latest.*"
    )
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except RuntimeError as exc:
        raise SystemExit(f"bench failed: {exc}") from exc
