"""--cluster: the service as N hosts behind HAProxy, for each N and each balance, under two
workloads: `hot` (one event) and `mix20` (a random one of 20 events each request)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from bench.measure import cas_counters, read_books, run_loadgen
from bench.report import cluster_checks, render_cluster, spurious_by_event
from bench.service import fresh_database, machine_facts, partner_keys
from bench.settings import CLUSTER_BALANCES, CLUSTER_WORKLOADS, HOST_COUNTERS, HUGE, RESULTS
from cluster.run import Cluster
from ticketboss.cli import seed_event
from ticketboss.config import BenchSettings, Settings
from ticketboss.store.db import make_engine


def cluster_database_url() -> str:
    """The bench database's URL with "_cluster" added to its name, so that a cluster run
    never drops the database of a single-service bench running meanwhile."""
    url = make_url(BenchSettings.from_env().bench_database_url)
    return url.set(database=f"{url.database}_cluster").render_as_string(hide_password=False)


def counter_deltas(cluster: Cluster, before: list, after: list) -> list[dict] | None:
    """Each host's counters over the run, by host; None unless every /metrics answered."""
    if any(c is None for c in (*before, *after)):
        return None
    return [
        {"host": host.name, **{k: v - b.get(k, 0.0) for k, v in a.items()}}
        for host, b, a in zip(cluster.hosts, before, after, strict=True)
    ]


def run_workload(
    cluster: Cluster, balance: str, workload: str, engine, args, workdir: Path, keys_file
) -> dict:
    """Reseed the workload's events, drive it through HAProxy, and measure and check it."""
    events = CLUSTER_WORKLOADS[workload]
    for event in events:
        seed_event(engine, event, "TicketBoss bench", HUGE, reset=True)
    ids_file = workdir / f"ids-{workload}.txt"
    token = cluster.metrics_token
    hosts_before = [cas_counters(host.port, token, HOST_COUNTERS) for host in cluster.hosts]
    load = run_loadgen(
        cluster.haproxy.port,
        "hot",
        args.clients,
        args.duration,
        args.seats,
        ids_file,
        keys_file,
        ["--events", ",".join(events)],
    )
    hosts_after = [cas_counters(host.port, token, HOST_COUNTERS) for host in cluster.hosts]
    books = {event: read_books(engine, event) for event in events}
    deltas = counter_deltas(cluster, hosts_before, hosts_after)
    counted = [d.get("confirmed", 0.0) for d in deltas] if deltas is not None else None
    invariants = cluster_checks(books, load, set(ids_file.read_text().split()), counted)
    del load["reservation_ids"]["file"]  # a temporary file, gone after the run
    commits = sum(d.get("commits", 0.0) for d in deltas) if deltas is not None else None
    retries = sum(d.get("retries", 0.0) for d in deltas) if deltas is not None else None
    asked = {event: counts["asked_409"] for event, counts in load["events"].items()}
    return {
        "workload": workload,
        "hosts": len(cluster.hosts),
        "balance": balance,
        "clients": args.clients,
        "events": len(events),
        "load": load,
        "host_counters": deltas,
        "confirmed_by_host": counted,
        "retries_per_commit": retries / commits if commits else None,
        "reservations_per_commit": load["statuses"].get("201", 0) / commits if commits else None,
        "spurious_409": spurious_by_event(asked, {e: b["available"] for e, b in books.items()}),
        "books": {
            event: {k: b[k] for k in ("total", "available", "confirmed_seats", "rows")}
            for event, b in books.items()
        },
        "invariants": invariants,
        "ok": all(invariants.values()),
    }


def keep_logs(cluster_dir: Path, to: Path) -> None:
    """The hosts', HAProxy's and pgbouncer's logs, copied out of the cluster's directory."""
    to.mkdir(parents=True, exist_ok=True)
    for log in [*cluster_dir.glob("*.log"), *cluster_dir.glob("pgbouncer/*.log")]:
        shutil.copyfile(log, to / log.name)


