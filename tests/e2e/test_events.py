"""Many events, conditional requests and paginated lists, on PostgreSQL and SQLite."""

import uuid

import pytest

from support.api import PROBLEM, create_event
from support.api import reserve as api_reserve
from support.api import summary as api_summary
from ticketboss import services_of


def reserve(client, event_id="gala", seats=2, partner="p", headers=None):
    """On an event, for partner p unless told."""
    return api_reserve(client, seats, partner, event_id=event_id, headers=headers)


def summary(client, event_id="gala"):
    return api_summary(client, event_id)


@pytest.fixture
def client(app):
    from ticketboss.store.tables import events, idempotency_keys, reservations

    engine = services_of(app).engine
    with engine.begin() as conn:  # only the default event, as the app fixture reset it
        conn.execute(idempotency_keys.delete())
        conn.execute(reservations.delete().where(reservations.c.event_id != "node-meetup-2025"))
        conn.execute(events.delete().where(events.c.event_id != "node-meetup-2025"))
    return app.test_client()


def test_creating_an_event_returns_its_summary_location_and_etag(client):
    response = create_event(client)
    assert response.status_code == 201
    assert response.headers["Location"] == "/api/events/gala"
    assert response.headers["ETag"] == '"0"'
    assert response.get_json() == {
        "eventId": "gala",
        "name": "Gala",
        "totalSeats": 10,
        "availableSeats": 10,
        "reservationCount": 0,
        "heldSeats": 0,
        "version": 0,
    }
    assert client.get("/api/events/gala").get_json() == response.get_json()


def test_an_event_id_can_be_created_once(client):
    create_event(client)
    response = create_event(client, seats=99)
    assert response.status_code == 409 and response.mimetype == PROBLEM
    assert summary(client)["totalSeats"] == 10


def test_an_event_id_differing_only_in_case_from_another_is_taken_but_lookups_stay_exact(client):
    create_event(client, "gala")
    for spelling in ("GALA", "Gala"):
        response = create_event(client, spelling, seats=99)
        assert response.status_code == 409 and response.mimetype == PROBLEM
        assert response.get_json()["type"] == "/problems/event-exists"
        assert client.get(f"/api/events/{spelling}").status_code == 404
    assert summary(client)["totalSeats"] == 10
    listed = client.get("/api/events").get_json()["items"]
    assert [e["eventId"] for e in listed if e["eventId"].lower() == "gala"] == ["gala"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Gala", "totalSeats": 10},
        {"eventId": "has space", "name": "Gala", "totalSeats": 10},
        {"eventId": "-leading-dash", "name": "Gala", "totalSeats": 10},
        {"eventId": "x" * 129, "name": "Gala", "totalSeats": 10},
        {"eventId": "gala", "name": "   ", "totalSeats": 10},
        {"eventId": "gala", "name": "Gala", "totalSeats": -1},
        {"eventId": "gala", "name": "Gala", "totalSeats": "10"},
        {"eventId": "gala", "name": "Gala", "totalSeats": 1_000_001},
        [],
    ],
)
def test_an_invalid_event_is_a_400_and_nothing_is_created(client, body):
    response = client.post("/api/events", json=body)
    assert response.status_code == 400 and response.mimetype == PROBLEM
    assert client.get("/api/events/gala").status_code == 404


def test_unknown_events_are_404_everywhere(client):
    for response in (
        client.get("/api/events/nope"),
        client.patch("/api/events/nope", json={"name": "x"}),
        reserve(client, "nope"),
        client.get("/api/events/nope/reservations"),
        client.get(f"/api/events/nope/reservations/{uuid.uuid4()}"),
        client.delete(f"/api/events/nope/reservations/{uuid.uuid4()}"),
    ):
        assert response.status_code == 404 and response.mimetype == PROBLEM


