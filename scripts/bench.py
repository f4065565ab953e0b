#!/usr/bin/env python3
"""Benchmark TicketBoss end to end: a fresh PostgreSQL database, real gunicorn, closed-loop load.

    make bench                                                    # every scenario, 2–3 minutes
    make bench ARGS="--scenario hot --clients 100 --duration 10"

Each scenario reseeds the default event, runs scripts/loadgen.py in its own process (so its
CPU is its own), reads the CAS counters of /metrics before and after, and checks the books in
the database. Right after `hot`, pgbench runs the same transaction straight against
PostgreSQL at the same client count: the ceiling the service is compared with. The report
goes to stdout and to results/. Exit status 1 if an invariant failed; targets are only printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services.partners import create_key
from ticketboss.store.db import make_engine
from ticketboss.store.migrate import upgrade
from ticketboss.store.tables import events, reservations

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
BIN = Path(sys.executable).parent
DEFAULT_URL = "postgresql+psycopg2://root@127.0.0.1:5432/ticketboss_bench"
EVENT_ID = os.environ.get("DEFAULT_EVENT_ID") or Settings.default_event_id
HUGE = 100_000_000  # never runs out: every 409 is spurious
SELLOUT_SEATS = 500
SELLOUT_CAP_S = 30.0
DRAIN_S = 10.0
PARTNERS = 10  # partner keys the clients share (--auth keys)
SWEEP_CLIENTS = (1, 10, 50, 100, 200)
SCENARIOS = ("hot", "sellout", "mixed", "sweep")
COUNTERS = {f"ticketboss_cas_{k}_total": k for k in ("commits", "retries", "exhausted")}
SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{.*\})?\s+(\S+)")
TPS = re.compile(r"tps = ([\d.]+) \((?:without initial connection time|excluding connections)")
GUNICORN_CONF = (
    "import json, runpy; conf = runpy.run_module('ticketboss.gunicorn_conf'); "
    "print(json.dumps({k: conf.get(k) for k in ('workers', 'worker_class', 'threads')}))"
)
COLUMNS = (
    "scenario",
    "clients",
    "seats",
    "req/s",
    "confirmed/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "statuses",
    "spurious 409",
    "503 %",
    "retries/201",
    "201/commit",
    "svc CPU ms/req",
    "all CPU ms/req",
    "gen CPU %",
    "invariants",
)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--clients", type=int, default=100, help="of hot, sellout and mixed")
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds of each timed run: hot, pgbench, mixed, every sweep step",
    )
    parser.add_argument("--seats", default="1-10", help="seats per reservation: N or MIN-MAX")
    parser.add_argument("--port", type=int, default=8765, help="taken if free, else any free one")
    parser.add_argument(
        "--auth",
        choices=("keys", "open"),
        default="keys",
        help="AUTH_MODE of the service: keys (the default; clients send partner keys) or open",
    )
    return parser.parse_args(argv)


def fresh_database(url: str) -> None:
    """Drop and recreate the bench database, then migrate it to head."""
    target = make_url(url)
    if "bench" not in target.database:
        sys.exit(f"refusing to drop {target.database!r}: a bench database name contains 'bench'")
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = admin.dialect.identifier_preparer.quote(target.database)
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        admin.dispose()
    upgrade(url)


def free_port(preferred: int) -> int:
    """`preferred` if it can be bound on loopback, else a free port the kernel picks."""
    for port in (preferred, 0):
        with socket.socket() as probe, suppress(OSError):
            # As gunicorn binds: a port whose old connections linger in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
            return probe.getsockname()[1]
    raise RuntimeError("no free port on 127.0.0.1")


def start_service(env: dict, log_path: Path) -> subprocess.Popen:
    """gunicorn in its own session, so Ctrl-C reaches only us and we stop it in order."""
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [BIN / "gunicorn", "-c", "python:ticketboss.gunicorn_conf", "ticketboss.wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_healthy(proc: subprocess.Popen, port: int, log_path: Path, timeout: float = 30.0):
    """Poll GET /api/health until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}; see {log_path}")
        with suppress(URLError, OSError), urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
            return  # urlopen raises on anything but 2xx
        time.sleep(0.2)
    raise RuntimeError(f"/api/health not 200 within {timeout:.0f} s; see {log_path}")


