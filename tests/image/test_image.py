"""The container image as it is deployed (`make image-test`, after `make image`), run by buildah.

One working container of the image, its root read-only (its overlay mount remounted read-only
on the host) but for one volume at /var/lib/ticketboss, on the host's network: the one-off
commands (migrate, seed, partner create) against a fresh PostgreSQL database, then the image's
own command (gunicorn) on a free loopback port; reserve, cancel and the summary over HTTP from
the host; SIGTERM to gunicorn's master lets a request in flight finish, and it exits 0 within
the graceful timeout. Run with `-s` to see what each step printed.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from support.database import admin_engine

pytestmark = pytest.mark.image

IMAGE = os.environ.get("TICKETBOSS_IMAGE", "ticketboss:latest")
VOLUME = "/var/lib/ticketboss"
EVENT = "/api/events/node-meetup-2025"
GRACEFUL_TIMEOUT = 10  # gunicorn_conf.graceful_timeout
METRICS_TOKEN = "metrics-token-of-the-image-test"
KEY = re.compile(r"tbk_[0-9A-Za-z]{49}")


def report(step: str, what: str) -> None:
    print(f"[image] {step}: {what.strip()}")


def buildah(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["buildah", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"buildah {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


class Container:
    """A working container of the image whose root no process in it can write: its overlay
    mount is remounted read-only on the host. `buildah run` mounts the volume (`-v`) and
    writes /run/.containerenv, which it then deletes from the root as the host sees it: a
    host directory is bound at /run for it (root's, as the image's /run)."""

    def __init__(self, image: str, volume: Path, run_dir: Path, uid: int, gid: int):
        self.name = f"ticketboss-image-test-{uuid.uuid4().hex[:8]}"
        self.volume = volume
        buildah("from", "--pull=never", "--quiet", "--name", self.name, image)
        self.binds: list[Path] = []
        self.root = Path(buildah("mount", self.name))
        # What the image's user could write if the root were not read-only, by the modes;
        # before /run is covered.
        self.writable = writable_paths(self.root, uid, gid)
        self.binds.append(self.root / "run")
        subprocess.run(["mount", "--bind", str(run_dir), str(self.binds[-1])], check=True)
        subprocess.run(["mount", "-o", "remount,ro", str(self.root)], check=True)

    def command(self, *argv: str, env: dict[str, str] | None = None) -> list[str]:
        """`buildah run` of argv in the container: the image's user, working directory and
        environment, plus `env`; the volume; the host's network (chroot isolation has no
        other). Without `-v`, buildah would mount a directory of its own at the image's
        VOLUME."""
        options = ["--isolation", "chroot", "--network", "host", "-v", f"{self.volume}:{VOLUME}"]
        for name, value in (env or {}).items():
            options += ["--env", f"{name}={value}"]
        return ["buildah", "run", *options, self.name, "--", *argv]

    def run(self, *argv: str, env=None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(*argv, env=env), capture_output=True, text=True, timeout=timeout
        )

    def close(self) -> None:
        for path in reversed(self.binds):
            subprocess.run(["umount", str(path)], check=False)
        buildah("rm", self.name)


def writable_paths(root: Path, uid: int, gid: int) -> dict[str, int]:
    """Directories and files under `root` that `uid`:`gid` may write by their modes, with their
    modes (/dev, /proc and /sys are the runtime's)."""
    found = {}
    for top, dirs, files in os.walk(root):
        here = "/" + os.path.relpath(top, root).removeprefix(".").lstrip("/")
        if here in ("/dev", "/proc", "/sys"):
            dirs.clear()
            continue
        for name in (".", *files):
            path = os.path.join(top, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                continue
            if (
                (info.st_uid == uid and info.st_mode & stat.S_IWUSR)
                or (info.st_gid == gid and info.st_mode & stat.S_IWGRP)
                or info.st_mode & stat.S_IWOTH
            ):
                found[here if name == "." else os.path.join(here, name)] = info.st_mode
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, parents before children."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(0), [])
        found += children
        todo += children
    return found


def is_gunicorn(pid: int) -> bool:
    """By its name: buildah's chroot helper above it shows gunicorn's command line too."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "gunicorn"
    except OSError:  # gone
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(port: int, method: str, path: str, body=None, headers=None):
    """(status, headers, parsed body or None) of one request over a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = dict(headers or {})
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = conn.getresponse()
        data = response.read()
        if "json" in (response.headers["Content-Type"] or ""):
            return response.status, response.headers, json.loads(data)
        return response.status, response.headers, data
    finally:
        conn.close()


class Server:
    """The image's command, run by `buildah run` in the background, its output in `log`."""

    def __init__(self, process: subprocess.Popen, port: int, log: Path):
        self.process, self.port, self.log = process, port, log

    def master(self) -> int:
        """gunicorn's master (no PID namespace under chroot isolation: a host pid)."""
        gunicorns = [pid for pid in descendants(self.process.pid) if is_gunicorn(pid)]
        workers = {pid for master in gunicorns for pid in descendants(master)}
        masters = [pid for pid in gunicorns if pid not in workers]
        assert len(masters) == 1, self.log.read_text()
        return masters[0]

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if call(self.port, "GET", "/api/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready within {seconds} s:\n{self.log.read_text()}")

    def wait_for_log(self, line: str, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while line not in self.log.read_text():
            assert time.monotonic() < deadline, f"no {line!r} in:\n{self.log.read_text()}"
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM to the master if it still runs; SIGKILL to whatever is left after 15 s."""
        if self.process.poll() is not None:
            return
        procs = descendants(self.process.pid)
        try:
            os.kill(self.master(), signal.SIGTERM)
            self.process.wait(timeout=15)
        except (AssertionError, ProcessLookupError, subprocess.TimeoutExpired):
            for pid in reversed([self.process.pid, *procs]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def image():
    """The image's configuration (OCI), and its HEALTHCHECK (Docker format only)."""
    data = json.loads(buildah("inspect", "--type", "image", IMAGE))
    return data["OCIv1"]["config"], data["Docker"]["config"].get("Healthcheck")


@pytest.fixture(scope="module")
def database_url():
    """A fresh PostgreSQL database on the tests' server, dropped afterwards."""
    server, admin = admin_engine()
    name = f"ticketboss_image_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def volume(tmp_path_factory, image):
    """The volume's directory on the host, the image user's (as Kubernetes' fsGroup makes it)."""
    uid, gid = (int(n) for n in image[0]["User"].split(":"))
    path = tmp_path_factory.mktemp("volume")
    os.chown(path, uid, gid)
    path.chmod(0o750)
    return path


@pytest.fixture(scope="module")
def container(tmp_path_factory, image, volume):
    uid, gid = (int(n) for n in image[0]["User"].split(":"))
    box = Container(IMAGE, volume, tmp_path_factory.mktemp("run"), uid, gid)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture(scope="module")
def one_offs(container, database_url):
    """migrate, seed and partner create, each a one-off command of the image."""
    env = {"DATABASE_URL": database_url}
    done = {}
    for name, argv in (
        ("migrate", ["ticketboss", "migrate"]),
        ("seed", ["ticketboss", "seed"]),
        ("partner", ["ticketboss", "partner", "create", "image-test"]),
    ):
        done[name] = container.run(*argv, env=env)
        assert done[name].returncode == 0, done[name].stderr
    return done


@pytest.fixture(scope="module")
def key(one_offs) -> str:
    return one_offs["partner"].stdout.strip()


@pytest.fixture(scope="module")
def served(container, image, one_offs, database_url, tmp_path_factory):
    """The image's own command on a free port of the loopback (HOST: the image's 0.0.0.0 would
    listen on every address of the host's network)."""
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    env = {
        "DATABASE_URL": database_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            container.command(*image[0]["Cmd"], env=env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port, log)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_the_image_is_configured_for_a_container_runtime(image, container):
    config, healthcheck = image
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == [
        "gunicorn",
        "-c",
        "python:ticketboss.gunicorn_conf",
        "ticketboss.wsgi:app",
    ]
    assert not config.get("Entrypoint")
    assert config["StopSignal"] == "SIGTERM"
    assert list(config["ExposedPorts"]) == [f"{env['PORT']}/tcp"]
    assert list(config["Volumes"]) == [VOLUME]
    assert env["HOST"] == "0.0.0.0"
    assert env["DATABASE_URL"] == f"sqlite:///{VOLUME}/ticketboss.sqlite3"
    assert healthcheck and "/api/health" in " ".join(healthcheck["Test"])
    # Nothing of the build stage: no pip, no compiler, no wheels.
    tools = container.run(
        "sh", "-c", "python3 -m pip --version; command -v gcc cc; ls /wheels /opt/build"
    )
    assert "No module named pip" in tools.stderr
    assert tools.stdout == "", tools.stdout
    report("config", f"User {config['User']}, Cmd {' '.join(config['Cmd'])}, env {env}")


def test_its_user_writes_nowhere_but_the_volume(container, image, tmp_path_factory):
    # By the modes of the image's files: only the volume, and the world-writable sticky
    # directories every Debian has (/tmp, /var/tmp, /run/lock).
    writable = container.writable
    assert [path for path, mode in writable.items() if not mode & stat.S_ISVTX] == [VOLUME]
    report("writable by uid 10001 (modes)", ", ".join(sorted(writable)))

    probe = (
        "import sys\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        open(path, 'w').close()\n"
        "        print(path, 'written')\n"
        "    except OSError as exc:\n"
        "        print(path, type(exc).__name__, exc.errno)\n"
    )
    paths = ["/app/x", "/opt/venv/x", "/etc/x", "/x", "/tmp/x", f"{VOLUME}/x"]
    # On the read-only root: nothing but the volume, /tmp included (TMPDIR is /dev/shm).
    done = container.run("python3", "-c", probe, *paths)
    outcome = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    refused = f"OSError {errno.EROFS}"
    assert outcome == {**dict.fromkeys(paths[:-1], refused), f"{VOLUME}/x": "written"}, done
    report("read-only root", done.stdout.replace("\n", "; "))

    # Without it (a runtime that does not make the root read-only), as the image's user: the
    # files are root's.
    plain = f"ticketboss-image-test-{uuid.uuid4().hex[:8]}"
    buildah("from", "--pull=never", "--quiet", "--name", plain, IMAGE)
    try:
        done = subprocess.run(
            [
                "buildah",
                "run",
                "--isolation",
                "chroot",
                plain,
                "--",
                "python3",
                "-c",
                probe,
                *paths[:4],
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        buildah("rm", plain)
    outcome = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert outcome == dict.fromkeys(paths[:4], f"PermissionError {errno.EACCES}"), done
    report("writable root, uid 10001", done.stdout.replace("\n", "; "))


def test_without_database_url_sqlite_lives_on_the_volume(container, volume):
    done = container.run("ticketboss", "migrate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"migrated sqlite:///{VOLUME}/ticketboss.sqlite3 to head"
    assert (volume / "ticketboss.sqlite3").stat().st_uid == 10001
    report("migrate (SQLite)", done.stdout)


def test_one_off_commands_migrate_seed_and_create_a_partner_key(one_offs, database_url):
    name = database_url.rsplit("/", 1)[1]
    migrated = one_offs["migrate"].stdout
    assert re.fullmatch(rf"migrated postgresql\+psycopg2://\S+/{name} to head\n", migrated)
    assert one_offs["seed"].stdout == "created node-meetup-2025: 500 seats\n"
    assert KEY.fullmatch(one_offs["partner"].stdout.strip()), one_offs["partner"].stdout
    assert "created partner image-test" in one_offs["partner"].stderr
    for step, done in one_offs.items():
        report(step, done.stdout if step != "partner" else done.stderr + "  <key on stdout>")


def test_the_server_runs_as_its_user_with_two_workers(served):
    master = served.master()
    workers = [pid for pid in descendants(master) if is_gunicorn(pid)]
    uids = {
        line.split()[1]
        for pid in (master, *workers)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("Uid:")
    }
    assert uids == {"10001"}
    assert len(workers) == 2
    report("gunicorn", f"master {master}, workers {workers}, uid {uids.pop()}")


def test_health_ready_and_the_healthcheck(served, container, image):
    assert call(served.port, "GET", "/api/health")[::2] == (200, {"status": "UP"})
    assert call(served.port, "GET", "/api/ready")[::2] == (200, {"status": "READY"})
    test = image[1]["Test"]
    assert test[0] == "CMD"
    healthy = container.run(*test[1:], env={"PORT": str(served.port)}, timeout=30)
    assert healthy.returncode == 0, healthy.stderr
    unhealthy = container.run(*test[1:], env={"PORT": str(free_port())}, timeout=30)
    assert unhealthy.returncode != 0
    report(
        "HEALTHCHECK",
        f"exit {healthy.returncode} while serving, {unhealthy.returncode} with nothing on the port",
    )


def test_reserve_cancel_and_summary_over_http(served, key, volume):
    auth = {"Authorization": f"Bearer {key}"}
    status, _, body = call(
        served.port,
        "POST",
        f"{EVENT}/reservations",
        {"seats": 3},
        {**auth, "Idempotency-Key": "image-reserve"},
    )
    assert status == 201, body
    assert body["seats"] == 3 and body["status"] == "confirmed"
    report("reserve", f"{status} {json.dumps(body)}")
    reservation = body["reservationId"]
    status, _, body = call(
        served.port,
        "DELETE",
        f"{EVENT}/reservations/{reservation}",
        headers={**auth, "Idempotency-Key": "image-cancel"},
    )
    assert status == 204, body
    report("cancel", str(status))
    status, _, body = call(served.port, "GET", EVENT, headers=auth)
    assert status == 200
    assert body == {
        "availableSeats": 500,
        "eventId": "node-meetup-2025",
        "heldSeats": 0,
        "name": "Node.js Meet-up",
        "reservationCount": 0,
        "totalSeats": 500,
        "version": 2,
    }
    report("summary", f"{status} {json.dumps(body)}")
    # The workers keep their counters on the volume (PROMETHEUS_MULTIPROC_DIR's default).
    status, _, _ = call(
        served.port, "GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert status == 200
    assert list((volume / f"prometheus-{served.port}").glob("*.db"))


def test_sigterm_drains_a_request_in_flight_and_exits_0(served, key, database_url):
    body = json.dumps({"seats": 2}).encode()
    head = (
        f"POST {EVENT}/reservations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Idempotency-Key: image-drain\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=20) as client:
        # In flight: its headers are in, its body is not yet.
        client.sendall(head + body[:4])
        master = served.master()
        os.kill(master, signal.SIGTERM)
        sent = time.monotonic()
        served.wait_for_log("Handling signal: term")
        time.sleep(0.5)  # the workers stop accepting within 0.1 s of the master's TERM
        client.sendall(body[4:])
        response = http.client.HTTPResponse(client)
        response.begin()
        answer = json.loads(response.read())
        answered = time.monotonic()
        # Then the worker closes the connection: at once if it answered `Connection: close`,
        # else (the answer was under way at the signal) once it idled KEEPALIVE_SECONDS.
        closed = client.recv(1) == b""
        idle = time.monotonic() - answered
    assert response.status == 201, answer
    assert closed
    returncode = served.process.wait(timeout=GRACEFUL_TIMEOUT + 5)
    took = time.monotonic() - sent
    log = served.log.read_text()
    assert returncode == 0, log
    assert took < GRACEFUL_TIMEOUT, log
    assert "Shutting down: Master" in log
    assert "Traceback" not in log
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            booked = conn.execute(
                text("SELECT seats, status FROM reservations WHERE id = :id"),
                {"id": answer["reservationId"]},
            ).one()
    finally:
        engine.dispose()
    assert tuple(booked) == (2, "confirmed")
    report(
        "in flight at SIGTERM",
        f"{response.status} {json.dumps(answer)}, Connection: {response.headers['Connection']}, "
        f"closed by the server {idle:.2f} s after the answer",
    )
    report("exit", f"status {returncode}, {took:.2f} s after SIGTERM")
    shutdown = log[log.rfind("\n", 0, log.index("Handling signal: term")) + 1 :]
    report("log", "\n".join(line for line in shutdown.splitlines() if line.startswith("[")))
