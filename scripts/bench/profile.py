"""--profile: py-spy on every gunicorn worker during a load run, and where its samples went.

Each worker is sampled (`py-spy record --format raw`, collapsed stacks) for the run's
duration; the report gives each layer's share of the samples, by the file the sampled frame
is in (self time), and the share spent inside a few of the service's own functions
(inclusive). py-spy takes CPU of its own, so read the shares, not the rates, of such a run.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

from bench.settings import BIN

RATE = 250  # samples a second

# The layer a sampled frame is in, by its file's top package (py-spy names files from their
# package: "flask/app.py").
LAYERS = {
    "sqlalchemy": "sqlalchemy, psycopg2",
    "psycopg2": "sqlalchemy, psycopg2",
    "gevent": "gevent",
    "gunicorn": "gunicorn",
    "flask_smorest": "flask-smorest, webargs, marshmallow",
    "webargs": "flask-smorest, webargs, marshmallow",
    "marshmallow": "flask-smorest, webargs, marshmallow",
    "flask": "flask, werkzeug",
    "werkzeug": "flask, werkzeug",
    "flask_cors": "flask, werkzeug",
    "flask_limiter": "flask-limiter, limits",
    "limits": "flask-limiter, limits",
    "prometheus_client": "prometheus_client",
    "ticketboss": "ticketboss",
}
# Inclusive shares: samples with a frame of this function or file anywhere on their stack.
PHASES = (
    ("requests (gunicorn's handler)", "GeventWorker.handle (ticketboss/workers.py"),
    ("HTTP parsing", "(gunicorn/http/parser.py"),
    ("Flask's dispatch (hooks, view, answer)", "Flask.full_dispatch_request (flask/app.py"),
    ("key check", "_authenticate (ticketboss/api/auth.py"),
    ("access log + metrics", "_finish (ticketboss/observability.py"),
    ("group commit (queue + batch)", "GroupCommit.submit (ticketboss/"),
    ("the batch's transaction", "ReservationService.commit_batch (ticketboss/"),
    ("writing the answer", "_HeadersWithBody.sendall (ticketboss/workers.py"),
    ("webhook dispatcher", "(ticketboss/services/dispatcher.py"),
)


def _layer(frame: str) -> str:
    path = frame.rpartition(" (")[2]
    return LAYERS.get(path.partition("/")[0], "python stdlib, other")


def start(pids: list[int], seconds: float, out: Path) -> list[tuple[subprocess.Popen, Path]]:
    """One py-spy per worker, each writing collapsed stacks to out/profile-<pid>.txt."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("profile-*.txt"):  # an earlier run's
        old.unlink()
    running = []
    for pid in pids:
        path = out / f"profile-{pid}.txt"
        command = [BIN / "py-spy", "record", "--pid", str(pid), "--rate", str(RATE)]
        command += ["--duration", str(max(1, round(seconds))), "--format", "raw"]
        command += ["--output", str(path), "--nonblocking"]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        running.append((proc, path))
    return running


def finish(running: list[tuple[subprocess.Popen, Path]]) -> dict:
    """Wait for every py-spy, then the layers' and phases' shares over all workers."""
    stacks: Counter[str] = Counter()
    for proc, path in running:
        proc.wait(timeout=120)
        if path.exists():
            for line in path.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if stack and count.isdigit():
                    stacks[stack] += int(count)
    total = sum(stacks.values()) or 1
    layers: Counter[str] = Counter()
    for stack, count in stacks.items():
        layers[_layer(stack.rsplit(";", 1)[-1])] += count
    phases = {
        name: 100 * sum(n for s, n in stacks.items() if mark in s) / total for name, mark in PHASES
    }
    return {
        "samples": total,
        "layers_pct": {name: 100 * n / total for name, n in layers.most_common()},
        "phases_pct": phases,
        "files": [str(path) for _, path in running],
    }


def lines(profile: dict) -> list[str]:
    """The profile as report lines."""
    layers = ", ".join(f"{name} {pct:.0f} %" for name, pct in profile["layers_pct"].items())
    phases = ", ".join(f"{name} {pct:.0f} %" for name, pct in profile["phases_pct"].items())
    return [
        f"py-spy, {profile['samples']} samples, self time by layer: {layers}",
        f"py-spy, inclusive: {phases}",
    ]
