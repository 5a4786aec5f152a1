"""Sampler benchmark: cycle time and history bytes for 1,000 and 10,000 tables.

Prints figures; asserts nothing. Run with `make bench` (release build), or
`python3 bench/sampler_bench.py 1000 10000` after `make install-release`.

Cycle time is the worker's own `last_cycle_ms` (registry sync, reading the statistics views,
deltas, writing buckets; not the purge and compaction, which run after the sample in their own
transactions since 2026-11-28) while every table is read between two samples, so every shard
writes a bucket each cycle: the busiest case.

History bytes are measured on 28 days of history for every shard, at full density (every shard
active in every hour, random values that do not compress) in the shape the worker writes: day
rows of 24 hourly slots per counter, plus 6 hours of 5-minute buckets.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pg_test"))

from cluster import running_cluster, wait_for  # noqa: E402

DB = "bench"
RETENTION_DAYS = 28


def one(conn, sql, *args):
    return conn.execute(sql, args).fetchone()[0]


def bench(tables: int) -> dict:
    settings = {"shardcast.database": f"'{DB}'", "shardcast.sample_interval": "'1s'",
                "max_locks_per_transaction": "1024", "shared_buffers": "'256MB'"}
    with running_cluster(settings, "shardcast-bench") as cluster:
        with cluster.connect() as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        with cluster.connect(DB) as conn:
            conn.execute("CREATE EXTENSION shardcast")
            started = time.monotonic()
            for first in range(0, tables, 1000):
                conn.execute(f"""
                    DO $$ BEGIN
                        FOR i IN {first}..{min(first + 1000, tables) - 1} LOOP
                            EXECUTE format('CREATE TABLE public.t%s (id int PRIMARY KEY, v int)', i);
                            EXECUTE format('INSERT INTO public.t%s VALUES (1, 1)', i);
                        END LOOP;
                    END $$""")
            print(f"  created {tables} tables in {time.monotonic() - started:.1f} s", flush=True)
            wait_for("registration", lambda: one(
                conn, "SELECT shards_tracked FROM shardcast.worker_status") >= tables, timeout=300)
            # Let the first sizes be measured (1,000 per cycle) before timing steady cycles.
            wait_for("sizes", lambda: one(
                conn, "SELECT count(*) = 0 FROM shardcast.shards WHERE size_bytes IS NULL"), timeout=300)

            cycles = []
            for _ in range(8):
                conn.execute(f"""
                    DO $$ BEGIN
                        FOR i IN 0..{tables - 1} LOOP
                            EXECUTE format('SELECT v FROM public.t%s WHERE id = 1', i);
                        END LOOP;
                    END $$""")
                time.sleep(0.05)  # the DO block's statistics are flushed when the session idles
                before = one(conn, "SELECT samples_written FROM shardcast.worker_status")
                wait_for("a busy sample", lambda: one(
                    conn, "SELECT samples_written FROM shardcast.worker_status") >= before + tables, timeout=60)
                cycles.append(one(conn, "SELECT last_cycle_ms FROM shardcast.worker_status"))

            # 28 days of full-density history, in the worker's own format.
            conn.execute("TRUNCATE shardcast.recent_access, shardcast.daily_access")
            conn.execute(f"""
                INSERT INTO shardcast.daily_access
                SELECT s.shard_id, current_date - d,
                       (SELECT array_agg((random() * 1e6)::real) FROM generate_series(1, 24) WHERE s.shard_id > 0),
                       (SELECT array_agg((random() * 1e8)::real) FROM generate_series(1, 24) WHERE s.shard_id > 0),
                       (SELECT array_agg((random() * 1e5)::real) FROM generate_series(1, 24) WHERE s.shard_id > 0),
                       (SELECT array_agg((random() * 1e7)::real) FROM generate_series(1, 24) WHERE s.shard_id > 0),
                       (SELECT array_agg((random() * 1e4)::real) FROM generate_series(1, 24) WHERE s.shard_id > 0),
                       16777215
                FROM shardcast.shards s CROSS JOIN generate_series(1, {RETENTION_DAYS}) d
                WHERE s.retired_at IS NULL""")
            conn.execute("""
                INSERT INTO shardcast.recent_access
                SELECT s.shard_id, date_bin('5 minutes', now(), 'epoch') - b * interval '5 minutes',
                       random() * 1e4, random() * 1e6, random() * 1e3, random() * 1e5, random() * 1e2
                FROM shardcast.shards s CROSS JOIN generate_series(0, 71) b
                WHERE s.retired_at IS NULL
                ON CONFLICT DO NOTHING""")
            conn.execute("VACUUM ANALYZE shardcast.daily_access, shardcast.recent_access")
            daily = one(conn, "SELECT pg_total_relation_size('shardcast.daily_access')")
            recent = one(conn, "SELECT pg_total_relation_size('shardcast.recent_access')")
            return {
                "tables": tables,
                "cycle_ms_median": statistics.median(cycles),
                "cycle_ms_max": max(cycles),
                "daily_bytes": daily,
                "recent_bytes": recent,
                "bytes_per_shard_day": daily / (tables * RETENTION_DAYS),
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="*", type=int, default=[1000, 10000],
                        help="numbers of tables to measure (default: 1000 10000)")
    sizes = parser.parse_args().tables
    results = []
    for tables in sizes:
        print(f"benchmarking {tables} tables ...", flush=True)
        results.append(bench(tables))
    print()
    print("| tables | sampler cycle, median | max | day rows (28 days) | 5-min buckets (6 h) | total | bytes per shard per day |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        total = r["daily_bytes"] + r["recent_bytes"]
        print(f"| {r['tables']:,} | {r['cycle_ms_median']:.0f} ms | {r['cycle_ms_max']:.0f} ms "
              f"| {r['daily_bytes'] / 2**20:.1f} MiB | {r['recent_bytes'] / 2**20:.1f} MiB "
              f"| {total / 2**20:.1f} MiB | {r['bytes_per_shard_day']:.0f} |")


if __name__ == "__main__":
    main()
