"""Hostile input and hostile clients, over real sockets to the gunicorn-served app, on both
engines: every answer is problem+json (never a 500 or a traceback), the books never move,
every request is one JSON log line, and a flood of idle or slow connections does not stop
a well-behaved client from being served within a second."""

from __future__ import annotations

import base64
import json
import resource
import socket
import threading
import time
import uuid

import pytest

from support.api import PROBLEM
from support.servers import request, serve
from ticketboss.cli import seed_event
from ticketboss.config import Settings
from ticketboss.domain import Role
from ticketboss.services.partners import create_key
from ticketboss.store import queries
from ticketboss.store.db import make_engine

EVENT_ID = "node-meetup-2025"


@pytest.fixture(scope="module")
def engine(database_url):
    engine = make_engine(Settings(database_url=database_url))
    seed_event(engine, EVENT_ID, "Node.js Meet-up", 500, reset=True)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def key(engine) -> str:
    return create_key(engine, "hostile-ops", Role.OPERATOR)[1]


@pytest.fixture(scope="module")
def served(database_url, tmp_path_factory, engine):
    yield from serve(
        database_url,
        tmp_path_factory,
        READ_TIMEOUT_SECONDS="1",
        BODY_TIMEOUT_SECONDS="2",
        KEEPALIVE_SECONDS="2",
        SEND_TIMEOUT_SECONDS="1",
    )


