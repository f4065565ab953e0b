"""The benchmark's report functions (scripts/bench/report.py), on a recorded run."""

import copy
import json
from pathlib import Path

import pytest

from bench.report import (
    ab_rows,
    allocation_checks,
    allocation_lines,
    allocation_spurious,
    best_pgbench,
    books_checks,
    books_line,
    checkout_lines,
    cluster_checks,
    cluster_row,
    gunicorn_shape,
    host_share,
    markdown_table,
    pgbench_line,
    problem_split,
    reads_comparison,
    reads_line,
    refusals_by_bucket,
    render,
    render_ab,
    render_cluster,
    spurious_by_event,
    table_row,
    targets,
)
from bench.settings import AB_COLUMNS, CLUSTER_COLUMNS, COLUMNS

RECORDED = json.loads((Path(__file__).parent / "bench_report.json").read_text())


@pytest.fixture
def report():
    return copy.deepcopy(RECORDED)


def test_the_report_shows_the_machine_the_table_the_targets_and_the_verdict(report):
    text = render(report)
    run = report["runs"][0]
    assert text.startswith(f"# TicketBoss bench {report['timestamp']}")
    assert f"| hot      | {run['clients']}" in text
    assert "## Targets (reported, not enforced)" in text and "Invariants: PASS" in text
    assert "AUTH_MODE keys (10 partner keys)" in text


def test_a_spurious_409_fails_its_target_and_shows_in_the_row(report):
    run = report["runs"][0]
    run["spurious_409"] = 3
    verdicts = {name: met for name, _, met in targets(report["runs"], report["pgbench"])}
    assert verdicts["0 spurious 409s in every run"] is False
    assert table_row(run)[COLUMNS.index("spurious 409")] == "3"


def test_a_failed_invariant_is_named_in_its_row(report):
    run = report["runs"][0]
    name = next(iter(run["invariants"]))
    run["invariants"][name] = False
    assert table_row(run)[-1] == f"FAIL: {name}"


def test_tables_are_padded_so_they_read_as_text(report):
    lines = markdown_table([table_row(r) for r in report["runs"]])
    assert len({len(line) for line in lines}) == 1 and lines[1].startswith("| ---")


def test_the_worker_shape_is_named_by_its_kind():
    gevent = {"workers": 2, "worker_class": "ticketboss.workers.GeventWorker", "threads": 64}
    gthread = {"workers": 2, "worker_class": "ticketboss.workers.ThreadWorker", "threads": 8}
    assert gunicorn_shape(gevent) == "2 gevent workers"
    assert gunicorn_shape(gthread) == "2 gthread workers x 8 threads"


BALANCED = {
    "total": 1000,
    "available": 900,
    "held": 0,
    "reservation_count": 40,
    "confirmed_seats": 100,
    "confirmed_rows": 40,
    "held_rows": 0,
    "expired_rows": 5,
    "confirms": 40,
}


def checkout_run(report):
    """The recorded run, as a checkout run would have it."""
    run = report["runs"][0]
    run["scenario"], run["seats"], run["books"] = "checkout", "1-4", dict(BALANCED)
    run["load"]["checkout"] = {
        "hold_ttl_s": 2,
        "think_ms": "50-250",
        "holds": 50,
        "seats_held": 120,
        "confirms": 40,
        "releases": 5,
        "abandoned": 5,
        "problems_409": {"hold-expired": 2, "not-held": 1},
        "latency_ms": {
            operation: {"p50": 10.0, "p99": 50.0} for operation in ("hold", "confirm", "release")
        },
    }
    return run


def test_409s_are_split_into_not_enough_seats_hold_expired_and_the_rest():
    split = problem_split({"hold-expired": 3, "not-held": 1, "idempotency-key-in-flight": 2})
    assert split == {"not-enough-seats": 0, "hold-expired": 3, "other": 3}


def test_books_that_add_up_read_balanced():
    assert all(books_checks(BALANCED).values())
    assert books_line(BALANCED).endswith(": balanced")


