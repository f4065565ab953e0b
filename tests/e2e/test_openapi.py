"""The OpenAPI document is generated from the schemas, and the live app keeps to it:
schemathesis fuzzes every operation (bounded) and checks each response against it."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from support.api import as_operator
from ticketboss import create_app, services_of
from ticketboss.cli import seed_event

# No 5xx, and every status, content type, header and body as the document says.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed_app(pg_settings):
    app = as_operator(create_app(pg_settings))
    yield app
    services_of(app).engine.dispose()


@pytest.fixture
def openapi(fuzzed_app):
    seed_event(services_of(fuzzed_app).engine, "node-meetup-2025", "Meet-up", 500, True)
    return schemathesis.openapi.from_wsgi("/api/openapi.json", fuzzed_app)


def test_every_operation_answers_as_documented_and_never_with_a_server_error(openapi):
    # schemathesis' pytest plugin does not run under pytest 9: drive its strategies directly.
    operations = [result.ok() for result in openapi.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def conforms(case):
            case.call_and_validate(checks=CHECKS)

        conforms()


# Invalid inputs generated from the schema: each is refused with a 4xx, as problem+json.
NEGATIVE_CHECKS = [
    not_a_server_error,
    negative_data_rejection,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_every_operation_refuses_what_the_document_rules_out(openapi):
    operations = [result.ok() for result in openapi.get_all_operations()]
    fuzzed = set()
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def refused(case):
            case.call_and_validate(checks=NEGATIVE_CHECKS)

        try:
            refused()
        except Unsatisfiable:
            continue  # nothing it takes can be invalid (no input, or any string goes)
        fuzzed.add(operation.label)
    # Every operation with a body, a path id or a bounded query was given invalid data.
    assert {
        "POST /api/reservations",
        "GET /api/reservations/{reservation_id}",
        "DELETE /api/reservations/{reservation_id}",
        "GET /api/events",
        "POST /api/events",
        "GET /api/events/{event_id}",
        "PATCH /api/events/{event_id}",
        "GET /api/events/{event_id}/reservations",
        "POST /api/events/{event_id}/reservations",
        "GET /api/events/{event_id}/reservations/{reservation_id}",
        "DELETE /api/events/{event_id}/reservations/{reservation_id}",
        "POST /api/events/{event_id}/holds",
        "POST /api/events/{event_id}/reservations/{reservation_id}/confirm",
        "POST /api/events/{event_id}/reservations/{reservation_id}/extend",
    } <= fuzzed, fuzzed


def test_the_document_lists_every_route_with_its_statuses_and_headers(fuzzed_app):
    document = fuzzed_app.test_client().get("/api/openapi.json").get_json()
    paths = document["paths"]
    assert {
        "/api/reservations",
        "/api/reservations/{reservation_id}",
        "/api/events",
        "/api/events/{event_id}",
        "/api/events/{event_id}/reservations",
        "/api/events/{event_id}/reservations/{reservation_id}",
        "/api/events/{event_id}/holds",
        "/api/events/{event_id}/reservations/{reservation_id}/confirm",
        "/api/events/{event_id}/reservations/{reservation_id}/extend",
        "/api/health",
    } <= set(paths)
    hold = paths["/api/events/{event_id}/holds"]["post"]
    assert {"201", "400", "404", "409", "422", "503"} <= set(hold["responses"])
    held = hold["responses"]["201"]["content"]["application/json"]["schema"]
    assert "Location" in hold["responses"]["201"]["headers"]
    assert held == {"$ref": "#/components/schemas/HoldAnswer"}
    assert "expiresAt" in document["components"]["schemas"]["HoldAnswer"]["properties"]
    assert "heldSeats" in document["components"]["schemas"]["EventSummary"]["properties"]
    assert "heldSeats" not in document["components"]["schemas"]["NodeSummary"]["properties"]
    reserve = paths["/api/events/{event_id}/reservations"]["post"]
    assert {"201", "400", "404", "409", "412", "422", "503"} <= set(reserve["responses"])
    assert "Location" in reserve["responses"]["201"]["headers"]
    assert "Retry-After" in reserve["responses"]["503"]["headers"]
    assert "application/problem+json" in reserve["responses"]["409"]["content"]
    parameters = {p["name"] for p in reserve["parameters"]}
    assert {"Idempotency-Key", "If-Match"} <= parameters
    # Keys: the scheme, every partner route's 401/429, the routes that can say 403, and
    # the public ones without a key.
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert document["security"] == [{"apiKey": []}]
    for path, methods in paths.items():
        for method, operation in methods.items():
            if method not in ("get", "post", "patch", "delete"):
                continue
            if path in ("/api/health", "/api/ready"):
                assert operation["security"] == [] and "401" not in operation["responses"]
            else:
                assert {"401", "429"} <= set(operation["responses"]), (path, method)
    assert "WWW-Authenticate" in reserve["responses"]["401"]["headers"]
    assert "Retry-After" in reserve["responses"]["429"]["headers"]
    assert "403" in reserve["responses"] and "403" in paths["/api/events"]["post"]["responses"]
    summary = paths["/api/events/{event_id}"]["get"]
    assert "304" in summary["responses"] and "ETag" in summary["responses"]["200"]["headers"]
    # Every documented response names the X-Request-ID header every response carries.
    for path in paths.values():
        methods = {"get", "post", "patch", "delete"}
        for operation in (op for method, op in path.items() if method in methods):
            for status, response in operation["responses"].items():
                if "$ref" in response:
                    name = response["$ref"].rsplit("/", 1)[1]
                    response = document["components"]["responses"][name]
                assert "X-Request-ID" in response.get("headers", {}), (status, operation)


def test_the_docs_page_works_offline(fuzzed_app):
    client = fuzzed_app.test_client()
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/api/openapi.json" in html and "//cdn" not in html and "https://" not in html
    with client.get("/api/docs/swagger-ui-bundle.js") as asset:  # served from the package
        assert asset.status_code == 200 and b"SwaggerUI" in asset.data


SAMPLES = [
    "gala-2026",
    "Gala.2026_x",
    "a" * 128,
    "a" * 129,
    "-gala",
    "gala\n",
    "gala\nx",
    "",
    " ",
    "\u200b\u200b",
    "\u00a0\t",
    "\ufeff",
    "x\u200b",
    "é",
    "abc-corp",
    "3fa85f64-5717-4562-b3fc-2c963f66afa6",
    "3FA85F64-5717-4562-B3FC-2C963F66AFA6",
    "3fa85f64-5717-4562-b3fc-2c963f66afa6\n",
    "{3fa85f64-5717-4562-b3fc-2c963f66afa6}",
    "3fa85f6457174562b3fc2c963f66afa6",
]


def patterns_of(node) -> set[str]:
    if isinstance(node, dict):
        found = {node["pattern"]} if isinstance(node.get("pattern"), str) else set()
        return found.union(*(patterns_of(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(patterns_of(v) for v in node))
    return set()


def test_every_pattern_in_the_document_means_the_same_in_javascript(fuzzed_app):
    """OpenAPI patterns are ECMA-262: each one, run by Node.js, must accept exactly what the
    service's Python accepts (JSON Schema's unanchored search)."""
    import json
    import re
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: cannot run the patterns as JavaScript")
    document = fuzzed_app.test_client().get("/api/openapi.json").get_json()
    patterns = sorted(patterns_of(document))
    assert len(patterns) >= 3  # event ids, visible text, UUIDs
    script = (
        "const [patterns, samples] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(patterns.map(p => samples.map("
        "s => [new RegExp(p).test(s), new RegExp(p, 'u').test(s)]))));"
    )
    done = subprocess.run(
        [node, "-e", script],
        input=json.dumps([patterns, SAMPLES]),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    in_javascript = json.loads(done.stdout)
    for pattern, answers in zip(patterns, in_javascript, strict=True):
        in_python = [re.search(pattern, sample) is not None for sample in SAMPLES]
        assert [plain for plain, _ in answers] == in_python, pattern
        assert [unicode for _, unicode in answers] == in_python, pattern