def books(engine):
    with engine.connect() as conn:
        event = queries.load_event(conn, EVENT_ID)
    return event.available_seats, event.reservation_count, event.version


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response off the socket (or what came before it closed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    if b"\r\n\r\n" not in data:
        return 0, {}, data  # closed without an answer
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", 0))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def exchange(port: int, raw: bytes, half_close: bool = False):
    """Send raw bytes; with `half_close`, then say we will send nothing more. The answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_response(sock)


def http(method, path, body: bytes | None = None, key=None, headers=(), length=None) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    if key:
        head.append(f"Authorization: Bearer {key}")
    if body is not None:
        head.append("Content-Type: application/json")
        head.append(f"Content-Length: {len(body) if length is None else length}")
    head += list(headers)
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


def assert_problem(answer, status):
    got, headers, body = answer
    assert got == status, (got, body[:300])
    assert headers["content-type"] == PROBLEM, headers
    problem = json.loads(body)
    assert problem["status"] == status and problem["detail"] == problem["error"]
    assert "Traceback" not in problem["detail"]
    return problem


# Bodies that json.loads cannot take, or that only a 500 used to answer -----------------------

DEEP = 5000
BODIES = {
    "nested arrays": b"[" * DEEP + b"]" * DEEP,
    "nested objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "nesting in seats": b'{"seats": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    "nesting in an unknown field": b'{"seats": 1, "x": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    "a 5,000-digit integer": b'{"seats": ' + b"7" * 5000 + b"}",
    "a 5,000-digit negative": b'{"seats": -' + b"7" * 5000 + b"}",
    "an infinite float": b'{"seats": 1e999}',
    "NaN": b'{"seats": NaN}',
    "invalid UTF-8": b'{"seats": 1, "partnerId": "\xff\xfe"}',
    "a lone surrogate": b'{"seats": 1, "partnerId": "\\ud800"}',
    "a zero-width partnerId": '{"seats": 1, "partnerId": "\u200b\u200b"}'.encode(),
    "a NUL partnerId": b'{"seats": 1, "partnerId": "a\\u0000b"}',
}
BODY_ROUTES = [
    ("POST", "/api/reservations"),
    ("POST", f"/api/events/{EVENT_ID}/reservations"),
    ("POST", "/api/events"),
    ("PATCH", f"/api/events/{EVENT_ID}"),
]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("name", sorted(BODIES))
def test_bodies_that_used_to_crash_are_400_and_book_nothing(
    served, engine, key, method, path, name
):
    before = books(engine)
    body = BODIES[name]
    if path == "/api/events":  # the same poison in that route's fields
        body = body.replace(b'"seats"', b'"totalSeats"')
    elif method == "PATCH":
        body = body.replace(b'"seats"', b'"totalSeats"').replace(b'"partnerId"', b'"name"')
    assert_problem(exchange(served.port, http(method, path, body, key)), 400)
    assert books(engine) == before


@pytest.mark.parametrize(
    "path",
    [
        # As many digits as gunicorn's 4,094-byte request line leaves room for (past it: 414).
        "/api/events?limit=" + "9" * 4000,
        f"/api/events/{EVENT_ID}/reservations?limit=" + "9" * 3900,
        f"/api/events/{EVENT_ID}/reservations?limit=-" + "9" * 3900,
        "/api/events?limit=1e999",
        "/api/events?cursor=" + "A" * 2000,
    ],
)
def test_huge_numbers_in_queries_are_400(served, key, path):
    assert_problem(exchange(served.port, http("GET", path, key=key)), 400)


def test_a_forged_cursor_with_an_out_of_range_offset_is_400(served, key):
    values = ["2026-11-28T10:00:00+23:59", str(uuid.uuid4())]
    cursor = base64.urlsafe_b64encode(json.dumps(values).encode()).decode()
    path = f"/api/events/{EVENT_ID}/reservations?cursor={cursor}"
    assert_problem(exchange(served.port, http("GET", path, key=key)), 400)


def test_a_body_declared_in_another_charset_is_415(served, engine, key):
    before = books(engine)
    raw = http(
        "POST",
        "/api/reservations",
        b'{"seats": 1}',
        key,
        headers=["Content-Type: application/json; charset=latin-1"],
    )
    raw = raw.replace(b"Content-Type: application/json\r\n", b"", 1)
    assert_problem(exchange(served.port, raw), 415)
    assert books(engine) == before


@pytest.mark.parametrize(
    "spelling",
    [
        "{%s}",
        "urn:uuid:%s",
        "%s-",
        "x%s",
    ],
)
def test_reservation_ids_in_another_spelling_are_400(served, key, spelling):
    reservation_id = str(uuid.uuid4())
    for variant in (spelling % reservation_id, reservation_id.replace("-", "")):
        path = f"/api/reservations/{variant}"
        assert_problem(exchange(served.port, http("GET", path, key=key)), 400)


def test_an_upper_case_reservation_id_is_the_same_reservation(served, engine, key):
    status, body = request(served.port, "POST", "/api/reservations", {"seats": 1}, key)
    reservation_id = json.loads(body)["reservationId"]
    status, body = request(
        served.port, "GET", f"/api/reservations/{reservation_id.upper()}", key=key
    )
    assert status == 200 and json.loads(body)["reservationId"] == reservation_id


# JSON that two readers would read differently --------------------------------------------

DUPLICATES = {
    "partnerId twice": (b'{"seats": 1, "partnerId": "a", "partnerId": "b"}', "partnerId"),
    "seats twice": (b'{"seats": 1, "partnerId": "a", "seats": 9}', "seats"),
    "once spelled with an escape": (b'{"partner\\u0049d": "a", "partnerId": "b"}', "partnerId"),
    "in a nested object": (b'{"seats": 1, "x": {"k": 1, "k": 2}}', "k"),
}


@pytest.mark.parametrize("path", ["/api/reservations", f"/api/events/{EVENT_ID}/reservations"])
@pytest.mark.parametrize("name", sorted(DUPLICATES))
def test_a_json_object_with_a_duplicated_key_is_400_naming_it(served, engine, key, path, name):
    before = books(engine)
    body, duplicated = DUPLICATES[name]
    problem = assert_problem(exchange(served.port, http("POST", path, body, key)), 400)
    assert problem["type"] == "/problems/invalid-request"
    assert f"Duplicate key '{duplicated}'" in problem["detail"]
    assert books(engine) == before


def test_an_operator_body_with_a_duplicated_key_is_400_too(served, engine, key):
    before = books(engine)
    body = b'{"totalSeats": 500, "totalSeats": 1}'
    answer = exchange(served.port, http("PATCH", f"/api/events/{EVENT_ID}", body, key))
    assert "Duplicate key 'totalSeats'" in assert_problem(answer, 400)["detail"]
    assert books(engine) == before


# Paths --------------------------------------------------------------------------------------

OTHER_HOST = "attacker.example"


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    "path",
    [
        "/api//reservations",  # Werkzeug would merge the slashes, and redirect
        "//api/reservations",
        f"/api/events/{EVENT_ID}//reservations",
        "/api/events//reservations",
        "/api/docs",  # Werkzeug would add the rule's trailing slash, and redirect
        "/api//docs/",
        "//metrics",
    ],
)
def test_doubled_slashes_and_paths_werkzeug_would_redirect_are_404_without_the_host(
    served, engine, key, method, path
):
    before = books(engine)
    raw = http(method, path, b'{"seats": 1}' if method == "POST" else None, key)
    raw = raw.replace(b"Host: localhost", f"Host: {OTHER_HOST}".encode())
    answer = exchange(served.port, raw)
    assert_problem(answer, 404)
    _, headers, body = answer
    assert "location" not in headers
    assert OTHER_HOST not in str(headers) and OTHER_HOST.encode() not in body
    assert books(engine) == before


@pytest.mark.parametrize(
    "path",
    [
        f"/api/events/{EVENT_ID}%2Freservations",  # decoded: the default event's reservations
        f"/api/events/{EVENT_ID}%2freservations",
        "/api/events/a%2Fb/reservations",
        f"/api/events/{EVENT_ID}/reservations/{uuid.uuid4()}%2Fconfirm",
        "/api%2Freservations",
        "/metrics%2F",
    ],
)
def test_an_encoded_slash_in_a_path_is_a_400_and_books_nothing(served, engine, key, path):
    before = books(engine)
    for method, body in (("GET", None), ("POST", b'{"seats": 1}')):
        problem = assert_problem(exchange(served.port, http(method, path, body, key)), 400)
        assert "encoded slash" in problem["detail"]
    assert books(engine) == before


def test_an_encoded_slash_in_the_query_is_only_a_value(served, key):
    path = f"/api/events/{EVENT_ID}/reservations?partnerId=a%2Fb"
    status, _, body = exchange(served.port, http("GET", path, key=key))
    assert status == 200 and json.loads(body)["items"] == []


# Framing ------------------------------------------------------------------------------------


def test_a_body_shorter_than_its_content_length_books_nothing(served, engine, key):
    before = books(engine)
    body = b'{"partnerId": "p", "seats": 1}'
    answer = exchange(served.port, http("POST", "/api/reservations", body, key, length=100), True)
    assert answer[0] in (0, 400)  # the client is gone: an answer, if any, is a 400
    if answer[0]:
        assert_problem(answer, 400)
    time.sleep(0.5)
    assert books(engine) == before


def test_a_body_that_stops_arriving_books_nothing_and_times_out(served, engine, key):
    before = books(engine)
    body = b'{"partnerId": "p", "seats": 1}'
    began = time.monotonic()
    answer = exchange(served.port, http("POST", "/api/reservations", body, key, length=100))
    assert time.monotonic() - began < 5
    assert answer[0] in (400, 408), answer
    assert_problem(answer, answer[0])
    assert books(engine) == before


def chunked(path: str, key: str, chunks: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    return head.encode() + chunks


@pytest.mark.parametrize(
    ("chunks", "status"),
    [
        (b"zz\r\n{}\r\n0\r\n\r\n", 400),  # not a chunk size
        (b"1c\r\n" + b'{"partnerId": "p", "seats": 1}' + b"\r\n0\r\n\r\n", 400),  # too small
        (b"1e\r\n" + b'{"partnerId": "p", "seats": 1}' + b"XX0\r\n\r\n", 400),  # no CRLF
        # A chunk that announces more than any body may hold: refused as it arrives.
        (b"ffffffffffffffffffff\r\n{}\r\n0\r\n\r\n", 400),
    ],
)
def test_broken_chunked_framing_is_refused_and_books_nothing(served, engine, key, chunks, status):
    before = books(engine)
    assert_problem(exchange(served.port, chunked("/api/reservations", key, chunks)), status)
    assert books(engine) == before


def test_a_truncated_chunked_body_books_nothing(served, engine, key):
    before = books(engine)
    raw = chunked("/api/reservations", key, b'1e\r\n{"partnerId": "p", "sea')
    answer = exchange(served.port, raw, half_close=True)
    if answer[0]:
        assert_problem(answer, 400)
    time.sleep(0.5)
    assert books(engine) == before


def test_a_well_formed_chunked_body_is_served(served, engine, key):
    body = b'{"partnerId": "p", "seats": 1}'
    raw = chunked("/api/reservations", key, b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert exchange(served.port, raw)[0] == 201


def test_a_huge_declared_body_is_413_before_it_is_sent(served, engine, key):
    before = books(engine)
    raw = http("POST", "/api/reservations", b"", key, length=200_000_000)
    assert_problem(exchange(served.port, raw), 413)
    assert books(engine) == before


def test_a_chunked_body_past_the_limit_is_413(served, engine, key):
    before = books(engine)
    padding = b'{"seats": 1, "pad": "' + b"x" * 70_000 + b'"}'
    raw = chunked("/api/reservations", key, b"%x\r\n%s\r\n0\r\n\r\n" % (len(padding), padding))
    assert_problem(exchange(served.port, raw), 413)
    assert books(engine) == before


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /api/health HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        (b"G\x00T /api/health HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /api/health HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /api/health HTTP/1.1\r\n" + b"X-A: b\r\n" * 150 + b"\r\n", 431),
        (b"GET /api/health HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"POST /api/reservations HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
    ],
)
def test_requests_the_server_cannot_parse_are_problem_json(served, raw, status):
    assert_problem(exchange(served.port, raw), status)


def test_empty_answers_have_no_content_type(served, key):
    status, headers, body = exchange(served.port, http("OPTIONS", "/api/reservations"))
    assert (status, body) == (204, b"") and "content-type" not in headers
    assert "GET" in headers["allow"]
    status, body = request(served.port, "POST", "/api/reservations", {"seats": 1}, key)
    reservation_id = json.loads(body)["reservationId"]
    answer = exchange(served.port, http("DELETE", f"/api/reservations/{reservation_id}", key=key))
    assert answer[0] == 204 and "content-type" not in answer[1]


def test_every_request_is_one_json_log_line(served):
    """Every line the server wrote is a JSON access line, or gunicorn's own bracketed notes."""
    lines = served.log.read_text(errors="replace").splitlines()
    access = [json.loads(line) for line in lines if line.startswith("{")]
    others = [line for line in lines if not line.startswith("{") and not line.startswith("[")]
    assert not others, others[:5]
    assert {"unparsed"} <= {line["route"] for line in access}
    assert not [line for line in access if line["status"] >= 500]


def test_a_client_that_never_reads_its_answer_is_dropped(served):
    """Big answers (ten pipelined 1.6 MB documents: more than the kernel's buffers hold) to a
    reader with a tiny window that reads nothing: the server gives up after
    SEND_TIMEOUT_SECONDS instead of holding a greenlet for ever."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", served.port))
        sock.sendall(http("GET", "/api/docs/swagger-ui-bundle.js") * 10)
        time.sleep(4)  # read nothing meanwhile
        sock.settimeout(5)
        received = 0
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    one = len(request(served.port, "GET", "/api/docs/swagger-ui-bundle.js")[1])
    assert one > 500_000 and received < 10 * one  # cut off: the server stopped waiting


# Floods ---------------------------------------------------------------------------------------


def test_a_flood_of_idle_and_slow_connections_does_not_starve_a_normal_client(served, engine, key):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 10_000)), hard))
    before = books(engine)
    flood: list[socket.socket] = []
    try:
        for i in range(2400):
            sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
            if i % 6 == 0:  # a slow one: headers, then a body that never finishes
                sock.sendall(http("POST", "/api/reservations", b'{"seat', key, length=40))
            elif i % 6 == 1:  # a slow one: half a request line
                sock.sendall(b"GET /api/hea")
            flood.append(sock)
        # Meanwhile a normal client is answered within a second, every time.
        waits = []
        for _ in range(10):
            began = time.monotonic()
            status, _ = request(served.port, "GET", "/api/reservations", key=key)
            waits.append(time.monotonic() - began)
            assert status == 200
        assert max(waits) < 1.0, waits
        status, _ = request(served.port, "POST", "/api/reservations", {"seats": 1}, key)
        assert status == 201

        # The flood is shed: within a few seconds the server has closed them all.
        def closed(sock: socket.socket) -> bool:
            sock.settimeout(8)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
            return True

        sample = flood[:: len(flood) // 60]
        results = []
        threads = [threading.Thread(target=lambda s=s: results.append(closed(s))) for s in sample]
        began = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(results) == len(sample) and time.monotonic() - began < 9
    finally:
        for sock in flood:
            sock.close()
    available, count, version = books(engine)
    assert (available, count, version) == (before[0] - 1, before[1] + 1, before[2] + 1)
