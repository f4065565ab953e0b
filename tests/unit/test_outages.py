"""An outage is told in a few lines: the first failure, a count every REPORT_EVERY_SECONDS,
and the end, however many requests failed in between."""

from __future__ import annotations

import logging

from ticketboss import outages
from ticketboss.outages import Outage


def test_an_outage_is_a_few_lines_however_many_requests_fail(caplog, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(outages.time, "monotonic", lambda: now[0])
    outage = Outage()
    caplog.set_level(logging.WARNING, logger="ticketboss.api.errors")
    for _ in range(1000):  # 1,000 failed requests over 25 s
        outage.failed("OperationalError: server closed the connection", ValueError("x"))
        now[0] += 0.025
    outage.over()
    outage.over()  # no outage: nothing to say
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "database unavailable: OperationalError: server closed the connection"
    assert caplog.records[0].exc_info is not None  # the first one has its traceback
    assert [line.split(" after ")[0] for line in lines[1:]] == [
        "database still unavailable",
        "database still unavailable",
        "database answering again",
    ]
    assert lines[-1].endswith("again after 25.0 s: 1000 requests answered 503 meanwhile")
    assert not any(record.exc_info for record in caplog.records[1:])


def test_the_next_outage_within_a_minute_has_no_traceback(caplog, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(outages.time, "monotonic", lambda: now[0])
    outage = Outage()
    caplog.set_level(logging.WARNING, logger="ticketboss.api.errors")
    outage.failed("first", ValueError("x"))
    outage.over()
    now[0] += 30
    outage.failed("second", ValueError("y"))
    now[0] += 31
    outage.over()
    outage.failed("third", ValueError("z"))
    with_traceback = [r.getMessage() for r in caplog.records if r.exc_info]
    assert with_traceback == ["database unavailable: first", "database unavailable: third"]
