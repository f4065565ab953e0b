"""Run a local cluster until Ctrl-C or SIGTERM:

    make cluster ARGS="--hosts 3 --port 8080"
    make cluster ARGS="--hosts 2 --balance roundrobin"
    make cluster ARGS="--ha --hosts 2"

DATABASE_URL names the PostgreSQL behind pgbouncer (its database is created if missing); with
none, or SQLite, postgresql+psycopg2://root@127.0.0.1:5432/ticketboss_cluster. With --ha the
database is the cluster's own instead: etcd and three PostgreSQL 15 nodes under Patroni
(synchronous, strict), behind an HAProxy that routes to the primary (cluster/ha.py). Every other
setting in the environment (AUTH_MODE, PARTNER_RATE_LIMIT, …) reaches every host.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from cluster.ha import HACluster
from cluster.parts import BALANCES
from cluster.run import DEFAULT_DATABASE_URL, Cluster


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3, help="app hosts (gunicorn masters)")
    parser.add_argument("--port", type=int, default=8080, help="HAProxy's port (0: any)")
    parser.add_argument("--balance", choices=BALANCES, default="affinity")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per host")
    parser.add_argument(
        "--ha", action="store_true", help="on a three-node Patroni cluster of its own (etcd)"
    )
    args = parser.parse_args(argv)
    options = {
        "hosts": args.hosts,
        "port": args.port,
        "balance": args.balance,
        "workers": args.workers,
    }
    ha: HACluster | None = None
    if args.ha:
        ha = HACluster(**options)
        cluster = ha.app
    else:
        database_url = os.environ.get("DATABASE_URL", "")
        if not database_url.startswith("postgresql"):
            database_url = DEFAULT_DATABASE_URL
        cluster = Cluster(database_url, **options)

    def interrupt(signum, _frame):
        raise KeyboardInterrupt

    # SIGTERM and SIGHUP stop it as Ctrl-C does, during the start (which then cleans up what
    # it started) as well as after it. SIGINT too, explicitly: started in the background by a
    # script, a process inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    try:
        (ha or cluster).start()
        hosts = ", ".join(f"{h.name} :{h.port}" for h in cluster.hosts)
        print(
            f"TicketBoss cluster at {cluster.url}  ({args.balance}; {hosts}; "
            f"pgbouncer :{cluster.pgbouncer.port}; files in {cluster.dir})",
            flush=True,
        )
        print(  # METRICS_TOKEN from the environment, or a new one
            f"metrics: curl -H 'Authorization: Bearer {cluster.metrics_token}' "
            f"127.0.0.1:{cluster.hosts[0].port}/metrics (each host's port)",
            flush=True,
        )
        if ha is not None:
            print(describe(ha), flush=True)
        print("Ctrl-C stops it.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping…", file=sys.stderr, flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        (ha or cluster).stop()
    return 0


def describe(ha: HACluster) -> str:
    """Where the database of --ha is: etcd, each node, the route to the primary."""
    primary = ha.primary()
    nodes = "\n".join(
        f"  {node.name}{' (primary)' if node is primary else ''}: PostgreSQL :{node.port}, "
        f"Patroni REST :{node.rest_port}, data {node.data}, log {node.log_path}"
        for node in ha.nodes
    )
    return (
        f"database: {ha.database_url} (HAProxy to the primary, checks GET /primary; "
        f"config {ha.proxy.config})\n"
        f"etcd: http://{ha.etcd.endpoint} (log {ha.etcd.log_path})\n{nodes}\n"
        f"patronictl -c {ha.nodes[0].config} list"
    )


if __name__ == "__main__":
    sys.exit(main())
