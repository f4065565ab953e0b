"""gunicorn settings (`gunicorn -c python:ticketboss.gunicorn_conf`), tuned by environment."""

import gc
import os
import resource
import shutil
import signal
import sys

from ticketboss.config import ServerSettings, SettingError, Settings


def _checked_settings() -> tuple[ServerSettings, Settings]:
    """The server's settings and the workers', checked: a setting that cannot be used stops
    the master here, in one line and exit status 1, before it binds or boots a worker (whose
    every attempt would otherwise log a traceback)."""
    try:
        return ServerSettings.from_env(), Settings.from_env()
    except SettingError as exc:
        sys.exit(f"ticketboss: {exc}")


server, _app_settings = _checked_settings()
port = server.port
bind = f"{server.host}:{server.port}"
# One process per core keeps every core busy. gevent (the default) serves each request in a
# greenlet: hundreds of concurrent requests cost no OS threads and no GIL contention, and
# reservations of a hot event that arrive together join one group-committed transaction (see
# docs/concurrency.md). WORKER_CLASS=gthread with GUNICORN_THREADS threads is the thread-based
# alternative. On SQLite one worker, unless WEB_CONCURRENCY says otherwise: its one write
# lock admits one writer at a time anyway.
workers = server.workers(_app_settings.database_url)
# The workers of ticketboss.workers: problem+json for what gunicorn refuses itself, header
# deadlines, idle connections shed under a flood, lossless shutdown (see that module).
worker_class = {
    "gevent": "ticketboss.workers.GeventWorker",
    "gthread": "ticketboss.workers.ThreadWorker",
}[server.worker_class]
# Connections one worker holds at once (an idle one costs a greenlet and a socket); past half
# of them, new connections get SHED_SECONDS instead of `keepalive` to send their headers.
worker_connections = server.worker_connections
threads = server.gunicorn_threads
# Each worker listens on its own SO_REUSEPORT socket and the kernel spreads new connections
# evenly over them (with one shared socket, one worker often took most of a burst: 33/17,
# 35/15, 6/44 of 50 keep-alive connections; with this, 24/26, 23/27, 23/27).
reuse_port = server.reuse_port
# Seconds a client may take to send a request's line and headers, first or next (keep-alive).
keepalive = server.keepalive_seconds
timeout = 30
graceful_timeout = 10
# The app (and its connection pool) is built in each worker, never shared across a fork.
preload_app = False
accesslog = server.access_log or None
errorlog = "-"
loglevel = server.log_level
# gunicorn ≥ 25 opens a control socket in ~/.gunicorn; two servers on one machine would clash.
control_socket_disable = True

# Workers write their Prometheus counters here; /metrics adds them up. Set before any worker
# imports prometheus_client. One directory per port: two servers of one checkout never share
# (or wipe) each other's counters.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = server.metrics_dir


def on_starting(server):
    """Check the settings again (`gunicorn -e NAME=value` sets its variables only after this
    file is read), start every run with fresh counters, and allow as many open sockets as the
    system lets us (each of worker_connections is one)."""
    _checked_settings()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


def post_fork(server, worker):
    """psycopg2 waits for the database through a callback: cooperatively under gevent, and
    never past the request's deadline (work no request made, such as the hold sweep, gets
    the statement timeout and a second) in either worker class."""
    from ticketboss.config import Settings
    from ticketboss.store.db import install_bounded_waits

    settings = Settings.from_env()
    install_bounded_waits(
        settings.db_statement_timeout_ms / 1000 + 1.0,
        green="gevent" in server.cfg.worker_class_str.lower(),
    )


def post_worker_init(worker):
    """Ctrl-C (SIGINT, and the SIGQUIT the master then sends) stops a worker as SIGTERM does:
    in-flight requests finish, and no greenlet dies mid-request with a traceback. Then the
    worker starts sweeping lapsed holds (HOLD_SWEEP_SECONDS), keeping the keys it took fresh,
    and delivering webhooks (WEBHOOK_DISPATCH), and freezes what it loaded."""
    signal.signal(signal.SIGINT, worker.handle_exit)
    signal.signal(signal.SIGQUIT, worker.handle_exit)
    from ticketboss import services_of
    from ticketboss.services.sweeper import start_sweeping

    services = services_of(worker.wsgi)
    start_sweeping(services.reservations, services.settings.hold_sweep_seconds)
    if services.settings.auth_mode == "keys":
        from ticketboss.services.partners import start_refreshing

        start_refreshing(services.keys)
    if services.settings.webhook_dispatch:
        from ticketboss.services.dispatcher import Dispatcher, start_dispatching

        dispatcher = Dispatcher(services.settings, services.reservations.clock)
        start_dispatching(dispatcher, services.reservations)
    # The app's objects live as long as the worker: keep them out of every collection, so
    # the collector's pauses scan only what requests allocate.
    gc.collect()
    gc.freeze()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
