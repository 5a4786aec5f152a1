"""`make demo-citus`: shardcast as the load brain of a Citus cluster, end to end.

Starts five throwaway PostgreSQL 15 clusters with Citus and shardcast preloaded: a coordinator and
four workers, the fourth without shards (a node about to be added). A distributed `accounts` table
of 32 shards and a reference table `branches` take a skewed pgbench workload (Zipfian keys: a few
shards take most reads); shardcast samples every node from the coordinator and forecasts each
shard. Citus's default rebalance to the new node evens the shard count; the demo shows how uneven
the load stays, then lets shardcast plan by predicted load, queue the moves hottest-per-byte first
and run them with its driver, and measures every node's reads again from the workers' own
counters. Everything is removed at the end. About 3 minutes after the build.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pg_test"))

from citus import citus_cluster, citus_installed, workload_reads, zipfian_workload  # noqa: E402
from cluster import wait_for  # noqa: E402

DRIVER = Path(__file__).resolve().parent.parent / "driver" / "shardcast_driver.py"
DB = "bank"
SHARDS = 32
ACCOUNTS = 50_000
WORKLOAD_SECONDS = 20
SETTINGS = {"shardcast.sample_interval": "'1s'", "shardcast.refresh_interval": "'1h'"}


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(conn, sql: str, params=None) -> None:
    """Prints a query's result as psql would, more or less."""
    cur = conn.execute(sql, params)
    names = [d.name for d in cur.description]
    rows = [["" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v)) for v in row] for row in cur]
    widths = [max(len(n), *(len(r[i]) for r in rows)) if rows else len(n) for i, n in enumerate(names)]
    print("  " + " | ".join(n.ljust(w) for n, w in zip(names, widths)))
    print("  " + "-+-".join("-" * w for w in widths))
    for row in rows:
        print("  " + " | ".join(v.ljust(w) for v, w in zip(row, widths)))
    print(f"  ({len(rows)} row{'s' if len(rows) != 1 else ''})")


def print_load(label: str, load: dict[int, int], names: dict[int, str]) -> float:
    total = sum(load.values()) or 1
    share = max(load.values()) / total
    print(f"  {label}: hottest node serves {share:.0%} of the reads (an even share is 25%)")
    for port, n in sorted(load.items()):
        print(f"    {names[port]:<9} {n:>6} reads  {'#' * round(40 * n / total)}")
    return share


