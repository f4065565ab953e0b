"""The OpenAPI document is taken as it is by linters and client generators: Redocly's CLI
(pinned in scripts/openapi) finds no error and no warning under its `recommended` rules, and
every operation has a unique operationId, the method name of generated clients, which stays
what partners' code calls."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ticketboss import create_app, services_of

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "scripts" / "openapi"
REDOCLY = TOOLS / "node_modules" / ".bin" / "redocly"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

# The SDK method names: renaming one breaks every client generated from the document.
OPERATION_IDS = {
    # The Node.js service's routes, on the default event.
    ("get", "/api/reservations"): "getDefaultEvent",
    ("post", "/api/reservations"): "reserveOnDefaultEvent",
    ("get", "/api/reservations/{reservation_id}"): "getDefaultEventReservation",
    ("delete", "/api/reservations/{reservation_id}"): "cancelDefaultEventReservation",
    # Events, their reservations and holds.
    ("get", "/api/events"): "listEvents",
    ("post", "/api/events"): "createEvent",
    ("get", "/api/events/{event_id}"): "getEvent",
    ("patch", "/api/events/{event_id}"): "updateEvent",
    ("get", "/api/events/{event_id}/reservations"): "listReservations",
    ("post", "/api/events/{event_id}/reservations"): "reserve",
    ("post", "/api/events/{event_id}/holds"): "createHold",
    ("get", "/api/events/{event_id}/reservations/{reservation_id}"): "getReservation",
    ("delete", "/api/events/{event_id}/reservations/{reservation_id}"): "cancelReservation",
    ("post", "/api/events/{event_id}/reservations/{reservation_id}/confirm"): "confirmHold",
    ("post", "/api/events/{event_id}/reservations/{reservation_id}/extend"): "extendHold",
    # Allocations.
    ("get", "/api/events/{event_id}/allocations"): "listAllocations",
    ("get", "/api/events/{event_id}/allocations/{partner_id}"): "getAllocation",
    ("put", "/api/events/{event_id}/allocations/{partner_id}"): "setAllocation",
    ("delete", "/api/events/{event_id}/allocations/{partner_id}"): "deleteAllocation",
    # Webhooks and the changes feed.
    ("get", "/api/webhooks"): "listWebhookEndpoints",
    ("post", "/api/webhooks"): "createWebhookEndpoint",
    ("get", "/api/webhooks/{endpoint_id}"): "getWebhookEndpoint",
    ("delete", "/api/webhooks/{endpoint_id}"): "deleteWebhookEndpoint",
    ("post", "/api/webhooks/{endpoint_id}/rotate-secret"): "rotateWebhookSecret",
    ("get", "/api/webhooks/{endpoint_id}/deliveries"): "listWebhookDeliveries",
    (
        "post",
        "/api/webhooks/{endpoint_id}/deliveries/{delivery_id}/retry",
    ): "retryWebhookDelivery",
    ("get", "/api/changes"): "listChanges",
    # The probes.
    ("get", "/api/health"): "getHealth",
    ("get", "/api/ready"): "getReadiness",
}


@pytest.fixture(scope="module")
def served(pg_settings) -> str:
    """/api/openapi.json as the app serves it."""
    app = create_app(pg_settings)
    try:
        answer = app.test_client().get("/api/openapi.json")
        assert answer.status_code == 200
        return answer.get_data(as_text=True)
    finally:
        services_of(app).engine.dispose()


def operations(document: dict) -> dict[tuple[str, str], dict]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def test_redocly_finds_no_error_and_no_warning_in_the_document(served, tmp_path):
    if not REDOCLY.exists():
        pytest.fail(
            f"Redocly CLI is not installed in {TOOLS.relative_to(ROOT)}: run "
            "`npm ci --prefix scripts/openapi` (make install does)"
        )
    if shutil.which("node") is None:
        pytest.fail("Node.js is not installed: Redocly CLI needs Node.js 20.19+ or 22.12+")
    document = tmp_path / "openapi.json"
    document.write_text(served)
    command = [str(REDOCLY), "lint", "--config", str(TOOLS / "redocly.yaml"), str(document)]
    done = subprocess.run(
        [*command, "--format=json"], capture_output=True, text=True, timeout=120, check=False
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"redocly lint gave no report (exit {done.returncode}):\n{done.stderr}")
    problems = [
        f"{p['severity']} {p['ruleId']} at {p['location'][0].get('pointer')}: {p['message']}"
        for p in report["problems"]
    ]
    assert report["totals"] == {"errors": 0, "warnings": 0, "ignored": 0}, "\n".join(problems)
    assert done.returncode == 0, done.stderr


def test_every_operation_has_an_operation_id_of_its_own(served):
    found = operations(json.loads(served))
    ids = [operation.get("operationId") for operation in found.values()]
    assert not [key for key, op in found.items() if "operationId" not in op], "without an id"
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert not [i for i in ids if not re.fullmatch(r"[a-z][a-zA-Z0-9]*", i)], "not camelCase"


def test_the_operations_keep_the_ids_that_clients_call(served):
    document = json.loads(served)
    ids = {key: operation.get("operationId") for key, operation in operations(document).items()}
    renamed = {
        key: f"{ids.get(key)}, not {wanted}"
        for key, wanted in OPERATION_IDS.items()
        if ids.get(key) != wanted
    }
    assert not renamed


def test_the_document_names_its_server_and_license(served):
    document = json.loads(served)
    assert [server["url"] for server in document["servers"]] == ["/"]
    assert document["info"]["license"]["name"]
