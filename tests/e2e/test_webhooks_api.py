"""The webhook endpoints API over Flask's test client, on PostgreSQL and SQLite, in
AUTH_MODE=keys: registration shows the secret once and stores it only encrypted, another
partner's endpoint is a 404 for every route, an operator sees them all, URLs into our own
network are refused, the limit per partner, rotation with an overlap, no secret keys is a
503, and a failed delivery retried (no dispatcher runs: WEBHOOK_DISPATCH=0)."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from flask.testing import FlaskClient
from sqlalchemy import insert, select, update

from support.api import assert_problem
from support.database import PATIENT
from ticketboss import create_app, services_of
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services.partners import create_key
from ticketboss.services.secrets import SecretBox
from ticketboss.services.webhooks import reencrypt
from ticketboss.store.migrate import upgrade
from ticketboss.store.tables import (
    notifications,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
)

WEBHOOKS = "/api/webhooks"
HOOK = "http://127.0.0.1:9/hook"  # registered, never called (no dispatcher runs)
LIMIT = 3
OVERLAP_SECONDS = 3600
SECRET_KEY = Fernet.generate_key().decode()


def settings(database_url: str, **overrides) -> Settings:
    values = {
        "webhook_secret_keys": SECRET_KEY,
        "webhooks_allow_private": True,
        "webhook_dispatch": False,
        "webhook_endpoints_per_partner": LIMIT,
        "webhook_secret_overlap_seconds": OVERLAP_SECONDS,
        **overrides,
    }
    return Settings(database_url=database_url, **PATIENT, **values)


@pytest.fixture(scope="module")
def make_app(database_url):
    """make_app(**settings) -> an app on this engine (disposed after the module)."""
    apps = []

    def make(**overrides):
        app = create_app(settings(database_url, **overrides))
        apps.append(app)
        return app

    yield make
    for app in apps:
        services_of(app).engine.dispose()


@pytest.fixture(scope="module")
def app(make_app):
    """Secrets configured, loopback URLs allowed (the tests register them)."""
    return make_app()


@pytest.fixture(scope="module")
def engine(app):
    return services_of(app).engine


def as_key(app, key: str) -> FlaskClient:
    client = FlaskClient(app, app.response_class)
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client


def new_client_on(app, role: Role = Role.PARTNER, partner_id: str | None = None):
    """(partner_id, a client of `app` with a new key of its own)."""
    partner_id = partner_id or f"wh-{uuid.uuid4().hex[:10]}"
    _, key, _ = create_key(services_of(app).engine, partner_id, role)
    return partner_id, as_key(app, key)


@pytest.fixture
def new_client(app):
    """new_client(role, partner_id=None, on=app) -> new_client_on(on, role, partner_id)."""

    def make(role: Role = Role.PARTNER, partner_id: str | None = None, on=None):
        return new_client_on(on or app, role, partner_id)

    return make


@pytest.fixture
def alice(new_client):
    return new_client()


@pytest.fixture
def bob(new_client):
    return new_client()


@pytest.fixture
def operator(new_client):
    return new_client(Role.OPERATOR)[1]


def register(client, url: str = HOOK, **body):
    return client.post(WEBHOOKS, json={"url": url, **body})


def registered(client, **body) -> dict:
    response = register(client, **body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def stored(engine, endpoint_id: str):
    with engine.connect() as conn:
        return conn.execute(
            select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
        ).one()


def box() -> SecretBox:
    made = SecretBox.from_settings(Settings(webhook_secret_keys=SECRET_KEY))
    assert made is not None
    return made


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


# Registration and its secret -------------------------------------------------------------


def test_registering_answers_201_with_the_endpoint_its_location_and_its_secret_once(alice, engine):
    partner_id, client = alice
    response = register(client, types=["hold.created", "reservation.confirmed"])
    assert response.status_code == 201
    body = response.get_json()
    assert body["id"].startswith("we_") and len(body["id"]) == 27
    assert response.headers["Location"] == f"{WEBHOOKS}/{body['id']}"
    assert body["secret"].startswith("whsec_")
    assert body["url"] == HOOK
    assert body["types"] == ["hold.created", "reservation.confirmed"]
    assert body["partnerId"] == partner_id and body["everyPartner"] is False
    assert body["enabled"] is True and body["disabledReason"] is None
    assert body["secretRotatedUntil"] is None
    assert parse(body["createdAt"]).tzinfo is not None

    # Read back, alone and in the list: the same endpoint, never its secret.
    read = client.get(response.headers["Location"])
    listed = client.get(WEBHOOKS)
    assert read.status_code == 200 and listed.status_code == 200
    shown = {k: v for k, v in body.items() if k != "secret"}
    assert read.get_json() == shown
    assert listed.get_json() == {"items": [shown]}
    for answer in (read, listed):
        assert body["secret"] not in answer.get_data(as_text=True)
        assert "secret" not in json.dumps(answer.get_json()).replace("secretRotatedUntil", "")


def test_the_secret_is_stored_only_encrypted(alice, engine):
    body = registered(alice[1])
    row = stored(engine, body["id"])
    assert row.secret != body["secret"] and body["secret"] not in row.secret
    assert body["secret"].removeprefix("whsec_") not in row.secret
    assert box().decrypt(row.secret) == body["secret"]  # under WEBHOOK_SECRET_KEYS


def test_without_types_an_endpoint_receives_every_type(alice):
    assert registered(alice[1])["types"] is None
    assert registered(alice[1], types=None)["types"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"url": HOOK, "types": ["hold.created", "no.such-type"]},
        {"url": HOOK, "types": ["hold.created", "hold.created"]},
        {"url": HOOK, "types": []},
        {"url": HOOK, "types": "hold.created"},
        {"url": ""},
        {"url": "https://example.com/" + "a" * 2000},
        {"types": ["hold.created"]},
    ],
    ids=["unknown-type", "twice", "no-type", "not-a-list", "empty-url", "long-url", "no-url"],
)
def test_a_body_outside_the_schema_is_an_invalid_request(alice, body):
    # The API's every validation error is a 400 invalid-request (body.JsonParser).
    answer = assert_problem(alice[1].post(WEBHOOKS, json=body), 400, "invalid-request")
    assert answer["errors"]


def test_an_unknown_type_is_named_in_the_refusal(alice):
    body = {"url": HOOK, "types": ["hold.created", "no.such-type"]}
    answer = assert_problem(alice[1].post(WEBHOOKS, json=body), 400, "invalid-request")
    assert "types" in answer["errors"] and "hold.expired" in answer["detail"]


def test_unknown_fields_are_ignored(alice):
    assert registered(alice[1], secret="whsec_mine", partnerId="someone-else")["secret"] != (
        "whsec_mine"
    )


# Another partner's endpoint is a 404, whatever the route ------------------------------------


def test_a_partner_never_lists_reads_deletes_rotates_or_retries_another_partners_endpoint(
    alice, bob, engine
):
    endpoint = registered(alice[1])
    delivery_id = insert_delivery(engine, endpoint["id"], status="failed")
    path = f"{WEBHOOKS}/{endpoint['id']}"
    bobs = bob[1]
    assert bobs.get(WEBHOOKS).get_json() == {"items": []}
    missing = f"{WEBHOOKS}/we_{'x' * 24}"
    for method, suffix in [
        ("get", ""),
        ("delete", ""),
        ("post", "/rotate-secret"),
        ("get", "/deliveries"),
        ("post", f"/deliveries/{delivery_id}/retry"),
    ]:
        theirs = getattr(bobs, method)(path + suffix)
        nothing = getattr(bobs, method)(missing + suffix)
        # Exactly as for an endpoint that does not exist: nothing says this one does.
        assert assert_problem(theirs, 404, "webhook-endpoint-not-found")
        assert assert_problem(nothing, 404, "webhook-endpoint-not-found")
        assert theirs.get_json()["detail"].replace(endpoint["id"], "?") == (
            nothing.get_json()["detail"].replace(f"we_{'x' * 24}", "?")
        )
    # Alice's endpoint is as it was: not deleted, not rotated, its delivery not retried.
    row = stored(engine, endpoint["id"])
    assert row.previous_secret is None and box().decrypt(row.secret) == endpoint["secret"]
    assert delivery(engine, delivery_id).status == "failed"
    assert alice[1].get(path).status_code == 200


def test_an_operator_lists_reads_and_deletes_every_partners_endpoints(alice, bob, operator):
    alices, bobs = registered(alice[1]), registered(bob[1])
    own = registered(operator)
    assert own["everyPartner"] is True
    listed = {e["id"]: e for e in operator.get(WEBHOOKS).get_json()["items"]}
    assert {alices["id"], bobs["id"], own["id"]} <= set(listed)
    assert listed[alices["id"]]["partnerId"] == alice[0]
    assert operator.get(f"{WEBHOOKS}/{bobs['id']}").status_code == 200
    assert operator.delete(f"{WEBHOOKS}/{bobs['id']}").status_code == 204
    assert bob[1].get(WEBHOOKS).get_json() == {"items": []}
    # Partners never see an operator's endpoint, which receives every partner's changes.
    assert own["id"] not in {e["id"] for e in alice[1].get(WEBHOOKS).get_json()["items"]}


def test_a_partner_key_of_the_operators_own_account_does_not_see_its_endpoints(new_client):
    operator_id, operator = new_client(Role.OPERATOR)
    _, same_account = new_client(Role.PARTNER, operator_id)
    own = registered(operator)
    assert same_account.get(WEBHOOKS).get_json() == {"items": []}
    assert_problem(same_account.get(f"{WEBHOOKS}/{own['id']}"), 404, "webhook-endpoint-not-found")
    rotated = same_account.post(f"{WEBHOOKS}/{own['id']}/rotate-secret")
    assert_problem(rotated, 404, "webhook-endpoint-not-found")


def test_deleting_an_endpoint_deletes_its_deliveries(alice, engine):
    endpoint = registered(alice[1])
    delivery_id = insert_delivery(engine, endpoint["id"], status="failed")
    path = f"{WEBHOOKS}/{endpoint['id']}"
    deleted = alice[1].delete(path)
    assert deleted.status_code == 204 and not deleted.data
    assert_problem(alice[1].get(path), 404, "webhook-endpoint-not-found")
    assert_problem(alice[1].delete(path), 404, "webhook-endpoint-not-found")
    with engine.connect() as conn:
        gone = select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
        assert conn.execute(gone).first() is None


@pytest.mark.parametrize("endpoint_id", ["nope", "we_short", f"we_{'x' * 25}", f"we_{'!' * 24}"])
def test_an_id_that_is_no_endpoint_id_is_a_400(alice, endpoint_id):
    assert_problem(alice[1].get(f"{WEBHOOKS}/{endpoint_id}"), 400, "invalid-request")


# URLs into our own network ---------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_app(make_app):
    """The production default: https only, to public addresses only."""
    return make_app(webhooks_allow_private=False)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1/hook", "https"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://[::1]:8443/hook", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://169.254.169.254/", "https"),
        ("https://10.1.2.3/hook", "private"),
        ("https://user:pass@93.184.215.14/hook", "password"),
        ("ftp://93.184.215.14/hook", "https"),
        ("not a url", "spaces"),
    ],
)
def test_a_url_into_our_own_network_is_refused_with_the_reason(new_client, strict_app, url, why):
    _, client = new_client(on=strict_app)
    body = assert_problem(register(client, url), 400, "webhook-url-refused")
    assert body["detail"].startswith("The webhook URL was refused: ")
    assert why in body["detail"]
    assert "pass" not in body["detail"] or why == "password"
    assert client.get(WEBHOOKS).get_json() == {"items": []}


def test_an_https_url_of_a_public_address_is_accepted(new_client, strict_app):
    _, client = new_client(on=strict_app)
    assert registered(client, url="https://93.184.215.14/hooks/ticketboss?k=1")["url"] == (
        "https://93.184.215.14/hooks/ticketboss?k=1"
    )


# The limit per partner ------------------------------------------------------------------


def test_a_partner_registers_at_most_the_limit_of_endpoints(alice, bob):
    made = [registered(alice[1]) for _ in range(LIMIT)]
    body = assert_problem(register(alice[1]), 409, "too-many-webhook-endpoints")
    assert "WEBHOOK_ENDPOINTS_PER_PARTNER" in body["detail"] and str(LIMIT) in body["detail"]
    assert len(alice[1].get(WEBHOOKS).get_json()["items"]) == LIMIT
    assert registered(bob[1])  # another partner's limit is its own
    assert alice[1].delete(f"{WEBHOOKS}/{made[0]['id']}").status_code == 204
    assert registered(alice[1])


def test_registrations_at_once_never_pass_the_limit(alice, database_url):
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has one writer: a second registration at once waits or is busy")
    _, client = alice
    environ = dict(client.environ_base)
    barrier = threading.Barrier(8)

    def attempt(_) -> int:
        mine = FlaskClient(client.application, client.application.response_class)
        mine.environ_base.update(environ)
        barrier.wait()
        return register(mine).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = Counter(pool.map(attempt, range(8)))
    assert statuses == {201: LIMIT, 409: 8 - LIMIT}


def test_with_auth_mode_open_the_keyless_client_registers_for_every_partner(make_app):
    client = make_app(auth_mode="open").test_client()
    body = registered(client)
    assert body["everyPartner"] is True
    assert body["id"] in {e["id"] for e in client.get(WEBHOOKS).get_json()["items"]}


# Rotation ------------------------------------------------------------------------------


def test_rotating_gives_a_new_secret_and_the_previous_one_signs_until_the_overlap_ends(
    alice, engine
):
    endpoint = registered(alice[1])
    before = datetime.now(UTC)
    response = alice[1].post(f"{WEBHOOKS}/{endpoint['id']}/rotate-secret")
    assert response.status_code == 200
    rotated = response.get_json()
    assert rotated["id"] == endpoint["id"]
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != endpoint["secret"]
    until = parse(rotated["secretRotatedUntil"])
    overlap = timedelta(seconds=OVERLAP_SECONDS)
    assert before + overlap - timedelta(minutes=1) < until < before + overlap + timedelta(minutes=1)

    row = stored(engine, endpoint["id"])
    assert box().decrypt(row.secret) == rotated["secret"]
    assert box().decrypt(row.previous_secret) == endpoint["secret"]
    assert row.previous_secret_until == until
    assert rotated["secret"] not in row.secret and endpoint["secret"] not in row.previous_secret

    read = alice[1].get(f"{WEBHOOKS}/{endpoint['id']}")
    assert read.get_json()["secretRotatedUntil"] == rotated["secretRotatedUntil"]
    assert rotated["secret"] not in read.get_data(as_text=True)


def test_a_second_rotation_keeps_only_the_secret_it_replaces(alice, engine):
    endpoint = registered(alice[1])
    path = f"{WEBHOOKS}/{endpoint['id']}/rotate-secret"
    first = alice[1].post(path).get_json()
    second = alice[1].post(path).get_json()
    row = stored(engine, endpoint["id"])
    assert box().decrypt(row.secret) == second["secret"]
    assert box().decrypt(row.previous_secret) == first["secret"]


def test_once_the_overlap_is_over_the_endpoint_no_longer_shows_it(alice, engine):
    endpoint = registered(alice[1])
    alice[1].post(f"{WEBHOOKS}/{endpoint['id']}/rotate-secret")
    with engine.begin() as conn:
        conn.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint["id"])
            .values(previous_secret_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert alice[1].get(f"{WEBHOOKS}/{endpoint['id']}").get_json()["secretRotatedUntil"] is None


# Not configured -------------------------------------------------------------------------


def test_without_secret_keys_registering_is_a_503_naming_the_setting(make_app, new_client):
    unconfigured = make_app(webhook_secret_keys="")
    _, client = new_client(on=unconfigured)
    response = register(client)
    body = assert_problem(response, 503, "webhooks-not-configured")
    assert "WEBHOOK_SECRET_KEYS" in body["detail"]
    assert int(response.headers["Retry-After"]) > 0
    assert client.get(WEBHOOKS).get_json() == {"items": []}  # reading needs no key


def test_without_secret_keys_rotating_is_a_503_and_the_secret_stays(make_app, alice, engine):
    endpoint = registered(alice[1])
    unconfigured = make_app(webhook_secret_keys="")
    client = FlaskClient(unconfigured, unconfigured.response_class)
    client.environ_base.update(alice[1].environ_base)  # the same key, on the other app
    response = client.post(f"{WEBHOOKS}/{endpoint['id']}/rotate-secret")
    assert_problem(response, 503, "webhooks-not-configured")
    assert "Retry-After" in response.headers
    assert box().decrypt(stored(engine, endpoint["id"]).secret) == endpoint["secret"]
    # Another partner's endpoint is still a 404 there: nothing says it exists.
    _, stranger = new_client_on(unconfigured)
    refused = stranger.post(f"{WEBHOOKS}/{endpoint['id']}/rotate-secret")
    assert_problem(refused, 404, "webhook-endpoint-not-found")


# Deliveries and retry -------------------------------------------------------------------


def insert_delivery(engine, endpoint_id: str, *, status: str, attempts: int = 0) -> int:
    """A notification, its delivery to the endpoint and, unless pending, one failed attempt."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        notification_id = conn.execute(
            insert(notifications).values(
                type="hold.created",
                event_id="node-meetup-2025",
                partner_id=None,
                version=1,
                created_at=now,
                data="{}",
            )
        ).inserted_primary_key[0]
        settled = status != "pending"
        delivery_id = conn.execute(
            insert(webhook_deliveries).values(
                endpoint_id=endpoint_id,
                notification_id=notification_id,
                status=status,
                attempts=attempts,
                next_attempt_at=None if settled else now,
                leased_until=now + timedelta(minutes=5),
                lease=uuid.uuid4(),
                created_at=now,
                settled_at=now if settled else None,
            )
        ).inserted_primary_key[0]
        if settled:
            conn.execute(
                insert(webhook_attempts).values(
                    delivery_id=delivery_id,
                    attempted_at=now,
                    status_code=500,
                    error=None,
                    latency_ms=12,
                    next_attempt_at=None,
                )
            )
    return delivery_id