def test_a_seat_still_held_or_a_confirm_without_its_reservation_unbalances_the_books():
    held = {**BALANCED, "held": 3, "available": 897}
    assert books_line(held).endswith("NOT balanced (nothing held once every ttl passed)")
    lost = {**BALANCED, "confirmed_rows": 39, "reservation_count": 39}
    assert "NOT balanced (confirmed reservations = 200 confirms)" in books_line(lost)
    short = {**BALANCED, "available": 899}
    assert not books_checks(short)["summary: available + held + confirmed seats = total"]


def test_a_checkout_run_reports_its_rates_its_409s_its_latency_and_its_books(report):
    run = checkout_run(report)
    lines = checkout_lines(run)
    assert "5 abandoned" in lines[0] and "confirms/s" in lines[0]
    assert "409s not-enough-seats 0, hold-expired 2, other 1; 503s 0" in lines[1]
    assert "hold p50 10.0 ms, p99 50.0 ms; confirm p50 10.0 ms" in lines[2]
    assert lines[3].endswith(": balanced")
    assert lines[3] in render(report)


def hot_run(report, clients, confirmed_per_s, p99):
    """The recorded run, at another client count and rate."""
    run = copy.deepcopy(report["runs"][0])
    run["clients"] = clients
    run["load"]["confirmed_per_s"] = run["load"]["requests_per_s"] = confirmed_per_s
    run["load"]["latency_ms"]["p99"] = p99
    return run


def read_run(report, scenario, reads_per_s, path="/api/reservations"):
    """The recorded run, as a run of the reads comparison (or read-heavy) would have it."""
    run = hot_run(report, 100, 0.0, 20.0)
    run["scenario"], run["seats"], run["load"]["confirmed"] = scenario, "-", 0
    run["load"]["requests_per_s"] = reads_per_s
    run["load"]["reads"] = {
        "path": path,
        "reads": int(reads_per_s * 5),
        "reads_per_s": reads_per_s,
        "latency_ms": {"read": {"p50": 4.0, "p99": 20.0}},
    }
    return run


def verdicts(runs, ceiling):
    return {name: (measured, met) for name, measured, met in targets(runs, ceiling)}


def test_hot_is_held_to_the_best_pgbench_tps_of_its_own_run(report):
    runs = [hot_run(report, 10, 900.0, 8.0), hot_run(report, 100, 1300.0, 40.0)]
    found = verdicts(runs, report["pgbench"])
    assert found["hot@100 >= 1.6x pgbench's best tps of this run"] == (
        "1.73x of 752 tps at 10 clients",
        True,
    )
    assert found["hot@100 >= 3000 confirmed/s"] == ("1300/s", False)
    assert found["hot@100 p99 <= 40 ms"] == ("40.0 ms", True)
    assert found["hot@10 p99 <= 8 ms"] == ("8.0 ms", True)


def test_the_headline_is_hot_against_the_post_refused_before_the_database(report):
    ceiling = hot_run(report, 100, 0.0, 20.0)
    ceiling["scenario"], ceiling["load"]["requests_per_s"] = "ceiling", 5000.0
    found = targets([hot_run(report, 100, 4000.0, 40.0), ceiling], report["pgbench"])
    assert found[0] == (
        "hot@100 >= 85 % of the POST refused before the database",
        "80.0 % (4000 vs 5000/s at 100 clients)",
        False,
    )
    # Without the ceiling's run (an A/B round) there is no headline.
    assert "refused before" not in targets([hot_run(report, 100, 4000.0, 40.0)], None)[0][0]


def test_without_pgbench_the_ratio_target_is_not_measured(report):
    found = verdicts([hot_run(report, 100, 3500.0, 40.0)], None)
    assert found["hot@100 >= 1.6x pgbench's best tps of this run"] == ("no pgbench tps", None)


