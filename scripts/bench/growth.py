"""--scenario scale: what each read costs as the tables grow. The same reads (the event's
summary, its first page of reservations and a page deep into them for an operator, and a
partner's own few reservations) run on the fresh bench database, then again once
--scale-rows reservations of --scale-partners other partners are in the event (loaded with
SQL, as no service would take them in a few seconds) beside --scale-events other events:
each read's p50 and p99 and reads/s at GROWTH_CLIENTS clients, empty against loaded."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime
from urllib.parse import quote

from sqlalchemy import create_engine, text

from bench.measure import run_loadgen
from bench.service import operator_key
from bench.settings import EVENT_ID, HUGE, RESULTS
from ticketboss.api.cursors import encode_cursor
from ticketboss.cli import seed_event

GROWTH_CLIENTS = 10
OWN = 3  # the partner's own reservations, made through the API
EMPTY_ROWS = 200  # other partners' rows on the "empty" database: pages of 50 are full


def run_growth(bench: dict) -> int:
    """Both phases, the table on stdout and results/scale-*.json; 0 if every read was 200."""
    args, engine, port = bench["args"], bench["engine"], bench["port"]
    seed_event(engine, EVENT_ID, "TicketBoss bench", HUGE, reset=True)
    partner = bench["keys_file"].read_text().split()[0]  # partner-0's
    operator = operator_key(engine, "bench-scale")
    for _ in range(OWN):
        _reserve(port, partner)
    # "Empty" still fills a page: the operator's pages are as long in both phases.
    _load(bench["url"], EMPTY_ROWS, args.scale_partners, 0)
    rows: list[dict] = []
    for phase in ("empty", "loaded"):
        if phase == "loaded":
            print(f"== loading {args.scale_rows:,} reservations, {args.scale_events:,} events")
            _load(bench["url"], args.scale_rows, args.scale_partners, args.scale_events)
        listing = f"/api/events/{quote(EVENT_ID)}/reservations?limit=50"
        reads = {
            "summary": (f"/api/events/{quote(EVENT_ID)}", partner),
            "event's first page (operator)": (listing, operator),
            "a page halfway through (operator)": (f"{listing}&cursor={_halfway(engine)}", operator),
            "a partner's own reservations": (listing, partner),
        }
        for name, (path, key) in reads.items():
            keys_file = bench["workdir"] / "growth-key.txt"
            keys_file.write_text(f"{key}\n")
            ids_file = bench["workdir"] / "growth-ids.txt"
            load = run_loadgen(
                port,
                "read",
                GROWTH_CLIENTS,
                args.duration,
                args.seats,
                ids_file,
                keys_file,
                ["--path", path],
            )
            latency = load["reads"]["latency_ms"].get("read", {})
            row = {
                "phase": phase,
                "read": name,
                "reads_per_s": load["reads"]["reads_per_s"],
                "p50_ms": latency.get("p50"),
                "p99_ms": latency.get("p99"),
                "statuses": load["statuses"],
            }
            print(f"   {phase}: {name}: {_figures(row)}", flush=True)
            rows.append(row)
    print(render_growth(rows, args))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"scale-{stamp}.json").write_text(
        json.dumps({"config": vars(args), "rows": rows}, default=str)
    )
    _unload(bench["url"])
    seed_event(engine, EVENT_ID, "TicketBoss bench", HUGE, reset=True)
    return 0 if all(set(r["statuses"]) == {"200"} for r in rows) else 1


def _reserve(port: int, key: str) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/events/{quote(EVENT_ID)}/reservations",
        data=b'{"seats": 1}',
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 201, answer.status


def _load(url: str, reservations: int, partners: int, events: int) -> None:
    """The rows, older than the partner's own, and the other events; ANALYZEd. Without the
    service's statement timeout: this takes minutes."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO reservations (id, event_id, partner_id, seats, status,"
                    " created_at) SELECT gen_random_uuid(), :event, 'scale-' || (i % :partners),"
                    " 1, 'confirmed', now() - make_interval(secs => i)"
                    " FROM generate_series(1, :n) AS i"
                ),
                {"event": EVENT_ID, "partners": partners, "n": reservations},
            )
            conn.execute(
                text(
                    "INSERT INTO events (event_id, name, total_seats, available_seats)"
                    " SELECT 'scale-' || i, 'Scale ' || i, 1000, 1000"
                    " FROM generate_series(1, :n) AS i"
                ),
                {"n": events},
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE reservations"))
            conn.execute(text("ANALYZE events"))
    finally:
        engine.dispose()


def _unload(url: str) -> None:
    """The loaded rows go (without the service's statement timeout: millions of them)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM reservations WHERE event_id = :e"), {"e": EVENT_ID})
            conn.execute(text("DELETE FROM events WHERE event_id LIKE 'scale-%'"))
    finally:
        engine.dispose()


def _halfway(engine) -> str:
    """The cursor after the event's middle reservation, as the API makes them."""
    with engine.connect() as conn:
        count = conn.scalar(
            text("SELECT count(*) FROM reservations WHERE event_id = :e"), {"e": EVENT_ID}
        )
        row = conn.execute(
            text(
                "SELECT created_at, id FROM reservations WHERE event_id = :e"
                " ORDER BY created_at, id OFFSET :skip LIMIT 1"
            ),
            {"e": EVENT_ID, "skip": count // 2},
        ).one()
    return encode_cursor(row.created_at.astimezone(UTC).isoformat(), str(row.id))


def _figures(row: dict) -> str:
    return (
        f"{row['reads_per_s']:,.0f} reads/s, p50 {row['p50_ms']:.1f} ms, "
        f"p99 {row['p99_ms']:.1f} ms, statuses {row['statuses']}"
    )


def render_growth(rows: list[dict], args) -> str:
    """Each read on the empty database beside the loaded one."""
    by = {(r["phase"], r["read"]): r for r in rows}
    lines = [
        f"\n# Reads as the tables grow: {args.scale_rows:,} reservations of "
        f"{args.scale_partners:,} partners in the event, {args.scale_events:,} other events; "
        f"{GROWTH_CLIENTS} clients, {args.duration:g} s each\n",
        "| read | empty p50 / p99 ms | loaded p50 / p99 ms | empty reads/s | loaded reads/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in dict.fromkeys(r["read"] for r in rows):
        empty, loaded = by.get(("empty", name)), by.get(("loaded", name))
        if empty is None or loaded is None:
            continue
        lines.append(
            f"| {name} | {empty['p50_ms']:.1f} / {empty['p99_ms']:.1f} "
            f"| {loaded['p50_ms']:.1f} / {loaded['p99_ms']:.1f} "
            f"| {empty['reads_per_s']:,.0f} | {loaded['reads_per_s']:,.0f} |"
        )
    return "\n".join(lines)
