"""Throwaway PostgreSQL 15 clusters for end-to-end tests, benchmarks and the demo.

A cluster runs as an unprivileged user (PostgreSQL refuses root) under a temporary directory, on
a free loopback port, with shardcast in shared_preload_libraries. Clients are real, separate
connections.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import psycopg

T = TypeVar("T")

RUN_AS = os.environ.get("SHARDCAST_TEST_USER", "postgres")


def pg_bindir() -> Path:
    # A private installation (scripts/private-install.sh): run another build than the system's.
    if os.environ.get("SHARDCAST_PG_BINDIR"):
        return Path(os.environ["SHARDCAST_PG_BINDIR"])
    out = subprocess.run(["pg_config", "--bindir"], check=True, capture_output=True, text=True)
    bindir = Path(out.stdout.strip())
    # Debian's /usr/bin/pg_config points at /usr/lib/postgresql/15/bin only for the server
    # package's own copy; fall back to the versioned directory.
    if not (bindir / "initdb").exists():
        bindir = Path("/usr/lib/postgresql/15/bin")
    return bindir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", RUN_AS, "--", *cmd]
    return cmd


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0, every: float = 0.2) -> T:
    """Polls `probe` until it returns something truthy; fails with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# What the replication driver needs: a source that publishes with logical decoding (a slot and
# a WAL sender per subscriber, plus one per table syncing at once), and subscribers that are
# plain PostgreSQL 15 and sync several tables at once.
PUBLISHER_SETTINGS = {"wal_level": "logical", "max_replication_slots": "20", "max_wal_senders": "20",
                      "wal_sender_timeout": "'10s'"}
SUBSCRIBER_SETTINGS = {"shared_preload_libraries": "''", "max_worker_processes": "16",
                       "max_logical_replication_workers": "8", "max_sync_workers_per_subscription": "4",
                       "wal_retrieve_retry_interval": "'1s'"}


class Cluster:
    def __init__(self, settings: dict[str, str] | None = None, name: str = "shardcast"):
        self.bindir = pg_bindir()
        self.root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.settings = {
            "shared_preload_libraries": "'shardcast'",
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "log_line_prefix": "'%m [%p] %b '",
            **(settings or {}),
        }
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            os.chown(self.root, user.pw_uid, user.pw_gid)

    def start(self) -> "Cluster":
        subprocess.run(
            as_user([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                     "--auth=trust", "-E", "UTF8", "--locale=C"]),
            check=True, capture_output=True,
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            for key, value in self.settings.items():
                conf.write(f"{key} = {value}\n")
        subprocess.run(
            as_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start"]),
            check=True, capture_output=True,
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            as_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=False, capture_output=True,
        )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=autocommit)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def bin(self, name: str) -> str:
        return str(self.bindir / name)

    def start_pgbench(self, dbname: str, scripts: dict[str, tuple[int, str]], scripts_dir: str, seconds: int,
                      rate: int) -> subprocess.Popen:
        """Runs pgbench in the background: 4 clients, `scripts` (name -> (weight, body)) mixed by
        weight, `rate` transactions per second in all, for `seconds`."""
        args = []
        for name, (weight, body) in scripts.items():
            path = Path(scripts_dir) / f"{name}-{seconds}.sql"
            path.write_text(body)
            args += ["-f", f"{path}@{weight}"]
        return subprocess.Popen(
            [self.bin("pgbench"), "-n", "-c", "4", "-j", "2", "-R", str(rate), "-T", str(seconds), *args,
             self.dsn(dbname)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_for_subscribers(self, dbname: str, timeout: float = 60) -> None:
        """Waits until every subscription of the driver has confirmed all WAL written so far."""
        with self.connect(dbname) as conn:
            target = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            wait_for("the subscribers to catch up", lambda: conn.execute(
                "SELECT bool_and(confirmed_flush_lsn >= %s::pg_lsn) FROM pg_replication_slots"
                " WHERE slot_name LIKE 'shardcast\\_%%' AND slot_name NOT LIKE '%%\\_sync\\_%%'",
                [target]).fetchone()[0], timeout=timeout)


@contextlib.contextmanager
def running_cluster(settings: dict[str, str] | None = None, name: str = "shardcast") -> Iterator[Cluster]:
    cluster = Cluster(settings, name).start()
    try:
        yield cluster
    finally:
        if os.environ.get("SHARDCAST_KEEP_CLUSTER"):
            cluster.stop()
            print(f"cluster kept at {cluster.root}")
        else:
            cluster.destroy()


@contextlib.contextmanager
def source_with_replicas(settings: dict[str, str], dbname: str, name: str) -> Iterator[tuple[Cluster, Cluster, Cluster]]:
    """A source with shardcast preloaded and logical decoding on, and two plain PostgreSQL 15
    replicas (`fast` and `slow`), each with database `dbname`; shardcast is created in the
    source's."""
    with running_cluster({**settings, **PUBLISHER_SETTINGS}, name) as source, \
            running_cluster(SUBSCRIBER_SETTINGS, f"{name}-fast") as fast, \
            running_cluster(SUBSCRIBER_SETTINGS, f"{name}-slow") as slow:
        for cluster in (source, fast, slow):
            with cluster.connect() as conn:
                conn.execute(f"CREATE DATABASE {dbname}")
        with source.connect(dbname) as conn:
            conn.execute("CREATE EXTENSION shardcast")
        yield source, fast, slow
