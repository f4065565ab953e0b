"""gunicorn settings (`gunicorn -c python:ticketboss.gunicorn_conf`), tuned by environment."""

import os
import resource
import shutil
import signal

from ticketboss.config import PROJECT_ROOT

port = os.environ.get("PORT") or "8000"
bind = f"{os.environ.get('HOST') or '127.0.0.1'}:{port}"
# One process per core keeps every core busy. gevent (the default) serves each request in a
# greenlet: hundreds of concurrent requests cost no OS threads and no GIL contention, and
# reservations of a hot event that arrive together join one group-committed transaction (see
# README). WORKER_CLASS=gthread with GUNICORN_THREADS threads is the thread-based alternative.
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 2)
# The gevent worker of ticketboss.workers: problem+json for what gunicorn refuses itself,
# bounded reads, idle connections shed under a flood (see that module).
worker_class = {
    "gevent": "ticketboss.workers.GeventWorker",
    "gthread": "ticketboss.workers.ThreadWorker",
}[os.environ.get("WORKER_CLASS") or "gevent"]
# Connections one worker holds at once (an idle one costs a greenlet and a socket); past half
# of them, new connections get SHED_SECONDS instead of `keepalive` to send their headers.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS") or 4096)
threads = int(os.environ.get("GUNICORN_THREADS") or 64)
# Each worker listens on its own SO_REUSEPORT socket and the kernel spreads new connections
# evenly over them (with one shared socket, one worker often took most of a burst: 33/17,
# 35/15, 6/44 of 50 keep-alive connections; with this, 24/26, 23/27, 23/27).
reuse_port = (os.environ.get("REUSE_PORT") or "1") != "0"
# Seconds a client may take to send a request's line and headers, first or next (keep-alive).
keepalive = int(os.environ.get("KEEPALIVE_SECONDS") or 5)
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
# imports prometheus_client. One directory per port: two servers of one checkout never share
# (or wipe) each other's counters.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(PROJECT_ROOT / "var" / f"prometheus-{port}"))


def on_starting(server):
    """Start every run with fresh counters, and allow as many open sockets as the system
    lets us (each of worker_connections is one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


def post_fork(server, worker):
    """Under gevent, make psycopg2 wait for the database cooperatively instead of blocking."""
    if "gevent" in server.cfg.worker_class_str.lower():
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()


def post_worker_init(worker):
    """Ctrl-C (SIGINT, and the SIGQUIT the master then sends) stops a worker as SIGTERM does:
    in-flight requests finish, and no greenlet dies mid-request with a traceback."""
    signal.signal(signal.SIGINT, worker.handle_exit)
    signal.signal(signal.SIGQUIT, worker.handle_exit)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
