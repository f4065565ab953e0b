"""The cluster as one object: start it (Redis, pgbouncer, migrate and seed through it, the
hosts, HAProxy), find its parts, stop it in order."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from sqlalchemy.engine import make_url

from cluster.parts import REDIS_URL, HAProxy, Host, PgBouncer, ensure_redis, free_port
from ticketboss.store.migrate import create_database_if_missing

DEFAULT_DATABASE_URL = "postgresql+psycopg2://root@127.0.0.1:5432/ticketboss_cluster"
TICKETBOSS = Path(sys.executable).parent / "ticketboss"


class Cluster:
    """pgbouncer in front of the PostgreSQL of `database_url`, `hosts` gunicorn hosts of
    `workers` workers each, and HAProxy on `port` (0: any free one) in front of them."""

    def __init__(
        self,
        database_url: str = DEFAULT_DATABASE_URL,
        *,
        hosts: int = 3,
        port: int = 0,
        balance: str = "affinity",
        workers: int = 1,
        workdir: Path | None = None,
        **settings,
    ):
        upstream = make_url(database_url)
        if upstream.get_backend_name() != "postgresql":
            raise ValueError("a cluster needs PostgreSQL: set DATABASE_URL=postgresql+psycopg2://…")
        self.upstream = upstream
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="ticketboss-cluster-"))
        self.dir.chmod(0o755)  # pgbouncer runs as postgres and must reach its own directory
        self.pgbouncer = PgBouncer(
            self.dir / "pgbouncer",
            upstream.host or "127.0.0.1",
            upstream.port or 5432,
            upstream.username or "postgres",
        )
        self.database_url = upstream.set(host="127.0.0.1", port=self.pgbouncer.port)
        through = self.database_url.render_as_string(hide_password=False)
        # Every host's /metrics wants this token: the environment's, or a new one.
        token = os.environ.get("METRICS_TOKEN") or secrets.token_urlsafe(32)
        settings.setdefault("METRICS_TOKEN", token)
        self.metrics_token = str(settings["METRICS_TOKEN"])
        # Behind HAProxy every client has its address: a per-address limit of failed keys
        # would shut every partner out for one client's mistakes (limit at the proxy).
        settings.setdefault(
            "AUTH_FAILURES_PER_MINUTE", os.environ.get("AUTH_FAILURES_PER_MINUTE", "0")
        )
        # Webhooks: LISTEN needs a session of its own, which pgbouncer's transaction pooling
        # cannot give, so the dispatchers listen on PostgreSQL itself; and every host must
        # decrypt the secrets any host stored: one key for all (this checkout's, unless set).
        settings.setdefault(
            "WEBHOOK_LISTEN_URL",
            os.environ.get("WEBHOOK_LISTEN_URL") or upstream.render_as_string(hide_password=False),
        )
        settings.setdefault(
            "WEBHOOK_SECRET_KEYS", os.environ.get("WEBHOOK_SECRET_KEYS") or _local_secret_key()
        )
        self.hosts = [
            Host(f"host{i + 1}", self.dir, through, workers, **settings) for i in range(hosts)
        ]
        self.default_event = os.environ.get("DEFAULT_EVENT_ID") or "node-meetup-2025"
        self.haproxy = HAProxy(
            self.dir, port or free_port(), self.hosts, balance, self.default_event
        )
        self._redis: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.haproxy.port}"

    def start(self) -> Cluster:
        try:
            redis_url, self._redis = ensure_redis(REDIS_URL)
            for host in self.hosts:  # the partners' rate limit, shared by every host
                host.env.setdefault("RATELIMIT_STORAGE_URI", redis_url)
            create_database_if_missing(self.upstream.render_as_string(hide_password=False))
            self.pgbouncer.start()
            through = {**os.environ, "DATABASE_URL": self.database_url.render_as_string(False)}
            for command in (["migrate"], ["seed"]):  # through pgbouncer, as the hosts go
                subprocess.run(
                    [TICKETBOSS, *command], env=through, check=True, stdout=subprocess.DEVNULL
                )
            for host in self.hosts:
                host.start()
            self.haproxy.start()
            self.wait_until_served()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_served(self, seconds: float = 30) -> None:
        """Until HAProxy answers /api/ready from a host it checked as up."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/api/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not answer at {self.url}")
            time.sleep(0.1)

    def stop(self) -> None:
        """HAProxy first (no new requests), then the hosts (they finish theirs), pgbouncer."""
        self.haproxy.stop()
        for host in self.hosts:
            host.stop()
        self.pgbouncer.stop()
        if self._redis is not None:
            self._redis.terminate()
            self._redis.wait(10)
            self._redis = None

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *_) -> None:
        self.stop()


def _local_secret_key() -> str:
    """This checkout's WEBHOOK_SECRET_KEYS (`ticketboss webhooks local-key`, as make run)."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ticketboss")), "webhooks", "local-key"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()
