"""The service under test and the machine: a fresh database, gunicorn started and
stopped, CPU read from /proc."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.report import gunicorn_shape
from bench.settings import BIN, GUNICORN_CONF, IMPORTED_FROM, PARTNERS
from ticketboss.config import PROJECT_ROOT
from ticketboss.domain import Role
from ticketboss.services.partners import create_key
from ticketboss.store.migrate import upgrade


def fresh_database(url: str) -> None:
    """Drop and recreate the bench database, then migrate it to head."""
    target = make_url(url)
    if "bench" not in target.database:
        sys.exit(f"refusing to drop {target.database!r}: a bench database name contains 'bench'")
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = admin.dialect.identifier_preparer.quote(target.database)
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {name}"))
    finally:
        admin.dispose()
    upgrade(url)


def free_port(preferred: int) -> int:
    """`preferred` if it can be bound on loopback, else a free port the kernel picks."""
    for port in (preferred, 0):
        with socket.socket() as probe, suppress(OSError):
            # As gunicorn binds: a port whose old connections linger in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
            return probe.getsockname()[1]
    raise RuntimeError("no free port on 127.0.0.1")


def start_service(env: dict, log_path: Path) -> subprocess.Popen:
    """gunicorn in its own session, so Ctrl-C reaches only us and we stop it in order. It
    runs in the tree of the ticketboss we imported (an A/B arm's worktree puts its src first
    on PYTHONPATH, for us and for gunicorn)."""
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [BIN / "gunicorn", "-c", "python:ticketboss.gunicorn_conf", "ticketboss.wsgi:app"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_healthy(proc: subprocess.Popen, port: int, log_path: Path, timeout: float = 30.0):
    """Poll GET /api/health until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}; see {log_path}")
        with suppress(URLError, OSError), urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
            return  # urlopen raises on anything but 2xx
        time.sleep(0.2)
    raise RuntimeError(f"/api/health not 200 within {timeout:.0f} s; see {log_path}")


def stop_service(proc: subprocess.Popen) -> None:
    """SIGTERM gunicorn (it stops its workers); SIGKILL its process group if anything lingers."""
    if proc.poll() is None:
        proc.terminate()
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def partner_keys(engine, workdir: Path) -> Path:
    """A key for each of PARTNERS partners, in a file for the load generator: client i acts
    for partner i % PARTNERS, as a few partner platforms share an on-sale."""
    path = workdir / "keys.txt"
    keys = [create_key(engine, f"partner-{i}", Role.PARTNER)[1] for i in range(PARTNERS)]
    path.write_text("".join(f"{key}\n" for key in keys))
    return path


def more_partner_keys(engine, keys_file: Path, count: int) -> Path:
    """A file beside `keys_file` with its keys (partner-0 … in order) and keys for the
    partners after them, up to partner-<count - 1>; made once, then reused."""
    path = keys_file.with_name(f"keys-{count}.txt")
    if not path.exists():
        keys = keys_file.read_text().split()
        keys += [
            create_key(engine, f"partner-{i}", Role.PARTNER)[1] for i in range(len(keys), count)
        ]
        path.write_text("".join(f"{key}\n" for key in keys))
    return path


def operator_key(engine, operator: str) -> str:
    """A new operator key of `operator` (created if absent)."""
    return create_key(engine, operator, Role.OPERATOR)[1]


def machine_facts(engine, env: dict) -> dict:
    """What the numbers were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?"
    )
    with engine.connect() as conn:
        postgres = conn.scalar(text("SHOW server_version"))
    # What gunicorn read: its config module, in a process of its own with the service's env.
    conf = json.loads(
        subprocess.run(
            [sys.executable, "-c", GUNICORN_CONF], env=env, check=True, capture_output=True
        ).stdout
    )
    revision = subprocess.run(
        ["git", "-C", PROJECT_ROOT, "describe", "--always", "--dirty"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "postgresql": postgres,
        "python": platform.python_version(),
        "gunicorn_workers": conf["workers"],
        "gunicorn_worker_class": conf["worker_class"] or "sync",
        "gunicorn_threads": conf["threads"],
        "gunicorn": gunicorn_shape(conf),
        "revision": revision or "?",
    }


def service_cpu(master_pid: int) -> dict[int, float]:
    """User + system CPU seconds so far of gunicorn's master and of each of its workers, by
    pid (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            # The command may hold spaces and parentheses: fields start after the last ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid, ppid = int(stat.parent.name), int(fields[1])
            if master_pid in (pid, ppid):
                seconds[pid] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def served_from(master_pid: int) -> str:
    """The file of the ticketboss package that gunicorn's workers import: `python -c` run with
    a worker's own environment and working directory, read from /proc (gunicorn puts that
    directory first on sys.path, as -c puts it)."""
    worker = next(pid for pid in service_cpu(master_pid) if pid != master_pid)
    proc = Path("/proc") / str(worker)
    pairs = (item.partition("=") for item in proc.joinpath("environ").read_text().split("\0"))
    env = {name: value for name, _, value in pairs if name}
    return subprocess.run(
        [sys.executable, "-c", IMPORTED_FROM],
        env=env,
        cwd=os.readlink(proc / "cwd"),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def machine_cpu_seconds() -> float:
    """CPU seconds every core spent busy so far (/proc/stat), whoever used them."""
    jiffies = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = jiffies[3] + jiffies[4]  # idle + iowait
    return (sum(jiffies[:8]) - idle) / os.sysconf("SC_CLK_TCK")
