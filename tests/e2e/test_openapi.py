"""The OpenAPI document is generated from the schemas, and the live app keeps to it:
schemathesis fuzzes every operation (bounded) with an operator's key and checks each response
against it; the allocation routes and the holds and reservations they change are fuzzed
again aimed at a real event and real partners, so that the planner answers."""

from collections import Counter

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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

ALLOCATIONS = "/api/events/{event_id}/allocations"
ALLOCATION = "/api/events/{event_id}/allocations/{partner_id}"
# What the fuzzing may not stop at: it must reach the route behind the key.
AT_THE_DOOR = {401, 429}

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
def operator_key(fuzzed_app):
    """The headers of every fuzzed request: an operator may call every operation, so the
    fuzzing reaches each route's own rules rather than stopping at a 401."""
    return {"Authorization": f"Bearer {fuzzed_app.config['TEST_OPERATOR_KEY']}"}


@pytest.fixture
def openapi(fuzzed_app):
    seed_event(services_of(fuzzed_app).engine, "node-meetup-2025", "Meet-up", 500, True)
    return loaded(fuzzed_app)


def loaded(app):
    """The document, fuzzed as the service means it: no Authorization is generated (each
    call sends an operator's key: tests/e2e/test_auth.py checks the keys themselves), and
    no unknown query parameter counts as invalid (unknown fields are ignored, as the
    Node.js API did)."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    schema.config.generation.with_security_parameters = False
    schema.config.generation.allow_extra_parameters = False
    return schema


def test_every_operation_answers_as_documented_and_never_with_a_server_error(openapi, operator_key):
    # schemathesis' pytest plugin does not run under pytest 9: drive its strategies directly.
    operations = [result.ok() for result in openapi.get_all_operations()]
    assert len(operations) >= 10
    statuses: dict[str, Counter] = {o.label: Counter() for o in operations}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def conforms(case):
            answer = case.call_and_validate(checks=CHECKS, headers=operator_key)
            statuses[case.operation.label][answer.status_code] += 1

        conforms()
    stopped = {label for label, seen in statuses.items() if set(seen) <= AT_THE_DOOR}
    assert not stopped, {label: statuses[label] for label in stopped}


# Invalid inputs generated from the schema: each is refused with a 4xx, as problem+json.
NEGATIVE_CHECKS = [
    not_a_server_error,
    negative_data_rejection,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_every_operation_refuses_what_the_document_rules_out(openapi, operator_key):
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
            case.call_and_validate(checks=NEGATIVE_CHECKS, headers=operator_key)

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
        f"GET {ALLOCATIONS}",
        f"GET {ALLOCATION}",
        f"PUT {ALLOCATION}",
        f"DELETE {ALLOCATION}",
    } <= fuzzed, fuzzed


# The allocation routes and the buckets, fuzzed at a real event with allocations -------------

AIMED_EVENT = "fuzzed-allocations"
# Partners every test database has an account for (tests/support/database.py).
AIMED_PARTNERS = ("alpha", "beta", "p1")
AIMED = [
    f"PUT {ALLOCATION}",
    f"GET {ALLOCATION}",
    f"DELETE {ALLOCATION}",
    f"GET {ALLOCATIONS}",
    "GET /api/events/{event_id}",
    "POST /api/events/{event_id}/reservations",
    "POST /api/events/{event_id}/holds",
]


def with_allocations(app) -> None:
    """The aimed event afresh: 12 seats, 6 of them alpha's, 3 beta's (with overflow), 3 in
    the open pool; any request of 1 to 10 seats may find its bucket short."""
    seed_event(services_of(app).engine, AIMED_EVENT, "Fuzzed", 12, True)
    client = app.test_client()
    path = f"/api/events/{AIMED_EVENT}/allocations"
    assert client.put(f"{path}/alpha", json={"seats": 6}).status_code == 201
    assert client.put(f"{path}/beta", json={"seats": 3, "overflow": True}).status_code == 201


def aimed(operation, generation_mode):
    """The operation's cases at the aimed event, for one of the partners with an account."""

    def aim(drawn):
        case, partner_id = drawn
        case.path_parameters = {
            **case.path_parameters,
            "event_id": AIMED_EVENT,
            **({"partner_id": partner_id} if "partner_id" in case.path_parameters else {}),
        }
        if isinstance(case.body, dict) and operation.method.upper() == "POST":
            case.body = {**case.body, "partnerId": partner_id}
        return case

    strategy = operation.as_strategy(generation_mode=generation_mode)
    return st.tuples(strategy, st.sampled_from(AIMED_PARTNERS)).map(aim)