def main() -> None:
    if not citus_installed():
        sys.exit("Citus is not installed: `make deps` builds it from a local source tarball "
                 "(see the README's Citus section)")
    started = time.monotonic()
    with citus_cluster(DB, workers=4, settings=SETTINGS, name="demo-citus") as (coordinator, workers), \
            zipfian_workload(ACCOUNTS) as script:
        names = {w.port: f"worker-{i + 1}" for i, w in enumerate(workers)}
        added = workers[3]
        with coordinator.connect(DB) as conn:
            step(f"a coordinator and 4 workers (ports {', '.join(str(w.port) for w in workers)}); worker-4 has no shards yet")
            conn.execute("CREATE EXTENSION shardcast")
            conn.execute("SELECT citus_set_node_property('127.0.0.1', %s, 'shouldhaveshards', false)", [added.port])
            conn.execute(f"SET citus.shard_count = {SHARDS}")
            conn.execute("CREATE TABLE accounts (aid bigint PRIMARY KEY, abalance int NOT NULL, filler text)")
            conn.execute("SELECT create_distributed_table('accounts', 'aid')")
            conn.execute(f"INSERT INTO accounts SELECT g, g % 1000, repeat('x', 80) "
                         f"FROM generate_series(1, {ACCOUNTS}) g")
            conn.execute("CREATE TABLE branches (bid int PRIMARY KEY, bbalance int NOT NULL)")
            conn.execute("SELECT create_reference_table('branches')")
            conn.execute("INSERT INTO branches SELECT g, 0 FROM generate_series(1, 10) g")
            checksum = conn.execute("SELECT count(*), sum(abalance) FROM accounts").fetchone()
            wait_for("every Citus shard registered", lambda: conn.execute(
                "SELECT count(*) = %s FROM shardcast.citus_shards", [SHARDS]).fetchone()[0], timeout=60)
            print(f"  accounts: {SHARDS} shards on worker-1..3; branches: a reference table on every node")

            step("worker-4 joins; Citus's default rebalance (by_shard_count) moves shards to it")
            conn.execute("SELECT citus_set_node_property('127.0.0.1', %s, 'shouldhaveshards', true)", [added.port])
            conn.execute("SELECT citus_rebalance_start(shard_transfer_mode := 'block_writes')")
            wait_for("Citus's rebalance", lambda: conn.execute(
                "SELECT state::text FROM citus_rebalance_status() ORDER BY job_id DESC LIMIT 1"
            ).fetchone()[0] in ("finished", "failed", "cancelled"), timeout=240, every=1)
            show(conn, "SELECT nodeport AS port, count(*) AS shards FROM citus_shards "
                       "WHERE table_name = 'accounts'::regclass GROUP BY 1 ORDER BY 1")

            step(f"{WORKLOAD_SECONDS} s of Zipfian reads through the coordinator (pgbench, 400 tx/s)")
            by_count = workload_reads(coordinator, workers, DB, script, WORKLOAD_SECONDS)
            share_by_count = print_load("after Citus's rebalance by shard count", by_count, names)

            step("what shardcast learned at the coordinator: the hottest shards and each node's predicted load")
            wait_for("the workload in the shards' history", lambda: conn.execute(
                "SELECT sum(h.scans) > 1000 FROM shardcast.access_history h JOIN shardcast.shards s USING (shard_id) "
                "WHERE s.citus_shard_id IS NOT NULL").fetchone()[0], timeout=30)
            conn.execute("SELECT shardcast.refresh_forecasts()")
            show(conn, "SELECT shardid, node, predicted_load, size_bytes FROM shardcast.citus_shards "
                       "ORDER BY predicted_load DESC NULLS LAST LIMIT 6")
            show(conn, "SELECT * FROM shardcast.citus_node_load ORDER BY 1")

            step("shardcast's plan by predicted load, queued hottest per byte first")
            conn.execute("SELECT shardcast.citus_register_strategy(0.05)")
            queued = conn.execute("SELECT shardcast.enqueue_citus_rebalance('shardcast')").fetchone()[0]
            print(f"  SELECT shardcast.enqueue_citus_rebalance('shardcast') -> {queued} move(s)")
            show(conn, "SELECT position, shardid, source_node, target_node, size_bytes, "
                       "round(predicted_load::numeric, 1) AS predicted_load FROM shardcast.citus_moves "
                       "WHERE state = 'queued' ORDER BY position LIMIT 8")

            step("the driver runs the moves (citus_move_shard_placement), hottest first")
            run = subprocess.run([sys.executable, str(DRIVER), "citus-rebalance", "--source", coordinator.dsn(DB),
                                  "--transfer-mode", "block_writes", "--poll", "0.2"],
                                 capture_output=True, text=True, timeout=600)
            for line in run.stdout.splitlines():
                print(f"  {line}")
            if run.returncode != 0:
                print(run.stderr)
                sys.exit(f"the driver exited {run.returncode}")

            step(f"the same {WORKLOAD_SECONDS} s of reads after shardcast's moves")
            by_load = workload_reads(coordinator, workers, DB, script, WORKLOAD_SECONDS)
            share_by_load = print_load("after shardcast's moves", by_load, names)

            step("what it was worth: shardcast.citus_rebalance_report()")
            show(conn, "SELECT plan, move_order, moves, round(hottest_share_start::numeric, 2) AS share_start, "
                       "round(hottest_share_mean::numeric, 2) AS share_mean, "
                       "round(hottest_share_end::numeric, 2) AS share_end FROM shardcast.citus_rebalance_report()")
            assert conn.execute("SELECT count(*), sum(abalance) FROM accounts").fetchone() == checksum
            print(f"\n  every account is still there ({checksum[0]} rows, same sum); the hottest node's share of "
                  f"reads went from {share_by_count:.0%} (Citus by shard count) to {share_by_load:.0%} (shardcast)")
    print(f"\ndone in {time.monotonic() - started:.0f} s; every cluster removed")


if __name__ == "__main__":
    main()