def delivery(engine, delivery_id: int):
    with engine.connect() as conn:
        query = select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
        return conn.execute(query).one()


def test_retrying_a_failed_delivery_makes_it_pending_and_enables_its_endpoint(alice, engine):
    endpoint = registered(alice[1])
    delivery_id = insert_delivery(engine, endpoint["id"], status="failed", attempts=14)
    with engine.begin() as conn:
        conn.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint["id"])
            .values(disabled_at=datetime.now(UTC), disabled_reason="14 failed attempts")
        )
    path = f"{WEBHOOKS}/{endpoint['id']}"
    shown = alice[1].get(path).get_json()
    assert shown["enabled"] is False and shown["disabledReason"] == "14 failed attempts"

    response = alice[1].post(f"{path}/deliveries/{delivery_id}/retry")
    assert response.status_code == 202
    body = response.get_json()
    assert body["id"] == delivery_id and body["type"] == "hold.created"
    assert (body["status"], body["attempts"], body["settledAt"]) == ("pending", 0, None)
    assert body["nextAttemptAt"] is not None
    assert [a["statusCode"] for a in body["history"]] == [500]  # the attempts made stay
    row = delivery(engine, delivery_id)
    assert (row.status, row.attempts, row.lease, row.leased_until) == ("pending", 0, None, None)
    assert row.next_attempt_at is not None and row.settled_at is None
    shown = alice[1].get(path).get_json()
    assert shown["enabled"] is True and shown["disabledReason"] is None
    assert shown["disabledAt"] is None


