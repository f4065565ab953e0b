"""The processes of a local cluster, each started, checked and stopped on its own:
pgbouncer (transaction mode) in front of PostgreSQL, gunicorn hosts, HAProxy in front of
them (event affinity or round robin), and Redis for the rate limit they share."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
REDIS_URL = "redis://127.0.0.1:6379/0"
BALANCES = ("affinity", "roundrobin")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, what: str, seconds: float = 15) -> None:
    """Until something accepts on the port; the process must stay alive meanwhile."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with {process.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {port} within {seconds} s") from None
            time.sleep(0.05)


def stop(process: subprocess.Popen | None, sig: int = signal.SIGTERM, seconds: float = 15) -> None:
    """Ask a process to stop; kill it if it has not within `seconds`."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PgBouncer:
    """Debian's pgbouncer, transaction pooling, a stock configuration, on a loopback port.
    (It will not run as root: as root it drops to the postgres user, who must read its files.)"""

    def __init__(self, workdir: Path, upstream_host: str, upstream_port: int, user: str):
        self.dir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o777)
        (self.dir / "userlist.txt").write_text(f'"{user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={upstream_host} port={upstream_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 2000\n"
            "default_pool_size = 20\n"
            # After a failed login (the server restarting, a failover's demoted primary)
            # pgbouncer refuses every client for server_login_retry: 15 s by default, which
            # made a 5 s switchover a 16 s gap. Retry each second instead.
            "server_login_retry = 1\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
            f"pidfile = {self.dir / 'pgbouncer.pid'}\n"
        )

    def start(self) -> None:
        user = ["-u", "postgres"] if os.geteuid() == 0 else []
        self.process = subprocess.Popen(
            [PGBOUNCER, *user, str(self.dir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, self.process, f"pgbouncer (log: {self.dir / 'pgbouncer.log'})")

    def stop(self) -> None:
        stop(self.process)

    def kill(self) -> None:
        """At once, as a crash or a pulled cable would: clients see their connections drop
        and new ones refused. `start` brings it back on the same port."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        (self.dir / "pgbouncer.pid").unlink(missing_ok=True)

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, database: str, user: str) -> str:
        return f"postgresql+psycopg2://{user}@127.0.0.1:{self.port}/{database}"


class Host:
    """One app host: gunicorn with the project's config on its own port, metrics directory
    and log, talking to the database through `database_url`."""

    def __init__(self, name: str, workdir: Path, database_url: str, workers: int, **settings):
        self.name = name
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"prometheus-{name}"),
            **{key: str(value) for key, value in settings.items()},
        }

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-c",
                    "python:ticketboss.gunicorn_conf",
                    "ticketboss.wsgi:app",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the cluster, which stops us in order
            )
        what = f"host {self.name} (log: {self.log_path})"
        wait_for_port(self.port, self.process, what, 30)
        # Its own app answers, migrated (not something else that took the port meanwhile).
        deadline = time.monotonic() + 30
        while not _ready(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} is not ready")
            time.sleep(0.1)

    def kill(self) -> None:
        """As a crash would: SIGKILL to the master (its workers notice and exit)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        stop(self.process, signal.SIGTERM, 30)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/ready", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def haproxy_config(port: int, hosts: list[Host], balance: str, default_event: str) -> str:
    """HAProxy in front of the hosts. Affinity: every request of one event goes to one host
    (consistent hashing on the event id from the path; the Node.js routes are the default
    event), the next host when that one is down. Health checks on /api/ready."""
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {BALANCES}")
    algorithm = (
        "hdr(X-TicketBoss-Event)\n    hash-type consistent"
        if balance == "affinity"
        else "roundrobin"
    )
    servers = "\n".join(f"    server {host.name} 127.0.0.1:{host.port} check" for host in hosts)
    # HAProxy needs two descriptors a connection and will not start above the hard limit.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    maxconn = 10_000 if hard == resource.RLIM_INFINITY else min(10_000, (hard - 100) // 2)
    return f"""global
    maxconn {maxconn}

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s
    # Only a connection that failed to open is tried on another host: a request that
    # reached a host is never sent twice (a POST could book twice).
    retries 2
    option redispatch
{_proxy_errors()}

frontend api
    bind 127.0.0.1:{port}
    # The hash key is ours alone: a client's own header of that name is dropped first.
    http-request del-header X-TicketBoss-Event
    http-request set-header X-TicketBoss-Event %[path,field(4,/)] if {{ path_beg /api/events/ }}
    http-request set-header X-TicketBoss-Event {default_event} if {{ path_beg /api/reservations }}
    default_backend hosts

backend hosts
    balance {algorithm}
    option httpchk GET /api/ready
    http-check expect status 200
    # A killed host refuses the check at once: down after 3 × 500 ms. A busy one answers
    # /api/ready behind its requests: give it 3 s, or the balancer would take a host that is
    # merely loaded out of rotation (and with all of them out, answer 503 itself).
    timeout check 3s
    default-server inter 500ms fall 3 rise 2
{servers}
"""


# What HAProxy says when it cannot reach a host (every one is out: their database has no
# writable primary, mid-failover; or it cannot connect, or a host did not answer in time):
# the service's own problem+json with Retry-After, as a host would answer, not HAProxy's
# HTML page. A client retries it with the same Idempotency-Key.
_PROXY_ERRORS = {
    502: "A host failed mid-request",
    503: "No host can serve right now (mid-failover?)",
    504: "A host did not answer in time",
}


def _proxy_errors() -> str:
    # Imported here: the bench imports this module with older revisions' ticketboss too.
    from ticketboss.problems import PROBLEM_JSON, problem_body

    lines = []
    for status, reason in _PROXY_ERRORS.items():
        detail = f"{reason}; retry later, with the same Idempotency-Key."
        body = json.dumps(problem_body(status, detail, "unavailable"))
        lines.append(
            f"    http-error status {status} content-type {PROBLEM_JSON}"
            f" hdr Retry-After 1 string '{body}'"
        )
    return "\n".join(lines)


class HAProxy:
    """Debian's HAProxy with `haproxy_config`, in the foreground (-db)."""

    def __init__(self, workdir: Path, port: int, hosts: list[Host], balance: str, event: str):
        self.port = port
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(haproxy_config(port, hosts, balance, event))
        self.log_path = workdir / "haproxy.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        check = subprocess.run(
            [HAPROXY, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused {self.config}: {check.stderr or check.stdout}")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(self.port, self.process, f"haproxy (log: {self.log_path})")

    def stop(self) -> None:
        stop(self.process, signal.SIGUSR1)  # soft stop: finish what is in flight


def ensure_redis(url: str = REDIS_URL) -> tuple[str, subprocess.Popen | None]:
    """A Redis for the cluster: the one answering at `url` (left running: others may use
    it), or one of its own on a free port, returned to be stopped with the cluster."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return url, None
    except OSError:
        pass
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(f"Redis does not answer at {url} and redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, process, "redis-server")
    except RuntimeError:
        stop(process)
        raise
    return f"redis://127.0.0.1:{port}/0", process
