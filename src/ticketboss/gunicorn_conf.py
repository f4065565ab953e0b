"""gunicorn settings (`gunicorn -c python:ticketboss.gunicorn_conf`), tuned by environment."""

import os
import shutil

from ticketboss.config import PROJECT_ROOT

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# Two processes keep both cores busy; each runs many threads so that concurrent
# reservations of a hot event can join one group-committed transaction (see README).
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS") or 64)
keepalive = 30
timeout = 30
graceful_timeout = 10
# The app (and its connection pool) is built in each worker, never shared across a fork.
preload_app = False
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
# gunicorn ≥ 25 opens a control socket in ~/.gunicorn; two servers on one machine would clash.
control_socket_disable = True

# Workers write their Prometheus counters here; /metrics adds them up. Set before any worker
# imports prometheus_client.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(PROJECT_ROOT / "var" / "prometheus"))


def on_starting(server):
    """Start every run with fresh counters."""
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
