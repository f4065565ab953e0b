"""The benchmark's report: the table, the targets, the details, markdown, JSON and the plot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from statistics import fmean

from bench.settings import (
    AB_COLUMNS,
    CARRY_ALLOCATION,
    CLUSTER_COLUMNS,
    CLUSTER_WORKLOADS,
    COLUMNS,
    HOT_FEW_CLIENTS,
    HUGE,
    PARTNERS,
    READS,
    RESULTS,
    SELLOUT_SEATS,
    TARGET_HOT_CEILING_PCT,
    TARGET_HOT_CONFIRMED_PER_S,
    TARGET_HOT_FEW_P99_MS,
    TARGET_HOT_P99_MS,
    TARGET_HOT_PGBENCH_MULTIPLE,
    TARGET_MAX_503_PCT,
    TARGET_MAX_OTHER_5XX,
    TARGET_MAX_SPURIOUS_409,
    TARGET_SUMMARY_READS_PCT,
)


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


def markdown_table(rows: list[list[str]], columns: tuple[str, ...] = COLUMNS) -> list[str]:
    """A markdown table padded so that it also reads as plain text."""
    widths = [max(len(r[i]) for r in [list(columns), *rows]) for i in range(len(columns))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(columns), line(["-" * w for w in widths]), *map(line, rows)]


def plural_clients(n: int) -> str:
    """E.g. "1 client", "10 clients"."""
    return f"{n} client" + ("" if n == 1 else "s")


def run_name(run: dict) -> str:
    """E.g. "hot@100", "reads/no-db@100"."""
    return f"{run['scenario']}@{run['clients']}"


def main_hot(runs: list[dict]) -> dict | None:
    """The hot run with the most clients: the one measured against the targets and pgbench."""
    return max(
        (r for r in runs if r["scenario"] == "hot"), key=lambda r: r["clients"], default=None
    )


def best_pgbench(ceiling: list[dict] | None) -> dict | None:
    """The pgbench run with the most tps: the one-commit-per-reservation ceiling."""
    measured = [p for p in ceiling or [] if p["tps"] is not None]
    return max(measured, key=lambda p: p["tps"], default=None)


def pgbench_line(ceiling: list[dict]) -> str:
    """pgbench's tps at each client count, its best, and what went wrong where."""
    rates = ", ".join(
        f"{fmt(p['tps'], ',.0f')} at {p['clients']}"
        + (
            f" (of {p['clients_asked']}: max_connections)"
            if p["clients"] < p["clients_asked"]
            else ""
        )
        for p in ceiling
    )
    best = best_pgbench(ceiling)
    line = f"pgbench tps by clients ({ceiling[0]['duration_s']} s each): {rates}; best " + (
        f"{best['tps']:,.0f} tps at {plural_clients(best['clients'])}" if best else "n/a"
    )
    errors = [f"at {p['clients']}: {p['error']}" for p in ceiling if p["error"]]
    return line + "".join(f"; pgbench error {e}" for e in errors)


def reads_comparison(runs: list[dict]) -> dict[str, float]:
    """reads/s of each run of the reads comparison, by what it read ("summary", "no-db", ...)."""
    return {
        r["scenario"].removeprefix("reads/"): r["load"]["reads"]["reads_per_s"]
        for r in runs
        if r["scenario"].startswith("reads/")
    }


def reads_line(run: dict) -> str:
    """A read run's reads/s and its latency per operation; read-heavy's also its confirmed/s
    and the evidence that every client read its own writes."""
    load, reads = run["load"], run["load"]["reads"]
    latency = "; ".join(
        f"{op} p50 {q['p50']:.1f} ms, p99 {q['p99']:.1f} ms"
        for op, q in reads["latency_ms"].items()
    )
    line = f"GET {reads['path']}: {reads['reads_per_s']:,.0f} reads/s"
    if run["scenario"] == "read-heavy":
        line += f", {load['confirmed_per_s']:,.0f} confirmed/s"
    line += f"; {latency}"
    seen = reads.get("read_your_writes")
    if seen:
        line += (
            f"; read your writes: {seen['after_write']:,} summaries read after their client's "
            f"own 201, {seen['stale_after_write']} showed less than it wrote, "
            f"{seen['went_back']} less than it had read"
        )
    return line


