"""The highly available database of `make cluster ARGS=--ha`: one etcd member, three
PostgreSQL 15 nodes under Patroni (synchronous_mode, strict), and HAProxy as a TCP route to
whichever node Patroni's REST API calls the primary. `HACluster` puts the app cluster of
run.py (pgbouncer, hosts, their HAProxy) in front of that route.

Timings (Patroni's bootstrap DCS settings; Patroni >= 3.1 requires loop_wait + 2 ×
retry_timeout <= ttl, kept here too): a leader that crashes hard (kill -9, host lost) holds
its key until `ttl` runs out; a standby takes it within a loop; the remaining replica must
then follow the new leader before strict synchronous mode accepts writes again. Measured
by `make failover` (tests/failover): writes resume 12.3–16.5 s after a crash, 5–8 s
after a switchover; docs/failover.md has the figures and the reasons for each setting.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cluster.parts import HAProxy, free_port, stop, wait_for_port
from cluster.run import Cluster

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
PATRONI = shutil.which("patroni") or "/usr/bin/patroni"
PATRONICTL = shutil.which("patronictl") or "/usr/bin/patronictl"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SCOPE = "ticketboss"
SUPERUSER = "root"  # the app connects as root without a password, as to the machine's server

TTL = 10  # seconds a leader's key lives without renewal: the bound on noticing a crash
LOOP_WAIT = 2  # seconds between Patroni's cycles (how soon a free key is taken)
RETRY_TIMEOUT = 4  # etcd and PostgreSQL operations; a leader that cannot renew within it demotes


def installed() -> str | None:
    """None when Patroni, etcd and PostgreSQL 15 are here; else what is missing."""
    missing = [
        path
        for path in (ETCD, PATRONI, PATRONICTL, PG_BIN / "postgres")
        if not os.path.exists(path)
    ]
    return f"not installed: {', '.join(map(str, missing))}" if missing else None


def _as_postgres() -> dict:
    """Popen arguments running a child as `postgres` when we are root (PostgreSQL refuses
    root). Popen's own user switch, rather than runuser: the child's pid is Patroni's own,
    which a test must be able to kill -9."""
    if os.geteuid() != 0:
        return {}
    home = pwd.getpwnam("postgres").pw_dir
    return {"user": "postgres", "group": "postgres", "extra_groups": [], "env_home": home}


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _get_json(url: str, timeout: float = 1) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as refused:  # /primary answers 503 on a replica
        body = refused.read()
        return refused.code, json.loads(body) if body.startswith(b"{") else {}
    except (OSError, ValueError):
        return 0, {}


class Etcd:
    """A single etcd member (the DCS) on loopback ports, its data in `workdir`."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.log_path = workdir / "etcd.log"
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    ETCD,
                    "--name=ha",
                    f"--data-dir={self.dir / 'data'}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=ha={peer}",
                    "--initial-cluster-state=new",
                    "--enable-v2=true",  # Patroni 3.0.2's safe client: see PatroniNode.settings
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(self.client_port, self.process, f"etcd (log: {self.log_path})")
        deadline = time.monotonic() + 15
        while _get_json(f"{client}/health")[1].get("health") != "true":
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd is not healthy (log: {self.log_path})")
            time.sleep(0.1)

    def stop(self) -> None:
        stop(self.process)


