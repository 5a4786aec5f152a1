"""shardcast on Citus: what sampling and planning cost with 1,000 shards on 4 worker nodes.

A coordinator and 4 workers (five real PostgreSQL 15 clusters with Citus and shardcast, on this
machine), one distributed table of 1,000 shards on the first 3 workers (the 4th joins empty, as a
node added to a running cluster), read by a steady trickle of queries, sampled every second. Prints the coordinator's cycle time (`shardcast.worker_status.last_cycle_ms`: local
tables, the Citus registry, the fan-out to every node, history writes) and the time of Citus's
rebalance plan under the `shardcast` strategy (`get_rebalance_table_shards_plan`, which calls
`shardcast.citus_shard_cost` per shard) beside Citus's own `by_shard_count` and `by_disk_size`,
the throughput of one shard move (`citus_move_shard_placement`) per transfer mode, and what the
order of the moves is worth (`shardcast.citus_rebalance_report` on the plans queued by
`enqueue_citus_rebalance`, the reads Zipfian over the shards).
Figures, not a test: every node shares the machine's CPUs, so a busy machine inflates them.

    python3 bench/citus_bench.py [--shards 1000] [--workers 4] [--seconds 30]

Needs Citus (`make deps` builds it) and shardcast installed (`make install-release`).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pg_test"))
from citus import citus_cluster, citus_installed  # noqa: E402
from cluster import wait_for  # noqa: E402

DB = "citusbench"


def timed(conn, sql: str, repeat: int = 5) -> tuple[float, int]:
    """Median wall milliseconds of `sql` over `repeat` runs, and the rows of the last run."""
    times, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = len(conn.execute(sql).fetchall())
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times), rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=int, default=1000)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seconds", type=float, default=30.0, help="how long to watch the cycles")
    p.add_argument("--move-mb", type=int, default=32, help="size of each shard moved to measure throughput")
    p.add_argument("--seed", type=int, default=1, help="the reads' random seed")
    args = p.parse_args()
    if not citus_installed():
        sys.exit("Citus is not installed: run `make deps` (it builds Citus from a local source tarball)")

    settings = {"shardcast.sample_interval": "'1s'", "shardcast.refresh_interval": "'1h'"}
    started = time.monotonic()
    with citus_cluster(DB, workers=args.workers, settings=settings, name="citus-bench") as (coordinator, workers):
        with coordinator.connect(DB) as conn:
            conn.execute("CREATE EXTENSION shardcast")
            conn.execute(f"SET citus.shard_count = {args.shards}")
            conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, payload text)")
            # The last worker joins empty, as a node added to a running cluster: the plans move
            # shards to it.
            newest = workers[-1]
            conn.execute("SELECT citus_set_node_property('127.0.0.1', %s, 'shouldhaveshards', false)", [newest.port])
            conn.execute("SELECT create_distributed_table('events', 'id')")
            conn.execute("SELECT citus_set_node_property('127.0.0.1', %s, 'shouldhaveshards', true)", [newest.port])
            conn.execute("INSERT INTO events SELECT g, repeat('x', 100) FROM generate_series(1, 200000) g")
            wait_for("every Citus shard registered", lambda: conn.execute(
                "SELECT count(*) >= %s FROM shardcast.citus_shards", [args.shards]).fetchone()[0], timeout=300)
            print(f"{args.shards} shards on {args.workers} workers ready in {time.monotonic() - started:.0f} s",
                  file=sys.stderr, flush=True)

            # A trickle of reads, so that every cycle has counters that changed: Zipfian over the
            # shards (exponent 1.1, the shards in random order), so that the rebalance plans below
            # have hot and cold groups to order.
            keys: dict[int, list[int]] = {}
            for shardid, key in conn.execute(
                    "SELECT get_shard_id_for_distribution_column('events', g), g FROM generate_series(1, 200000) g"):
                keys.setdefault(shardid, []).append(key)
            rng = random.Random(args.seed)
            shards = sorted(keys)
            rng.shuffle(shards)
            weights = [1 / rank ** 1.1 for rank in range(1, len(shards) + 1)]
            stop = threading.Event()

            def reader() -> None:
                with coordinator.connect(DB) as r:
                    while not stop.is_set():
                        shard = rng.choices(shards, weights)[0]
                        r.execute("SELECT payload FROM events WHERE id = %s", [rng.choice(keys[shard])])
                        time.sleep(0.01)

            thread = threading.Thread(target=reader, daemon=True)
            thread.start()
            cycles, last = [], None
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                at, ms = conn.execute("SELECT last_sample_at, last_cycle_ms FROM shardcast.worker_status").fetchone()
                if last is not None and at != last and ms is not None:
                    cycles.append(ms)
                last = at
                time.sleep(0.25)
            stop.set()
            thread.join()

            # Move throughput: shards of --move-mb each, moved once per transfer mode.
            conn.execute("SET citus.shard_count = 4")
            conn.execute("CREATE TABLE blobs (id bigint PRIMARY KEY, payload text)")
            conn.execute("SELECT create_distributed_table('blobs', 'id', colocate_with => 'none')")
            rows = args.move_mb * 4 * 1024 * 1024 // 1000
            conn.execute("INSERT INTO blobs SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, %s) g", [rows])
            transfers = []
            for mode, (shardid, size, port) in zip(("block_writes", "force_logical"), conn.execute(
                    "SELECT shardid, shard_size, nodeport FROM citus_shards WHERE table_name = 'blobs'::regclass "
                    "ORDER BY shardid LIMIT 2").fetchall()):
                target = next(w.port for w in workers if w.port != port)
                began = time.perf_counter()
                conn.execute("SELECT citus_move_shard_placement(%s, '127.0.0.1', %s, '127.0.0.1', %s, "
                             "shard_transfer_mode => %s)", [shardid, port, target, mode])
                transfers.append((mode, size, time.perf_counter() - began))

            conn.execute("SELECT shardcast.citus_register_strategy()")
            plans = {}
            for strategy in ("shardcast", "by_shard_count", "by_disk_size"):
                plans[strategy] = timed(conn, "SELECT * FROM get_rebalance_table_shards_plan("
                                              f"rebalance_strategy := '{strategy}')", repeat=3)

            # The order of the moves: Citus's plans to the empty node, queued by shardcast, in
            # Citus's order and in shardcast's, as the report replays them (1 s a move: none ran).
            wait_for("the blobs' shards registered", lambda: conn.execute(
                "SELECT count(*) >= %s FROM shardcast.citus_shards", [args.shards + 4]).fetchone()[0], timeout=60)
            conn.execute("SELECT shardcast.refresh_forecasts()")
            conn.execute("SELECT shardcast.enqueue_citus_rebalance('by_disk_size')")
            orders = conn.execute("""
                SELECT plan, move_order, moves, hottest_share_start, hottest_share_mean, hottest_share_end
                FROM shardcast.citus_rebalance_report() ORDER BY plan, move_order""").fetchall()

    print(f"# shardcast on Citus: {args.shards} shards on {args.workers} workers (+ coordinator), one 2-CPU machine\n")
    if cycles:
        cycles.sort()
        print(f"Coordinator cycle (sample every second, {len(cycles)} cycles): median {statistics.median(cycles):.0f} ms, "
              f"p90 {cycles[int(0.9 * (len(cycles) - 1))]:.0f} ms, max {cycles[-1]:.0f} ms\n")
    else:
        print("Coordinator cycle: no cycle completed while watching\n")
    print("| rebalance plan | median ms | moves |")
    print("|---|---:|---:|")
    for strategy, (ms, moves) in plans.items():
        print(f"| {strategy} | {ms:.0f} | {moves} |")
    print("\n| shard move | size | seconds | MB/s |")
    print("|---|---:|---:|---:|")
    for mode, size, secs in transfers:
        print(f"| {mode} | {size / 2**20:.0f} MB | {secs:.1f} | {size / 2**20 / secs:.0f} |")
    print("\n| plan (moves to the added node) | order | moves | hottest share at the start | mean while moving | at the end |")
    print("|---|---|---:|---:|---:|---:|")
    for plan, order, moves, start, mean, end in orders:
        print(f"| {plan} | {order} | {moves} | {start:.3f} | {mean:.3f} | {end:.3f} |")
    print(f"\nWhole run: {time.monotonic() - started:.0f} s.")


if __name__ == "__main__":
    main()