def worker_cpu_line(run: dict) -> str | None:
    """Each gunicorn worker's CPU ms per request of the run (None when it was not measured)."""
    workers = run.get("worker_cpu_ms_per_request")
    if not workers:
        return None
    return f"- {run_name(run)}: worker CPU ms/req: " + " / ".join(f"{ms:.2f}" for ms in workers)


def targets(runs: list[dict], ceiling: list[dict] | None) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each of bench.settings' TARGET_* that this run measured."""
    found = []
    hot = main_hot(runs)
    top = next((r for r in runs if r["scenario"] == "ceiling"), None)
    if hot and top:  # the headline: a reservation against a POST that never reaches the database
        c, cps, rps = hot["clients"], hot["load"]["confirmed_per_s"], top["load"]["requests_per_s"]
        share = 100 * cps / rps if rps else None
        found.append(
            (
                f"hot@{c} >= {TARGET_HOT_CEILING_PCT} % of the POST refused before the database",
                f"{fmt(share, '.1f')} % ({cps:.0f} vs {rps:.0f}/s at {top['clients']} clients)",
                None if share is None else share >= TARGET_HOT_CEILING_PCT,
            )
        )
    if hot:
        c, cps = hot["clients"], hot["load"]["confirmed_per_s"]
        p99 = hot["load"]["latency_ms"]["p99"]
        found.append(
            (
                f"hot@{c} >= {TARGET_HOT_CONFIRMED_PER_S} confirmed/s",
                f"{cps:.0f}/s",
                cps >= TARGET_HOT_CONFIRMED_PER_S,
            )
        )
        best = best_pgbench(ceiling)
        ratio = cps / best["tps"] if best else None
        found.append(
            (
                f"hot@{c} >= {TARGET_HOT_PGBENCH_MULTIPLE}x pgbench's best tps of this run",
                f"{ratio:.2f}x of {best['tps']:.0f} tps at {plural_clients(best['clients'])}"
                if best
                else "no pgbench tps",
                None if ratio is None else ratio >= TARGET_HOT_PGBENCH_MULTIPLE,
            )
        )
        found.append(
            (f"hot@{c} p99 <= {TARGET_HOT_P99_MS} ms", f"{p99:.1f} ms", p99 <= TARGET_HOT_P99_MS)
        )
    few = [r for r in runs if r["scenario"] in ("hot", "sweep") and r["clients"] == HOT_FEW_CLIENTS]
    if few:
        run = few[0]  # hot's own run comes before the sweep's
        p99 = run["load"]["latency_ms"]["p99"]
        where = " (sweep)" if run["scenario"] == "sweep" else ""
        found.append(
            (
                f"hot@{HOT_FEW_CLIENTS} p99 <= {TARGET_HOT_FEW_P99_MS} ms{where}",
                f"{p99:.1f} ms",
                p99 <= TARGET_HOT_FEW_P99_MS,
            )
        )
    reads = reads_comparison(runs)
    if "summary" in reads and "no-db" in reads:
        share = 100 * reads["summary"] / reads["no-db"] if reads["no-db"] else None
        found.append(
            (
                f"summary reads >= {TARGET_SUMMARY_READS_PCT} % of no-db reads",
                f"{fmt(share, '.1f')} % ({reads['summary']:.0f} vs {reads['no-db']:.0f}/s)",
                None if share is None else share >= TARGET_SUMMARY_READS_PCT,
            )
        )
    if runs:
        for name, key, limit in (
            (
                f"{TARGET_MAX_SPURIOUS_409} spurious 409s in every run",
                "spurious_409",
                TARGET_MAX_SPURIOUS_409,
            ),
            (
                f"503s <= {TARGET_MAX_503_PCT} % of requests in every run",
                "pct_503",
                TARGET_MAX_503_PCT,
            ),
            (f"{TARGET_MAX_OTHER_5XX} other 5xx in every run", "other_5xx", TARGET_MAX_OTHER_5XX),
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


def details(runs: list[dict], ceiling: list[dict] | None) -> list[str]:
    """What the table has no column for: the ceiling, the reads comparison, the sell-out,
    cancels, reads, CAS counters, each worker's CPU."""
    lines = []
    hot, best = main_hot(runs), best_pgbench(ceiling)
    if ceiling:
        ratio = hot["load"]["confirmed_per_s"] / best["tps"] if hot and best else None
        lines.append(
            f"- {pgbench_line(ceiling)}; "
            + (f"{run_name(hot)} confirmed/s = {fmt(ratio)}x of the best" if hot else "no hot run")
        )
    reads = reads_comparison(runs)
    if reads:
        share = (
            f"summary = {100 * reads['summary'] / reads['no-db']:.1f} % of no-db; "
            if reads.get("summary") and reads.get("no-db")
            else ""
        )
        lines.append(
            "- reads comparison: "
            + ", ".join(f"{read} ({READS[read][0]}) {rate:,.0f}/s" for read, rate in reads.items())
            + f"; {share}same clients and duration"
        )
    for run in runs:
        load, cas = run["load"], run["cas"]
        name = run_name(run)
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
        if run["scenario"] == "checkout":
            lines += checkout_lines(run)
        if "allocations" in run:
            lines += allocation_lines(run)
        if "reads" in load:
            lines.append(f"- {name}: {reads_line(run)}")
        counters = (
            "n/a (no /metrics)"
            if cas is None
            else ", ".join(f"Δ{k} {v:g}" for k, v in sorted(cas.items()))
        )
        lines.append(
            f"- {name}: CAS {counters}; generator {load['cpu_s']:.1f} CPU s "
            f"in {load['wall_s']:.1f} s wall; 409 seats asked {load['asked_409'] or '{}'}"
        )
        workers = worker_cpu_line(run)
        if workers:
            lines.append(workers)
    return lines


PROBLEM_KINDS = ("not-enough-seats", "hold-expired")  # the 409s a checkout run tells apart


def problem_split(problems: dict[str, int]) -> dict[str, int]:
    """409s by problem type: each of PROBLEM_KINDS, and every other kind as "other"."""
    split = {kind: problems.get(kind, 0) for kind in PROBLEM_KINDS}
    split["other"] = sum(n for kind, n in problems.items() if kind not in PROBLEM_KINDS)
    return split


def books_checks(books: dict) -> dict[str, bool]:
    """A checkout run's books once every hold's ttl has passed: the summary's seats add up,
    each 200 confirm is one confirmed reservation, and nothing is held any more."""
    seats = books["available"] + books["held"] + books["confirmed_seats"]
    confirmed = books["confirmed_rows"] == books["reservation_count"] == books["confirms"]
    return {
        "summary: available + held + confirmed seats = total": seats == books["total"],
        "confirmed reservations = 200 confirms": confirmed,
        "nothing held once every ttl passed": books["held"] == books["held_rows"] == 0,
    }


def books_line(books: dict) -> str:
    """The books of a checkout run in one line that ends "balanced" or "NOT balanced"."""
    failed = [name for name, ok in books_checks(books).items() if not ok]
    seats = books["available"] + books["held"] + books["confirmed_seats"]
    return (
        f"books: {books['available']:,} available + {books['held']:,} held + "
        f"{books['confirmed_seats']:,} confirmed seats = {seats:,} of {books['total']:,}; "
        f"{books['confirmed_rows']:,} confirmed reservations ({books['reservation_count']:,} "
        f"in the summary) for {books['confirms']:,} confirms answered 200; "
        f"{books['held_rows']:,} holds still held: "
        + ("balanced" if not failed else f"NOT balanced ({'; '.join(failed)})")
    )


BUCKETS = ("allocation", "allocation+pool", "pool")  # what a not-enough-seats 409 names


def partner_bucket(books: dict, partner: str) -> str:
    """The bucket a partner's requests draw from, by the plan: its allocation, its allocation
    and then the pool (overflow), or the pool (no allocation)."""
    allocation = books["planned"].get(partner)
    if allocation is None:
        return "pool"
    return "allocation+pool" if allocation["overflow"] else "allocation"


def bucket_left(books: dict) -> dict[str, dict[str, int]]:
    """By partner, the seats each bucket its 409s could name had left at the end."""
    pool = books["listing"]["pool"]["available"]
    items = {a["partnerId"]: a["available"] for a in books["listing"]["items"]}
    return {
        partner: {
            "pool": pool,
            "allocation": items.get(partner, 0),
            "allocation+pool": items.get(partner, 0) + pool,
        }
        for partner in books["partners"]
    }


def allocation_spurious(books: dict) -> int:
    """Not-enough-seats 409s whose bucket (the one its body named, else the partner's) had
    at least the seats asked left at the end: in a run that only reserves, no bucket ever
    gains seats, so those seats were there when the 409 came."""
    left = bucket_left(books)
    return sum(
        n
        for partner, mine in books["partners"].items()
        for bucket, asked in mine["answered"]["409"].items()
        for seats, n in asked.items()
        if int(seats)
        <= left[partner][bucket if bucket in BUCKETS else partner_bucket(books, partner)]
    )


def refusals_by_bucket(books: dict) -> dict[str, int]:
    """Not-enough-seats 409s by the bucket they named (and "?" for none)."""
    split = dict.fromkeys(BUCKETS, 0)
    for mine in books["partners"].values():
        for bucket, asked in mine["answered"]["409"].items():
            split[bucket] = split.get(bucket, 0) + sum(asked.values())
    return split


def allocation_checks(books: dict) -> dict[str, bool]:
    """An allocations run's books per bucket, from the operator's listing and the database's
    rows, against what was set and what the clients were answered."""
    planned, partners = books["planned"], books["partners"]
    items = {a["partnerId"]: a for a in books["listing"]["items"]}
    pool = books["listing"]["pool"]
    buckets = [*items.values(), pool]

    def db(partner: str, figure: str) -> int:
        return partners.get(partner, {}).get("db", {}).get(figure, 0)

    as_set = items.keys() == planned.keys() and all(
        (items[p]["seats"], items[p]["overflow"], items[p]["closed"])
        == (a["seats"], a["overflow"], False)
        for p, a in planned.items()
    )
    refused = {
        (partner, bucket)
        for partner, mine in partners.items()
        for bucket in mine["answered"]["409"]
    }
    return {
        "allocations as set, the pool the rest": as_set and pool["seats"] == books["pool_planned"],
        "each allocation's taken = its partner's confirmed allocated_seats": all(
            a["taken"] == db(p, "allocated") for p, a in items.items()
        ),
        "pool taken = confirmed seats - allocated_seats": pool["taken"]
        == sum(db(p, "pool") for p in partners),
        "no bucket oversold: taken + held <= seats, available = the rest": all(
            b["taken"] + b["held"] <= b["seats"]
            and b["available"] == b["seats"] - b["taken"] - b["held"] >= 0
            for b in buckets
        ),
        "pool + allocations = the event's seats and available seats": (
            sum(b["seats"] for b in buckets) == books["total"]
            and sum(b["available"] for b in buckets) == books["available"]
        ),
        "nothing held": all(b["held"] == 0 for b in buckets)
        and all(db(p, "held") == 0 for p in partners),
        "no pool seats for a partner without overflow": all(
            db(p, "pool") == 0 for p, a in planned.items() if not a["overflow"]
        ),
        "no allocated seats for a partner without an allocation": all(
            db(p, "allocated") == 0 for p in partners if p not in planned
        ),
        "allocated_seats within 0..seats in every row": all(
            db(p, "bad_rows") == 0 for p in partners
        ),
        "pool seats only once the partner's allocation is used up": all(
            items[p]["available"] == 0 for p in planned if p in items and db(p, "pool") > 0
        ),
        "each partner's confirmed rows and seats = its 201s and their seats": all(
            (db(p, "confirmed_rows"), db(p, "seats"))
            == (mine["answered"]["201"], mine["answered"]["seats"])
            for p, mine in partners.items()
        ),
        "every 409 not-enough-seats, naming bucket, available < requested": (
            set(books["problems_409"]) <= {"not-enough-seats"}
            and books["unnamed_409"] == books["contradicting_409"] == 0
        ),
        "every 409 names its partner's bucket": all(
            bucket == partner_bucket(books, partner) for partner, bucket in refused
        ),
        "no spurious 409 (its bucket still had the seats at the end)": allocation_spurious(books)
        == 0,
    }


def allocation_lines(run: dict) -> list[str]:
    """An allocations run's figures: how the event was split, each bucket at the end, the
    seats sold from allocations and from the pool, the 409s by bucket, and the books."""
    books, name = run["allocations"], run_name(run)
    listing, planned = books["listing"], books["planned"]
    pool = listing["pool"]
    overflow = sum(a["overflow"] for a in planned.values())
    db = [mine["db"] for mine in books["partners"].values()]
    buckets = ", ".join(
        f"{a['partnerId']}{'+' if a['overflow'] else ''} {a['taken']:,}/{a['seats']:,}"
        for a in sorted(listing["items"], key=lambda a: (len(a["partnerId"]), a["partnerId"]))
    )
    sold_out = sum(a["available"] == 0 for a in listing["items"])
    split = refusals_by_bucket(books)
    others = {k: n for k, n in books["problems_409"].items() if k != "not-enough-seats"}
    failed = [check for check, ok in allocation_checks(books).items() if not ok]
    return [
        f"- {name}: {len(books['partners'])} partners ({books['clients_per_partner']:g} clients "
        f"each), {len(planned)} with allocations ({overflow} with overflow), the others on the "
        f"open pool; event of {books['total']:,} seats, pool {pool['seats']:,}; sized by "
        f"the warm-up's {books['warmup_seats_per_s']:,.0f} seats/s",
        f"- {name}: taken/seats at the end (+: overflow): pool {pool['taken']:,}/"
        f"{pool['seats']:,}; {buckets}; sold out: {sold_out} allocations"
        f"{' and the pool' if pool['available'] == 0 else ''}",
        f"- {name}: seats sold from allocations {sum(d.get('allocated', 0) for d in db):,}, "
        f"from the pool {sum(d.get('pool', 0) for d in db):,}; 409s by bucket "
        + ", ".join(f"{bucket} {n:,}" for bucket, n in split.items())
        + (f"; other 409s {others}" if others else "")
        + f"; {books['unnamed_409']} naming no bucket, {books['contradicting_409']} saying "
        f"enough was available; spurious {allocation_spurious(books)}",
        f"- {name} books per bucket: "
        + ("balanced" if not failed else f"NOT balanced ({'; '.join(failed)})"),
    ]


def checkout_lines(run: dict) -> list[str]:
    """A checkout run's figures: rates, how the checkouts ended, 409s by problem type,
    503s, latency of holds and confirms, and the books."""
    load, co = run["load"], run["load"]["checkout"]
    name, wall = f"{run['scenario']}@{run['clients']}", load["wall_s"]
    split = problem_split(co["problems_409"])
    hold, confirm = co["latency_ms"]["hold"], co["latency_ms"]["confirm"]
    return [
        f"- {name}: {co['holds'] / wall:.1f} holds/s, {co['confirms'] / wall:.1f} confirms/s, "
        f"{co['releases'] / wall:.1f} releases/s; {co['abandoned']} abandoned "
        f"({co['holds']} holds of {run['seats']} seats for {co['hold_ttl_s']} s, "
        f"think {co['think_ms']} ms, event of {run['total_seats']:,} seats)",
        f"- {name}: 409s {', '.join(f'{kind} {n}' for kind, n in split.items())}; "
        f"503s {load['statuses'].get('503', 0)}; "
        f"holds lapsed (expired rows) {run['books']['expired_rows']}",
        f"- {name}: hold p50 {hold['p50']:.1f} ms, p99 {hold['p99']:.1f} ms; "
        f"confirm p50 {confirm['p50']:.1f} ms, p99 {confirm['p99']:.1f} ms",
        f"- {name} {books_line(run['books'])}",
    ]


def features_line(report: dict) -> str:
    """What the runs carried beyond partner keys: the event's allocation, a webhook endpoint."""
    carried = next(
        (r["carried_allocation"] for r in report["runs"] if "carried_allocation" in r), None
    )
    webhook = (report.get("webhook") or {}).get("mode", "none")
    allocation = (
        f"{carried['partner']} has an allocation of {carried['seats']:,} seats "
        f"(overflow {'on' if carried['overflow'] else 'off'}) on the event of "
        + ", ".join(CARRY_ALLOCATION)
        if carried
        else "no allocation on the event"
    )
    return f"Features: {allocation}; webhook endpoint: {webhook}."


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
        features_line(report),
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


def gunicorn_shape(conf: dict) -> str:
    """E.g. "2 gthread workers x 64 threads"; threads count only for gthread."""
    kind = {
        "ticketboss.workers.GeventWorker": "gevent",
        "ticketboss.workers.ThreadWorker": "gthread",
    }.get(conf["worker_class"], conf["worker_class"] or "sync")
    shape = f"{conf['workers']} {kind} workers"
    return shape + (f" x {conf['threads']} threads" if kind == "gthread" else "")


def other_5xx(statuses: dict) -> int:
    """Responses 500–599 except 503."""
    return sum(n for s, n in statuses.items() if s.isdigit() and s.startswith("5") and s != "503")


def ab_measure(run: dict, measure: str) -> float:
    """One figure of a run, by its name in the A/B table."""
    load = run["load"]
    return {
        "confirmed/s": load["confirmed_per_s"],
        "req/s": load["requests_per_s"],
        "p99 ms": load["latency_ms"]["p99"],
        "svc CPU ms/req": run["service_cpu_ms_per_request"],
    }[measure]


def ab_rows(rounds: list[dict]) -> list[list[str]]:
    """The A/B table: for each run of a round and each measure, each arm's mean and rounds,
    and how far B's mean is from A's. The rate is confirmed/s, or req/s where nothing is
    confirmed (the reads)."""
    rows = []
    for name in dict.fromkeys(run_name(r) for rd in rounds for r in rd["runs"]):
        arms = {
            arm: [r for rd in rounds if rd["arm"] == arm for r in rd["runs"] if run_name(r) == name]
            for arm in ("A", "B")
        }
        confirms = any(r["load"]["confirmed"] for runs in arms.values() for r in runs)
        rate = "confirmed/s" if confirms else "req/s"
        for measure, spec in ((rate, ",.0f"), ("p99 ms", ".1f"), ("svc CPU ms/req", ".3f")):
            a, b = ([ab_measure(r, measure) for r in arms[arm]] for arm in ("A", "B"))
            mean_a, mean_b = (fmean(v) if v else None for v in (a, b))
            delta = 100 * (mean_b - mean_a) / mean_a if mean_a and mean_b is not None else None
            rows.append(
                [
                    name,
                    measure,
                    fmt(mean_a, spec),
                    " ".join(format(v, spec) for v in a),
                    fmt(mean_b, spec),
                    " ".join(format(v, spec) for v in b),
                    "n/a" if delta is None else f"{delta:+.1f} %",
                ]
            )
    return rows


def render_ab(ab: dict) -> str:
    """The A/B report: what each arm served, the order of the rounds, the table, the verdict."""
    cfg = ab["config"]
    lines = [
        f"# TicketBoss bench A/B {ab['timestamp']}",
        "",
        f"Scenario {cfg['scenario']} at {cfg['clients']} clients, {cfg['duration_s']:g} s per "
        f"round, {cfg['rounds']} rounds per arm, in the order {' '.join(ab['order'])}.",
        *(
            f"- {arm}: {info['label']}, served from {info['code']}"
            for arm, info in ab["arms"].items()
        ),
        "",
        *markdown_table(ab_rows(ab["rounds"]), AB_COLUMNS),
        "",
        f"Invariants: {'PASS' if all(rd['ok'] for rd in ab['rounds']) else 'FAIL'}",
    ]
    return "\n".join(lines) + "\n"


def host_share(confirmed: list[float] | None) -> str:
    """Each host's share of the reservations the hosts confirmed, in whole percent and in
    host order, e.g. "62/38"; n/a when nothing was counted."""
    total = sum(confirmed or [])
    if not total:
        return "n/a"
    return "/".join(f"{100 * n / total:.0f}" for n in confirmed)


def spurious_by_event(asked_409: dict[str, dict[str, int]], available: dict[str, int]) -> int:
    """409s that asked for no more seats than their event had left at the end: in a run that
    only reserves, available never rises, so those seats were there when the 409 came."""
    return sum(
        n
        for event, asked in asked_409.items()
        for seats, n in asked.items()
        if int(seats) <= available[event]
    )


def cluster_checks(
    books: dict[str, dict], load: dict, ids: set[str], counted: list[float] | None
) -> dict[str, bool]:
    """A cluster run's invariants: each event's books balance and hold one row for each of
    its 201s, every request was answered, no 503, no other 5xx, no spurious 409, and (when
    every host's /metrics answered) the hosts counted every 201 once."""
    statuses, by_event = load["statuses"], load["events"]
    available = {event: b["available"] for event, b in books.items()}
    asked = {event: counts["asked_409"] for event, counts in by_event.items()}
    checks = {
        "available + confirmed seats = total, every event": all(
            b["available"] + b["confirmed_seats"] == b["total"] for b in books.values()
        ),
        "reservation rows = 201s received, every event": all(
            b["rows"] == by_event[event]["statuses"].get("201", 0) for event, b in books.items()
        ),
        "every 201's reservationId is in the database": ids
        <= set().union(*(b["ids"] for b in books.values())),
        "every request answered": load["unanswered"] == 0 and all(map(str.isdigit, statuses)),
        "no 503": statuses.get("503", 0) == 0,
        "no 5xx other than 503": not other_5xx(statuses),
        "no spurious 409": spurious_by_event(asked, available) == 0,
    }
    if counted is not None:
        checks["the hosts' confirmed counters add up to the 201s"] = sum(counted) == statuses.get(
            "201", 0
        )
    return checks


def cluster_row(run: dict) -> list[str]:
    """One cluster run as the cells of CLUSTER_COLUMNS."""
    load, latency = run["load"], run["load"]["latency_ms"]
    failed = [name for name, ok in run["invariants"].items() if not ok]
    return [
        run["workload"],
        str(run["hosts"]),
        run["balance"],
        str(run["clients"]),
        f"{load['confirmed_per_s']:.0f}",
        f"{latency['p50']:.1f}",
        f"{latency['p99']:.1f}",
        fmt(run["retries_per_commit"]),
        fmt(run["reservations_per_commit"]),
        host_share(run["confirmed_by_host"]),
        str(load["statuses"].get("503", 0)),
        str(run["spurious_409"]),
        "PASS" if not failed else "FAIL: " + "; ".join(failed),
    ]


def cluster_details(run: dict) -> str:
    """What a cluster run's row has no room for: statuses, each host's counters, the
    generator's CPU."""
    load = run["load"]
    hosts = "; ".join(
        ", ".join([h["host"], *(f"Δ{k} {v:g}" for k, v in h.items() if k != "host")])
        for h in run["host_counters"] or []
    )
    return (
        f"- {run['workload']}@{run['hosts']} {run['balance']}: statuses "
        + " ".join(f"{status}:{n}" for status, n in load["statuses"].items())
        + f"; {hosts or 'n/a (no /metrics)'}; generator {load['cpu_percent']:.0f} % CPU"
    )


def render_cluster(report: dict) -> str:
    """The cluster report: machine, workloads, one row per (workload, hosts, balance)."""
    m, cfg = report["machine"], report["config"]
    mix = CLUSTER_WORKLOADS["mix20"]
    lines = [
        f"# TicketBoss cluster bench {report['timestamp']}",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), PostgreSQL {m['postgresql']}, "
        f"Python {m['python']}; revision {m['revision']}.",
        f"Each host: gunicorn {m['gunicorn']}; HAProxy in front (roundrobin: round robin; "
        "affinity: consistent hashing on the event id of the path), pgbouncer (transaction "
        "pooling) behind; all on this machine.",
        f"{cfg['clients']} clients, {cfg['duration_s']:g} s per run, seats per request "
        f"{cfg['seats']}, AUTH_MODE {cfg['auth']}; hot: every request reserves on "
        f"{CLUSTER_WORKLOADS['hot'][0]}; mix20: each on a random one of {len(mix)} events "
        f"({mix[0]} … {mix[-1]}); every event has {HUGE:,} seats, so every 409 is spurious. "
        f"Database {cfg['database']}.",
        "",
        *markdown_table([cluster_row(r) for r in report["runs"]], CLUSTER_COLUMNS),
        "",
        "host share %: each host's part of the reservations the hosts confirmed (their "
        "/metrics), host1/host2/…; retries/commit and 201/commit from the CAS counters of every "
        "host.",
        "",
        *(cluster_details(r) for r in report["runs"]),
        "",
        f"Invariants: {'PASS' if report['ok'] else 'FAIL'}",
    ]
    return "\n".join(lines) + "\n"