def test_pgbench_names_each_client_count_its_best_a_capped_count_and_errors(report):
    ceiling = [
        *report["pgbench"],
        {"clients": 90, "clients_asked": 100, "duration_s": 2, "tps": 600.0, "error": None},
        {"clients": 1, "clients_asked": 1, "duration_s": 2, "tps": None, "error": "refused"},
    ]
    assert best_pgbench(ceiling)["clients"] == 10
    assert best_pgbench([ceiling[-1]]) is None
    line = pgbench_line(ceiling)
    assert line.startswith("pgbench tps by clients (2 s each): 752 at 10, 668 at 20, ")
    assert "600 at 90 (of 100: max_connections)" in line
    assert "best 752 tps at 10 clients; pgbench error at 1: refused" in line
    assert pgbench_line(ceiling) in render(report | {"pgbench": ceiling})


def test_summary_reads_are_held_to_90_percent_of_reads_that_touch_no_database(report):
    runs = [
        read_run(report, "reads/summary", 2700.0),
        read_run(report, "reads/no-db", 3000.0, "/api/nope"),
        read_run(report, "reads/openapi", 500.0, "/api/openapi.json"),
    ]
    assert reads_comparison(runs) == {"summary": 2700.0, "no-db": 3000.0, "openapi": 500.0}
    found = verdicts(runs, None)
    assert found["summary reads >= 90 % of no-db reads"] == ("90.0 % (2700 vs 3000/s)", True)
    runs[0]["load"]["reads"]["reads_per_s"] = 2600.0
    assert verdicts(runs, None)["summary reads >= 90 % of no-db reads"][1] is False
    text = render(report | {"runs": runs})
    assert "- reads comparison: summary (/api/reservations) 2,600/s, no-db" in text
    assert "summary = 86.7 % of no-db" in text
    assert table_row(runs[1])[:3] == ["reads/no-db", "100", "-"]


def test_a_read_heavy_run_shows_its_reads_writes_latency_and_read_your_writes(report):
    run = read_run(report, "read-heavy", 900.0)
    run["seats"], run["load"]["confirmed_per_s"] = "1", 100.0
    run["load"]["reads"]["latency_ms"] = {
        "reserve": {"p50": 6.0, "p99": 30.0},
        "summary": {"p50": 2.0, "p99": 9.5},
    }
    seen = {"after_write": 480, "stale_after_write": 0, "went_back": 0}
    run["load"]["reads"]["read_your_writes"] = seen
    assert reads_line(run) == (
        "GET /api/reservations: 900 reads/s, 100 confirmed/s; "
        "reserve p50 6.0 ms, p99 30.0 ms; summary p50 2.0 ms, p99 9.5 ms; "
        "read your writes: 480 summaries read after their client's own 201, "
        "0 showed less than it wrote, 0 less than it had read"
    )
    assert f"- read-heavy@100: {reads_line(run)}" in render(report | {"runs": [run]})


def test_each_workers_cpu_per_request_is_a_line_of_its_run(report):
    assert "worker CPU" not in render(report)  # recorded before it was measured
    report["runs"][0]["worker_cpu_ms_per_request"] = [0.524, 0.49]
    assert "- hot@20: worker CPU ms/req: 0.52 / 0.49\n" in render(report)


def ab_round(report, arm, number, confirmed_per_s, p99, cpu):
    run = hot_run(report, 100, confirmed_per_s, p99)
    run["service_cpu_ms_per_request"] = cpu
    return {"arm": arm, "round": number, "ok": True, "runs": [run]}


def test_the_ab_table_gives_each_arms_rounds_their_mean_and_bs_change(report):
    rounds = [
        ab_round(report, "A", 1, 1000.0, 40.0, 0.5),
        ab_round(report, "B", 1, 1200.0, 30.0, 0.4),
        ab_round(report, "A", 2, 1100.0, 50.0, 0.5),
        ab_round(report, "B", 2, 1300.0, 30.0, 0.4),
    ]
    assert ab_rows(rounds) == [
        ["hot@100", "confirmed/s", "1,050", "1,000 1,100", "1,250", "1,200 1,300", "+19.0 %"],
        ["hot@100", "p99 ms", "45.0", "40.0 50.0", "30.0", "30.0 30.0", "-33.3 %"],
        ["hot@100", "svc CPU ms/req", "0.500", "0.500 0.500", "0.400", "0.400 0.400", "-20.0 %"],
    ]
    ab = {
        "timestamp": "20261128T210000Z",
        "config": {"ab": "HEAD", "scenario": "hot", "clients": 100, "duration_s": 5, "rounds": 2},
        "order": ["A", "B", "A", "B"],
        "arms": {
            "A": {"label": "HEAD (c428580)", "code": "/tmp/ab/a/src/ticketboss/__init__.py"},
            "B": {"label": "working tree (c428580-dirty)", "code": "/w/src/ticketboss/__init__.py"},
        },
        "rounds": rounds,
    }
    text = render_ab(ab)
    assert "in the order A B A B." in text
    assert "- A: HEAD (c428580), served from /tmp/ab/a/src/ticketboss/__init__.py" in text
    assert markdown_table(ab_rows(rounds), AB_COLUMNS)[0] in text
    assert text.endswith("Invariants: PASS\n")