def aimed_operations(app):
    operations = {o.label: o for o in (r.ok() for r in loaded(app).get_all_operations())}
    return [operations[label] for label in AIMED]


def test_the_allocation_routes_and_the_buckets_answer_as_documented(fuzzed_app, operator_key):
    statuses: Counter = Counter()
    for operation in aimed_operations(fuzzed_app):

        @given(case=aimed(operation, GenerationMode.POSITIVE))
        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def conforms(case):
            with_allocations(fuzzed_app)
            answer = case.call_and_validate(checks=CHECKS, headers=operator_key)
            statuses[case.operation.label, answer.status_code] += 1

        conforms()

    # The planner answered: allocations refused, read and deleted, seats granted and refused.
    def reached(label: str, *codes: int) -> bool:
        return any(statuses[label, code] for code in codes)

    assert reached(f"PUT {ALLOCATION}", 409), dict(statuses)
    assert reached(f"GET {ALLOCATION}", 200), dict(statuses)
    assert reached(f"DELETE {ALLOCATION}", 204), dict(statuses)
    for label in ("POST /api/events/{event_id}/reservations", "POST /api/events/{event_id}/holds"):
        assert reached(label, 201), dict(statuses)
    refused = [f"POST /api/events/{{event_id}}/{route}" for route in ("reservations", "holds")]
    assert any(reached(label, 409) for label in refused), dict(statuses)


def test_the_allocation_routes_refuse_what_the_document_rules_out(fuzzed_app, operator_key):
    for operation in aimed_operations(fuzzed_app):

        @given(case=aimed(operation, GenerationMode.NEGATIVE))
        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def refused(case):
            with_allocations(fuzzed_app)
            case.call_and_validate(checks=NEGATIVE_CHECKS, headers=operator_key)

        try:
            refused()
        except Unsatisfiable:
            continue


