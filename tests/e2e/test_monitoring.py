"""The monitoring in scripts/deploy/: Prometheus's rules (checked and unit-tested by promtool),
the scrape config for `make cluster`, and the Grafana dashboard, held against the metrics a
served TicketBoss really exposes and against docs/monitoring.md."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from cryptography.fernet import Fernet
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from cluster.parts import haproxy_config
from support.api import reserve
from support.receiver import Receiver
from support.servers import METRICS_TOKEN, request, serving
from ticketboss import create_app, metrics, observability, services_of
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services.partners import create_key
from ticketboss.store.db import make_engine
from ticketboss.store.migrate import upgrade

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "scripts" / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules.yml"
RULES_TEST = PROMETHEUS / "rules_test.yml"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
CLUSTER_TARGETS = PROMETHEUS / "cluster-targets.sh"
DASHBOARD = ROOT / "scripts" / "deploy" / "grafana" / "ticketboss.json"
DOCS = ROOT / "docs" / "monitoring.md"
UNREACHABLE_URL = "postgresql+psycopg2://root@127.0.0.1:1/nowhere"

# Grafana's variables, as a panel's query runs with them: promtool reads plain PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": "ticketboss"}
# A label's value, quoted, names no metric (route!~"/api/(health|ready)").
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
# Prometheus's naming of what a recording rule writes: level:metric:operations.
_RECORDED_NAME = re.compile(r"[a-z_]+:ticketboss_[a-z0-9_]+:[a-z0-9_]+")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if not os.access(found, os.X_OK):
        pytest.fail(
            "promtool is missing: run `make system-packages` (it installs Debian's prometheus, "
            "which has promtool)",
            pytrace=False,
        )
    return found


def promtool_ok(promtool: str, *args: str | Path) -> str:
    """promtool's output; the test fails with it when promtool does."""
    done = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{done.stdout}{done.stderr}"
    return done.stdout


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard_panels() -> list[dict]:
    """Every panel, those inside collapsed rows included."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [p for panel in panels for p in (panel, *panel.get("panels", ()))]


def dashboard_expressions() -> list[str]:
    """Every panel's PromQL, with Grafana's variables as a query would have them."""
    found = []
    for panel in dashboard_panels():
        for target in panel.get("targets", ()):
            expression = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expression = expression.replace(variable, value)
            assert "$" not in expression, f"a variable this test does not know: {target['expr']}"
            found.append(expression)
    return found


def names_in(expression: str) -> set[str]:
    """The metric names (ticketboss_…) and recorded names (level:metric:operations) that a
    PromQL expression reads; functions, label names and durations are neither."""
    identifiers = _IDENTIFIER.findall(_QUOTED.sub('""', expression))
    return {name for name in identifiers if name.startswith("ticketboss_") or ":" in name}


def read_names() -> dict[str, set[str]]:
    """Every name the rules and the dashboard read, with where each is read."""
    where: dict[str, set[str]] = {}
    for rule in rules():
        for name in names_in(rule["expr"]):
            where.setdefault(name, set()).add(f"rules.yml {rule.get('record') or rule['alert']}")
    for expression in dashboard_expressions():
        for name in names_in(expression):
            where.setdefault(name, set()).add("ticketboss.json")
    return where


# --- promtool on the rules ----------------------------------------------------------------


def test_the_rules_pass_promtool_check_rules(promtool):
    assert "SUCCESS" in promtool_ok(promtool, "check", "rules", RULES)


def test_the_rules_pass_their_promtool_unit_tests(promtool):
    promtool_ok(promtool, "test", "rules", RULES_TEST)


def test_each_alert_fires_in_a_unit_test_and_stays_silent_in_another():
    fired: set[str] = set()
    silent: set[str] = set()
    checked: set[str] = set()
    for group in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for case in group.get("alert_rule_test", ()):
            (fired if case.get("exp_alerts") else silent).add(case["alertname"])
        checked |= {case["expr"] for case in group.get("promql_expr_test", ())}
    names = {rule["alert"] for rule in alerts()}
    assert names - fired == set(), "alerts no unit test sees fire"
    assert names - silent == set(), "alerts no unit test sees stay silent"
    assert recorded() - checked == set(), "recording rules whose value no unit test checks"


def test_each_alert_waits_has_a_severity_and_says_what_it_means_and_what_to_do():
    for alert in alerts():
        assert alert.get("for"), alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), alert["alert"]
        assert alert["annotations"]["summary"].strip(), alert["alert"]
        assert len(alert["annotations"]["description"]) > 100, alert["alert"]


def test_recording_rules_are_named_level_metric_operations():
    for name in recorded():
        assert _RECORDED_NAME.fullmatch(name), name


def test_every_recorded_name_the_rules_and_the_dashboard_read_is_recorded():
    read = {name: where for name, where in read_names().items() if ":" in name}
    assert {name: where for name, where in read.items() if name not in recorded()} == {}


# --- The dashboard ------------------------------------------------------------------------


def test_every_dashboard_expression_parses_as_promql(promtool, tmp_path):
    # promtool parses PromQL only inside rules: one recording rule per panel query.
    expressions = dashboard_expressions()
    assert len(expressions) >= 20
    as_rules = [
        {"record": f"dashboard:query_{i}:check", "expr": expression}
        for i, expression in enumerate(expressions)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": as_rules}]}))
    assert f"{len(as_rules)} rules found" in promtool_ok(promtool, "check", "rules", path)


def test_the_dashboard_asks_for_its_prometheus_and_every_query_uses_it():
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] >= 38
    assert [(i["name"], i["type"], i["pluginId"]) for i in board["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    panels = [p for p in dashboard_panels() if p["type"] != "row"]
    assert len({p["id"] for p in dashboard_panels()}) == len(dashboard_panels())
    source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in panels:
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"] == source for t in panel["targets"]), panel["title"]
    titles = " ".join(p["title"] for p in panels).lower()
    for shown in ("sales", "seats left", "held", "latency", "503", "cas retries", "batch size"):
        assert shown in titles


# --- The scrape config --------------------------------------------------------------------


def test_the_scrape_config_passes_promtool_with_the_targets_of_a_cluster(promtool, tmp_path):
    # As an operator would: the files beside the config, the cluster's haproxy.cfg read by
    # cluster-targets.sh, which writes the targets and the token.
    here = tmp_path / "prometheus"
    here.mkdir()
    for path in (SCRAPE_CONFIG, RULES, CLUSTER_TARGETS):
        shutil.copy2(path, here)
    files = tmp_path / "ticketboss-cluster"
    files.mkdir()
    hosts = [SimpleNamespace(name=f"host{i}", port=40_000 + i) for i in (1, 2, 3)]
    (files / "haproxy.cfg").write_text(haproxy_config(8080, hosts, "affinity", "gala"))
    env = {**os.environ, "METRICS_TOKEN": METRICS_TOKEN}
    subprocess.run(
        [here / "cluster-targets.sh", files], env=env, check=True, capture_output=True, timeout=30
    )
    targets = json.loads((here / "targets" / "cluster.json").read_text())
    assert targets == [
        {"targets": [f"127.0.0.1:{40_000 + i}"], "labels": {"host": f"host{i}"}} for i in (1, 2, 3)
    ]
    token = here / "metrics_token"
    assert token.read_text() == METRICS_TOKEN and token.stat().st_mode & 0o077 == 0
    assert "SUCCESS" in promtool_ok(promtool, "check", "config", here / "prometheus.yml")
    # In the tree there is no token or targets yet (.gitignore): the syntax is checked there.
    promtool_ok(promtool, "check", "config", "--syntax-only", SCRAPE_CONFIG)


# --- The metrics this monitoring added ------------------------------------------------------


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_each_request_answered_503_for_an_unreachable_database_is_counted():
    app = create_app(Settings(database_url=UNREACHABLE_URL, db_pool_size=1, db_max_overflow=0))
    try:
        before = sample("ticketboss_database_unavailable_total")
        for _ in range(3):  # one log line for the outage, but every request counted
            assert app.test_client().get("/api/ready").status_code == 503
        assert sample("ticketboss_database_unavailable_total") == before + 3
    finally:
        services_of(app).engine.dispose()


def test_each_committed_batch_observes_its_size(client):
    seed_event(services_of(client.application).engine, "tiny", "Tiny", 3, reset=True)
    count = sample("ticketboss_group_commit_batch_size_count")
    total = sample("ticketboss_group_commit_batch_size_sum")
    assert reserve(client, seats=2, event_id="tiny").status_code == 201
    # A refusal commits its batch too (it may have tidied lapsed holds).
    assert reserve(client, seats=2, event_id="tiny").status_code == 409
    assert sample("ticketboss_group_commit_batch_size_count") == count + 2
    assert sample("ticketboss_group_commit_batch_size_sum") == total + 2


# --- Against a served host ----------------------------------------------------------------


@pytest.fixture(scope="module")
def monitored_url(pg_url):
    """A database of its own: its webhook endpoint must get no other server's deliveries."""
    url = pg_url.rsplit("/", 1)[0] + f"/ticketboss_monitoring_{uuid.uuid4().hex[:10]}"
    upgrade(url)
    yield url
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        name = url.rsplit("/", 1)[1]
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def exposed(exposition: bytes) -> set[str]:
    """The names of the series in a scrape, as Prometheus stores them: a counter's with _total,
    a histogram's _bucket, _sum and _count; a family with no sample has none."""
    families = text_string_to_metric_families(exposition.decode())
    return {sample.name for family in families for sample in family.samples}