def test_reads_are_compared_by_requests_a_second(report):
    rounds = [
        {"arm": arm, "round": 1, "ok": True, "runs": [read_run(report, "reads/summary", rate)]}
        for arm, rate in (("A", 2000.0), ("B", 2500.0))
    ]
    assert ab_rows(rounds)[0][1:] == ["req/s", "2,000", "2,000", "2,500", "2,500", "+25.0 %"]


def cluster_books():
    """Two events' books as a cluster run reads them: balanced, one row per 201."""
    return {
        "a": {
            "total": 100,
            "available": 90,
            "confirmed_seats": 10,
            "rows": 3,
            "ids": {"1", "2", "3"},
        },
        "b": {"total": 100, "available": 95, "confirmed_seats": 5, "rows": 1, "ids": {"4"}},
    }


def cluster_load():
    """What the load generator reports of a run over events a and b through HAProxy."""
    return {
        "statuses": {"201": 4},
        "unanswered": 0,
        "confirmed_per_s": 812.4,
        "cpu_percent": 11.0,
        "latency_ms": {"p50": 9.94, "p90": 20.0, "p99": 48.26, "max": 60.0},
        "events": {
            "a": {"statuses": {"201": 3}, "asked_409": {}},
            "b": {"statuses": {"201": 1}, "asked_409": {}},
        },
    }


def cluster_run(**changes):
    """A passing cluster run: mix of two events on two hosts, round robin."""
    run = {
        "workload": "mix20",
        "hosts": 2,
        "balance": "roundrobin",
        "clients": 100,
        "load": cluster_load(),
        "host_counters": [
            {"host": "host1", "commits": 2.0, "retries": 1.0, "confirmed": 3.0},
            {"host": "host2", "commits": 1.0, "retries": 0.0, "confirmed": 1.0},
        ],
        "confirmed_by_host": [3.0, 1.0],
        "retries_per_commit": 1 / 3,
        "reservations_per_commit": 4 / 3,
        "spurious_409": 0,
        "invariants": cluster_checks(cluster_books(), cluster_load(), {"1", "4"}, [3.0, 1.0]),
    }
    return run | changes


def test_each_hosts_share_of_the_confirmed_reservations_reads_in_host_order():
    assert host_share([62.0, 38.0]) == "62/38"
    assert host_share([1.0, 0.0, 3.0]) == "25/0/75"
    assert host_share([0.0, 0.0]) == "n/a"
    assert host_share(None) == "n/a"


def test_a_409_is_spurious_when_its_event_still_had_the_seats_it_asked_for():
    asked = {"a": {"3": 2, "9": 1}, "b": {"3": 4}}
    assert spurious_by_event(asked, {"a": 5, "b": 2}) == 2
    assert spurious_by_event(asked, {"a": 0, "b": 0}) == 0


def test_balanced_books_on_every_event_pass_every_cluster_check():
    checks = cluster_checks(cluster_books(), cluster_load(), {"1", "4"}, [3.0, 1.0])
    assert checks and all(checks.values())
    without_metrics = cluster_checks(cluster_books(), cluster_load(), {"1"}, None)
    assert "the hosts' confirmed counters add up to the 201s" not in without_metrics