def test_every_refusal_of_the_allocation_rules_is_a_documented_problem(fuzzed_app):
    """Each new refusal, as sent, against the document: its status is documented on its
    route as a problem+json Problem, and its body validates against that schema."""
    client = fuzzed_app.test_client()
    document = client.get("/api/openapi.json").get_json()
    problem = jsonschema_rs.Draft202012Validator(document["components"]["schemas"]["Problem"])
    with_allocations(fuzzed_app)
    events = f"/api/events/{AIMED_EVENT}"
    path = f"{events}/allocations"
    limited = client.put(f"{path}/p1", json={"seats": 2, "maxHeldSeats": 1})
    assert limited.status_code == 201  # the pool keeps 1
    refusals = [
        (ALLOCATION, "put", client.put(f"{path}/p2", json={"seats": 2}), "allocation-too-large"),
        (
            ALLOCATION,
            "put",
            client.put(f"{path}/nobody-here", json={"seats": 1}),
            "unknown-partner",
        ),
        (ALLOCATION, "get", client.get(f"{path}/p2"), "allocation-not-found"),
        (ALLOCATION, "delete", client.delete(f"{path}/p2"), "allocation-not-found"),
        (
            "/api/events/{event_id}/reservations",
            "post",
            client.post(f"{events}/reservations", json={"partnerId": "alpha", "seats": 7}),
            "not-enough-seats",  # bucket: allocation
        ),
        (
            "/api/events/{event_id}/reservations",
            "post",
            client.post(f"{events}/reservations", json={"partnerId": "p2", "seats": 2}),
            "not-enough-seats",  # bucket: pool
        ),
        (
            "/api/events/{event_id}/holds",
            "post",
            client.post(f"{events}/holds", json={"partnerId": "beta", "seats": 5}),
            "not-enough-seats",  # bucket: allocation+pool
        ),
        (
            "/api/events/{event_id}/holds",
            "post",
            client.post(f"{events}/holds", json={"partnerId": "p1", "seats": 2}),
            "hold-limit-reached",
        ),
    ]
    taken = client.post(f"{events}/reservations", json={"partnerId": "alpha", "seats": 6})
    assert taken.status_code == 201
    refusals.append(
        (ALLOCATION, "put", client.put(f"{path}/alpha", json={"seats": 5}), "allocation-in-use")
    )
    for route, method, answer, slug in refusals:
        body = answer.get_json()
        assert body["type"] == f"/problems/{slug}", body
        documented = document["paths"][route][method]["responses"][str(answer.status_code)]
        schema = documented["content"]["application/problem+json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Problem"}, (route, method)
        errors = [e.message for e in problem.iter_errors(body)]
        assert not errors, (slug, body, errors)


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
    # Allocations: operators set and delete them (If-Match on the event's version), any key
    # reads them; every figure of a bucket is in the schemas, and the Node.js summary keeps
    # exactly its fields.
    assert {ALLOCATIONS, ALLOCATION} <= set(paths)
    assert {"get"} <= set(paths[ALLOCATIONS]) and {"get", "put", "delete"} <= set(paths[ALLOCATION])
    put, delete = paths[ALLOCATION]["put"], paths[ALLOCATION]["delete"]
    assert {"200", "201", "400", "403", "404", "409", "412", "422", "503"} <= set(put["responses"])
    assert {"204", "400", "403", "404", "412", "503"} <= set(delete["responses"])
    for operation in (put, delete):
        assert "If-Match" in {p["name"] for p in operation["parameters"]}
    assert {"ETag", "Location"} <= set(put["responses"]["201"]["headers"])
    assert "ETag" in put["responses"]["200"]["headers"]
    listed = paths[ALLOCATIONS]["get"]["responses"]["200"]
    assert listed["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AllocationPage"
    }
    assert "ETag" in listed["headers"]
    schemas = document["components"]["schemas"]
    assert set(schemas["Allocation"]["properties"]) == {
        "partnerId",
        "seats",
        "taken",
        "held",
        "available",
        "overflow",
        "maxHeldSeats",
        "closed",
    }
    assert set(schemas["PoolFigures"]["properties"]) == {"seats", "taken", "held", "available"}
    assert set(schemas["AllocationPage"]["properties"]) == {"items", "pool"}
    assert {"pool", "allocations"} <= set(schemas["EventSummary"]["properties"])
    assert set(schemas["NodeSummary"]["properties"]) == {
        "eventId",
        "name",
        "totalSeats",
        "availableSeats",
        "reservationCount",
        "version",
    }
    assert "allocatedSeats" in schemas["ReservationDetail"]["properties"]
    assert set(schemas["AllocationPut"]["required"]) == {"seats"}
    # Their problems are named where a client reads them: the 404s and the 409s.
    not_found = paths[ALLOCATION]["get"]["responses"]["404"]["description"]
    assert "allocation" in not_found
    conflicts = [put["responses"]["409"]["description"], hold["responses"]["409"]["description"]]
    for slug in (
        "hold-limit-reached",
        "pool-limit-reached",
        "allocation-too-large",
        "allocation-in-use",
        "too-many-allocations",
    ):
        assert all(slug in description for description in conflicts), slug
    assert all("bucket" in description for description in conflicts)
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