class PatroniNode:
    """One PostgreSQL 15 under Patroni: its PostgreSQL port, REST port and data directory."""

    def __init__(self, name: str, workdir: Path, etcd: Etcd):
        self.name = name
        self.dir = workdir / name
        self.port = free_port()
        self.rest_port = free_port()
        self.data = self.dir / "data"
        self.config = self.dir / "patroni.yml"
        self.log_path = self.dir / "patroni.log"
        self.process: subprocess.Popen | None = None
        self.frozen: list[int] = []
        self.dir.mkdir(parents=True)
        self.dir.chmod(0o700)
        _chown_to_postgres(self.dir)
        # JSON is YAML: no YAML writer needed.
        self.config.write_text(json.dumps(self.settings(etcd), indent=2))
        _chown_to_postgres(self.config)

    def settings(self, etcd: Etcd) -> dict:
        loopback = "127.0.0.1/32"
        return {
            "scope": SCOPE,
            "name": self.name,
            "restapi": {
                "listen": f"127.0.0.1:{self.rest_port}",
                "connect_address": f"127.0.0.1:{self.rest_port}",
            },
            # etcd's v2 API, not v3: Debian bookworm's Patroni 3.0.2 renews the leader key
            # over v3 with an unconditional put once its lease has expired, so a leader that
            # was paused past the TTL (SIGSTOP, a VM frozen) takes the key back from the new
            # one on waking, and the writes acknowledged meanwhile are rewound away
            # (tests/failover caught it; fixed in Patroni 3.0.3, patroni/patroni#2693). Its
            # v2 client renews with a compare-and-swap on the holder's name.
            "etcd": {"hosts": [etcd.endpoint]},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL,
                    "loop_wait": LOOP_WAIT,
                    "retry_timeout": RETRY_TIMEOUT,
                    "maximum_lag_on_failover": 1048576,
                    # Promote only a standby that has every commit that may have returned
                    # success; with none available, refuse writes rather than go async.
                    "synchronous_mode": True,
                    "synchronous_mode_strict": True,
                    # A postmaster that died alone fails over at once, instead of Patroni
                    # restarting it in place for up to 300 s.
                    "primary_start_timeout": 0,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": {
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "wal_log_hints": "on",
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "max_connections": 200,
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{self.port}",
                "connect_address": f"127.0.0.1:{self.port}",
                "data_dir": str(self.data),
                "bin_dir": str(PG_BIN),
                "pgpass": str(self.dir / "pgpass"),
                # Patroni's bootstrap wants both roles named; trust auth ignores passwords.
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": "unused"},
                    "replication": {"username": "replicator", "password": "unused"},
                },
                "pg_hba": [
                    "local all all trust",
                    f"host all all {loopback} trust",
                    f"host replication all {loopback} trust",
                ],
                "parameters": {"unix_socket_directories": str(self.dir)},
            },
        }

    def start(self) -> None:
        """Patroni, which starts its PostgreSQL: a new node bootstraps or joins; one that was
        killed or stopped comes back as a replica (rewound if it had diverged)."""
        as_postgres = _as_postgres()
        home = as_postgres.pop("env_home", os.environ.get("HOME", "/"))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [PATRONI, str(self.config)],
                env={**_system_env(), "HOME": home},
                cwd=self.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **as_postgres,
            )

    def status(self) -> tuple[int, dict]:
        """Patroni's GET /patroni: (HTTP status, its JSON), (0, {}) when it does not answer."""
        return _get_json(f"http://127.0.0.1:{self.rest_port}/patroni")

    def is_primary(self) -> bool:
        return _get_json(f"http://127.0.0.1:{self.rest_port}/primary")[0] == 200

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """kill -9 to Patroni and its postmaster together, as a lost host would look."""
        for pid in (self.process.pid if self.process else None, self.postmaster_pid()):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.process is not None:
            self.process.wait(10)

    def processes(self) -> list[int]:
        """Patroni, its postmaster and the postmaster's children (backends, walsenders)."""
        postmaster = self.postmaster_pid()
        pids = [self.process.pid] if self.process is not None else []
        if postmaster is not None:
            found = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True)
            pids += [postmaster, *map(int, found.stdout.split())]
        return pids

    def freeze(self) -> None:
        """SIGSTOP to Patroni and all of its PostgreSQL, as a host that hangs (a paused VM,
        a stalled kernel) looks: its sockets stay open, nothing answers."""
        self.frozen = self.processes()
        for pid in self.frozen:
            _signal(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in reversed(self.frozen):
            _signal(pid, signal.SIGCONT)
        self.frozen = []

    def stop(self) -> None:
        """SIGTERM to Patroni, which stops its PostgreSQL; then whatever PostgreSQL is left
        (after a kill -9 its backends outlive the postmaster for a moment)."""
        self.thaw()
        stop(self.process, signal.SIGTERM, 30)
        pid = self.postmaster_pid()
        if pid is not None and _alive(pid):
            subprocess.run(
                [
                    *(["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []),
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
                timeout=30,
                check=False,
            )
        deadline = time.monotonic() + 10  # orphaned backends exit once they see it gone
        while _processes_under(self.data) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in _processes_under(self.data):
            os.kill(pid, signal.SIGKILL)


VAR = Path(__file__).resolve().parents[2] / "var"


def _fresh_workdir() -> Path:
    """var/ha, emptied: every run bootstraps a new cluster there. A temporary directory
    instead when the postgres user, which runs the nodes, cannot reach the checkout (one
    under /root, say)."""
    reachable = all(parent.stat().st_mode & 0o001 for parent in (VAR.parent, *VAR.parent.parents))
    if os.geteuid() == 0 and not reachable:
        return Path(tempfile.mkdtemp(prefix="ticketboss-ha-"))
    workdir = VAR / "ha"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    return workdir


def _system_env() -> dict:
    """Debian's patroni and patronictl are the system Python's: none of our virtualenv's
    paths."""
    venv = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    return {key: value for key, value in os.environ.items() if key not in venv}


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _processes_under(data: Path) -> list[int]:
    """Postmasters started on `data` (their command line names it)."""
    found = subprocess.run(["pgrep", "-f", "--", f"-D {data}"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def database_proxy_config(port: int, nodes: list[PatroniNode]) -> str:
    """HAProxy as a TCP route to the node whose Patroni answers 200 to /primary."""
    servers = "\n".join(
        f"    server {node.name} 127.0.0.1:{node.port} check port {node.rest_port}"
        for node in nodes
    )
    return f"""global
    maxconn 2000

defaults
    mode tcp
    timeout connect 2s
    # Database sessions idle in a pool for long: the pools, not the proxy, retire them.
    timeout client 30m
    timeout server 30m

listen postgres
    bind 127.0.0.1:{port}
    option httpchk OPTIONS /primary
    http-check expect status 200
    timeout check 1s
    # Checked every 500 ms: a new primary is routed to within ~1 s of Patroni promoting it,
    # and sessions on a node that stops being primary are cut at once, never left writing
    # to a demoted (read-only) node.
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
{servers}
"""


class DatabaseProxy(HAProxy):
    """Debian's HAProxy with `database_proxy_config`, run and stopped as the app's is."""

    def __init__(self, workdir: Path, nodes: list[PatroniNode]):
        self.port = free_port()
        self.config = workdir / "haproxy-postgres.cfg"
        self.config.write_text(database_proxy_config(self.port, nodes))
        self.log_path = workdir / "haproxy-postgres.log"
        self.process: subprocess.Popen | None = None


class HACluster:
    """etcd, three Patroni nodes, the database's HAProxy, and run.py's `Cluster` (pgbouncer,
    the hosts, their HAProxy) on top, with the database named `database` on the primary."""

    NODES = 3

    def __init__(
        self,
        database: str = "ticketboss_cluster",
        *,
        workdir: Path | None = None,
        **cluster_options,
    ):
        if problem := installed():
            raise RuntimeError(f"--ha needs Patroni and etcd ({problem}): make system-packages")
        self.dir = workdir or _fresh_workdir()
        self.dir.chmod(0o755)  # the nodes run as postgres and must reach their directories
        self.etcd = Etcd(self.dir / "etcd")
        self.nodes = [PatroniNode(f"pg{i + 1}", self.dir, self.etcd) for i in range(self.NODES)]
        self.proxy = DatabaseProxy(self.dir, self.nodes)
        self.database_url = (
            f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.proxy.port}/{database}"
        )
        app_dir = self.dir / "app"
        app_dir.mkdir()
        self.app = Cluster(self.database_url, workdir=app_dir, **cluster_options)

    @property
    def url(self) -> str:
        return self.app.url

    def start(self) -> HACluster:
        try:
            self.etcd.start()
            for node in self.nodes:
                node.start()
            self.wait_for_replication(90)
            self.proxy.start()
            self.wait_for_route(30)
            self.app.start()  # creates the database, migrates and seeds it through the route
        except BaseException:
            self.stop()
            raise
        return self

    def members(self) -> list[dict]:
        """Patroni's view of the cluster (GET /cluster from the first node that answers)."""
        for node in self.nodes:
            status, body = _get_json(f"http://127.0.0.1:{node.rest_port}/cluster")
            if status == 200:
                return body.get("members", [])
        return []

    def primary(self) -> PatroniNode | None:
        for node in self.nodes:
            if node.is_primary():
                return node
        return None

    def role(self, node: PatroniNode) -> str | None:
        """leader, sync_standby or replica while its PostgreSQL runs; None otherwise."""
        for member in self.members():
            if member.get("name") == node.name and member.get("state") in RUNNING:
                return member.get("role")
        return None

    def sync_standby(self) -> PatroniNode | None:
        return next((n for n in self.nodes if self.role(n) == "sync_standby"), None)

    def switchover(self, candidate: PatroniNode) -> None:
        """A planned switchover to `candidate` (patronictl, as an operator runs it)."""
        leader = self.primary()
        if leader is None:
            raise RuntimeError("no primary to switch over from")
        done = subprocess.run(
            [
                *(PATRONICTL, "-c", str(leader.config), "switchover", "--force"),
                *("--leader", leader.name, "--candidate", candidate.name),
            ],
            env=_system_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"patronictl switchover: {done.stdout}{done.stderr}")

    def wait_for_replication(self, seconds: float) -> None:
        """Until there is a leader, a synchronous standby and a third node running."""
        deadline = time.monotonic() + seconds
        while True:
            members = self.members()
            roles = sorted(m.get("role", "") for m in members if m.get("state") in RUNNING)
            if roles == ["leader", "replica", "sync_standby"]:
                return
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"patroni {node.name} exited (log: {node.log_path})")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no leader with a synchronous standby within {seconds} s: {members}"
                    f" (logs under {self.dir})"
                )
            time.sleep(0.2)

    def wait_for_route(self, seconds: float) -> None:
        """Until the database's HAProxy reaches only a writable PostgreSQL. (HAProxy 2.6
        starts every server as up, until its checks fail: a replica is taken out only after
        `fall` checks, so a few connections in a row must all reach the primary.)"""
        import psycopg2

        deadline = time.monotonic() + seconds
        in_a_row = 0
        while in_a_row < 2 * len(self.nodes):
            try:
                conn = psycopg2.connect(
                    host="127.0.0.1",
                    port=self.proxy.port,
                    user=SUPERUSER,
                    dbname="postgres",
                    connect_timeout=2,
                )
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT pg_is_in_recovery()")
                        in_recovery = cur.fetchone()[0]
                finally:
                    conn.close()
                in_a_row = 0 if in_recovery else in_a_row + 1
            except psycopg2.OperationalError:
                in_a_row = 0
            if time.monotonic() > deadline:
                raise RuntimeError(f"no primary alone behind HAProxy :{self.proxy.port}")
            if in_a_row == 0:
                time.sleep(0.2)

    def stop(self) -> None:
        """The app first, then the route, the nodes (replicas before the leader, so that it
        need not wait for a synchronous standby being stopped), etcd last."""
        self.app.stop()
        self.proxy.stop()
        leader = self.primary()
        replicas = [node for node in self.nodes if node is not leader]
        with ThreadPoolExecutor(len(replicas)) as pool:  # each takes 2–4 s: together
            list(pool.map(PatroniNode.stop, replicas))
        if leader is not None:
            leader.stop()
        self.etcd.stop()

    def __enter__(self) -> HACluster:
        return self.start()

    def __exit__(self, *_) -> None:
        self.stop()


RUNNING = ("running", "streaming")