def test_reserving_on_one_event_never_touches_another(client):
    create_event(client)
    create_event(client, "concert", seats=5)
    default_before = client.get("/api/reservations").get_json()
    response = reserve(client, "gala", seats=4)
    assert response.status_code == 201
    location = response.headers["Location"]
    assert location.startswith("/api/events/gala/reservations/")
    assert client.get(location).get_json()["eventId"] == "gala"
    assert summary(client, "concert") == {
        "eventId": "concert",
        "name": "Gala",
        "totalSeats": 5,
        "availableSeats": 5,
        "reservationCount": 0,
        "heldSeats": 0,
        "version": 0,
    }
    assert client.get("/api/reservations").get_json() == default_before
    gala = summary(client)
    assert (gala["availableSeats"], gala["reservationCount"], gala["version"]) == (6, 1, 1)
    # A reservation of gala is not one of concert's.
    assert client.get(location.replace("/gala/", "/concert/")).status_code == 404
    assert client.delete(location.replace("/gala/", "/concert/")).status_code == 404
    assert client.delete(location).status_code == 204
    assert summary(client)["availableSeats"] == 10


@pytest.mark.parametrize("path", ["/api/events/gala", "/api/reservations"])
def test_summaries_carry_an_etag_and_if_none_match_gives_304(client, path):
    create_event(client)
    first = client.get(path)
    tag = first.headers["ETag"]
    assert tag == f'"{first.get_json()["version"]}"'
    unchanged = client.get(path, headers={"If-None-Match": tag})
    assert unchanged.status_code == 304 and unchanged.data == b""
    assert unchanged.headers["ETag"] == tag
    # A proxy may weaken the tag; If-None-Match compares weakly (RFC 9110).
    assert client.get(path, headers={"If-None-Match": f"W/{tag}"}).status_code == 304
    event_id = "gala" if "events" in path else "node-meetup-2025"
    reserve(client, event_id)
    changed = client.get(path, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag


def test_patch_renames_and_resizes_through_the_compare_and_swap(client):
    create_event(client)
    reserve(client, seats=4)
    response = client.patch("/api/events/gala", json={"name": "Big Gala", "totalSeats": 20})
    assert response.status_code == 200
    assert response.headers["ETag"] == '"2"'
    assert response.get_json() == {
        "eventId": "gala",
        "name": "Big Gala",
        "totalSeats": 20,
        "availableSeats": 16,
        "reservationCount": 1,
        "heldSeats": 0,
        "version": 2,
    }
    assert summary(client) == response.get_json()


def test_patch_never_shrinks_below_the_reserved_seats(client):
    create_event(client)
    reserve(client, seats=4)
    response = client.patch("/api/events/gala", json={"totalSeats": 3})
    assert response.status_code == 409 and response.mimetype == PROBLEM
    assert client.patch("/api/events/gala", json={"totalSeats": 4}).status_code == 200
    gala = summary(client)
    assert (gala["totalSeats"], gala["availableSeats"], gala["version"]) == (4, 0, 2)


@pytest.mark.parametrize("body", [{}, {"totalSeats": -1}, {"name": ""}, {"totalSeats": 2.5}])
def test_an_invalid_patch_is_a_400(client, body):
    create_event(client)
    assert client.patch("/api/events/gala", json=body).status_code == 400
    assert summary(client)["version"] == 0


@pytest.mark.parametrize(
    "body", [{"eventId": "other", "name": "x"}, {"eventId": "gala"}, {"eventId": None}]
)
def test_a_patch_naming_an_event_id_is_a_400_and_changes_nothing(client, body):
    create_event(client)
    response = client.patch("/api/events/gala", json=body)
    assert response.status_code == 400 and response.mimetype == PROBLEM
    problem = response.get_json()
    assert problem["type"] == "/problems/invalid-request" and "eventId" in problem["errors"]
    assert (summary(client)["name"], summary(client)["version"]) == ("Gala", 0)
    assert client.get("/api/events/other").status_code == 404


def test_a_patch_that_changes_nothing_keeps_the_version_and_the_etag(client):
    create_event(client)  # "Gala", 10 seats
    reserve(client, seats=2)
    for body in ({"name": "Gala", "totalSeats": 10}, {"name": "Gala"}, {"totalSeats": 10}):
        response = client.patch("/api/events/gala", json=body, headers={"If-Match": '"1"'})
        assert response.status_code == 200 and response.headers["ETag"] == '"1"'
        assert response.get_json() == summary(client)
        assert response.get_json()["version"] == 1
    stale = client.patch("/api/events/gala", json={"name": "Gala"}, headers={"If-Match": '"0"'})
    assert stale.status_code == 412  # If-Match is still checked
    changed = client.patch("/api/events/gala", json={"name": "Gala", "totalSeats": 11})
    assert changed.status_code == 200 and changed.headers["ETag"] == '"2"'


def test_if_match_guards_patch_and_reservations(client):
    create_event(client)
    stale, current = '"7"', '"0"'
    for response in (
        client.patch("/api/events/gala", json={"name": "x"}, headers={"If-Match": stale}),
        reserve(client, headers={"If-Match": stale}),
        reserve(client, headers={"If-Match": '"not-a-version"'}),
        reserve(client, headers={"If-Match": 'W/"0"'}),  # If-Match compares strongly
    ):
        assert response.status_code == 412 and response.mimetype == PROBLEM
    for malformed in ('"0', ",", '"00"', '" 0"'):  # never a match, never unconditional
        assert reserve(client, headers={"If-Match": malformed}).status_code == 412
        patch = client.patch(
            "/api/events/gala", json={"name": "x"}, headers={"If-Match": malformed}
        )
        assert patch.status_code == 412
    assert summary(client)["version"] == 0  # nothing was written
    assert reserve(client, headers={"If-Match": current}).status_code == 201
    assert reserve(client, headers={"If-Match": current}).status_code == 412
    assert reserve(client, headers={"If-Match": '"0", "1"'}).status_code == 201
    assert reserve(client, headers={"If-Match": "*"}).status_code == 201
    patched = client.patch("/api/events/gala", json={"name": "x"}, headers={"If-Match": '"3"'})
    assert patched.status_code == 200 and patched.headers["ETag"] == '"4"'


def test_events_page_through_in_id_order(client):
    for event_id in ["e3", "e1", "e5", "e2", "e4"]:
        create_event(client, event_id)
    seen, cursor = [], None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/api/events{query}").get_json()
        seen += [e["eventId"] for e in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ["e1", "e2", "e3", "e4", "e5", "node-meetup-2025"]


def test_reservations_page_through_in_a_stable_order_with_filters(client):
    create_event(client, seats=100)
    made = [
        reserve(client, partner=f"p{i % 2}", seats=1).get_json()["reservationId"] for i in range(7)
    ]
    client.delete(f"/api/events/gala/reservations/{made[0]}")

    def walk(query):
        ids, cursor = [], None
        while True:
            page = client.get(
                f"/api/events/gala/reservations?limit=3{query}"
                + (f"&cursor={cursor}" if cursor else "")
            ).get_json()
            ids += [r["reservationId"] for r in page["items"]]
            if page["nextCursor"] is None:
                return ids
            cursor = page["nextCursor"]
            reserve(client, partner="late", seats=1)  # rows added meanwhile come after

    everything = walk("")
    assert everything[:7] == made
    assert walk("&partnerId=p0") == [m for i, m in enumerate(made) if i % 2 == 0]
    assert walk("&partnerId=p0&status=confirmed") == [made[2], made[4], made[6]]
    assert walk("&status=cancelled") == [made[0]]


def forged(*values):
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


@pytest.mark.parametrize(
    "query",
    [
        "?limit=0",
        "?limit=101",
        "?status=pending",
        "?cursor=bm9wZQ==",
        "?cursor=%%%",
        f"?cursor={forged('2026-01-01T00:00:00+00:00', 5)}",
        f"?cursor={forged('2026-01-01T00:00:00+00:00', [])}",
        f"?cursor={forged('not a time', str(uuid.uuid4()))}",
        f"?cursor={forged('a', 'b', 'c')}",
    ],
)
def test_bad_list_queries_are_400(client, query):
    create_event(client)
    response = client.get(f"/api/events/gala/reservations{query}")
    assert response.status_code == 400 and response.mimetype == PROBLEM


@pytest.mark.parametrize("cursor", [forged("a\u0000b"), forged("\ud800"), forged(7)])
def test_forged_event_cursors_are_400(client, cursor):
    response = client.get(f"/api/events?cursor={cursor}")
    assert response.status_code == 400 and response.mimetype == PROBLEM


def test_the_last_page_has_no_next_cursor_even_when_it_is_full(client):
    create_event(client, seats=10)
    reserve(client, seats=1)
    reserve(client, seats=1)
    first = client.get("/api/events/gala/reservations?limit=2").get_json()
    assert len(first["items"]) == 2 and first["nextCursor"] is None
