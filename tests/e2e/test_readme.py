"""The README's five-minute tour, run verbatim with bash against `make run`, so the front door
cannot go stale: every command of its ```bash block after `<!-- tour` runs in order, and
every answer the README shows (the "# " lines right after a command, "…" for anything) and
every status it promises is checked."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cluster.parts import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = "<!-- tour"
STEP_END = "@@ tour step done @@"
START_SECONDS = 120  # make install is a no-op on an installed checkout; migrate + seed + boot
TOUR_SECONDS = 90
STOP_SECONDS = 30


@dataclass(frozen=True)
class Step:
    commands: str
    shown: list[str]  # the output lines the README shows after the commands


@dataclass(frozen=True)
class Answer:
    """One `curl -si` answer: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> dict:
        return json.loads(self.body)


def tour_steps(readme: str) -> list[Step]:
    """The tour's steps: paragraphs of its bash block, each leading "# " lines (prose), then
    its commands, then the "# " lines that show what they print."""
    start = readme.index(MARKER)
    block = re.search(r"```bash\n(.*?)```", readme[start:], re.DOTALL)
    assert block, "the tour marker is followed by a ```bash block"
    steps = []
    for paragraph in block.group(1).strip().split("\n\n"):
        lines = paragraph.splitlines()
        while lines and lines[0].startswith("#"):
            lines.pop(0)
        shown = []
        while lines and lines[-1].startswith("#"):
            shown.insert(0, lines.pop()[2:])
        assert lines, f"a tour step without a command: {paragraph!r}"
        steps.append(Step("\n".join(lines), shown))
    return steps


def shown_as_pattern(line: str) -> re.Pattern:
    """A line the README shows, as a pattern of a whole output line: "…" stands for anything."""
    return re.compile(".*".join(re.escape(part) for part in line.split("…")))


def assert_shown(step: Step, output: str) -> None:
    """Every line the README shows after the step's commands is printed by them, in order."""
    printed = [line.rstrip() for line in output.splitlines()]
    at = 0
    for line in step.shown:
        pattern = shown_as_pattern(line)
        while at < len(printed) and not pattern.fullmatch(printed[at]):
            at += 1
        assert at < len(printed), (
            f"README shows {line!r} after\n{step.commands}\nbut it printed\n{output}"
        )
        at += 1


def answer(output: str) -> Answer:
    """The answer `curl -si` printed."""
    head, _, body = output.replace("\r\n", "\n").partition("\n\n")
    status_line, *header_lines = head.strip().splitlines()
    headers = dict(line.split(": ", 1) for line in header_lines)
    return Answer(int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body)


def environment(**settings: str) -> dict[str, str]:
    """A terminal's environment, not that of a make that may have started pytest."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS")
    }
    return {**env, **settings}


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop_group(process: subprocess.Popen, sig: int) -> bool:
    """Signal the process's whole group (as Ctrl-C does a terminal's); True if it ended in
    time, else it is killed."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        process.wait(STOP_SECONDS)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def tour_database(request, tmp_path):
    """A database of the tour's own, which `make run` creates and seeds: a SQLite file, as on a
    fresh clone without DATABASE_URL, or a PostgreSQL database on the test server, dropped
    afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ticketboss.sqlite3'}"
        return
    url = make_url(request.getfixturevalue("pg_url"))
    tour_url = url.set(database=f"{url.database}_readme")
    yield tour_url.render_as_string(hide_password=False)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{tour_url.database}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def make_run(tour_database, tmp_path):
    """`make run` on a free port, as the README starts it; its port, stopped with Ctrl-C."""
    port = free_port()
    log_path = tmp_path / "make-run.log"
    metrics = tmp_path / "prometheus"
    metrics.mkdir()
    env = environment(
        PORT=str(port), DATABASE_URL=tour_database, PROMETHEUS_MULTIPROC_DIR=str(metrics)
    )
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["make", "run"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_SECONDS
        while not ready(port):
            assert process.poll() is None, f"make run exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"make run not ready:\n{log_path.read_text()}"
            time.sleep(0.2)
        yield port, tour_database
    finally:
        stopped = stop_group(process, signal.SIGINT)
    log = log_path.read_text()
    assert stopped, f"make run did not stop on Ctrl-C within {STOP_SECONDS} s:\n{log}"
    assert "Traceback" not in log, log


def run_tour(steps: list[Step], port: int, database_url: str) -> list[str]:
    """The steps' commands in one bash, as pasted into a terminal (stopping at the first that
    fails); what each printed on stdout."""
    script = "set -euo pipefail\n" + "".join(
        f"{step.commands}\nprintf '\\n%s\\n' '{STEP_END}'\n" for step in steps
    )
    bash = subprocess.Popen(
        ["bash", "-c", script],
        cwd=ROOT,
        env=environment(PORT=str(port), DATABASE_URL=database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = bash.communicate(timeout=TOUR_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(bash.pid, signal.SIGKILL)
        stdout, stderr = bash.communicate()
        pytest.fail(f"the tour took more than {TOUR_SECONDS} s:\n{stdout}\n{stderr}")
    assert bash.returncode == 0, f"the tour failed ({bash.returncode}):\n{stdout}\n{stderr}"
    outputs = stdout.split(f"\n{STEP_END}\n")
    assert outputs.pop() == "", stdout
    assert len(outputs) == len(steps), stdout
    return outputs


def test_the_readme_tour_runs_against_make_run_and_prints_what_the_readme_shows(make_run):
    port, database_url = make_run
    steps = tour_steps(README.read_text())
    # The tour's steps, in order, each known by what its commands must say.
    tour = ("make -s partner", "/reservations", "/reservations", "/holds", "/confirm", "-X DELETE")
    assert len(steps) == len(tour) + 1, [step.commands for step in steps]
    for step, says in zip(steps[:-1], tour, strict=True):
        assert says in step.commands, (says, step.commands)
    assert steps[-1].commands.startswith("curl -s $TB "), steps[-1].commands

    outputs = run_tour(steps, port, database_url)
    for step, output in zip(steps, outputs, strict=True):
        assert_shown(step, output)

    _setup, reserve, replay, hold, confirm, cancel, summary = outputs
    booked = answer(reserve)
    assert booked.status == 201
    order = booked.json()
    assert order["seats"] == 5 and order["status"] == "confirmed"
    assert booked.headers["location"].endswith(f"/reservations/{order['reservationId']}")
    assert "idempotent-replayed" not in booked.headers

    again = answer(replay)
    assert again.status == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == order  # the first answer, not a second booking

    held = answer(hold)
    assert held.status == 201
    assert held.json()["status"] == "held" and held.json()["seats"] == 4
    assert held.json()["expiresAt"]

    confirmed = answer(confirm)
    assert confirmed.status == 200
    assert confirmed.json() == {
        "reservationId": held.json()["reservationId"],
        "seats": 4,
        "status": "confirmed",
    }

    cancelled = answer(cancel)
    assert cancelled.status == 204 and cancelled.body.strip() == ""

    assert json.loads(summary) == {
        "availableSeats": 496,
        "eventId": "node-meetup-2025",
        "heldSeats": 0,
        "name": "Node.js Meet-up",
        "reservationCount": 1,
        "totalSeats": 500,
        "version": 4,
    }
