"""URLs into our own network are refused; a POST is bounded, pinned and never redirected."""

from __future__ import annotations

import datetime
import http.server
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.utils import format_datetime
from typing import ClassVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks.webhooks import Webhook

from ticketboss.services.outbound import Session, UnsafeUrl, check_url, post
from ticketboss.services.secrets import new_webhook_secret
from ticketboss.services.signing import headers

HOST = "hooks.partner.test"  # .test never resolves: reaching the server proves the pinning
PUBLIC = "93.184.216.34"


def resolving_to(*addresses):
    def resolve(host, port):
        return list(addresses)

    return resolve


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    port: int
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    release: threading.Event = field(default_factory=threading.Event)


class Recorder(http.server.BaseHTTPRequestHandler):
    """Records each request, then answers as its path says."""

    server: _HTTPServer

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        state = self.server.state
        state.requests.append(Received(self.path, dict(self.headers), self.rfile.read(length)))
        if self.path == "/slow":  # answers nothing until the test is over
            state.release.wait(10)
            return
        if self.path == "/trickle":  # a header line every 0.2 s, never the end of them
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            try:
                while not state.release.wait(0.2):
                    self.wfile.write(b"X-Still: here\r\n")
            except OSError:
                pass  # the client gave up: that is the point
            return
        status, extra = {
            "/redirect": (302, {"Location": "/target"}),
            "/busy": (429, {"Retry-After": "7"}),
            "/unavailable": (503, {"Retry-After": format_datetime(_in(120), usegmt=True)}),
            "/big": (200, {}),
        }.get(self.path, (204, {}))
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        payload = b"x" * (1024 * 1024) if self.path == "/big" else b""
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except OSError:
            pass  # /big: the client read its 64 KiB and left

    def log_message(self, format, *args):
        pass


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for every handler: nothing outlives a test

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Recorder)
        self.state = Server(self.server_address[1])

    def verify_request(self, request, client_address):
        self.state.connections += 1
        return True


def _in(seconds):
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)


@pytest.fixture
def server():
    httpd = _HTTPServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield httpd.state
    finally:
        httpd.state.release.set()
        httpd.shutdown()
        thread.join(5)
        httpd.server_close()


def send(server, path, body=b"{}", hdrs=None, timeout=5.0, resolve=None):
    return post(
        f"http://{HOST}:{server.port}{path}",
        body,
        hdrs or {"content-type": "application/json"},
        timeout=timeout,
        allow_private=True,
        resolve=resolve or resolving_to("127.0.0.1"),
    )