def test_retrying_a_delivery_of_another_endpoint_is_a_404(alice, engine):
    one, other = registered(alice[1]), registered(alice[1])
    delivery_id = insert_delivery(engine, other["id"], status="failed")
    retried = alice[1].post(f"{WEBHOOKS}/{one['id']}/deliveries/{delivery_id}/retry")
    assert_problem(retried, 404, "webhook-delivery-not-found")
    assert delivery(engine, delivery_id).status == "failed"
    missing = alice[1].post(f"{WEBHOOKS}/{one['id']}/deliveries/999999999/retry")
    assert_problem(missing, 404, "webhook-delivery-not-found")
    assert_problem(alice[1].post(f"{WEBHOOKS}/{one['id']}/deliveries/x/retry"), 400)


def test_deliveries_are_listed_newest_first_with_their_attempts_a_page_at_a_time(alice, engine):
    endpoint = registered(alice[1])
    ids = [
        insert_delivery(engine, endpoint["id"], status=status, attempts=1)
        for status in ("failed", "pending", "delivered")
    ]
    path = f"{WEBHOOKS}/{endpoint['id']}/deliveries"
    first = alice[1].get(path, query_string={"limit": 2})
    assert first.status_code == 200
    page = first.get_json()
    assert [d["id"] for d in page["items"]] == [ids[2], ids[1]]
    newest = page["items"][0]
    assert newest["notificationId"].startswith("ntf_") and newest["type"] == "hold.created"
    assert newest["status"] == "delivered" and newest["settledAt"] is not None
    assert newest["history"] == [
        {
            "attemptedAt": newest["history"][0]["attemptedAt"],
            "statusCode": 500,
            "error": None,
            "latencyMs": 12,
            "nextAttemptAt": None,
        }
    ]
    assert page["items"][1]["history"] == [] and page["items"][1]["nextAttemptAt"]
    rest = alice[1].get(path, query_string={"limit": 2, "cursor": page["nextCursor"]})
    assert [d["id"] for d in rest.get_json()["items"]] == [ids[0]]
    assert rest.get_json()["nextCursor"] is None
    assert_problem(alice[1].get(path, query_string={"cursor": "nope"}), 400)
    assert_problem(alice[1].get(path, query_string={"limit": 0}), 400)