def stop_service(proc: subprocess.Popen) -> None:
    """SIGTERM gunicorn (it stops its workers); SIGKILL its process group if anything lingers."""
    if proc.poll() is None:
        proc.terminate()
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def cas_counters(port: int) -> dict[str, float] | None:
    """Each CAS counter summed over its samples in /metrics; None when /metrics does not answer."""
    try:
        with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    except URLError:
        return None
    totals: dict[str, float] = {}
    for line in body.splitlines():
        sample = SAMPLE.match(line)
        if sample and sample.group(1) in COUNTERS:
            key = COUNTERS[sample.group(1)]
            totals[key] = totals.get(key, 0.0) + float(sample.group(2))
    return totals


def run_loadgen(
    port: int, scenario: str, clients: int, duration: float, seats: str, ids_file, keys_file
):
    """scripts/loadgen.py as a separate process; its JSON report."""
    options = f"--port {port} --scenario {scenario} --clients {clients} --duration {duration}"
    options += f" --drain {DRAIN_S} --seats {seats}"
    command = [
        sys.executable,
        ROOT / "scripts" / "loadgen.py",
        *options.split(),
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


def partner_keys(engine, workdir: Path) -> Path:
    """A key for each of PARTNERS partners, in a file for the load generator: client i acts
    for partner i % PARTNERS, as a few partner platforms share an on-sale."""
    path = workdir / "keys.txt"
    keys = [create_key(engine, f"partner-{i}", Role.PARTNER)[1] for i in range(PARTNERS)]
    path.write_text("".join(f"{key}\n" for key in keys))
    return path


def read_books(engine) -> dict:
    """The event's seats and its reservation rows, read straight from the database."""
    with engine.connect() as conn:
        total, available = conn.execute(
            select(events.c.total_seats, events.c.available_seats).where(
                events.c.event_id == EVENT_ID
            )
        ).one()
        rows = conn.execute(
            select(reservations.c.id, reservations.c.seats, reservations.c.status).where(
                reservations.c.event_id == EVENT_ID
            )
        ).all()
    return {
        "total": total,
        "available": available,
        "confirmed_seats": sum(r.seats for r in rows if r.status == "confirmed"),
        "rows": len(rows),
        "cancelled": sum(r.status == "cancelled" for r in rows),
        "ids": {str(r.id) for r in rows},
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
    if "cancel" in load["by_operation"]:
        checks["cancelled rows = 204s"] = books["cancelled"] == statuses.get("204", 0)
    return checks


def other_5xx(statuses: dict) -> int:
    """Responses 500–599 except 503."""
    return sum(n for s, n in statuses.items() if s.isdigit() and s.startswith("5") and s != "503")


def service_cpu_seconds(master_pid: int) -> float:
    """User + system CPU of gunicorn's master and its workers so far (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            # The command may hold spaces and parentheses: fields start after the last ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid, ppid = int(stat.parent.name), int(fields[1])
            if master_pid in (pid, ppid):
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def machine_cpu_seconds() -> float:
    """CPU seconds every core spent busy so far (/proc/stat), whoever used them."""
    jiffies = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = jiffies[3] + jiffies[4]  # idle + iowait
    return (sum(jiffies[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_scenario(bench: dict, scenario: str, clients: int, duration: float) -> dict:
    """Reseed the event, drive one load run, and measure and check what it did."""
    engine, port, seats = bench["engine"], bench["port"], bench["args"].seats
    total = SELLOUT_SEATS if scenario == "sellout" else HUGE
    seed_event(engine, EVENT_ID, "TicketBoss bench", total, reset=True)
    ids_file = bench["workdir"] / f"ids-{scenario}-{clients}.txt"
    before = cas_counters(port)
    loadgen_scenario = "hot" if scenario == "sweep" else scenario
    cpu_before = service_cpu_seconds(bench["service"].pid), machine_cpu_seconds()
    load = run_loadgen(
        port, loadgen_scenario, clients, duration, seats, ids_file, bench["keys_file"]
    )
    cpu_after = service_cpu_seconds(bench["service"].pid), machine_cpu_seconds()
    after = cas_counters(port)
    books = read_books(engine)
    invariants = check_invariants(books, load, ids_file)
    del load["reservation_ids"]["file"]  # a temporary file, gone after the run

    statuses, confirmed = load["statuses"], load["confirmed"]
    measured = before is not None and after is not None
    cas = {k: after[k] - before.get(k, 0) for k in after} if measured else None
    commits, retries = (cas or {}).get("commits"), (cas or {}).get("retries")
    # In a run that only reserves, available never rises: a 409 that asked for no more than
    # is left at the end had its seats there when it was refused.
    spurious = sum(n for asked, n in load["asked_409"].items() if int(asked) <= books["available"])
    return {
        "scenario": scenario,
        "clients": clients,
        "seats": seats,
        "load": load,
        "total_seats": total,
        "final_available": books["available"],
        "spurious_409": spurious,
        "genuine_409": load["conflicts_409"] - spurious,
        "pct_503": 100 * statuses.get("503", 0) / max(load["requests"], 1),
        "other_5xx": other_5xx(statuses),
        "cas": cas,
        "retries_per_confirmed": retries / confirmed if retries is not None and confirmed else None,
        # CPU per answered request: the service's (gunicorn master and workers), and the whole
        # machine's (service, PostgreSQL, load generator and anything else running).
        "service_cpu_ms_per_request": 1000
        * (cpu_after[0] - cpu_before[0])
        / max(load["requests"], 1),
        "machine_cpu_ms_per_request": 1000
        * (cpu_after[1] - cpu_before[1])
        / max(load["requests"], 1),
        "reservations_per_commit": (
            (confirmed + statuses.get("204", 0)) / commits if commits else None
        ),
        "invariants": invariants,
        "ok": all(invariants.values()),
    }


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


def machine_facts(engine, env: dict) -> dict:
    """What the numbers were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?"
    )
    with engine.connect() as conn:
        postgres = conn.scalar(text("SHOW server_version"))
    # What gunicorn read: its config module, in a process of its own with the service's env.
    conf = json.loads(
        subprocess.run(
            [sys.executable, "-c", GUNICORN_CONF], env=env, check=True, capture_output=True
        ).stdout
    )
    revision = subprocess.run(
        ["git", "-C", ROOT, "describe", "--always", "--dirty"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "postgresql": postgres,
        "python": platform.python_version(),
        "gunicorn_workers": conf["workers"],
        "gunicorn_worker_class": conf["worker_class"] or "sync",
        "gunicorn_threads": conf["threads"],
        "gunicorn": gunicorn_shape(conf),
        "revision": revision or "?",
    }


def gunicorn_shape(conf: dict) -> str:
    """E.g. "2 gthread workers x 64 threads"; threads count only for gthread."""
    kind = {
        "ticketboss.workers.GeventWorker": "gevent",
        "ticketboss.workers.ThreadWorker": "gthread",
    }.get(conf["worker_class"], conf["worker_class"] or "sync")
    shape = f"{conf['workers']} {kind} workers"
    return shape + (f" x {conf['threads']} threads" if kind == "gthread" else "")


def fmt(value, spec: str = ".2f") -> str:
    """A number, or n/a when it was not measured."""
    return "n/a" if value is None else format(value, spec)


def table_row(run: dict) -> list[str]:
    """One run as the cells of COLUMNS."""
    load, latency = run["load"], run["load"]["latency_ms"]
    failed = [name for name, ok in run["invariants"].items() if not ok]
    return [
        run["scenario"],
        str(run["clients"]),
        run["seats"],
        f"{load['requests_per_s']:.0f}",
        f"{load['confirmed_per_s']:.0f}",
        *(f"{latency[q]:.1f}" for q in ("p50", "p90", "p99", "max")),
        " ".join(f"{status}:{n}" for status, n in load["statuses"].items()),
        str(run["spurious_409"]),
        f"{run['pct_503']:.2f}",
        fmt(run["retries_per_confirmed"]),
        fmt(run["reservations_per_commit"]),
        fmt(run.get("service_cpu_ms_per_request")),
        fmt(run.get("machine_cpu_ms_per_request")),
        f"{load['cpu_percent']:.0f}",
        "PASS" if not failed else "FAIL: " + "; ".join(failed),
    ]


def markdown_table(rows: list[list[str]]) -> list[str]:
    """A markdown table padded so that it also reads as plain text."""
    widths = [max(len(r[i]) for r in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(COLUMNS), line(["-" * w for w in widths]), *map(line, rows)]


def targets(runs: list[dict], ceiling: dict | None) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for every target that this run measured."""
    found = []
    hot = next((r for r in runs if r["scenario"] == "hot"), None)
    if hot:
        c, cps = hot["clients"], hot["load"]["confirmed_per_s"]
        p99 = hot["load"]["latency_ms"]["p99"]
        found.append((f"hot@{c} >= 2000 confirmed/s", f"{cps:.0f}/s", cps >= 2000))
        tps = (ceiling or {}).get("tps")
        ratio = cps / tps if tps else None
        found.append(
            (
                f"hot@{c} >= 1.1x the pgbench ceiling",
                f"{fmt(ratio)}x of {fmt(tps, '.0f')} tps",
                None if ratio is None else ratio >= 1.1,
            )
        )
        found.append((f"hot@{c} p99 <= 100 ms", f"{p99:.1f} ms", p99 <= 100))
    sweep10 = next((r for r in runs if r["scenario"] == "sweep" and r["clients"] == 10), None)
    if sweep10:
        p99 = sweep10["load"]["latency_ms"]["p99"]
        found.append(("hot@10 p99 <= 20 ms (sweep)", f"{p99:.1f} ms", p99 <= 20))
    if runs:
        for name, key, limit in (
            ("0 spurious 409s in every run", "spurious_409", 0),
            ("503s <= 0.1 % of requests in every run", "pct_503", 0.1),
            ("0 other 5xx in every run", "other_5xx", 0),
        ):
            worst = max(runs, key=lambda r: r[key])
            where = f"{worst['scenario']}@{worst['clients']}"
            found.append((name, f"worst {worst[key]:.3g} ({where})", worst[key] <= limit))
    sellout = next((r for r in runs if r["scenario"] == "sellout"), None)
    if sellout:
        sold = sellout["load"]["seats_sold"]
        found.append(
            (f"sellout sells exactly {SELLOUT_SEATS} seats", str(sold), sold == SELLOUT_SEATS)
        )
    return found


def details(runs: list[dict], ceiling: dict | None) -> list[str]:
    """What the table has no column for: the ceiling, the sell-out, cancels, CAS counters."""
    lines = []
    hot = next((r for r in runs if r["scenario"] == "hot"), None)
    if ceiling:
        tps = ceiling["tps"]
        ratio = hot["load"]["confirmed_per_s"] / tps if hot and tps else None
        capped = (
            f" (of {ceiling['clients_asked']}: max_connections)"
            if ceiling["clients"] < ceiling["clients_asked"]
            else ""
        )
        lines.append(
            f"- pgbench ceiling: {fmt(tps, '.0f')} tps at {ceiling['clients']} clients{capped}, "
            f"{ceiling['duration_s']} s; hot confirmed/s = {fmt(ratio)}x of it"
            + (f"; pgbench error: {ceiling['error']}" if ceiling["error"] else "")
        )
        best = ceiling.get("tps_at_10")
        best_ratio = hot["load"]["confirmed_per_s"] / best if hot and best else None
        lines.append(
            f"- pgbench at 10 clients (one row's best): {fmt(best, '.0f')} tps; "
            f"hot confirmed/s = {fmt(best_ratio)}x of it"
        )
    for run in runs:
        load, cas = run["load"], run["cas"]
        name = f"{run['scenario']}@{run['clients']}"
        if run["scenario"] == "sellout":
            lines.append(
                f"- {name}: sold {load['seats_sold']} of {run['total_seats']} seats in "
                f"{load['sellout_s']:.2f} s (sold out: {load['sold_out']}); "
                f"409s: {run['genuine_409']} genuine, {run['spurious_409']} spurious"
            )
        if "cancel" in load["by_operation"]:
            cancels = load["by_operation"]["cancel"]
            lines.append(
                f"- {name}: cancels answered 204: {cancels.get('204', 0)}, "
                f"404: {cancels.get('404', 0)}"
            )
        counters = (
            "n/a (no /metrics)"
            if cas is None
            else ", ".join(f"Δ{k} {v:g}" for k, v in sorted(cas.items()))
        )
        lines.append(
            f"- {name}: CAS {counters}; generator {load['cpu_s']:.1f} CPU s "
            f"in {load['wall_s']:.1f} s wall; 409 seats asked {load['asked_409'] or '{}'}"
        )
    return lines


def render(report: dict) -> str:
    """The human report: machine, table, details, targets (markdown that reads as text)."""
    m, cfg = report["machine"], report["config"]
    lines = [
        f"# TicketBoss bench {report['timestamp']}",
        "",
        (
            f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), PostgreSQL {m['postgresql']}, "
            f"Python {m['python']}; gunicorn {m['gunicorn']}; "
            f"revision {m['revision']}."
        ),
        (
            f"Event {cfg['event_id']}; seats per request {cfg['seats']}; AUTH_MODE {cfg['auth']}"
            f"{f' ({PARTNERS} partner keys)' if cfg['auth'] == 'keys' else ''}; "
            f"{cfg['duration_s']:g} s per timed run; database {cfg['database']}."
        ),
        "",
        *markdown_table([table_row(r) for r in report["runs"]]),
        "",
        *details(report["runs"], report["pgbench"]),
        "",
        "## Targets (reported, not enforced)",
        "",
        *(
            f"- [{'x' if t['met'] else ' '}] {t['target']}: {t['measured']}"
            + ("" if t["met"] is not None else " (not measured)")
            for t in report["targets"]
        ),
        "",
        f"Invariants: {'PASS' if report['ok'] else 'FAIL'}",
    ]
    if report["plot"]:
        lines += ["", f"![sweep]({report['plot']})"]
    return "\n".join(lines) + "\n"


def plot_sweep(sweep: list[dict], path: Path, title: str) -> None:
    """Confirmed/s and p99 latency against clients, on two y axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = [r["clients"] for r in sweep]
    fig, left = plt.subplots(figsize=(8, 4.5))
    left.plot(clients, [r["load"]["confirmed_per_s"] for r in sweep], "o-", color="tab:blue")
    left.set_xscale("log")
    left.set_xticks(clients, [str(c) for c in clients])
    left.minorticks_off()
    left.set_xlabel("clients (closed loop)")
    left.set_ylabel("confirmed reservations/s", color="tab:blue")
    left.set_ylim(bottom=0)
    right = left.twinx()
    right.plot(clients, [r["load"]["latency_ms"]["p99"] for r in sweep], "s--", color="tab:red")
    right.set_ylabel("p99 latency (ms)", color="tab:red")
    right.set_ylim(bottom=0)
    left.set_title(title)
    left.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plan(args: argparse.Namespace) -> list[tuple[str, int, float]]:
    """(scenario, clients, seconds) of every load run, in order."""
    runs = []
    for scenario in SCENARIOS if args.scenario == "all" else (args.scenario,):
        if scenario == "sweep":
            runs += [("sweep", c, args.duration) for c in SWEEP_CLIENTS]
        else:
            runs.append(
                (scenario, args.clients, SELLOUT_CAP_S if scenario == "sellout" else args.duration)
            )
    return runs


def run_all(bench: dict) -> tuple[list[dict], dict | None]:
    """Every planned run (and the pgbench ceiling after hot), printing progress."""
    runs, ceiling = [], None
    for scenario, clients, seconds in plan(bench["args"]):
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
        runs.append(run)
        if scenario == "hot":
            print(f"== pgbench ceiling: {clients} clients, {seconds:g} s", flush=True)
            ceiling = pgbench_ceiling(bench, clients, seconds)
            # One row takes commits fastest from a few clients: report that best case too.
            ceiling["tps_at_10"] = pgbench_ceiling(bench, 10, seconds)["tps"]
            print(
                f"   {fmt(ceiling['tps'], '.0f')} tps at {ceiling['clients']} clients, "
                f"{fmt(ceiling['tps_at_10'], '.0f')} tps at 10",
                flush=True,
            )
    return runs, ceiling


def write_results(report: dict, stamp: str) -> None:
    """results/bench-<ts>.{md,json} and their latest.* copies."""
    (RESULTS / f"bench-{stamp}.md").write_text(render(report))
    (RESULTS / f"bench-{stamp}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    shutil.copyfile(RESULTS / f"bench-{stamp}.md", RESULTS / "latest.md")
    shutil.copyfile(RESULTS / f"bench-{stamp}.json", RESULTS / "latest.json")
    if report["plot"]:
        shutil.copyfile(RESULTS / report["plot"], RESULTS / "sweep-latest.png")
    else:
        (RESULTS / "sweep-latest.png").unlink(missing_ok=True)  # not of this run


def main(argv=None) -> int:
    """Run the benchmark; 0 if every invariant held, 1 otherwise."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops gunicorn
    url = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_URL
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
        }
        bench = {"args": args, "url": url, "engine": engine, "port": port, "workdir": Path(workdir)}
        bench["keys_file"] = partner_keys(engine, Path(workdir)) if args.auth == "keys" else None
        print(
            f"bench database {make_url(url).database}, service on 127.0.0.1:{port}, log {log_path}"
        )
        service = bench["service"] = start_service(env, log_path)
        try:
            wait_healthy(service, port, log_path)
            runs, ceiling = run_all(bench)
        finally:
            stop_service(service)
    machine = machine_facts(engine, env)
    engine.dispose()

    sweep = [r for r in runs if r["scenario"] == "sweep"]
    plot = f"sweep-{stamp}.png" if sweep else None
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
        "pgbench": ceiling,
        "targets": [
            dict(zip(("target", "measured", "met"), t, strict=True)) for t in targets(runs, ceiling)
        ],
        "ok": all(r["ok"] for r in runs),
        "plot": plot,
        "service_log": str(log_path),
    }
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