def test_one_unbalanced_event_a_missing_row_a_503_or_a_spurious_409_fails_its_check():
    books = cluster_books()
    books["b"]["available"] = 96
    assert not cluster_checks(books, cluster_load(), set(), None)[
        "available + confirmed seats = total, every event"
    ]
    books = cluster_books()
    books["a"]["rows"] = 2
    assert not cluster_checks(books, cluster_load(), set(), None)[
        "reservation rows = 201s received, every event"
    ]
    load = cluster_load()
    load["statuses"]["503"] = 1
    load["events"]["a"]["asked_409"] = {"4": 1}
    failed = [
        k for k, ok in cluster_checks(cluster_books(), load, {"9"}, [3.0, 0.0]).items() if not ok
    ]
    assert failed == [
        "every 201's reservationId is in the database",
        "no 503",
        "no spurious 409",
        "the hosts' confirmed counters add up to the 201s",
    ]


def test_a_cluster_row_gives_rates_latency_counters_and_each_hosts_share():
    row = cluster_row(cluster_run())
    assert row == [
        "mix20",
        "2",
        "roundrobin",
        "100",
        "812",
        "9.9",
        "48.3",
        "0.33",
        "1.33",
        "75/25",
        "0",
        "0",
        "PASS",
    ]
    assert len(row) == len(CLUSTER_COLUMNS)
    failed = cluster_run(host_counters=None, confirmed_by_host=None, retries_per_commit=None)
    failed["invariants"] = {"no 503": False}
    assert cluster_row(failed)[-6:] == ["n/a", "1.33", "n/a", "0", "0", "FAIL: no 503"]


def test_the_cluster_report_has_a_row_per_run_its_details_and_the_verdict(report):
    runs = [cluster_run(), cluster_run(balance="affinity", host_counters=None)]
    cluster = {
        "timestamp": "20261128T213748Z",
        "machine": report["machine"],
        "config": {
            "clients": 100,
            "duration_s": 5,
            "seats": "1-10",
            "auth": "keys",
            "database": "postgresql+psycopg2://root@127.0.0.1:5432/ticketboss_bench_cluster",
        },
        "runs": runs,
        "ok": True,
    }
    text = render_cluster(cluster)
    assert text.startswith("# TicketBoss cluster bench 20261128T213748Z")
    assert markdown_table([cluster_row(r) for r in runs], CLUSTER_COLUMNS)[2] in text
    assert (
        "- mix20@2 roundrobin: statuses 201:4; host1, Δcommits 2, Δretries 1, Δconfirmed 3;" in text
    )
    assert "- mix20@2 affinity: statuses 201:4; n/a (no /metrics);" in text
    assert text.endswith("Invariants: PASS\n")


def allocation_books():
    """An allocations run's books that balance: partner-a 10 seats without overflow (sold
    out), partner-b 10 with overflow (sold out, 4 pool seats), partner-c on the pool; the
    pool 20 seats, 12 taken."""

    def partner(rows, seats, allocated, answered_201, refused):
        db = {"rows": rows, "confirmed_rows": rows, "seats": seats, "allocated": allocated}
        db |= {"pool": seats - allocated, "held": 0, "bad_rows": 0}
        return {"db": db, "answered": {"201": answered_201, "seats": seats, "409": refused}}

    return {
        "planned": {
            "partner-a": {"seats": 10, "overflow": False},
            "partner-b": {"seats": 10, "overflow": True},
        },
        "put": {"partner-a": 201, "partner-b": 201},
        "pool_planned": 20,
        "warmup_seats_per_s": 1234.5,
        "listing": {
            "items": [
                {
                    "partnerId": "partner-a",
                    "seats": 10,
                    "taken": 10,
                    "held": 0,
                    "available": 0,
                    "overflow": False,
                    "maxHeldSeats": None,
                    "closed": False,
                },
                {
                    "partnerId": "partner-b",
                    "seats": 10,
                    "taken": 10,
                    "held": 0,
                    "available": 0,
                    "overflow": True,
                    "maxHeldSeats": None,
                    "closed": False,
                },
            ],
            "pool": {"seats": 20, "taken": 12, "held": 0, "available": 8},
        },
        "total": 40,
        "available": 8,
        "partners": {
            "partner-a": partner(3, 10, 10, 3, {"allocation": {"2": 5}}),
            "partner-b": partner(2, 14, 10, 2, {"allocation+pool": {"9": 1}}),
            "partner-c": partner(2, 8, 0, 2, {"pool": {"9": 2}}),
        },
        "clients_per_partner": 5.0,
        "problems_409": {"not-enough-seats": 8},
        "unnamed_409": 0,
        "contradicting_409": 0,
    }