def test_every_metric_the_rules_and_the_dashboard_read_is_exposed_by_a_served_host(
    monitored_url, tmp_path_factory
):
    engine = make_engine(Settings(database_url=monitored_url))
    seed_event(engine, "onsale", "On sale", 10, reset=True)
    key = create_key(engine, "monitored", Role.PARTNER)[1]
    engine.dispose()
    wanted = {name: where for name, where in read_names().items() if ":" not in name}
    receiver = Receiver()
    settings = {
        "METRICS_CACHE_SECONDS": "0",
        "WEBHOOK_SECRET_KEYS": Fernet.generate_key().decode(),
        "WEBHOOKS_ALLOW_PRIVATE": "1",
        "WEBHOOK_POLL_SECONDS": "0.2",
    }
    try:
        with serving(monitored_url, tmp_path_factory, **settings) as served:
            port = served.port
            # Series exist once something happened: a webhook delivered, a reservation and a
            # hold (seats, batches), a 409 (refusals), a 404.
            hooks = request(port, "POST", "/api/webhooks", {"url": receiver.url}, key)
            assert hooks[0] == 201, hooks
            path = "/api/events/onsale"
            assert request(port, "POST", f"{path}/reservations", {"seats": 2}, key)[0] == 201
            assert request(port, "POST", f"{path}/holds", {"seats": 2}, key)[0] == 201
            assert request(port, "POST", f"{path}/reservations", {"seats": 10}, key)[0] == 409
            assert request(port, "GET", "/api/events/no-such-event", None, key)[0] == 404
            # Deliveries and the backlog's count come from the dispatchers, within moments.
            deadline = time.monotonic() + 15
            while True:
                status, body = request(port, "GET", "/metrics", key=METRICS_TOKEN)
                assert status == 200
                names = exposed(body)
                missing = {name: where for name, where in wanted.items() if name not in names}
                if not missing or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
    finally:
        receiver.close()
    hints = {
        name: sorted(n for n in names if n.startswith(name) or name.startswith(n))
        for name in missing
    }
    assert missing == {}, f"read but not exposed (names exposed like them: {hints})"
    # The labels the rules select on, with the values they match: every status requested,
    # and the probe's route as the rules leave it out (Host.start waited on /api/ready).
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    requests = families["ticketboss_http_requests"].samples
    assert all({"route", "method", "status"} <= set(s.labels) for s in requests)
    assert {"201", "409", "404"} <= {s.labels["status"] for s in requests}
    assert "/api/ready" in {s.labels["route"] for s in requests}


def test_docs_monitoring_describes_every_metric_and_every_alert():
    assert metrics and observability  # imported: their metrics are in this process's registry
    docs = DOCS.read_text()
    declared = {
        family.name for family in REGISTRY.collect() if family.name.startswith("ticketboss_")
    }
    assert len(declared) >= 20
    assert {name for name in declared if f"`{name}" not in docs} == set()
    assert {a["alert"] for a in alerts() if a["alert"] not in docs} == set()
    assert {name for name in recorded() if name not in docs} == set()
