"""Throwaway Citus clusters: a coordinator and workers, each a real PostgreSQL 15 with Citus and
shardcast preloaded (citus first, as Citus requires), for the Citus tests and `make demo-citus`;
and the skewed read workload that both run on them, measured from the workers' own counters.

Citus is not in Debian's archive: `scripts/install-citus.sh` (run by `make deps`) builds it from a
local source tarball when one is there. Without citus.so the Citus tests are skipped.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from cluster import Cluster, as_user, wait_for

CITUS_SETTINGS = {
    "shared_preload_libraries": "'citus,shardcast'",
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "max_worker_processes": "32",
}


def citus_installed() -> bool:
    libdir = subprocess.run(["/usr/lib/postgresql/15/bin/pg_config", "--pkglibdir"], check=True,
                            capture_output=True, text=True).stdout.strip()
    return (Path(libdir) / "citus.so").exists()


@contextlib.contextmanager
def citus_cluster(dbname: str, workers: int = 2, settings: dict[str, str] | None = None,
                  name: str = "citus") -> Iterator[tuple[Cluster, list[Cluster]]]:
    """A coordinator and `workers` workers, Citus created in database `dbname` on each, the
    workers added to the coordinator's metadata. shardcast's worker samples `dbname` on every
    node (the setting is the same everywhere); the extension itself is created by the caller."""
    extra = {**CITUS_SETTINGS, "shardcast.database": f"'{dbname}'", **(settings or {})}
    nodes: list[Cluster] = []
    try:
        for i in range(workers + 1):
            nodes.append(Cluster(extra, f"{name}-{i}").start())
        for node in nodes:
            with node.connect() as conn:
                conn.execute(f"CREATE DATABASE {dbname}")
            with node.connect(dbname) as conn:
                conn.execute("CREATE EXTENSION citus")
        coordinator = nodes[0]
        with coordinator.connect(dbname) as conn:
            conn.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", [coordinator.port])
            for worker in nodes[1:]:
                conn.execute("SELECT citus_add_node('127.0.0.1', %s)", [worker.port])
            wait_for("the workers in the metadata", lambda: conn.execute(
                "SELECT count(*) FROM pg_dist_node WHERE isactive AND noderole = 'primary'"
            ).fetchone()[0] == workers + 1)
        yield coordinator, nodes[1:]
    finally:
        for node in nodes:
            node.destroy()


def shard_index_scans(workers: list[Cluster], dbname: str, table: str) -> dict[int, dict[str, int]]:
    """Each worker's own counters: index scans per shard of `table` that it holds, by port (shard
    tables are hidden from catalog queries on a worker unless citus.override_table_visibility is
    off). Read again until two readings 1.5 s apart agree: counters reach the shared statistics
    when a backend goes idle."""
    def read() -> dict[int, dict[str, int]]:
        counts = {}
        for worker in workers:
            with worker.connect(dbname) as conn:
                conn.execute("SET citus.override_table_visibility TO off")
                conn.execute("SELECT pg_stat_clear_snapshot()")
                counts[worker.port] = dict(conn.execute(
                    "SELECT relname, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname ~ %s",
                    [f"^{table}_[0-9]+$"]).fetchall())
        return counts

    def settled():
        first = read()
        time.sleep(1.5)
        second = read()
        return second if first == second else None

    return wait_for("the workers' counters to settle", settled, timeout=30, every=0.5)


@contextlib.contextmanager
def zipfian_workload(accounts: int) -> Iterator[Path]:
    """A pgbench script over a distributed table `accounts` (aid 1 .. `accounts`) and a reference
    table `branches` (bid 1 .. 10): every transaction reads one account chosen by a Zipfian law
    (a few keys take most reads, and so a few shards do) and the branch it belongs to. In a
    directory of its own that the clusters' user can read (pgbench runs as that user)."""
    with tempfile.TemporaryDirectory() as scripts:
        script = Path(scripts) / "zipfian.sql"
        script.write_text(f"""\\set aid random_zipfian(1, {accounts}, 1.1)
SELECT abalance FROM accounts WHERE aid = :aid;
SELECT bbalance FROM branches WHERE bid = 1 + :aid % 10;
""")
        Path(scripts).chmod(0o755)
        script.chmod(0o644)
        yield script


def workload_reads(coordinator: Cluster, workers: list[Cluster], dbname: str, script: Path,
                   seconds: int) -> dict[int, int]:
    """Runs the workload through the coordinator for `seconds` at a fixed rate (4 clients, 400
    transactions a second, so that two runs are comparable); the reads of `accounts` each worker
    served meanwhile, by port, from the workers' own counters."""
    before = shard_index_scans(workers, dbname, "accounts")
    subprocess.run(as_user([coordinator.bin("pgbench"), "-n", "-c", "4", "-j", "2", "-R", "400",
                            "-T", str(seconds), "-f", str(script), coordinator.dsn(dbname)]),
                   check=True, capture_output=True)
    after = shard_index_scans(workers, dbname, "accounts")
    return {port: sum(n - before.get(port, {}).get(shard, 0) for shard, n in shards.items())
            for port, shards in after.items()}