def test_allocation_books_that_balance_per_bucket_pass_every_check():
    books = allocation_books()
    checks = allocation_checks(books)
    assert len(checks) == 14 and all(checks.values())
    assert allocation_spurious(books) == 0
    assert refusals_by_bucket(books) == {"allocation": 5, "allocation+pool": 1, "pool": 2}


def test_a_409_is_spurious_when_the_bucket_that_answered_still_had_the_seats():
    books = allocation_books()
    books["partners"]["partner-c"]["answered"]["409"] = {"pool": {"9": 2, "8": 3}}
    assert allocation_spurious(books) == 3  # the pool had 8 left: 8 were there, 9 were not
    books["partners"]["partner-b"]["answered"]["409"] = {"allocation+pool": {"8": 1}}
    assert allocation_spurious(books) == 4
    assert not allocation_checks(books)[
        "no spurious 409 (its bucket still had the seats at the end)"
    ]


def test_each_broken_bucket_fails_its_own_check():
    def failed(books):
        return [name for name, ok in allocation_checks(books).items() if not ok]

    books = allocation_books()
    books["partners"]["partner-a"]["db"] |= {"pool": 1, "allocated": 9}
    assert failed(books) == [
        "each allocation's taken = its partner's confirmed allocated_seats",
        "pool taken = confirmed seats - allocated_seats",
        "no pool seats for a partner without overflow",
    ]
    books = allocation_books()
    books["partners"]["partner-c"]["db"] |= {"pool": 6, "allocated": 2}
    books["listing"]["pool"]["taken"] = 10
    books["listing"]["pool"]["available"] = 10
    assert "no allocated seats for a partner without an allocation" in failed(books)
    books = allocation_books()
    books["listing"]["items"][0] |= {"taken": 11, "available": -1}
    assert "no bucket oversold: taken + held <= seats, available = the rest" in failed(books)
    books = allocation_books()
    books["listing"]["items"][1]["available"] = 2  # pool seats while its own were left
    books["listing"]["items"][1]["taken"] = 8
    assert "pool seats only once the partner's allocation is used up" in failed(books)
    books = allocation_books()
    books["partners"]["partner-a"]["answered"]["409"] = {"pool": {"2": 5}}
    assert failed(books) == [  # and the pool it named had 8 seats left
        "every 409 names its partner's bucket",
        "no spurious 409 (its bucket still had the seats at the end)",
    ]
    books = allocation_books()
    books["unnamed_409"] = 1
    assert failed(books) == ["every 409 not-enough-seats, naming bucket, available < requested"]
    books = allocation_books()
    books["listing"]["items"][1]["overflow"] = False
    assert failed(books) == ["allocations as set, the pool the rest"]


def test_an_allocations_run_reports_its_buckets_its_409s_and_its_books(report):
    run = report["runs"][0]
    run["scenario"], run["allocations"] = "allocations", allocation_books()
    lines = allocation_lines(run)
    assert lines[0].startswith("- allocations@20: 3 partners (5 clients each), 2 with allocations")
    assert lines[0].endswith("event of 40 seats, pool 20; sized by the warm-up's 1,234 seats/s")
    assert "pool 12/20; partner-a 10/10, partner-b+ 10/10; sold out: 2 allocations" in lines[1]
    assert "from allocations 20, from the pool 12; 409s by bucket allocation 5, " in lines[2]
    assert lines[2].endswith("spurious 0")
    assert lines[3] == "- allocations@20 books per bucket: balanced"
    assert lines[3] in render(report)
    run["allocations"]["partners"]["partner-c"]["db"]["held"] = 1
    assert allocation_lines(run)[3].endswith("NOT balanced (nothing held)")
