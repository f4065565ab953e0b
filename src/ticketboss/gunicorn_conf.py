"""gunicorn settings (`gunicorn -c python:ticketboss.gunicorn_conf`), tuned by environment."""

import multiprocessing
import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# Requests spend most of their time waiting on the database, so a couple of processes per
# core with a few threads each keeps both cores busy without piling up CAS conflicts.
workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * multiprocessing.cpu_count())
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS") or 4)
keepalive = 5
timeout = 30
graceful_timeout = 10
# The app (and its connection pool) is built in each worker, never shared across a fork.
preload_app = False
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
# gunicorn ≥ 25 opens a control socket in ~/.gunicorn; two servers on one machine would clash.
control_socket_disable = True
