"""The benchmark's report: the table, the targets, the details, markdown, JSON and the plot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.settings import COLUMNS, PARTNERS, RESULTS, SELLOUT_SEATS


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
        if run["scenario"] == "checkout":
            lines += checkout_lines(run)
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
