"""Partner keys in the default AUTH_MODE=keys, on PostgreSQL and SQLite: 401 without a valid
key, 403 for a key without the right, another partner's reservation a 404, operators acting
for anyone (but only for partners with an account), rotation, revocation, the per-partner rate
limit, keys checked by their checksum first, and the limit on failed authentications."""

from __future__ import annotations

import secrets
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event

from support.api import assert_problem
from support.api import reserve as api_reserve
from support.database import PATIENT
from ticketboss import create_app, services_of
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services.partners import (
    KEY_PREFIX,
    KEY_SHAPE,
    FailureLimit,
    checksum_matches,
    create_key,
    hash_key,
    revoke_key,
)
from ticketboss.services.unit_of_work import transaction
from ticketboss.store import queries

EVENT = "node-meetup-2025"


def as_key(app, key: str | None) -> FlaskClient:
    """A client that sends `key` (or no Authorization at all) with every request."""
    client = FlaskClient(app, app.response_class)
    if key is not None:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client


@pytest.fixture
def new_key(app):
    """new_key(partner_id=None, role=PARTNER) -> (partner_id, key_id, key); a fresh partner
    by default, so no test sees another's reservations."""

    def make(partner_id: str | None = None, role: Role = Role.PARTNER):
        partner_id = partner_id or f"partner-{uuid.uuid4().hex[:8]}"
        info, key, _ = create_key(services_of(app).engine, partner_id, role)
        return partner_id, info.key_id, key

    return make


@pytest.fixture
def alice(app, new_key):
    partner_id, _, key = new_key()
    return partner_id, as_key(app, key)


@pytest.fixture
def bob(app, new_key):
    partner_id, _, key = new_key()
    return partner_id, as_key(app, key)


@pytest.fixture
def operator(app, new_key):
    return as_key(app, new_key("operations", Role.OPERATOR)[2])


def reserve(client, seats=2, event_id=None, **body):
    """Without a partnerId unless the body names one: a partner key's own."""
    return api_reserve(client, seats, None, event_id=event_id, **body)


def books(app):
    event = services_of(app).reservations.summary(EVENT)
    return event.available_seats, event.reservation_count


# 401 ---------------------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/api/reservations"),
    ("POST", "/api/reservations"),
    ("GET", f"/api/reservations/{uuid.uuid4()}"),
    ("DELETE", f"/api/reservations/{uuid.uuid4()}"),
    ("GET", "/api/events"),
    ("POST", "/api/events"),
    ("GET", f"/api/events/{EVENT}"),
    ("PATCH", f"/api/events/{EVENT}"),
    ("GET", f"/api/events/{EVENT}/reservations"),
    ("POST", f"/api/events/{EVENT}/reservations"),
    ("GET", f"/api/events/{EVENT}/reservations/{uuid.uuid4()}"),
    ("DELETE", f"/api/events/{EVENT}/reservations/{uuid.uuid4()}"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_partner_route_without_a_key_is_a_401_with_www_authenticate(app, method, path):
    before = books(app)
    response = as_key(app, None).open(path, method=method, json={"seats": 1})
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="ticketboss"'
    assert books(app) == before


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "bearer-ish tb_x",
        "Bearer not-a-key",
        "Bearer tb_short",
        "Bearer tb_" + "A" * 43,  # the right shape, but no such key
        "Bearer tb_" + "A" * 44,
        "Bearer tb_" + "é" * 43,
    ],
)
def test_a_malformed_or_unknown_key_is_a_401_that_never_echoes_it(app, authorization, capsys):
    capsys.readouterr()
    response = app.test_client().get("/api/reservations", headers={"Authorization": authorization})
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    token = authorization.partition(" ")[2]
    logged = capsys.readouterr()
    if len(token) > 3:
        assert token not in response.get_data(as_text=True)
        assert token not in logged.out + logged.err


def test_a_real_key_never_reaches_a_response_or_the_log(app, new_key, capsys):
    _, _, key = new_key()
    capsys.readouterr()
    client = as_key(app, key)
    for response in (
        client.get("/api/reservations"),
        reserve(client),
        client.patch(f"/api/events/{EVENT}", json={"name": "x"}),
        client.get("/nope"),
    ):
        assert key not in response.get_data(as_text=True)
        assert key[3:] not in str(response.headers)
    logged = capsys.readouterr()
    assert key[3:] not in logged.out + logged.err


