"""Request ids, the JSON access log, the HTTP metrics and /api/ready."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from support.api import PROBLEM, assert_problem
from support.servers import METRICS_TOKEN, request, serving
from ticketboss import create_app, services_of
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.observability import JsonFormatter
from ticketboss.services.partners import create_key
from ticketboss.store.db import make_engine
from ticketboss.store.migrate import upgrade

GENERATED_ID = re.compile(r"[0-9a-f]{32}")
UNREACHABLE_URL = "postgresql+psycopg2://root@127.0.0.1:1/nowhere"

# One request per status the brief names: (expected status, method, path, JSON body).
REQUESTS = {
    201: ("POST", "/api/reservations", {"partnerId": "abc-corp", "seats": 1}),
    400: ("POST", "/api/reservations", {"partnerId": "abc-corp", "seats": 0}),
    404: ("GET", "/nope", None),
    405: ("PATCH", "/api/reservations", None),
}


def send(client, status, request_id=None):
    method, path, body = REQUESTS[status]
    headers = {} if request_id is None else {"X-Request-ID": request_id}
    response = client.open(path, method=method, json=body, headers=headers)
    assert response.status_code == status
    return response


def access_lines(err: str) -> list[dict]:
    """The JSON objects among captured stderr lines (other loggers may write there too)."""
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def lines_of(capsys, request_id) -> list[dict]:
    """The access-log lines written to stderr since the last read, for one request id."""
    lines = access_lines(capsys.readouterr().err)
    return [line for line in lines if line["request_id"] == request_id]


def http_requests(route, method, status) -> float:
    labels = {"route": route, "method": method, "status": str(status)}
    return REGISTRY.get_sample_value("ticketboss_http_requests_total", labels) or 0.0


def http_latency_count(route, method) -> float:
    labels = {"route": route, "method": method}
    name = "ticketboss_http_request_duration_seconds_count"
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- X-Request-ID -------------------------------------------------------------------------


@pytest.mark.parametrize("status", REQUESTS)
def test_a_well_formed_request_id_is_echoed(client, status):
    given = f"req-{uuid.uuid4()}:~!"
    assert send(client, status, given).headers["X-Request-ID"] == given


@pytest.mark.parametrize("status", REQUESTS)
def test_a_missing_request_id_is_generated_fresh_for_each_request(client, status):
    first = send(client, status).headers["X-Request-ID"]
    second = send(client, status).headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(first) and GENERATED_ID.fullmatch(second)
    assert first != second


@pytest.mark.parametrize("status", REQUESTS)
@pytest.mark.parametrize("invalid", ["", "has space", "x" * 129, "caf\u00e9", "tab\there"])
def test_an_invalid_request_id_is_replaced_by_a_generated_one(client, status, invalid):
    assert GENERATED_ID.fullmatch(send(client, status, invalid).headers["X-Request-ID"])


def test_a_request_id_of_128_visible_characters_is_kept(client):
    given = "!" + "a" * 126 + "~"
    assert send(client, 201, given).headers["X-Request-ID"] == given


# --- The JSON access log ------------------------------------------------------------------


@pytest.mark.parametrize("status", REQUESTS)
def test_each_request_writes_one_json_line_to_stderr_with_its_id(client, capsys, status):
    capsys.readouterr()
    before = datetime.now(UTC)
    response = send(client, status)
    request_id = response.headers["X-Request-ID"]

    lines = lines_of(capsys, request_id)
    assert len(lines) == 1
    line = lines[0]
    method, path, _ = REQUESTS[status]
    assert set(line) == {
        "ts",
        "level",
        "request_id",
        "method",
        "path",
        "route",
        "status",
        "duration_ms",
        "remote_addr",
    }
    assert (line["level"], line["method"], line["path"], line["status"]) == (
        "info",
        method,
        path,
        status,
    )
    assert line["route"] == ("unmatched" if status in (404, 405) else "/api/reservations")
    assert line["remote_addr"] == "127.0.0.1"
    assert 0 <= line["duration_ms"] < 10_000
    ts = datetime.fromisoformat(line["ts"])
    assert ts.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= ts <= datetime.now(UTC)


def test_the_log_line_names_the_route_not_the_raw_path(client, capsys):
    capsys.readouterr()
    reservation_id = uuid.uuid4()
    response = client.get(f"/api/reservations/{reservation_id}", headers={"X-Request-ID": "r-1"})
    assert response.status_code == 404
    (line,) = lines_of(capsys, "r-1")
    assert line["path"] == f"/api/reservations/{reservation_id}"
    assert line["route"] == "/api/reservations/<reservation_id>"


def test_building_many_apps_still_writes_one_line_per_request(database_url, capsys):
    apps = [create_app(Settings(database_url=database_url)) for _ in range(3)]
    try:
        capsys.readouterr()
        apps[-1].test_client().get("/nope", headers={"X-Request-ID": "many-apps"})
        lines = access_lines(capsys.readouterr().err)
        assert [line["request_id"] for line in lines] == ["many-apps"]
        # pytest attaches its own capture handlers too; ours are the JSON ones.
        logger = logging.getLogger("ticketboss.access")
        ours = [h for h in logger.handlers if isinstance(h.formatter, JsonFormatter)]
        assert len(ours) == 1 and logger.propagate is False
    finally:
        for app in apps:
            services_of(app).engine.dispose()


# --- Prometheus ---------------------------------------------------------------------------


def test_requests_are_counted_by_route_method_and_status_with_their_latency(client):
    item = "/api/reservations/<reservation_id>"
    before = {
        "created": http_requests("/api/reservations", "POST", 201),
        "refused": http_requests("/api/reservations", "POST", 400),
        "missing": http_requests(item, "GET", 404),
        "unmatched": http_requests("unmatched", "GET", 404),
        "item latency": http_latency_count(item, "GET"),
    }
    send(client, 201)
    send(client, 201)
    send(client, 400)
    for _ in range(3):
        assert client.get(f"/api/reservations/{uuid.uuid4()}").status_code == 404
    send(client, 404)

    assert http_requests("/api/reservations", "POST", 201) == before["created"] + 2
    assert http_requests("/api/reservations", "POST", 400) == before["refused"] + 1
    # Three different ids, one series: the route, not the path, is the label.
    assert http_requests(item, "GET", 404) == before["missing"] + 3
    assert http_requests("unmatched", "GET", 404) == before["unmatched"] + 1
    assert http_latency_count(item, "GET") == before["item latency"] + 3


def test_an_unknown_method_is_counted_as_other(client):
    before = http_requests("unmatched", "OTHER", 405)
    assert client.open("/api/reservations", method="BREW").status_code == 405
    assert http_requests("unmatched", "OTHER", 405) == before + 1


def test_metrics_exposes_the_counter_and_the_histogram_but_does_not_count_scrapes(client):
    send(client, 201)
    scrapes = http_requests("/metrics", "GET", 200)
    body = client.get("/metrics").get_data(as_text=True)
    client.get("/metrics")
    assert http_requests("/metrics", "GET", 200) == scrapes == 0

    families = {family.name: family for family in text_string_to_metric_families(body)}
    counted = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in families["ticketboss_http_requests"].samples
        if s.name == "ticketboss_http_requests_total"
    }
    assert counted[("/api/reservations", "POST", "201")] >= 1
    assert not any(route == "/metrics" for route, _, _ in counted)

    histogram = families["ticketboss_http_request_duration_seconds"]
    assert histogram.type == "histogram"
    buckets = {
        s.labels["le"]
        for s in histogram.samples
        if s.name.endswith("_bucket") and s.labels["route"] == "/api/reservations"
    }
    assert {"0.001", "2.0", "+Inf"} <= buckets


# --- /metrics: who may scrape, and what a flood of scrapes costs ---------------------------

SCRAPER_TOKEN = "scraper-" + uuid.uuid4().hex


def scrape(app, authorization: str | None = None):
    """GET /metrics with this Authorization header, or none."""
    client = FlaskClient(app, app.response_class)
    headers = {} if authorization is None else {"Authorization": authorization}
    return client.get("/metrics", headers=headers)


def test_without_a_metrics_token_a_scrape_needs_an_operator_key(app):
    engine = services_of(app).engine
    partner_key = create_key(engine, "abc-corp", Role.PARTNER)[1]
    missing = assert_problem(scrape(app), 401, "unauthenticated")
    assert "an operator key" in missing["detail"]
    for wrong in (f"Basic {partner_key}", "Bearer", "Bearer tb_" + "A" * 43, SCRAPER_TOKEN):
        response = scrape(app, wrong)
        assert_problem(response, 401, "unauthenticated")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(scrape(app, f"Bearer {partner_key}"), 403, "forbidden")
    scraped = scrape(app, f"Bearer {app.config['TEST_OPERATOR_KEY']}")
    assert scraped.status_code == 200 and scraped.mimetype == "text/plain"
    assert "ticketboss_http_requests_total" in scraped.get_data(as_text=True)


@pytest.mark.parametrize("auth_mode", ["keys", "open"])
def test_with_a_metrics_token_only_that_token_scrapes_and_it_is_never_echoed(
    database_url, capsys, auth_mode
):
    settings = Settings(database_url=database_url, auth_mode=auth_mode, metrics_token=SCRAPER_TOKEN)
    app = create_app(settings)
    try:
        operator_key = create_key(services_of(app).engine, "ops", Role.OPERATOR)[1]
        capsys.readouterr()
        near_misses = [
            SCRAPER_TOKEN[:-1],
            SCRAPER_TOKEN + "x",
            SCRAPER_TOKEN[:-1] + "g",  # as long, not a hex digit: one character off
            operator_key,  # with a token, operator keys do not scrape
        ]
        answers = [scrape(app), *(scrape(app, f"Bearer {wrong}") for wrong in near_misses)]
        for response in answers:
            assert_problem(response, 401, "unauthenticated")
        assert "the metrics token" in answers[0].get_json()["detail"]
        for authorization in (f"Bearer {SCRAPER_TOKEN}", f"bearer {SCRAPER_TOKEN}"):
            scraped = scrape(app, authorization)
            assert scraped.status_code == 200, scraped.get_data(as_text=True)
            answers.append(scraped)
        logged = capsys.readouterr()
        for response in answers:  # neither the token nor any near miss of it
            assert SCRAPER_TOKEN[:-1] not in response.get_data(as_text=True)
            assert SCRAPER_TOKEN[:-1] not in str(response.headers)
        assert SCRAPER_TOKEN[:-1] not in logged.out + logged.err
    finally:
        services_of(app).engine.dispose()


def test_in_auth_mode_open_without_a_token_anyone_scrapes(database_url):
    app = create_app(Settings(database_url=database_url, auth_mode="open"))
    try:
        assert scrape(app).status_code == 200
    finally:
        services_of(app).engine.dispose()


def confirmed_in(exposition: bytes) -> float:
    for line in exposition.decode().splitlines():
        if line.startswith("ticketboss_reservations_confirmed_total "):
            return float(line.split()[1])
    raise AssertionError("no ticketboss_reservations_confirmed_total")


def test_a_worker_builds_the_exposition_at_most_once_per_metrics_cache_seconds(
    pg_url, tmp_path_factory
):
    engine = make_engine(Settings(database_url=pg_url))
    event = f"scraped-{uuid.uuid4().hex[:8]}"
    seed_event(engine, event, "Scraped", 10, reset=True)
    operator = create_key(engine, "scrape-ops", Role.OPERATOR)[1]
    engine.dispose()
    # One worker, so that every scrape meets the same cache.
    with serving(pg_url, tmp_path_factory, WEB_CONCURRENCY="1", METRICS_CACHE_SECONDS="3") as s:
        status, _, headers = request(s.port, "GET", "/metrics", full=True)
        assert (status, headers["Content-Type"]) == (401, PROBLEM)
        began = time.monotonic()
        status, first = request(s.port, "GET", "/metrics", key=METRICS_TOKEN)
        assert status == 200
        reserved = request(
            s.port, "POST", f"/api/events/{event}/reservations", {"seats": 1}, operator
        )
        assert reserved[0] == 201
        # The same bytes, built once, until the cache is METRICS_CACHE_SECONDS old.
        assert request(s.port, "GET", "/metrics", key=METRICS_TOKEN) == (200, first)
        while True:
            status, latest = request(s.port, "GET", "/metrics", key=METRICS_TOKEN)
            if latest != first:
                break
            assert time.monotonic() - began < 10, "the exposition was never built again"
            time.sleep(0.1)
        assert time.monotonic() - began >= 3
        assert confirmed_in(latest) == confirmed_in(first) + 1
    assert METRICS_TOKEN not in s.log.read_text()


def test_the_gunicorn_config_sets_the_multiprocess_dir_before_prometheus_client_loads():
    # prometheus_client chooses per-process or shared values once, on import; the master
    # imports this package to read gunicorn_conf, and forks the workers with what it loaded.
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    check = "import sys, ticketboss.gunicorn_conf; print('prometheus_client' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# --- /api/ready ---------------------------------------------------------------------------


@pytest.fixture
def scratch_pg_url(pg_url):
    """A PostgreSQL database of its own (the tests migrate it part-way); dropped afterwards."""
    url = make_url(pg_url).set(database=f"ticketboss_ready_{uuid.uuid4().hex[:8]}")
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()


def app_on(database_url):
    return create_app(Settings(database_url=database_url, db_pool_size=1, db_max_overflow=0))


def assert_not_ready(response, slug):
    assert response.status_code == 503
    assert response.mimetype == PROBLEM
    assert response.get_json()["type"] == f"/problems/{slug}"
    assert response.headers["Retry-After"] == "1"
    assert GENERATED_ID.fullmatch(response.headers["X-Request-ID"])


def test_ready_on_the_migrated_database(pg_url):
    app = app_on(pg_url)
    try:
        response = app.test_client().get("/api/ready")
        assert response.status_code == 200
        assert response.get_json() == {"status": "READY"}
    finally:
        services_of(app).engine.dispose()


def test_not_ready_until_the_database_reaches_the_head_revision(scratch_pg_url):
    upgrade(scratch_pg_url, "0001")
    app = app_on(scratch_pg_url)
    try:
        response = app.test_client().get("/api/ready")
        assert_not_ready(response, "not-ready")
        assert "revision 0001" in response.get_json()["detail"]

        # Only the head is cached: the database's revision is read on every request.
        upgrade(scratch_pg_url)
        assert app.test_client().get("/api/ready").status_code == 200
    finally:
        services_of(app).engine.dispose()


def test_not_ready_when_the_database_does_not_answer(capsys):
    app = app_on(UNREACHABLE_URL)
    try:
        capsys.readouterr()
        response = app.test_client().get("/api/ready")
        assert_not_ready(response, "unavailable")
        # A 5xx is logged a level up, so it can be filtered for.
        (line,) = access_lines(capsys.readouterr().err)
        assert (line["level"], line["status"]) == ("warning", 503)
        assert line["request_id"] == response.headers["X-Request-ID"]
    finally:
        services_of(app).engine.dispose()


def test_ready_is_documented_with_its_503_and_retry_after(client):
    paths = client.get("/api/openapi.json").get_json()["paths"]
    responses = paths["/api/ready"]["get"]["responses"]
    assert set(responses) >= {"200", "503"}
    assert "Retry-After" in responses["503"]["headers"]


def allocation_figure(event_id: str, partner_id: str, figure: str) -> float | None:
    labels = {"event_id": event_id, "partner_id": partner_id, "figure": figure}
    return REGISTRY.get_sample_value("ticketboss_allocation_seats", labels)


def refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("ticketboss_refusals_total", {"reason": reason}) or 0.0


def test_allocations_pool_and_refusals_are_gauged_per_allocation_and_counted_per_reason(client):
    event_id = "node-meetup-2025"
    partner = "p39"
    before = refusals("not-enough-seats:allocation")
    assert (
        client.put(f"/api/events/{event_id}/allocations/{partner}", json={"seats": 2}).status_code
        == 201
    )
    body = {"partnerId": partner, "seats": 2}
    assert client.post("/api/reservations", json=body).status_code == 201
    assert client.post("/api/reservations", json={**body, "seats": 1}).status_code == 409

    assert [
        allocation_figure(event_id, partner, f) for f in ("seats", "taken", "held", "available")
    ] == [2, 2, 0, 0]
    assert (
        REGISTRY.get_sample_value("ticketboss_pool_available_seats", {"event_id": event_id}) == 498
    )
    assert refusals("not-enough-seats:allocation") == before + 1
    # A deleted allocation's series read 0: nothing taken from it stays counted to it.
    listed = client.get(f"/api/events/{event_id}/reservations", query_string={"partnerId": partner})
    client.delete(
        f"/api/events/{event_id}/reservations/{listed.get_json()['items'][0]['reservationId']}"
    )
    assert client.delete(f"/api/events/{event_id}/allocations/{partner}").status_code == 204
    assert allocation_figure(event_id, partner, "seats") == 0