def run_cluster(args: argparse.Namespace, url: str, hosts: int, balance: str, logs: Path):
    """A cluster of `hosts` one-worker hosts on a fresh database, every workload through it;
    its runs. The cluster is stopped (and its files removed) whatever happens."""
    fresh_database(url)
    engine = make_engine(Settings(database_url=url))
    # Not inside a private temporary directory: pgbouncer runs as postgres (when we are root)
    # and must reach its own files, so the cluster makes its directory readable to all.
    cluster_dir = Path(tempfile.mkdtemp(prefix="ticketboss-bench-cluster-"))
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="ticketboss-bench-") as private:
            workdir = Path(private)
            keys_file = partner_keys(engine, workdir) if args.auth == "keys" else None
            cluster = Cluster(
                url,
                hosts=hosts,
                balance=balance,
                workers=1,
                workdir=cluster_dir,
                AUTH_MODE=args.auth,
            )
            print(f"== cluster: {hosts} hosts, {balance}; starting", flush=True)
            with cluster:
                ports = ", ".join(f"{h.name} :{h.port}" for h in cluster.hosts)
                print(f"   HAProxy {cluster.url} ({ports})", flush=True)
                for workload in CLUSTER_WORKLOADS:
                    print(
                        f"== {workload}@{hosts} {balance}: {args.clients} clients, "
                        f"{args.duration:g} s",
                        flush=True,
                    )
                    run = run_workload(cluster, balance, workload, engine, args, workdir, keys_file)
                    gone = [h.name for h in cluster.hosts if h.process.poll() is not None]
                    if gone:
                        raise RuntimeError(f"{', '.join(gone)} exited during {workload}")
                    print_run(run)
                    runs.append(run)
    finally:
        keep_logs(cluster_dir, logs)
        shutil.rmtree(cluster_dir, ignore_errors=True)
        engine.dispose()
    return runs


def print_run(run: dict) -> None:
    """A run's progress lines: its rates, its statuses, its invariants."""
    load = run["load"]
    print(
        f"   {load['confirmed_per_s']:.0f} confirmed/s, p99 {load['latency_ms']['p99']:.1f} ms, "
        f"statuses {load['statuses']}, confirmed by host {run['confirmed_by_host']}"
    )
    for name, ok in run["invariants"].items():
        print(f"   {'PASS' if ok else 'FAIL'}  {name}", flush=True)


def run_cluster_bench(args: argparse.Namespace) -> int:
    """Every host count of --cluster under each balance; print and write the table. 0 if
    every invariant held, 1 otherwise."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    url = cluster_database_url()
    RESULTS.mkdir(exist_ok=True)
    logs = RESULTS / f"cluster-{stamp}-logs"
    print(f"bench database {make_url(url).database}, logs in {logs}", flush=True)
    runs = []
    for hosts in args.cluster:
        for balance in CLUSTER_BALANCES:
            runs += run_cluster(args, url, hosts, balance, logs / f"{hosts}-{balance}")
    engine = make_engine(Settings(database_url=url))
    try:
        machine = machine_facts(engine, {**os.environ, "DATABASE_URL": url, "WEB_CONCURRENCY": "1"})
    finally:
        engine.dispose()
    report = {
        "timestamp": stamp,
        "machine": machine,
        "config": {
            "hosts": args.cluster,
            "balances": CLUSTER_BALANCES,
            "workloads": {name: list(events) for name, events in CLUSTER_WORKLOADS.items()},
            "clients": args.clients,
            "duration_s": args.duration,
            "seats": args.seats,
            "auth": args.auth,
            "database": make_url(url).render_as_string(hide_password=True),
        },
        "runs": runs,
        "ok": all(r["ok"] for r in runs),
        "logs": str(logs),
    }
    (RESULTS / f"cluster-{stamp}.md").write_text(render_cluster(report))
    (RESULTS / f"cluster-{stamp}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(render_cluster(report), end="")
    print(f"\nwrote {RESULTS}/cluster-{stamp}.md, .json")
    return 0 if report["ok"] else 1
