"""Forecast cost benchmark: full refit and steady-state refresh for 1,000 and 10,000 shards with
28 days of history, in a real cluster through `shardcast.refresh_forecasts()`.

Prints figures; asserts nothing. `make bench` runs it, or after `make install-release`:
python3 bench/forecast_bench.py 1000 10000

History is written in the worker's own format (day rows of hourly slots) with a daily cycle, a
weekly cycle, noise and a spread of levels, 28 days per shard; 5-minute history of the last hours
is not generated (forecasts use hourly history). The first refresh selects a model for every
shard by backtest (the full refit); the next ones reselect 1/12 of the shards each (refresh
every 5 minutes, refit every hour), as the worker does in steady state.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pg_test"))

from cluster import running_cluster  # noqa: E402

DB = "bench"


def backend_cpu(conn) -> float:
    """CPU seconds (user + system) used so far by the connection's backend process."""
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / float(__import__("os").sysconf("SC_CLK_TCK"))


def bench(shards: int) -> dict:
    settings = {"shardcast.database": "'postgres'", "shardcast.enabled": "off",
                "max_locks_per_transaction": "1024", "shared_buffers": "'256MB'"}
    with running_cluster(settings, "shardcast-fbench") as cluster:
        with cluster.connect() as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        with cluster.connect(DB) as conn:
            conn.execute("CREATE EXTENSION shardcast")
            for first in range(0, shards, 1000):
                conn.execute(f"""
                    DO $$ BEGIN
                        FOR i IN {first}..{min(first + 1000, shards) - 1} LOOP
                            EXECUTE format('CREATE TABLE public.t%s (id int)', i);
                        END LOOP;
                    END $$""")
            conn.execute("SELECT count(*) FROM shardcast.shard_candidates")
            conn.execute("""
                INSERT INTO shardcast.shards (relid, schema_name, table_name, first_seen)
                SELECT relid, schema_name, table_name, now() - interval '30 days'
                FROM shardcast.shard_candidates""")
            conn.execute("""
                INSERT INTO shardcast.daily_access
                SELECT s.shard_id, current_date - d, p.load, p.load,
                       array_fill(1::real, ARRAY[24]),
                       array_fill(0::real, ARRAY[24]),
                       array_fill(0::real, ARRAY[24]),
                       16777215
                FROM (SELECT shard_id, exp(random() * 12) AS level, (random() * 24)::int AS phase
                      FROM shardcast.shards) s
                CROSS JOIN generate_series(0, 27) d
                CROSS JOIN LATERAL (
                    SELECT array_agg(greatest(0, s.level * (1 + 0.6 * sin((h + s.phase) * pi() / 12))
                                               * (CASE WHEN extract(isodow FROM current_date - d) > 5 THEN 0.5 ELSE 1 END)
                                               * (0.8 + 0.4 * random()))::real ORDER BY h) AS load
                    FROM generate_series(0, 23) h) p""")
            conn.execute("VACUUM ANALYZE shardcast.daily_access")

            def timed():
                cpu, wall = backend_cpu(conn), time.monotonic()
                scored = conn.execute("SELECT shardcast.refresh_forecasts()").fetchone()[0]
                return scored, time.monotonic() - wall, backend_cpu(conn) - cpu

            conn.execute("SET client_min_messages = debug1")
            conn.add_notice_handler(lambda notice: print("   ", notice.message_primary, flush=True))
            scored, full_wall, full_cpu = timed()
            # Steady state: each selection is older than the refit interval after an hour; age
            # them all, so that the next refreshes reselect their budget (1/12) each.
            conn.execute("UPDATE shardcast.forecast_state SET selected_at = selected_at - interval '2 hours'")
            steady = [timed() for _ in range(3)]
            models = conn.execute("""
                SELECT string_agg(model || ' ' || n, ', ' ORDER BY n DESC)
                FROM (SELECT model, count(*) n FROM shardcast.forecast_state GROUP BY model) m""").fetchone()[0]
            return {
                "shards": scored,
                "full_wall": full_wall,
                "full_cpu": full_cpu,
                "steady_wall": sum(s[1] for s in steady) / len(steady),
                "steady_cpu": sum(s[2] for s in steady) / len(steady),
                "models": models,
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", nargs="*", type=int, default=[1000, 10000],
                        help="numbers of shards to measure (default: 1000 10000)")
    sizes = parser.parse_args().shards
    results = []
    for shards in sizes:
        print(f"benchmarking {shards} shards ...", flush=True)
        results.append(bench(shards))
    print()
    print("| shards | full refit, wall | CPU | steady-state refresh, wall | CPU | models chosen |")
    print("|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['shards']:,} | {r['full_wall']:.1f} s | {r['full_cpu']:.1f} s "
              f"| {r['steady_wall']:.1f} s | {r['steady_cpu']:.1f} s | {r['models']} |")


if __name__ == "__main__":
    main()
