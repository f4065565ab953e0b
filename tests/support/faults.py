"""A PostgreSQL and a Redis of a test's own, and `frozen` (SIGSTOP), to stall, fill or kill."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cluster.parts import free_port, stop, wait_for_port

_PG_BIN = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1]).parent


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own on a free loopback port (superuser `root`,
    trust auth; fsync off: its data is thrown away). As root it runs as `postgres`."""

    def __init__(self, **settings: object):
        self.dir = Path(tempfile.mkdtemp(prefix="ticketboss-pg-"))
        self.port = free_port()
        self.settings = {"fsync": "off", "listen_addresses": "127.0.0.1", **settings}
        self.dir.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *command: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*as_postgres, *command], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stderr or done.stdout}")

    def start(self) -> PrivatePostgres:
        data = self.dir / "data"
        if not data.exists():
            self._run(str(_PG_BIN / "initdb"), "-D", str(data), "-U", "root", "-A", "trust")
        options = " ".join(f"-c {name}={value}" for name, value in self.settings.items())
        self._run(
            str(_PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.dir / "postgres.log"),
            "-o",
            f"-p {self.port} -k {self.dir} {options}",
            "-w",
            "start",
        )
        return self

    def stop(self) -> None:
        self._cont()
        if (self.dir / "data" / "postmaster.pid").exists():
            self._run(
                str(_PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"
            )

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://root@127.0.0.1:{self.port}/{database}"

    def pids(self) -> list[int]:
        """The postmaster first, then its children (backends, checkpointer, …)."""
        postmaster = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        return [postmaster, *_children(postmaster)]

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Every process of the cluster stopped (SIGSTOP): the kernel still accepts
        connections and acknowledges what is sent, but nothing answers. The postmaster
        first, so that it forks no backend that would escape."""
        postmaster, *_ = self.pids()
        stopped = [postmaster]
        _signal(postmaster, signal.SIGSTOP)
        try:
            while fresh := [pid for pid in _children(postmaster) if pid not in stopped]:
                for pid in fresh:  # a fork in flight when the postmaster stopped shows late
                    _signal(pid, signal.SIGSTOP)
                stopped += fresh
                time.sleep(0.05)
            yield
        finally:
            for pid in reversed(stopped):
                _signal(pid, signal.SIGCONT)

    def _cont(self) -> None:
        pid_file = self.dir / "data" / "postmaster.pid"
        if pid_file.exists():
            for pid in self.pids():
                _signal(pid, signal.SIGCONT)


class PrivateRedis:
    """A Redis server of the test's own on a free loopback port, keeping nothing on disk."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, self.process, "redis-server")
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            _signal(self.process.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            _signal(self.process.pid, signal.SIGCONT)
        stop(self.process)

    @contextmanager
    def frozen(self) -> Iterator[None]:
        assert self.process is not None
        with frozen([self.process.pid]):
            yield


@contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """SIGSTOP to each process (in order), SIGCONT to each when the block ends."""
    for pid in pids:
        _signal(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in reversed(pids):
            _signal(pid, signal.SIGCONT)


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(line) for line in found.stdout.split()]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_until(predicate, seconds: float, every: float = 0.1) -> float:
    """Seconds until `predicate()` held; AssertionError if it did not within `seconds`."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(every)
    return time.monotonic() - began
