"""The gunicorn settings read from the environment (each read in a fresh interpreter, as
gunicorn reads its config file once)."""

import json
import os
import subprocess
import sys


def conf(**env) -> dict:
    script = (
        "import json, os, runpy; c = runpy.run_module('ticketboss.gunicorn_conf'); "
        "print(json.dumps({k: c[k] for k in ('bind', 'worker_class', 'worker_connections', "
        "'keepalive')} | {'metrics': os.environ['PROMETHEUS_MULTIPROC_DIR']}))"
    )
    environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def test_two_servers_of_one_checkout_keep_their_own_metrics_directory():
    first, second = conf(PORT="8000"), conf(PORT="8001")
    assert first["metrics"] != second["metrics"]
    assert first["metrics"].endswith("prometheus-8000") and first["bind"] == "127.0.0.1:8000"


def test_the_hardened_gevent_worker_is_the_default_and_gthread_stays_available():
    assert conf()["worker_class"] == "ticketboss.workers.GeventWorker"
    assert conf(WORKER_CLASS="gthread")["worker_class"] == "ticketboss.workers.ThreadWorker"
    settings = conf(WORKER_CONNECTIONS="100", KEEPALIVE_SECONDS="3")
    assert (settings["worker_connections"], settings["keepalive"]) == (100, 3)


def workers(**env) -> int:
    script = "import runpy; print(runpy.run_module('ticketboss.gunicorn_conf')['workers'])"
    environ = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "DATABASE_URL")}
    done = subprocess.run(
        [sys.executable, "-c", script], env={**environ, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_one_worker_on_sqlite_one_per_core_on_postgresql_unless_web_concurrency_says():
    postgresql = "postgresql+psycopg2://root@127.0.0.1:5432/anything"
    assert workers() == 1  # the SQLite default: its one write lock takes one writer anyway
    assert workers(DATABASE_URL="sqlite:////tmp/x.sqlite3") == 1
    assert workers(DATABASE_URL=postgresql) == (os.cpu_count() or 2)
    assert workers(DATABASE_URL=postgresql, WEB_CONCURRENCY="3") == 3
    assert workers(WEB_CONCURRENCY="2") == 2