def test_reencrypting_puts_every_secret_under_the_first_key(tmp_path):
    # A database of its own: re-encryption reads every endpoint there is.
    url = f"sqlite:///{tmp_path / 'reencrypt.sqlite3'}"
    upgrade(url)
    app = create_app(settings(url))
    try:
        _, client = new_client_on(app)
        endpoint = registered(client)
        rotated = client.post(f"{WEBHOOKS}/{endpoint['id']}/rotate-secret").get_json()
        newer = Fernet.generate_key().decode()
        both = settings(url, webhook_secret_keys=f"{newer},{SECRET_KEY}")
        assert reencrypt(services_of(app).engine, both) == 1
        row = stored(services_of(app).engine, endpoint["id"])
        only_newer = SecretBox.from_settings(Settings(webhook_secret_keys=newer))
        assert only_newer is not None
        assert only_newer.decrypt(row.secret) == rotated["secret"]
        assert only_newer.decrypt(row.previous_secret) == endpoint["secret"]
    finally:
        services_of(app).engine.dispose()


def fan_out(engine) -> None:
    """What a dispatcher's pass does first: every notification so far into deliveries."""
    from ticketboss.store.queries import deliveries

    with engine.begin() as conn:
        while deliveries.fan_out(conn, datetime.now(UTC), 500) == 500:
            pass


