"""The allocations scenario's setup and books: the allocations an operator sets over HTTP
before the run, and after it the event's allocations as the API lists them beside each
partner's reservation rows as the database holds them (bench.report checks them)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import quote
from urllib.request import Request, urlopen

from sqlalchemy import select

from bench.service import more_partner_keys, operator_key
from bench.settings import (
    ALLOCATION_BIG,
    ALLOCATION_PARTNERS,
    ALLOCATION_POOL_SHARE,
    ALLOCATIONS,
    EVENT_ID,
    OPERATOR,
)
from ticketboss.store.tables import events, reservations


def partner_id(index: int) -> str:
    """The partner the load generator's partner `index` acts for (its key's, or the one its
    body names without keys)."""
    return f"partner-{index}"


def one_partners_seats(duration: float, seats_per_s: float) -> float:
    """E: the seats one partner would get in a run of `duration` seconds at `seats_per_s`
    for all of them (the warm-up's rate)."""
    return seats_per_s * duration / ALLOCATION_PARTNERS


def planned(duration: float, seats_per_s: float) -> dict[str, dict]:
    """Each allocation of a run of `duration` seconds at `seats_per_s`, by partner id:
    {"seats", "overflow"}."""
    each = one_partners_seats(duration, seats_per_s)
    return {
        partner_id(index): {
            "seats": ALLOCATION_BIG if share is None else max(1, round(share * each)),
            "overflow": overflow,
        }
        for index, share, overflow in ALLOCATIONS
    }


def pool_seats(duration: float, seats_per_s: float) -> int:
    """The open pool of a run of `duration` seconds at `seats_per_s`."""
    on_pool = ALLOCATION_PARTNERS - len(ALLOCATIONS)
    return max(
        1, round(ALLOCATION_POOL_SHARE * on_pool * one_partners_seats(duration, seats_per_s))
    )


def call(port: int, method: str, path: str, key: str | None, body: dict | None = None):
    """(status, JSON body or None) of one request to the service, whatever the status."""
    data = None if body is None else json.dumps(body).encode()
    request = Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except HTTPError as exc:
        status, raw = exc.code, exc.read()
    except URLError as exc:
        raise RuntimeError(f"{method} {path}: {exc}") from exc
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def allocations_path(partner: str | None = None) -> str:
    path = f"/api/events/{quote(EVENT_ID, safe='')}/allocations"
    return path if partner is None else f"{path}/{quote(partner, safe='')}"


def keys(bench: dict) -> Path | None:
    """With keys: a file of ALLOCATION_PARTNERS partners' keys, and the operator's key in
    bench["operator_key"] (both made once a bench run)."""
    if bench["keys_file"] is None:
        return None
    if "operator_key" not in bench:
        bench["operator_key"] = operator_key(bench["engine"], OPERATOR)
    return more_partner_keys(bench["engine"], bench["keys_file"], ALLOCATION_PARTNERS)


def prepare(bench: dict, plan: dict[str, dict], keys_file: Path | None, rate: float) -> dict:
    """Before the run, on the freshly seeded event: every planned allocation PUT by the
    operator. What the run needs and reports: the keys file, the operator key, the plan, the
    warm-up's seats a second it was sized by, and each PUT's status."""
    operator = bench.get("operator_key")
    answers = {}
    for partner, allocation in plan.items():
        status, answer = call(bench["port"], "PUT", allocations_path(partner), operator, allocation)
        if status not in (200, 201):
            raise RuntimeError(
                f"PUT {allocations_path(partner)} {allocation}: {status} {answer}; "
                "is the allocations API there?"
            )
        answers[partner] = status
    return {
        "keys_file": keys_file,
        "operator": operator,
        "planned": plan,
        "seats_per_s": rate,
        "put": answers,
    }


def carry(bench: dict) -> dict | None:
    """The allocation a target run's event carries (#23: every feature on): partner-0 draws
    from a share of its own that never runs out while the other partners take the open pool,
    so each batch reads and plans allocations as a deployed event's do. None without keys
    (no operator to PUT it)."""
    if bench["keys_file"] is None:
        return None
    if "operator_key" not in bench:
        bench["operator_key"] = operator_key(bench["engine"], OPERATOR)
    body = {"seats": ALLOCATION_BIG, "overflow": True}
    path = allocations_path(partner_id(0))
    status, answer = call(bench["port"], "PUT", path, bench["operator_key"], body)
    if status not in (200, 201):
        raise RuntimeError(f"PUT {path} {body}: {status} {answer}")
    return {"partner": partner_id(0), **body}


def listing(port: int, operator: str | None) -> dict:
    """GET the event's allocations as the operator sees them (all of them, and the pool)."""
    status, body = call(port, "GET", allocations_path(), operator)
    if status != 200 or not isinstance(body, dict):
        raise RuntimeError(f"GET {allocations_path()}: {status} {body}")
    return body


def partner_rows(engine) -> tuple[dict, dict[str, dict[str, int]]]:
    """The event's total and available seats, and by partner its reservation rows summed:
    rows, confirmed rows and their seats, of which allocated (allocated_seats) and from the
    pool (seats - allocated_seats); held rows' seats; rows whose allocated_seats is out of
    [0, seats]."""
    with engine.connect() as conn:
        total, available = conn.execute(
            select(events.c.total_seats, events.c.available_seats).where(
                events.c.event_id == EVENT_ID
            )
        ).one()
        rows = conn.execute(
            select(
                reservations.c.partner_id,
                reservations.c.seats,
                reservations.c.allocated_seats,
                reservations.c.status,
            ).where(reservations.c.event_id == EVENT_ID)
        ).all()
    by_partner: dict[str, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys(
            ("rows", "confirmed_rows", "seats", "allocated", "pool", "held", "bad_rows"), 0
        )
    )
    for row in rows:
        mine = by_partner[row.partner_id]
        allocated = row.allocated_seats or 0
        mine["rows"] += 1
        mine["bad_rows"] += not 0 <= allocated <= row.seats
        if row.status == "confirmed":
            mine["confirmed_rows"] += 1
            mine["seats"] += row.seats
            mine["allocated"] += allocated
            mine["pool"] += row.seats - allocated
        elif row.status == "held":
            mine["held"] += row.seats
    return {"total": total, "available": available}, dict(by_partner)


def books(bench: dict, setup: dict, load: dict) -> dict:
    """After the run: what bench.report's allocation checks and lines read. The plan and the
    pool it leaves, the operator's listing, the event's seats, and by partner id the
    database's sums beside what its clients were answered (201s, their seats, 409s by bucket)."""
    figures = load["allocations"]
    event, rows = partner_rows(bench["engine"])
    answered = {partner_id(int(i)): mine for i, mine in figures["by_partner"].items()}
    partners = sorted(rows.keys() | answered.keys() | setup["planned"].keys())
    return {
        "planned": setup["planned"],
        "put": setup["put"],
        "pool_planned": event["total"] - sum(a["seats"] for a in setup["planned"].values()),
        "warmup_seats_per_s": setup["seats_per_s"],
        "listing": listing(bench["port"], setup["operator"]),
        "total": event["total"],
        "available": event["available"],
        "partners": {
            partner: {
                "db": rows.get(partner, {}),
                "answered": answered.get(partner, {"201": 0, "seats": 0, "409": {}}),
            }
            for partner in partners
        },
        "clients_per_partner": load["clients"] / max(figures["partners"], 1),
        "problems_409": figures["problems_409"],
        "unnamed_409": figures["unnamed_409"],
        "contradicting_409": figures["contradicting_409"],
    }


def options() -> list[str]:
    """The load generator's options of an allocations run."""
    return ["--event-id", EVENT_ID, "--partners", str(ALLOCATION_PARTNERS)]
