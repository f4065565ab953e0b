"""A real pgbouncer (Debian's, installed by scripts/system-packages.sh) in transaction mode, on
a free loopback port in front of the test PostgreSQL, with a stock configuration."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from servers import free_port

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


class PgBouncer:
    """Start, stop (as an outage would) and start again on the same port."""

    def __init__(self, workdir: Path, upstream_host: str, upstream_port: int, user: str):
        self.dir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        # pgbouncer will not run as root; it drops to the postgres user and must read and
        # write its files as that user.
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
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
            f"pidfile = {self.dir / 'pgbouncer.pid'}\n"
        )

    def start(self) -> None:
        user = ["-u", "postgres"] if os.geteuid() == 0 else []
        self.process = subprocess.Popen(
            [BINARY, *user, str(self.dir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.process.poll() is None, self.log()
                assert time.monotonic() < deadline, "pgbouncer did not come up"
                time.sleep(0.05)

    def stop(self) -> None:
        """Kill it at once, as a crash or a pulled cable would: clients see their connections
        drop and new ones refused."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        (self.dir / "pgbouncer.pid").unlink(missing_ok=True)

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, database: str, user: str) -> str:
        return f"postgresql+psycopg2://{user}@127.0.0.1:{self.port}/{database}"
