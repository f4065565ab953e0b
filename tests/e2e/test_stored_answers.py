"""Every kind of answer an Idempotency-Key has ever stored (the `outcome` column: an on-disk
format) replays as documented: its status, and its problem type or reservation status. The
answers are written as a release would have written them, then the same request is sent with
the same key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from ticketboss import services_of
from ticketboss.domain import Principal, Role
from ticketboss.services.idempotency import IdempotencyKey, Kept
from ticketboss.services.unit_of_work import transaction
from ticketboss.store import queries

EVENT_ID = "node-meetup-2025"
OPERATOR = Principal("ops", Role.OPERATOR)  # the test client's key (support.api.as_operator)
RID = uuid.UUID("4db040cf-bc7c-4e2c-acb6-6a85deda3142")
RESERVATION = f"/api/events/{EVENT_ID}/reservations/{RID}"

# kind -> (method, path, body, the key as that request builds it, status, type or status text)
EXPECTED = {
    Kept.RESERVED: (
        "POST",
        f"/api/events/{EVENT_ID}/reservations",
        {"partnerId": "abc-corp", "seats": 2},
        IdempotencyKey.for_reserve(OPERATOR, "k", EVENT_ID, "abc-corp", 2),
        201,
        "confirmed",
    ),
    Kept.NOT_ENOUGH_SEATS: (
        "POST",
        f"/api/events/{EVENT_ID}/reservations",
        {"partnerId": "abc-corp", "seats": 2},
        IdempotencyKey.for_reserve(OPERATOR, "k", EVENT_ID, "abc-corp", 2),
        409,
        "/problems/not-enough-seats",
    ),
    Kept.HELD: (
        "POST",
        f"/api/events/{EVENT_ID}/holds",
        {"partnerId": "abc-corp", "seats": 2},
        IdempotencyKey.for_hold(OPERATOR, "k", EVENT_ID, "abc-corp", 2, None),
        201,
        "held",
    ),
    Kept.HOLD_LIMIT_REACHED: (
        "POST",
        f"/api/events/{EVENT_ID}/holds",
        {"partnerId": "abc-corp", "seats": 2},
        IdempotencyKey.for_hold(OPERATOR, "k", EVENT_ID, "abc-corp", 2, None),
        409,
        "/problems/hold-limit-reached",
    ),
    Kept.POOL_LIMIT_REACHED: (
        "POST",
        f"/api/events/{EVENT_ID}/reservations",
        {"partnerId": "abc-corp", "seats": 2},
        IdempotencyKey.for_reserve(OPERATOR, "k", EVENT_ID, "abc-corp", 2),
        409,
        "/problems/pool-limit-reached",
    ),
    Kept.CONFIRMED: (
        "POST",
        f"{RESERVATION}/confirm",
        None,
        IdempotencyKey.for_confirm(OPERATOR, "k", EVENT_ID, RID),
        200,
        "confirmed",
    ),
    Kept.EXTENDED: (
        "POST",
        f"{RESERVATION}/extend",
        {"ttlSeconds": 60},
        IdempotencyKey.for_extend(OPERATOR, "k", EVENT_ID, RID, 60),
        200,
        "held",
    ),
    Kept.HOLD_EXPIRED: (
        "POST",
        f"{RESERVATION}/confirm",
        None,
        IdempotencyKey.for_confirm(OPERATOR, "k", EVENT_ID, RID),
        409,
        "/problems/hold-expired",
    ),
    Kept.NOT_HELD: (
        "POST",
        f"{RESERVATION}/extend",
        {"ttlSeconds": 60},
        IdempotencyKey.for_extend(OPERATOR, "k", EVENT_ID, RID, 60),
        409,
        "/problems/not-held",
    ),
    Kept.CANCELLED: (
        "DELETE",
        RESERVATION,
        None,
        IdempotencyKey.for_cancel(OPERATOR, "k", EVENT_ID, RID),
        204,
        None,
    ),
    Kept.RESERVATION_NOT_FOUND: (
        "DELETE",
        RESERVATION,
        None,
        IdempotencyKey.for_cancel(OPERATOR, "k", EVENT_ID, RID),
        404,
        "/problems/reservation-not-found",
    ),
}


def test_every_kind_ever_stored_has_a_documented_replay():
    assert set(EXPECTED) == set(Kept)


def _store(app, key: IdempotencyKey, kind: Kept) -> str:
    """The answer as a release stores it, under a key of this test's own."""
    name = uuid.uuid4().hex
    owner, now = uuid.uuid4(), datetime.now(UTC)
    held_until = now + timedelta(minutes=5) if kind in (Kept.HELD, Kept.EXTENDED) else None
    with transaction(services_of(app).engine, "a stored answer") as conn:
        queries.insert_claim(
            conn, key.scope, name, key.fingerprint, owner, now, now + timedelta(hours=1)
        )
        queries.record_outcome(
            conn, key.scope, name, owner, kind.value, RID, 2, held_until, f"as kept: {kind}"
        )
    return name


@pytest.mark.parametrize("kind", list(Kept))
def test_a_stored_answer_replays_as_documented(app, client, kind):
    method, path, body, key, status, said = EXPECTED[kind]
    name = _store(app, key, kind)
    response = client.open(path, method=method, json=body, headers={"Idempotency-Key": name})
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Idempotent-Replayed"] == "true"
    if said is None:
        assert not response.data
    elif said.startswith("/problems/"):
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["type"] == said
        assert response.get_json()["detail"] == f"as kept: {kind}"
    else:
        assert response.get_json()["status"] == said
        assert response.get_json()["reservationId"] == str(RID)