def test_health_readiness_the_document_and_docs_need_no_key(app):
    client = as_key(app, None)
    for path in ("/api/health", "/api/ready", "/api/openapi.json", "/api/docs/"):
        assert client.get(path).status_code == 200, path


def test_unknown_paths_stay_404_and_cors_preflights_need_no_key(app):
    client = as_key(app, None)
    assert_problem(client.get("/api/nothing-here"), 404)
    preflight = client.options(
        "/api/reservations",
        headers={
            "Origin": "https://partner.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert preflight.status_code == 204 and "Content-Type" not in preflight.headers
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"


# What a partner key may do -----------------------------------------------------------------


def test_a_partner_key_reserves_for_its_own_partner(app, alice):
    partner_id, client = alice
    for body in ({}, {"partnerId": partner_id}):
        created = reserve(client, **body)
        assert created.status_code == 201
        detail = client.get(created.headers["Location"]).get_json()
        assert (detail["partnerId"], detail["status"]) == (partner_id, "confirmed")


@pytest.mark.parametrize("event_id", [None, EVENT])
def test_a_partner_key_naming_another_partner_is_a_403_and_books_nothing(app, alice, event_id):
    _, client = alice
    before = books(app)
    assert_problem(reserve(client, event_id=event_id, partnerId="someone-else"), 403, "forbidden")
    assert books(app) == before


def test_another_partners_reservation_is_a_404_exactly_like_one_that_does_not_exist(
    app, alice, bob
):
    _, a = alice
    _, b = bob
    theirs = reserve(b, seats=3).get_json()["reservationId"]
    before = books(app)
    for prefix in ("/api/reservations", f"/api/events/{EVENT}/reservations"):
        for method in ("GET", "DELETE"):
            nobody = str(uuid.uuid4())
            hidden = a.open(f"{prefix}/{theirs}", method=method)
            missing = a.open(f"{prefix}/{nobody}", method=method)
            assert hidden.status_code == missing.status_code == 404
            assert hidden.headers.get("Content-Type") == missing.headers.get("Content-Type")
            assert hidden.get_json() == {
                k: v.replace(nobody, theirs) if isinstance(v, str) else v
                for k, v in missing.get_json().items()
            }
    # Nothing of Bob's changed, and Bob still sees and may cancel his reservation.
    assert books(app) == before
    assert b.get(f"/api/reservations/{theirs}").get_json()["status"] == "confirmed"
    assert b.delete(f"/api/reservations/{theirs}").status_code == 204
    assert books(app) == (before[0] + 3, before[1] - 1)


def test_a_partner_lists_only_its_own_reservations(app, alice, bob, operator):
    alice_id, a = alice
    bob_id, b = bob
    mine = {reserve(a, seats=1).get_json()["reservationId"] for _ in range(3)}
    theirs = {reserve(b, seats=1).get_json()["reservationId"] for _ in range(2)}
    listed = a.get(f"/api/events/{EVENT}/reservations?limit=100").get_json()["items"]
    assert {r["reservationId"] for r in listed} == mine
    assert {r["partnerId"] for r in listed} == {alice_id}
    own = a.get(f"/api/events/{EVENT}/reservations?partnerId={alice_id}").get_json()["items"]
    assert {r["reservationId"] for r in own} == mine
    assert_problem(a.get(f"/api/events/{EVENT}/reservations?partnerId={bob_id}"), 403, "forbidden")
    everyone = operator.get(f"/api/events/{EVENT}/reservations?limit=100").get_json()["items"]
    assert mine | theirs <= {r["reservationId"] for r in everyone}
    only_bob = operator.get(f"/api/events/{EVENT}/reservations?partnerId={bob_id}").get_json()
    assert {r["reservationId"] for r in only_bob["items"]} == theirs


def test_summaries_and_event_reads_are_open_to_every_valid_key(alice):
    _, client = alice
    assert client.get("/api/reservations").status_code == 200
    assert client.get(f"/api/events/{EVENT}").status_code == 200
    assert client.get("/api/events").status_code == 200


def test_only_operators_create_and_change_events(app, alice, operator):
    _, partner = alice
    event_id = f"ev-{uuid.uuid4().hex[:8]}"
    body = {"eventId": event_id, "name": "Gala", "totalSeats": 10}
    assert_problem(partner.post("/api/events", json=body), 403, "forbidden")
    assert operator.post("/api/events", json=body).status_code == 201
    assert_problem(
        partner.patch(f"/api/events/{event_id}", json={"totalSeats": 20}), 403, "forbidden"
    )
    assert services_of(app).reservations.summary(event_id).total_seats == 10
    resized = operator.patch(f"/api/events/{event_id}", json={"totalSeats": 20})
    assert resized.status_code == 200 and resized.get_json()["totalSeats"] == 20


def test_an_operator_acts_for_any_partner(app, alice, operator):
    alice_id, a = alice
    made = reserve(operator, seats=4, partnerId=alice_id)
    assert made.status_code == 201
    reservation = made.headers["Location"]
    # Alice's own key sees it; the operator reads and cancels it.
    assert a.get(reservation).get_json()["partnerId"] == alice_id
    assert operator.get(reservation).get_json()["partnerId"] == alice_id
    assert operator.delete(reservation).status_code == 204
    assert a.get(reservation).get_json()["status"] == "cancelled"


def test_idempotency_keys_belong_to_the_authenticated_partner(app, alice, bob):
    _, a = alice
    _, b = bob
    headers = {"Idempotency-Key": "order-1"}
    first_a = a.post("/api/reservations", json={"seats": 1}, headers=headers)
    first_b = b.post("/api/reservations", json={"seats": 1}, headers=headers)
    assert first_a.status_code == first_b.status_code == 201
    assert first_a.get_json()["reservationId"] != first_b.get_json()["reservationId"]
    again_a = a.post("/api/reservations", json={"seats": 1}, headers=headers)
    assert again_a.headers["Idempotent-Replayed"] == "true"
    assert again_a.get_json() == first_a.get_json()


# Rotation and revocation -------------------------------------------------------------------


@pytest.fixture
def quick_app(database_url):
    """A worker that trusts a looked-up key for only 0.2 s."""
    app = create_app(Settings(database_url=database_url, auth_cache_seconds=0.2, **PATIENT))
    yield app
    services_of(app).engine.dispose()


def test_a_rotated_key_works_beside_the_old_one_and_a_revoked_key_is_401_soon(quick_app):
    engine = services_of(quick_app).engine
    partner_id = f"rotating-{uuid.uuid4().hex[:8]}"
    old_info, old, _ = create_key(engine, partner_id, Role.PARTNER)
    _, new, created = create_key(engine, partner_id, Role.PARTNER)
    assert not created  # the second key joins the same partner
    old_client, new_client = as_key(quick_app, old), as_key(quick_app, new)
    made = reserve(old_client).get_json()["reservationId"]
    assert new_client.get(f"/api/reservations/{made}").status_code == 200

    assert revoke_key(engine, old_info.key_id)
    assert not revoke_key(engine, old_info.key_id)  # already revoked
    deadline = time.monotonic() + 5
    while old_client.get("/api/reservations").status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.05)
    response = old_client.get("/api/reservations")
    assert_problem(response, 401, "unauthenticated")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert new_client.get(f"/api/reservations/{made}").status_code == 200


def test_a_key_records_when_it_was_last_used(app, new_key):
    from ticketboss.services.partners import list_keys

    partner_id, key_id, key = new_key()
    engine = services_of(app).engine
    [(_, info)] = [(p, i) for p, i in list_keys(engine) if i and i.key_id == key_id]
    assert info.last_used_at is None
    assert as_key(app, key).get("/api/reservations").status_code == 200
    [(_, info)] = [(p, i) for p, i in list_keys(engine) if i and i.key_id == key_id]
    assert info.last_used_at is not None and info.partner_id == partner_id


# Rate limit --------------------------------------------------------------------------------


@pytest.fixture
def limited_app(database_url):
    app = create_app(
        Settings(database_url=database_url, partner_rate_limit=2, partner_rate_burst=4, **PATIENT)
    )
    yield app
    services_of(app).engine.dispose()


def test_a_partner_over_its_rate_gets_429_with_retry_after_and_others_are_served(limited_app):
    engine = services_of(limited_app).engine
    greedy = as_key(limited_app, create_key(engine, f"g-{uuid.uuid4().hex[:6]}", Role.PARTNER)[1])
    modest = as_key(limited_app, create_key(engine, f"m-{uuid.uuid4().hex[:6]}", Role.PARTNER)[1])
    answers = [greedy.get("/api/reservations") for _ in range(4)]
    assert [r.status_code for r in answers] == [200] * 4
    assert answers[0].headers["RateLimit-Policy"] == '"partner";q=4;w=2'
    assert answers[-1].headers["RateLimit"].startswith('"partner";r=0;t=')

    refused = reserve(greedy)
    body = assert_problem(refused, 429, "rate-limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 3  # the window, rounded up
    assert "4 per 2 second" in body["detail"]
    assert refused.headers["RateLimit"].startswith('"partner";r=0;')
    # Nothing was booked, the other partner is served, public routes are never limited.
    assert modest.get("/api/reservations").status_code == 200
    assert as_key(limited_app, None).get("/api/health").status_code == 200


# Partner ids that look alike ---------------------------------------------------------------


@contextmanager
def statements(app):
    """The SQL statements the app's engine sends inside the block."""
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    engine = services_of(app).engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize("partner_id", ["nobody-here", "ABC-corp", "\u0430bc-corp", "p" * 128])
def test_an_operator_reserving_or_holding_for_a_partner_without_an_account_is_a_422(
    app, operator, partner_id
):
    # abc-corp is a partner of the test database; its look-alikes (case, Cyrillic a) are not.
    before = books(app)
    body = assert_problem(reserve(operator, partnerId=partner_id), 422, "unknown-partner")
    assert partner_id in body["detail"]
    held = operator.post(f"/api/events/{EVENT}/holds", json={"seats": 1, "partnerId": partner_id})
    assert_problem(held, 422, "unknown-partner")
    assert books(app) == before
    listed = operator.get(
        f"/api/events/{EVENT}/reservations", query_string={"partnerId": partner_id}
    )
    assert listed.status_code == 200 and listed.get_json()["items"] == []


def test_a_partner_created_after_a_refusal_has_no_reservations_and_counts_at_once(app, operator):
    partner_id = f"later-{uuid.uuid4().hex[:8]}"
    assert_problem(reserve(operator, partnerId=partner_id), 422, "unknown-partner")
    partner = as_key(app, create_key(services_of(app).engine, partner_id, Role.PARTNER)[1])
    mine = f"/api/events/{EVENT}/reservations"
    assert partner.get(mine).get_json()["items"] == []
    made = reserve(operator, partnerId=partner_id)  # an unknown id was not remembered
    assert made.status_code == 201
    listed = partner.get(mine).get_json()["items"]
    assert [r["reservationId"] for r in listed] == [made.get_json()["reservationId"]]


def test_a_partner_key_reserving_for_itself_pays_no_partner_lookup_and_an_operator_one(
    app, alice, operator
):
    alice_id, a = alice
    with statements(app) as seen:
        assert reserve(a).status_code == 201
        assert reserve(a, partnerId=alice_id).status_code == 201
    assert not [s for s in seen if "FROM partners" in s]
    with statements(app) as seen:
        for _ in range(3):
            assert reserve(operator, partnerId=alice_id).status_code == 201
    assert len([s for s in seen if "FROM partners" in s]) == 1  # then this worker knows


def test_in_open_mode_any_partner_id_the_schema_takes_still_reserves(database_url):
    app = create_app(Settings(database_url=database_url, auth_mode="open", **PATIENT))
    try:
        client = app.test_client()
        for partner_id in ("Nobody Registered", "\u0430bc-corp", "ABC-corp", "p" * 128):
            made = api_reserve(client, 1, partner_id)
            assert made.status_code == 201
            assert client.get(made.headers["Location"]).get_json()["partnerId"] == partner_id
    finally:
        services_of(app).engine.dispose()


# Forged keys and failed authentications ----------------------------------------------------


def test_a_key_ends_with_its_checksum_and_a_wrong_one_is_refused_without_the_database(app, new_key):
    _, _, key = new_key()
    assert KEY_SHAPE.fullmatch(key) and checksum_matches(key)
    assert as_key(app, key).get("/api/reservations").status_code == 200
    flip = {"A": "B"}
    forged = [
        key[:-1] + flip.get(key[-1], "A"),  # the checksum changed
        key[:10] + flip.get(key[10], "A") + key[11:],  # the random part changed
        KEY_PREFIX + "x" * 49,
    ]
    assert not any(checksum_matches(bad) for bad in forged)
    with statements(app) as seen:
        for bad in forged:
            assert_problem(as_key(app, bad).get("/api/reservations"), 401, "unauthenticated")
    assert seen == []


def _old_format_key(engine, partner_id: str) -> tuple[str, str]:
    """(key id, key) of a key as they were made before the checksum: tb_ + 43 characters."""
    key, key_id = "tb_" + secrets.token_urlsafe(32), "key_" + secrets.token_hex(8)
    with transaction(engine, "an old key") as conn:
        queries.insert_key(
            conn, key_id, partner_id, "partner", key[:11], hash_key(key), datetime.now(UTC)
        )
    return key_id, key


def test_old_format_keys_keep_working_and_cost_no_lookup_once_none_is_active(database_url):
    """Each phase on a new app: a worker asks whether an old-format key is active once per
    AUTH_CACHE_SECONDS (here long enough for the phase)."""

    def worker():
        return create_app(Settings(database_url=database_url, auth_cache_seconds=60, **PATIENT))

    def guesses(app) -> list[str]:
        """What three made-up old-format keys send to the database."""
        with statements(app) as seen:
            for _ in range(3):
                guess = as_key(app, "tb_" + secrets.token_urlsafe(32)).get("/api/reservations")
                assert_problem(guess, 401, "unauthenticated")
        return seen

    apps = [worker() for _ in range(3)]
    engine = services_of(apps[0]).engine
    partner_id = f"old-{uuid.uuid4().hex[:8]}"
    create_key(engine, partner_id, Role.PARTNER)
    with engine.connect() as conn:
        assert not queries.active_key_with_prefix_exists(conn, "tb_"), "a test left an old key"
    old_id = None
    try:
        asked = guesses(apps[0])
        assert sum("api_keys" in s for s in asked) == 1  # the one question, then no lookup
        old_id, old = _old_format_key(engine, partner_id)
        assert as_key(apps[1], old).get("/api/reservations").status_code == 200
        looked_up = guesses(apps[1])
        assert sum("api_keys" in s for s in looked_up) == 3  # while one is active, each is
        revoke_key(engine, old_id)
        assert_problem(as_key(apps[2], old).get("/api/reservations"), 401, "unauthenticated")
        assert guesses(apps[2]) == []
    finally:
        if old_id is not None:
            revoke_key(engine, old_id)
        for app in apps:
            services_of(app).engine.dispose()


@pytest.fixture
def wary_app(database_url):
    """A worker that allows an address 3 failed authentications a minute."""
    app = create_app(Settings(database_url=database_url, auth_failures_per_minute=3, **PATIENT))
    yield app
    services_of(app).engine.dispose()


def test_an_address_that_sent_too_many_bad_keys_gets_429_without_the_database(wary_app):
    _, key, _ = create_key(
        services_of(wary_app).engine, f"wary-{uuid.uuid4().hex[:8]}", Role.PARTNER
    )
    attacker, neighbour = "203.0.113.7", "198.51.100.2"

    def get(address: str, key: str | None):
        return as_key(wary_app, key).get("/api/reservations", environ_base={"REMOTE_ADDR": address})

    for bad in ("tb_" + secrets.token_urlsafe(32), KEY_PREFIX + "x" * 49, "not-a-key"):
        assert_problem(get(attacker, bad), 401, "unauthenticated")
    with statements(wary_app) as seen:
        for any_key in ("not-a-key", key):  # even a good key, until the window passes
            refused = get(attacker, any_key)
            body = assert_problem(refused, 429, "too-many-auth-failures")
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
            assert "failed authentications" in body["detail"]
    assert seen == []
    assert_problem(get(attacker, None), 401, "unauthenticated")  # no key: the usual answer
    assert get(neighbour, key).status_code == 200  # other addresses count alone


def test_failed_authentications_are_forgotten_when_their_window_passes():
    limit = FailureLimit(2, seconds=1)
    assert limit.retry_after("a") is None
    limit.failed("a")
    limit.failed("a")
    assert limit.retry_after("a") == 1 and limit.retry_after("b") is None
    deadline = time.monotonic() + 3
    while limit.retry_after("a") is not None:
        assert time.monotonic() < deadline, "the failures were never forgotten"
        time.sleep(0.05)
    assert FailureLimit(0).retry_after("a") is None  # 0: no limit
