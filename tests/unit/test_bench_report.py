"""The benchmark's report functions (scripts/bench/report.py), on a recorded run."""

import copy
import json
from pathlib import Path

import pytest
from bench.report import (
    books_checks,
    books_line,
    checkout_lines,
    gunicorn_shape,
    markdown_table,
    problem_split,
    render,
    table_row,
    targets,
)
from bench.settings import COLUMNS

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