@pytest.mark.parametrize(
    "address, why",
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.10.1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd00:ec2::254", "cloud metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::a01:203", "private"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_a_host_resolving_to_a_non_public_address_is_refused(address, why):
    with pytest.raises(UnsafeUrl) as refused:
        check_url(
            "https://hooks.example.com/in", allow_private=False, resolve=resolving_to(address)
        )
    assert str(refused.value).startswith(f"the host 'hooks.example.com' resolves to {address}, ")
    assert why in str(refused.value)


def test_one_private_address_among_public_ones_is_enough_to_refuse():
    with pytest.raises(UnsafeUrl, match=r"10\.0\.0\.5, a private address"):
        check_url(
            "https://a.example/", allow_private=False, resolve=resolving_to(PUBLIC, "10.0.0.5")
        )


def test_an_address_in_the_url_is_judged_without_dns():
    def no_dns(host, port):
        raise AssertionError("an IP literal needs no resolver")

    for url in ("https://127.0.0.1/", "https://[::1]:8443/", "https://[::ffff:10.0.0.1]/"):
        with pytest.raises(UnsafeUrl):
            check_url(url, allow_private=False, resolve=no_dns)
    assert check_url(f"https://{PUBLIC}/hook", allow_private=False, resolve=no_dns) == [PUBLIC]


def test_a_public_address_is_accepted_and_returned():
    found = check_url(
        "https://hooks.example.com:8443/in?x=1",
        allow_private=False,
        resolve=resolving_to(PUBLIC, "2606:2800:220:1::1", PUBLIC),
    )
    assert found == [PUBLIC, "2606:2800:220:1::1"]


@pytest.mark.parametrize(
    "url, allow_private, reason",
    [
        ("http://hooks.example.com/", False, "only https URLs are allowed"),
        ("ftp://hooks.example.com/", True, "only http and https URLs are allowed"),
        ("https://user:pass@hooks.example.com/", False, "user name or password"),
        ("https://user@hooks.example.com/", True, "user name or password"),
        ("https:///path", False, "no host"),
        ("https://hooks.example.com:99999/", False, "not valid"),
        ("https://hooks.example.com:0/", False, "between 1 and 65535"),
        ("https://hooks.example.com/a b", False, "spaces or control characters"),
        ("https://hooks.example.com/\r\nX-Injected: 1", True, "spaces or control characters"),
        ("https://hooks.example.com/" + "a" * 2000, False, "longer than 2000 characters"),
    ],
)
def test_urls_we_do_not_call_are_refused_with_a_reason(url, allow_private, reason):
    with pytest.raises(UnsafeUrl, match=reason):
        check_url(url, allow_private=allow_private, resolve=resolving_to(PUBLIC))


def test_allow_private_lets_any_address_through_but_keeps_the_syntax_rules():
    assert check_url("http://localhost:8000/", allow_private=True, resolve=resolving_to("::1"))
    with pytest.raises(UnsafeUrl):
        check_url("http://u:p@localhost/", allow_private=True, resolve=resolving_to("::1"))


def test_a_name_that_does_not_resolve_is_refused():
    with pytest.raises(UnsafeUrl, match=r"the host 'nowhere\.example' does not resolve"):
        check_url("https://nowhere.example/", allow_private=True, resolve=resolving_to())
    with pytest.raises(UnsafeUrl, match="does not resolve"):
        check_url("https://nowhere.invalid/", allow_private=False)  # the real resolver


def test_dns_rebinding_is_refused_when_connecting_and_nothing_reaches_the_server(server):
    answers = iter([[PUBLIC], ["127.0.0.1"]])

    def rebinding(host, port):
        return next(answers)

    url = f"https://{HOST}:{server.port}/in"
    assert check_url(url, allow_private=False, resolve=rebinding) == [PUBLIC]  # at registration
    sent = post(url, b"{}", {}, timeout=2, allow_private=False, resolve=rebinding)
    assert sent.status is None
    assert sent.error == f"refused: the host '{HOST}' resolves to 127.0.0.1, a loopback address"
    assert server.connections == 0 and server.requests == []


def test_a_post_reaches_the_checked_address_with_the_body_and_signed_headers_intact(server):
    secret, body = new_webhook_secret(), '{"seats": 2, "name": "Zoë"}'.encode()
    signed = headers([secret], "msg_1", int(time.time()), body)
    sent = send(server, "/in?x=1", body, signed)
    assert sent.status == 204 and sent.error is None and sent.retry_after is None
    assert sent.latency_ms >= 0
    [got] = server.requests
    assert got.path == "/in?x=1"
    assert got.body == body
    assert got.headers["Host"] == f"{HOST}:{server.port}"
    for name, value in signed.items():
        assert got.headers[name] == value
    Webhook(secret).verify(got.body, got.headers)


def test_a_redirect_is_only_a_status_and_its_target_is_never_requested(server):
    sent = send(server, "/redirect")
    assert sent.status == 302 and sent.error is None
    assert [got.path for got in server.requests] == ["/redirect"]


def test_retry_after_is_read_in_seconds_or_as_an_http_date(server):
    busy = send(server, "/busy")
    assert (busy.status, busy.retry_after) == (429, 7.0)
    unavailable = send(server, "/unavailable")
    assert unavailable.status == 503
    assert unavailable.retry_after is not None and 100 < unavailable.retry_after <= 120


def test_a_large_answer_is_read_only_in_part(server):
    sent = send(server, "/big")
    assert sent.status == 200 and sent.error is None


@pytest.mark.parametrize("path", ["/slow", "/trickle"])
def test_a_receiver_that_stalls_is_given_up_on_at_the_timeout(server, path):
    secret = new_webhook_secret()
    signed = headers([secret], "msg_1", int(time.time()), b"{}")
    started = time.monotonic()
    sent = send(server, path, b"{}", signed, timeout=1.0)
    took = time.monotonic() - started
    assert sent.status is None
    assert sent.error == "timed out after 1 s"
    assert 0.9 <= took < 2.0
    assert signed["webhook-signature"] not in sent.error


def test_a_closed_port_is_an_error_not_an_exception():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sent = post(
        f"http://{HOST}:{port}/in",
        b"{}",
        {"webhook-signature": "v1,c2VjcmV0"},
        timeout=2,
        allow_private=True,
        resolve=resolving_to("127.0.0.1"),
    )
    assert (sent.status, sent.error) == (None, "connection refused")


def test_the_next_checked_address_is_tried_when_one_refuses(server):
    # The server listens on 127.0.0.1 only: 127.0.0.2 (loopback too, on Linux) refuses.
    sent = send(server, "/in", resolve=resolving_to("127.0.0.2", "127.0.0.1"))
    assert sent.status == 204
    assert server.connections == 1


@pytest.fixture
def tls_listener(tmp_path):
    """A TLS server on 127.0.0.1 with a self-signed certificate for HOST; records the SNI."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    names: list[str | None] = []
    context.sni_callback = lambda sock, server_name, ctx: names.append(server_name)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def accept_one():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            try:
                context.wrap_socket(conn, server_side=True).close()
            except (OSError, ssl.SSLError):
                pass  # the client refused our certificate: expected

    thread = threading.Thread(target=accept_one)
    thread.start()
    try:
        yield listener.getsockname()[1], names
    finally:
        thread.join(10)
        listener.close()


def test_https_sends_the_host_name_as_sni_and_refuses_a_certificate_it_cannot_verify(tls_listener):
    port, names = tls_listener
    sent = post(
        f"https://{HOST}:{port}/in",
        b"{}",
        {},
        timeout=5,
        allow_private=True,
        resolve=resolving_to("127.0.0.1"),
    )
    assert sent.status is None
    assert sent.error is not None and sent.error.startswith("TLS certificate not accepted")
    assert names == [HOST]


class _KeepAlive(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 answers that keep the connection, and count connections and requests; with
    `close_after_first`, the server drops each connection once it has answered on it."""

    protocol_version = "HTTP/1.1"
    connections: ClassVar[list[int]] = []
    close_after_first = False

    def setup(self):
        super().setup()
        type(self).connections.append(0)

    def do_POST(self):  # http.server calls it by this name
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).connections[-1] += 1
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if type(self).close_after_first:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def keep_alive():
    _KeepAlive.connections = []
    _KeepAlive.close_after_first = False
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeepAlive)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_session_sends_one_post_after_another_over_one_kept_connection(keep_alive):
    url = f"http://127.0.0.1:{keep_alive.server_address[1]}/hook"
    session = Session(url, timeout=5.0, allow_private=True)
    try:
        sent = [session.post(b"{}", {"content-type": "application/json"}) for _ in range(5)]
    finally:
        session.close()
    assert [s.status for s in sent] == [204] * 5
    assert _KeepAlive.connections == [5]


def test_a_kept_connection_the_receiver_dropped_is_replaced_and_the_post_still_sent(keep_alive):
    _KeepAlive.close_after_first = True
    url = f"http://127.0.0.1:{keep_alive.server_address[1]}/hook"
    session = Session(url, timeout=5.0, allow_private=True)
    try:
        sent = [session.post(b"{}", {"content-type": "application/json"}) for _ in range(3)]
    finally:
        session.close()
    assert [s.status for s in sent] == [204] * 3
    assert _KeepAlive.connections == [1, 1, 1]


def test_a_resolver_that_stalls_is_given_up_on_within_its_bound(monkeypatch):
    import ticketboss.services.outbound as outbound

    monkeypatch.setattr(outbound, "RESOLVE_SECONDS", 0.3)
    released = threading.Event()

    def stalled(host, port):
        released.wait(5)
        return ["93.184.216.34"]

    began = time.monotonic()
    try:
        with pytest.raises(UnsafeUrl, match="did not resolve within"):
            check_url("https://hooks.partner.test/", allow_private=False, resolve=stalled)
    finally:
        released.set()
    assert time.monotonic() - began < 1.5