def queued_types(engine, endpoint_id: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(notifications.c.type, notifications.c.partner_id)
            .join(webhook_deliveries, webhook_deliveries.c.notification_id == notifications.c.id)
            .where(webhook_deliveries.c.endpoint_id == endpoint_id)
            .order_by(notifications.c.id)
        )
        return [tuple(row) for row in rows]


def test_an_endpoint_enabled_again_gets_what_it_missed_while_disabled(alice, bob, operator, engine):
    fan_out(engine)  # what came before this test is not its business
    endpoint = registered(alice[1])
    earlier = insert_delivery(engine, endpoint["id"], status="failed", attempts=14)
    with engine.begin() as conn:
        conn.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint["id"])
            .values(disabled_at=datetime.now(UTC), disabled_reason="14 failed attempts")
        )
    event_id = f"missed-{uuid.uuid4().hex[:8]}"
    created = operator.post(
        "/api/events", json={"eventId": event_id, "name": "Missed", "totalSeats": 10}
    )
    assert created.status_code == 201
    for partner_id, client in (alice, bob):
        made = client.post(
            f"/api/events/{event_id}/reservations", json={"partnerId": partner_id, "seats": 1}
        )
        assert made.status_code == 201
    fan_out(engine)  # the dispatchers pass the notifications by while it is disabled
    before = queued_types(engine, endpoint["id"])
    assert ("reservation.confirmed", alice[0]) not in before

    retried = alice[1].post(f"{WEBHOOKS}/{endpoint['id']}/deliveries/{earlier}/retry")
    assert retried.status_code == 202
    after = queued_types(engine, endpoint["id"])
    # Its own reservation, made while it was disabled, is queued now; never bob's.
    assert after[len(before) :] == [("reservation.confirmed", alice[0])]
    fan_out(engine)  # and the fan-out does not queue it a second time
    assert queued_types(engine, endpoint["id"]) == after
