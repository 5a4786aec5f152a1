"""Replication queue benchmark: claim_task latency and throughput with 16 concurrent pgbench
clients over 100,000 queued tasks, and the time to compute prioritized_queue and
allocation_plan at 100,000 tasks.

Prints figures; asserts nothing. `make bench` runs it, or after `make install-release`:
python3 bench/queue_bench.py [tables] [nodes]   (default 1000 tables x 100 nodes = 100,000 tasks)

Each pgbench transaction claims the next task and completes it in one statement, so the queue
drains as it would under replication scripts that copy instantly: the controller's own cost.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pg_test"))

from cluster import running_cluster  # noqa: E402

DB = "bench"
CLIENTS = 16
SECONDS = 20
OFFERED_RATES = (100, 400, 800)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="?", type=int, default=1000, help="tables (default 1000)")
    parser.add_argument("nodes", nargs="?", type=int, default=100,
                        help="nodes, one task per table and node (default 100)")
    args = parser.parse_args()
    tables, nodes = args.tables, args.nodes
    settings = {"shardcast.database": "'postgres'", "shardcast.enabled": "off",
                "max_connections": "100", "shared_buffers": "'256MB'", "max_locks_per_transaction": "1024"}
    with running_cluster(settings, "shardcast-qbench") as cluster:
        with cluster.connect() as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        with cluster.connect(DB) as conn:
            conn.execute("CREATE EXTENSION shardcast")
            conn.execute(f"""
                DO $$ BEGIN
                    FOR i IN 1..{tables} LOOP
                        EXECUTE format('CREATE TABLE public.t%s (id int)', i);
                    END LOOP;
                END $$""")
            conn.execute(f"SELECT shardcast.add_node('n' || i, 1e6 * (1 + i % 10), 1000) FROM generate_series(1, {nodes}) i")
            # enqueue_all('n1') registers the tables and queues the first node's tasks; the other
            # nodes' are written directly, and enqueue_all('n1') again (idempotent) replans the
            # whole queue once.
            conn.execute("SELECT shardcast.enqueue_all('n1')")
            conn.execute("SELECT shardcast.refresh_forecasts()")
            conn.execute("""
                INSERT INTO shardcast.replication_tasks (shard_id, requested_node, node, size_bytes)
                SELECT s.shard_id, n.node, n.node, coalesce(s.size_bytes, 8192)
                FROM shardcast.shards s CROSS JOIN shardcast.nodes n WHERE n.node <> 'n1'""")
            started = time.monotonic()
            conn.execute("SELECT shardcast.enqueue_all('n1')")
            enqueue_s = time.monotonic() - started
            total = conn.execute("SELECT count(*) FROM shardcast.replication_tasks WHERE state = 'queued'").fetchone()[0]
            print(f"{total:,} tasks queued; enqueue_all with its replan of the whole queue took {enqueue_s:.1f} s")

            def timed(sql: str, runs: int = 3) -> float:
                times = []
                for _ in range(runs):
                    t = time.monotonic()
                    conn.execute(sql).fetchall()
                    times.append(time.monotonic() - t)
                return statistics.median(times)

            queue_s = timed("SELECT * FROM shardcast.prioritized_queue")
            plan_s = timed("SELECT * FROM shardcast.allocation_plan(16, 1000000000)")
            manifest_s = timed("SELECT shardcast.manifest_json()")

        def pgbench(clients: int, seconds: int, sql: str, rate: int | None = None):
          """Runs `sql` from `clients` pgbench clients; with `rate`, at that many transactions per
          second in all (Poisson arrivals), and the latency includes any wait for its schedule."""
          with tempfile.TemporaryDirectory() as scratch:
            script = Path(scratch) / "claim.sql"
            script.write_text(sql)
            log_prefix = Path(scratch) / "log"
            throttle = ["-R", str(rate)] if rate else []
            out = subprocess.run(
                [cluster.bin("pgbench"), "-n", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds),
                 *throttle, "-f", str(script), "-l", "--log-prefix", str(log_prefix), cluster.dsn(DB)],
                check=True, capture_output=True, text=True, cwd=scratch)
            latencies = []
            for log in Path(scratch).glob("log*"):
                for line in log.read_text().splitlines():
                    fields = line.split()
                    lag = int(fields[6]) if rate and len(fields) > 6 else 0
                    latencies.append((int(fields[2]) + lag) / 1000.0)  # microseconds -> ms
            latencies.sort()
            tps = next(l for l in out.stdout.splitlines() if l.startswith("tps"))
            return tps.split("=")[1].split("(")[0].strip(), latencies

        claim_and_complete = "SELECT shardcast.complete_task(task_id) FROM shardcast.claim_task('w:client_id');\n"
        single_tps, single = pgbench(1, 5, claim_and_complete)
        tps, latencies = pgbench(CLIENTS, SECONDS, claim_and_complete)
        # Replication scripts claim once per table copied, not back to back: offered load.
        offered = {rate: pgbench(CLIENTS, 10, claim_and_complete, rate)[1] for rate in OFFERED_RATES}
        # The driver claims for one node at a time.
        for_node = (f"\\set n random(1, {nodes})\n"
                    "SELECT shardcast.complete_task(task_id) FROM shardcast.claim_task('w:client_id', 'n' || :n);\n")
        node_tps, node_single = pgbench(1, 5, for_node)
        node_offered = pgbench(CLIENTS, 10, for_node, OFFERED_RATES[0])[1]
        # Claims alone: the tasks stay claimed (their scripts would be copying).
        claim_only = "SELECT task_id FROM shardcast.claim_task('w:client_id');\n"
        single_claim_tps, single_claims = pgbench(1, 5, claim_only)
        claim_tps, claims = pgbench(CLIENTS, 10, claim_only)
        with cluster.connect(DB) as conn:
            done = conn.execute("SELECT count(*) FROM shardcast.replication_tasks WHERE state = 'done'").fetchone()[0]
            dupes = conn.execute("""SELECT count(*) FROM (SELECT task_id FROM shardcast.completion_log
                                    GROUP BY task_id HAVING count(*) > 1) d""").fetchone()[0]

    def pct(values, p):
        return values[min(len(values) - 1, int(p * len(values)))]

    print()
    print(f"| {total:,} queued tasks ({tables} tables x {nodes} nodes) | figure |")
    print("|---|---:|")
    print(f"| prioritized_queue (whole queue) | {queue_s * 1000:.0f} ms |")
    print(f"| allocation_plan(16 workers) | {plan_s * 1000:.0f} ms |")
    print(f"| manifest_json() | {manifest_s * 1000:.0f} ms |")
    print(f"| claim + complete, 1 client, 5 s | {float(single_tps):.0f} tasks/s |")
    print(f"| latency p50 / p95 / p99, 1 client | {pct(single, 0.5):.2f} / {pct(single, 0.95):.2f} / {pct(single, 0.99):.2f} ms |")
    print(f"| claim + complete, {CLIENTS} clients, {SECONDS} s | {float(tps):.0f} tasks/s |")
    print(f"| latency p50 / p95 / p99, {CLIENTS} clients | {pct(latencies, 0.5):.2f} / {pct(latencies, 0.95):.2f} / {pct(latencies, 0.99):.2f} ms |")
    for rate, lat in offered.items():
        print(f"| latency p50 / p95 / p99, {CLIENTS} clients offering {rate} tasks/s in all | {pct(lat, 0.5):.2f} / {pct(lat, 0.95):.2f} / {pct(lat, 0.99):.2f} ms |")
    print(f"| claim + complete for one node, 1 client, 5 s | {float(node_tps):.0f} tasks/s |")
    print(f"| latency p50 / p95 / p99, one node, 1 client | {pct(node_single, 0.5):.2f} / {pct(node_single, 0.95):.2f} / {pct(node_single, 0.99):.2f} ms |")
    print(f"| latency p50 / p95 / p99, one node, {CLIENTS} clients offering {OFFERED_RATES[0]} tasks/s | {pct(node_offered, 0.5):.2f} / {pct(node_offered, 0.95):.2f} / {pct(node_offered, 0.99):.2f} ms |")
    print(f"| claim alone, 1 client, 5 s | {float(single_claim_tps):.0f} claims/s |")
    print(f"| latency p50 / p95 / p99, claim alone, 1 client | {pct(single_claims, 0.5):.2f} / {pct(single_claims, 0.95):.2f} / {pct(single_claims, 0.99):.2f} ms |")
    print(f"| claim alone, {CLIENTS} clients, 10 s | {float(claim_tps):.0f} claims/s |")
    print(f"| latency p50 / p95 / p99, claim alone, {CLIENTS} clients | {pct(claims, 0.5):.2f} / {pct(claims, 0.95):.2f} / {pct(claims, 0.99):.2f} ms |")
    print(f"| tasks completed, completed twice | {done:,}, {dupes} |")


if __name__ == "__main__":
    main()
