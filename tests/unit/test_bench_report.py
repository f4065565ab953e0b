"""The benchmark's report functions (scripts/bench/report.py), on a recorded run."""

import copy
import json
from pathlib import Path

import pytest
from bench.report import gunicorn_shape, markdown_table, render, table_row, targets
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
