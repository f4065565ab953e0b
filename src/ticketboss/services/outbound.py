"""Outbound POSTs to partners' webhook URLs, refused when they lead into our own network."""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, quote, urlsplit

from ticketboss import deadline
from ticketboss.domain.errors import DomainError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MAX_URL_LENGTH = 2000
# The receiver's answer is only its status; a little of the body is read so it can finish.
MAX_RESPONSE_BYTES = 64 * 1024

Resolver = Callable[[str, int], Sequence[str]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # CGNAT; not "private" to ipaddress
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # a NAT64 gateway forwards to the IPv4 inside
# Characters of a path or query kept as they are; anything else (spaces are refused before)
# is percent-encoded, since http.client sends the request line as ASCII.
_URL_SAFE = "/%:@!$&'()*+,;=-._~?"


class UnsafeUrl(DomainError):
    """A webhook URL we will not call; the message says why, for the partner."""


def _not_public(ip: Address) -> str | None:
    """What kind of non-public address `ip` is, or None for a public one."""
    if ip in _METADATA:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (
            ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None
        )
        if embedded is not None:  # judged by the IPv4 address it reaches
            why = _not_public(embedded)
            return f"{why} (as IPv6)" if why else None
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:  # before is_private, which counts 240.0.0.0/4 in
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def _split(url: str, *, allow_private: bool) -> tuple[SplitResult, str, int]:
    """The URL's parts, its host (ASCII) and port, once its syntax is acceptable."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(char <= " " or char == "\x7f" for char in url):
        raise UnsafeUrl("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("the URL is not valid (check its host and port)") from None
    schemes = ("http", "https") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise UnsafeUrl(
            "only http and https URLs are allowed"
            if allow_private
            else "only https URLs are allowed"
        )
    if "@" in parts.netloc:
        raise UnsafeUrl("the URL may not contain a user name or password (user:pass@)")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if port == 0:
        raise UnsafeUrl("the port must be between 1 and 65535")
    try:
        host = parts.hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise UnsafeUrl(f"the host '{parts.hostname}' is not a valid name") from None
    return parts, host, port or (443 if parts.scheme == "https" else 80)


RESOLVE_SECONDS = 3.0
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-resolve")


def _getaddrinfo(host: str, port: int) -> list[str]:
    return [
        str(sockaddr[0]) for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    ]


def _resolve(host: str, port: int, resolve: Resolver | None) -> list[str]:
    """The addresses `host` stands for: itself when it is one, else what DNS says."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    lookup = resolve or _getaddrinfo
    # A resolver that stalls must not hold a registration (a request) or a delivery: the
    # lookup runs beside, and is given up on after RESOLVE_SECONDS (or the request's time).
    wait = min(RESOLVE_SECONDS, deadline.remaining(RESOLVE_SECONDS) or 0.0)
    try:
        found = [str(a) for a in _RESOLVER.submit(lookup, host, port).result(timeout=wait)]
    except FutureTimeout:
        raise UnsafeUrl(f"the host '{host}' did not resolve within {wait:g} s") from None
    except (OSError, UnicodeError):
        found = []
    if not found:
        raise UnsafeUrl(f"the host '{host}' does not resolve")
    return list(dict.fromkeys(found))  # once each, in the resolver's order


def check_url(url: str, *, allow_private: bool, resolve: Resolver | None = None) -> list[str]:
    """The addresses a webhook URL reaches; UnsafeUrl when any of them is not public (unless
    `allow_private`) or the URL is not an http(s) URL we accept."""
    return _checked(url, allow_private, resolve)[3]


def _checked(
    url: str, allow_private: bool, resolve: Resolver | None
) -> tuple[SplitResult, str, int, list[str]]:
    """check_url(), with the URL's parts, host and port as well."""
    parts, host, port = _split(url, allow_private=allow_private)
    addresses = _resolve(host, port, resolve)
    if not allow_private:
        for address in addresses:
            try:
                why = _not_public(ipaddress.ip_address(address))
            except ValueError:
                why = "not an IP address"
            if why is not None:
                # Every address counts: a client may be handed any of them.
                raise UnsafeUrl(f"the host '{host}' resolves to {address}, {why}")
    return parts, host, port, addresses


@dataclass(frozen=True)
class Sent:
    """How one POST went."""

    status: int | None  # None: no HTTP answer
    latency_ms: int
    error: str | None = None
    retry_after: float | None = None  # seconds, from a Retry-After header


class _Deadline:
    """The time left of one exchange's budget."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left; TimeoutError once none are."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left


def _open(ip: str, port: int, deadline: _Deadline) -> socket.socket:
    """A TCP connection to the address itself (create_connection would resolve it again:
    under gevent, a round trip through its resolver's threads per delivery)."""
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(deadline.left())
        sock.connect((ip, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to the address that was checked, never to what the name resolves to now."""

    def __init__(self, host: str, port: int, ip: str, deadline: _Deadline):
        super().__init__(host, port, timeout=deadline.seconds)
        self.ip, self.deadline = ip, deadline

    def connect(self) -> None:
        self.sock = _open(self.ip, self.port, self.deadline)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to the checked address; the certificate and SNI are for the URL's host name."""

    def __init__(self, host: str, port: int, ip: str, deadline: _Deadline):
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=deadline.seconds, context=self.tls)
        self.ip, self.deadline = ip, deadline

    def connect(self) -> None:
        sock = _open(self.ip, self.port, self.deadline)
        try:
            sock.settimeout(self.deadline.left())
            self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class _DeadlineReader(io.RawIOBase):
    """A socket's bytes, each read allowed only the time left: a receiver that trickles its
    answer a byte at a time cannot hold the exchange past its budget."""

    def __init__(self, sock: socket.socket, deadline: _Deadline):
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        self._sock.settimeout(self._deadline.left())
        return self._sock.recv_into(buffer)


class _Response(http.client.HTTPResponse):
    """A response read under the exchange's deadline."""

    def __init__(self, sock: socket.socket, deadline: _Deadline):
        super().__init__(sock, method="POST")
        self.fp.close()  # the plain file the base class opened; only its reference is dropped
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def _describe(exc: Exception, timeout: float) -> str:
    """A failure, in words for the partner's delivery log (never any request header)."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):  # a ConnectionResetError too
        return "connection closed without a response"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the receiver"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or type(exc).__name__}"
    if isinstance(exc, http.client.HTTPException):
        return f"not a valid HTTP response ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"network error: {exc.strerror}"
    return f"network error: {type(exc).__name__}"


def _target(parts: SplitResult) -> str:
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return quote(target, safe=_URL_SAFE)


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    allow_private: bool,
    resolve: Resolver | None = None,
) -> Sent:
    """POST `body` once, to an address checked just now, within `timeout` seconds in all;
    never follows a redirect and never raises for what the network or the receiver does."""
    session = Session(url, timeout=timeout, allow_private=allow_private, resolve=resolve)
    try:
        return session.post(body, headers)
    finally:
        session.close()


# A reused connection that fails like this never got our request read: the receiver had
# closed it while idle. Sent once more on a new connection.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Session:
    """POSTs to one URL, one after another, over one kept-alive connection while the
    receiver keeps it: to the address checked when it was opened (each new connection is
    checked again), each exchange within `timeout` seconds."""

    def __init__(
        self, url: str, *, timeout: float, allow_private: bool, resolve: Resolver | None = None
    ):
        self.url, self.timeout = url, timeout
        self.allow_private, self.resolve = allow_private, resolve
        self._conn: _PinnedHTTP | _PinnedHTTPS | None = None
        self._target = "/"

    def post(self, body: bytes, headers: dict[str, str]) -> Sent:
        start = time.monotonic()

        def ms() -> int:
            return round((time.monotonic() - start) * 1000)

        reused = self._conn is not None
        if self._conn is None:
            failure = self._connect(start)
            if failure is not None:
                return Sent(None, ms(), failure)
        try:
            return self._exchange(body, headers, start, ms)
        except _STALE as exc:
            self.close()
            if not reused:
                return Sent(None, ms(), _describe(exc, self.timeout))
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return Sent(None, ms(), _describe(exc, self.timeout))
        failure = self._connect(start)  # the kept connection had gone stale: a new one
        if failure is not None:
            return Sent(None, ms(), failure)
        try:
            return self._exchange(body, headers, start, ms)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return Sent(None, ms(), _describe(exc, self.timeout))

    def _connect(self, start: float) -> str | None:
        """A new connection to an address checked just now; why not, or None."""
        try:
            # Checked at each new connection: the name may resolve elsewhere now (DNS
            # rebinding).
            parts, host, port, addresses = _checked(self.url, self.allow_private, self.resolve)
        except UnsafeUrl as exc:
            return f"refused: {exc}"
        deadline = _Deadline(max(0.0, self.timeout - (time.monotonic() - start)))
        kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        failure: Exception = TimeoutError()
        for ip in addresses:
            conn = kind(host, port, ip, deadline)
            try:
                conn.connect()
            except OSError as exc:  # this address does not answer: the next one may
                conn.close()
                failure = exc
                continue
            self._conn, self._target = conn, _target(parts)
            return None
        return _describe(failure, self.timeout)

    def _exchange(self, body: bytes, headers: dict[str, str], start: float, ms) -> Sent:
        conn = self._conn
        assert conn is not None and conn.sock is not None
        deadline = _Deadline(max(0.0, self.timeout - (time.monotonic() - start)))
        conn.sock.settimeout(deadline.left())
        conn.response_class = lambda sock, method=None: _Response(sock, deadline)  # type: ignore[assignment,misc]
        conn.request("POST", self._target, body=body, headers=headers)
        response = conn.getresponse()
        try:
            status = response.status
            retry_after = _retry_after(response.getheader("Retry-After"))
            try:
                response.read(MAX_RESPONSE_BYTES)
            except (OSError, http.client.HTTPException):
                pass  # the status line is the answer; the body was to be discarded
            kept = response.isclosed() and not response.will_close  # read whole, kept alive
        finally:
            response.close()
        if not kept:
            self.close()
        return Sent(status, ms(), None, retry_after)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
