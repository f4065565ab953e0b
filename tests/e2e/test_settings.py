"""A setting that cannot be used stops every entry point in one line on stderr, naming the
variable, its value and the rule (`ticketboss: HOLD_TTL_SECONDS=900: must be between 1 and
HOLD_MAX_SECONDS (20)`), with a non-zero exit and no traceback: the `ticketboss` commands
(exit status 2), gunicorn's master before it binds or boots a worker (1), and `make run`.

Every process is started as an operator starts it, all at once (one process start costs
about a second), before the tests read what each one said."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from cluster.parts import free_port
from ticketboss.config import ServerSettings, SettingError, Settings

BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parents[2]
GUNICORN = [str(BIN / "gunicorn"), "-c", "python:ticketboss.gunicorn_conf", "ticketboss.wsgi:app"]
DATABASE_RULE = (
    "must be a URL like sqlite:///<file> or "
    "postgresql+psycopg2://<user>:<password>@<host>:5432/<name>"
)

# The bad settings every entry point is tried with, and the line each must print.
BAD = {
    "an inconsistent pair": (
        {"HOLD_MAX_SECONDS": "20"},  # below the default HOLD_TTL_SECONDS
        "HOLD_TTL_SECONDS=900: must be between 1 and HOLD_MAX_SECONDS (20)",
    ),
    "an unparseable integer": ({"DB_POOL_SIZE": "abc"}, "DB_POOL_SIZE=abc: must be a whole number"),
    "an out-of-range number": (
        {"REQUEST_DEADLINE_SECONDS": "-1"},
        "REQUEST_DEADLINE_SECONDS=-1: must be above 0",
    ),
    "a database of no supported kind": (
        {"DATABASE_URL": "mysql://root@127.0.0.1/ticketboss"},
        f"DATABASE_URL=mysql://root@127.0.0.1/ticketboss: {DATABASE_RULE}",
    ),
}
COMMANDS = {
    "migrate": ["migrate"],
    "seed": ["seed"],
    "partner list": ["partner", "list"],
}
# The rest of the command, with one bad setting: the group catches it for every command.
OTHER_COMMANDS = {
    "allocations list": ["allocations", "list", "node-meetup-2025"],
    "webhooks reencrypt": ["webhooks", "reencrypt"],
}
# make's own line when a recipe fails (make[1]: under make test).
MAKE_FAILED = re.compile(r"make(\[\d+\])?: \*\*\* \[Makefile:\d+: [a-z-]+\] Error \d+")


@dataclass(frozen=True)
class Run:
    said: str  # the line it must print
    done: subprocess.CompletedProcess
    database: Path  # the SQLite file it was given, which it must never have opened


def environment(tmp: Path, settings: dict[str, str]) -> tuple[dict[str, str], Path]:
    """This test run's environment without any TicketBoss setting (or make's own variables),
    then a SQLite file under `tmp` and `settings`."""
    names = {f.name.upper() for cls in (Settings, ServerSettings) for f in fields(cls)}
    names |= {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PROMETHEUS_MULTIPROC_DIR"}
    tmp.mkdir(parents=True)
    database = tmp / "ticketboss.sqlite3"
    env = {k: v for k, v in os.environ.items() if k not in names}
    env |= {"DATABASE_URL": f"sqlite:///{database}", "PORT": str(free_port())}
    return env | settings, database


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, str], Run]:
    """Each entry point with each bad setting, started together; what each said."""
    root = tmp_path_factory.mktemp("settings")
    planned: dict[tuple[str, str], tuple[list[str], str, dict[str, str], Path]] = {}

    def plan(entry: str, case: str, argv: list[str], settings: dict[str, str] | None = None):
        env, database = environment(
            root / f"{len(planned)}", BAD[case][0] if settings is None else settings
        )
        planned[entry, case] = (argv, BAD[case][1], env, database)

    ticketboss = str(BIN / "ticketboss")
    for case in BAD:
        for entry, args in COMMANDS.items():
            plan(entry, case, [ticketboss, *args])
        plan("gunicorn", case, GUNICORN)
    for entry, args in OTHER_COMMANDS.items():
        plan(entry, "an inconsistent pair", [ticketboss, *args])
    plan("make run", "an inconsistent pair", ["make", "-C", str(PROJECT), "run"])
    # `gunicorn -e` sets its variables after the config file is read: on_starting checks them.
    gunicorn_e = [GUNICORN[0], "-e", "HOLD_MAX_SECONDS=20", *GUNICORN[1:]]
    plan("gunicorn -e", "an inconsistent pair", gunicorn_e, settings={})

    def start(key):
        argv, said, env, database = planned[key]
        done = subprocess.run(
            argv, env=env, cwd=database.parent, capture_output=True, text=True, timeout=60
        )
        return key, Run(said, done, database)

    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) + 2) as pool:
        return dict(pool.map(start, planned))


def one_line(run: Run, status: int) -> None:
    done = run.done
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert (done.returncode, done.stderr) == (status, f"ticketboss: {run.said}\n")
    assert not run.database.exists()  # stopped before any connection


@pytest.mark.parametrize("case", BAD)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_says_a_bad_setting_in_one_line_and_exits_2(runs, command, case):
    one_line(runs[command, case], 2)


@pytest.mark.parametrize("command", OTHER_COMMANDS)
def test_every_other_command_says_it_the_same_way(runs, command):
    one_line(runs[command, "an inconsistent pair"], 2)


@pytest.mark.parametrize("case", BAD)
def test_gunicorn_says_a_bad_setting_in_one_line_and_never_boots_a_worker(runs, case):
    one_line(runs["gunicorn", case], 1)


def test_gunicorn_checks_the_settings_it_is_given_with_e_before_it_binds(runs):
    run = runs["gunicorn -e", "an inconsistent pair"]
    *before, last = run.done.stderr.splitlines()
    assert run.done.returncode == 1 and "Traceback" not in run.done.stderr, run.done.stderr
    assert last == f"ticketboss: {run.said}"
    # gunicorn has announced itself, and done nothing else: no socket, no worker.
    assert len(before) == 1 and "Starting gunicorn" in before[0], run.done.stderr


def test_make_run_stops_at_the_first_command_with_one_line_besides_make_s_own(runs):
    run = runs["make run", "an inconsistent pair"]
    assert run.done.returncode != 0 and "Traceback" not in run.done.stderr + run.done.stdout
    lines = run.done.stderr.splitlines()
    ours = [line for line in lines if not MAKE_FAILED.fullmatch(line)]
    assert ours == [f"ticketboss: {run.said}"] and len(lines) == 2, run.done.stderr
    assert not run.database.exists() and "Listening at" not in run.done.stdout


# Every rule, in this process (the entry points above print exactly this str).
RULES = [
    (
        {"HOLD_TTL_SECONDS": "8000"},
        "HOLD_TTL_SECONDS=8000: must be between 1 and HOLD_MAX_SECONDS (7200)",
    ),
    (
        {"HOLD_TTL_SECONDS": "-5"},
        "HOLD_TTL_SECONDS=-5: must be between 1 and HOLD_MAX_SECONDS (7200)",
    ),
    ({"REQUEST_DEADLINE_SECONDS": "0"}, "REQUEST_DEADLINE_SECONDS=0: must be above 0"),
    ({"REQUEST_DEADLINE_SECONDS": "inf"}, "REQUEST_DEADLINE_SECONDS=inf: must be a finite number"),
    ({"CAS_MAX_SECONDS": "5s"}, "CAS_MAX_SECONDS=5s: must be a number"),
    ({"CAS_SWAPS_PER_TRANSACTION": "0"}, "CAS_SWAPS_PER_TRANSACTION=0: must be 1 or more"),
    (
        {"PARTNER_MAX_HELD_SEATS": "-1"},
        "PARTNER_MAX_HELD_SEATS=-1: must be 0 or more (0: no limit)",
    ),
    ({"PARTNER_MAX_POOL_SEATS": "-1"}, "PARTNER_MAX_POOL_SEATS=-1: must be 0 or more (0: no cap)"),
    ({"WEBHOOK_MAX_ATTEMPTS": "0"}, "WEBHOOK_MAX_ATTEMPTS=0: must be 1 or more"),
    ({"WEBHOOK_RETRY_BASE_SECONDS": "0"}, "WEBHOOK_RETRY_BASE_SECONDS=0: must be above 0"),
    ({"AUTH_MODE": "Keys"}, "AUTH_MODE=Keys: must be one of keys, open"),
    ({"AUTH_MODE": "keys "}, "AUTH_MODE='keys ': must be one of keys, open"),
    (
        {"WEBHOOKS_ALLOW_PRIVATE": "maybe"},
        "WEBHOOKS_ALLOW_PRIVATE=maybe: must be 1 or 0 (or true/false, yes/no, on/off)",
    ),
    (
        {"DATABASE_URL": "postgresql+asyncpg://root@db/tb"},
        f"DATABASE_URL=postgresql+asyncpg://root@db/tb: {DATABASE_RULE}",
    ),
    ({"DATABASE_URL": "/var/lib/tb.sqlite3"}, f"DATABASE_URL=/var/lib/tb.sqlite3: {DATABASE_RULE}"),
    (
        {"WEBHOOK_LISTEN_URL": "sqlite:///x.db"},
        "WEBHOOK_LISTEN_URL=sqlite:///x.db: must be a URL like "
        "postgresql+psycopg2://<user>:<password>@<host>:5432/<name>",
    ),
]
SERVER_RULES = [
    ({"PORT": "http"}, "PORT=http: must be a whole number"),
    ({"PORT": "70000"}, "PORT=70000: must be between 1 and 65535"),
    ({"WORKER_CLASS": "sync"}, "WORKER_CLASS=sync: must be one of gevent, gthread"),
    (
        {"KEEPALIVE_SECONDS": "0"},
        "KEEPALIVE_SECONDS=0: must be 1 or more (it bounds how long headers may take)",
    ),
    ({"REUSE_PORT": "2"}, "REUSE_PORT=2: must be 1 or 0 (or true/false, yes/no, on/off)"),
]


@pytest.mark.parametrize(("environ", "said"), [*BAD.values(), *RULES])
def test_every_rule_names_the_variable_its_value_and_the_rule(environ, said):
    with pytest.raises(SettingError) as raised:
        Settings.from_env(environ)
    assert str(raised.value) == said


@pytest.mark.parametrize(("environ", "said"), SERVER_RULES)
def test_every_server_rule_names_the_variable_its_value_and_the_rule(environ, said):
    with pytest.raises(SettingError) as raised:
        ServerSettings.from_env(environ)
    assert str(raised.value) == said


def test_a_password_or_a_secret_key_is_never_in_the_line():
    with pytest.raises(SettingError) as raised:
        Settings.from_env({"DATABASE_URL": "mysql://root:hunter2@db/tb"})
    assert str(raised.value) == f"DATABASE_URL=mysql://root:***@db/tb: {DATABASE_RULE}"
    with pytest.raises(SettingError) as raised:
        Settings.from_env({"DATABASE_URL": "postgresql//root:hunter2@db/tb"})
    assert "hunter2" not in str(raised.value)

    from cryptography.fernet import Fernet

    good, bad = Fernet.generate_key().decode(), "not-a-fernet-key"
    with pytest.raises(SettingError) as raised:
        Settings.from_env({"WEBHOOK_SECRET_KEYS": f"{good},{bad}"})
    assert str(raised.value) == (
        "WEBHOOK_SECRET_KEYS=<secret>: key 2 of 2 is not a Fernet key "
        "(32 url-safe base64-encoded bytes, as Fernet.generate_key() makes)"
    )
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_good_settings_are_read_as_before():
    settings = Settings.from_env({"HOLD_MAX_SECONDS": "20", "HOLD_TTL_SECONDS": "20"})
    assert (settings.hold_ttl_seconds, settings.hold_max_seconds) == (20, 20)
    assert Settings.from_env({"DATABASE_URL": "postgresql://root@db/tb", "AUTH_MODE": "open"})
    assert ServerSettings.from_env({"PORT": "8080", "WORKER_CLASS": "gthread"}).port == 8080
