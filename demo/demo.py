"""`make demo`: shardcast's main job on an embedded default, end to end.

Starts three throwaway PostgreSQL 15 clusters: a source with shardcast preloaded and two replicas
of different capacity. Creates a small shop schema on the source, runs a skewed pgbench workload,
and prints what shardcast learned and decided: the shards with their sparklines and scores, the
prioritized queue, the allocation plan and the manifest. Then the replication driver makes the
replicas copy every table with native logical replication, hot tables first, while the workload
goes on; the demo ends with the completion log and the report against FIFO. Everything is
removed at the end.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pg_test"))

from cluster import source_with_replicas, wait_for  # noqa: E402

DRIVER = Path(__file__).resolve().parent.parent / "driver" / "shardcast_driver.py"

DB = "shop"
WORKLOAD_SECONDS = 20

SCHEMA = """
-- The oldest tables first, as in any shop that has been around: catalog (FIFO) order copies them first.
DO $$ BEGIN
    FOR y IN 2016..2025 LOOP
        EXECUTE format('CREATE TABLE archive_%s (id int PRIMARY KEY, payload text)', y);
        EXECUTE format('INSERT INTO archive_%s SELECT i, repeat(md5(i::text), 15) FROM generate_series(1, 20000) i', y);
    END LOOP;
END $$;
CREATE TABLE customers (id int PRIMARY KEY, name text, city text);
CREATE TABLE products  (id int PRIMARY KEY, title text, price numeric);
CREATE TABLE orders    (id bigint, customer_id int REFERENCES customers, product_id int REFERENCES products,
                        at date, PRIMARY KEY (id, at))
    PARTITION BY RANGE (at);
CREATE TABLE orders_2026_10 PARTITION OF orders FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
CREATE TABLE orders_2026_11 PARTITION OF orders FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
CREATE TABLE audit_log (id bigserial PRIMARY KEY, event text, at timestamptz DEFAULT now());
CREATE SCHEMA scratch;
CREATE TABLE scratch.tmp_import (id int);

INSERT INTO customers SELECT i, 'customer ' || i, 'city ' || (i % 50) FROM generate_series(1, 20000) i;
INSERT INTO products SELECT i, 'product ' || i, (i % 100) + 0.99 FROM generate_series(1, 2000) i;
INSERT INTO orders SELECT i, i % 20000 + 1, i % 2000 + 1, date '2026-10-01' + (i % 60)
    FROM generate_series(1, 100000) i;
ANALYZE;
"""

# pgbench scripts and their weights: the checkout path is hot, the archive is almost never read.
WORKLOAD = {
    "customer_lookup": (60, r"""
\set id random(1, 20000)
SELECT name, city FROM customers WHERE id = :id;
"""),
    "recent_orders": (30, r"""
\set c random(1, 20000)
SELECT count(*) FROM orders_2026_11 WHERE customer_id = :c;
"""),
    "product_page": (15, r"""
\set p random(1, 2000)
SELECT title, price FROM products WHERE id = :p;
"""),
    "audit": (5, r"""
INSERT INTO audit_log (event) VALUES ('checkout');
"""),
    "archive": (1, r"""
\set a random(1, 20000)
SELECT payload FROM archive_2019 WHERE id = :a;
"""),
}


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def psql(cluster, sql: str) -> None:
    subprocess.run(["psql", cluster.dsn(DB), "-X", "-P", "pager=off", "-c", sql], check=True)


def start_workload(cluster, scripts_dir: str, seconds: int) -> subprocess.Popen:
    return cluster.start_pgbench(DB, WORKLOAD, scripts_dir, seconds, rate=400)


def learn(source) -> None:
    banner(f"a skewed pgbench workload for {WORKLOAD_SECONDS} s: "
           + ", ".join(f"{name} x{weight}" for name, (weight, _) in WORKLOAD.items()))
    with tempfile.TemporaryDirectory() as scripts:
        workload = start_workload(source, scripts, WORKLOAD_SECONDS)
        _, err = workload.communicate()
        if workload.returncode != 0:
            sys.exit(f"pgbench failed: {err}")
    time.sleep(2.5)  # two more samples, so the last seconds of load are recorded

    banner("shardcast.shard_activity: what the worker recorded, hottest first (reads are scans, "
           "as the forecasts count them; a sequential scan reads many tuples)")
    psql(source, """
        SELECT shard, pg_size_pretty(size_bytes) AS size, round(reads_per_sec::numeric, 1) AS reads_per_sec,
               round(writes_per_sec::numeric, 1) AS writes_per_sec, scans_last_hour, tuples_read_last_hour,
               tuples_written_last_hour
        FROM shardcast.shard_activity ORDER BY reads_per_sec DESC, shard_id""")
    banner("shardcast.priority_scores: forecast x class weight, lifted along foreign keys "
           "(products also has a week of imported history)")
    with source.connect(DB) as conn:
        conn.execute("SELECT shardcast.refresh_forecasts()")
    psql(source, """
        SELECT rank, shard, class, weight, round(predicted_load::numeric) AS predicted_load, model,
               round(lift::numeric) AS lift, lift_source, round(score::numeric) AS score,
               priority_weight, tier, sparkline
        FROM shardcast.priority_scores ORDER BY rank""")


def plan(source, fast, slow) -> None:
    banner("two replicas: replica-fast (200 MB/s, 3 at once) and replica-slow (20 MB/s, 2 at once, 50% busy); "
           "every shard enqueued, node assignment chooses")
    with source.connect(DB) as conn:
        conn.execute("SELECT shardcast.add_node('replica-fast', 200e6, 3, %s)", [fast.dsn(DB)])
        conn.execute("SELECT shardcast.add_node('replica-slow', 20e6, 2, %s)", [slow.dsn(DB)])
        conn.execute("SELECT shardcast.report_node_load('replica-slow', 0.5)")
        conn.execute("SELECT shardcast.enqueue_all()")
    banner("shardcast.prioritized_queue: express lane first, then hot and small first (score per byte)")
    psql(source, """
        SELECT position, shard, pg_size_pretty(size_bytes) AS size, round(score::numeric) AS score,
               priority_weight, tier, prefetch, node
        FROM shardcast.prioritized_queue""")
    banner("shardcast.allocation_plan(2 workers, 50 MB/s)")
    psql(source, """
        SELECT position, shard, worker, node, pg_size_pretty(bandwidth_share::bigint) || '/s' AS bandwidth,
               round(extract(epoch FROM expected_start - now())::numeric, 2) AS start_s,
               round(extract(epoch FROM expected_finish - now())::numeric, 2) AS finish_s
        FROM shardcast.allocation_plan(2, 50000000)""")
    banner("shardcast.replication_manifest (and manifest_json(), its versioned document: first task shown)")
    psql(source, "SELECT * FROM shardcast.replication_manifest ORDER BY position")
    psql(source, "SELECT jsonb_pretty(jsonb_set(d, '{tasks}', d->'tasks'->0)) AS manifest_json "
                 "FROM shardcast.manifest_json() d")


def sync(source, fast, slow) -> None:
    banner(f"python3 driver/shardcast_driver.py --source '{source.dsn(DB)}'   (the workload goes on meanwhile)")
    with tempfile.TemporaryDirectory() as scripts, source.connect(DB) as listener:
        listener.execute("LISTEN shardcast_completion")
        workload = start_workload(source, scripts, 600)
        try:
            time.sleep(2)
            driver = subprocess.run([sys.executable, str(DRIVER), "--source", source.dsn(DB), "--worker", "demo"])
        finally:
            workload.terminate()
            workload.communicate()
        heard = [json.loads(n.payload) for n in listener.notifies(timeout=2)]
    if driver.returncode != 0:
        sys.exit(f"the driver failed with status {driver.returncode}")
    print(f"\na LISTEN shardcast_completion client heard {len(heard)} notifications, the first: {heard[0] if heard else None}")
    time.sleep(2.5)

    banner("shardcast.completion_log: what became ready where, in order")
    psql(source, """
        SELECT finished_at::time(3) AS ready_at, schema_name || '.' || table_name AS shard, node,
               priority_weight, pg_size_pretty(size_bytes) AS size, round(extract(epoch FROM duration)::numeric, 2) AS seconds
        FROM shardcast.completion_log ORDER BY finished_at""")
    banner("shardcast.prioritization_report: access-weighted availability of this run against FIFO and perfect foresight")
    psql(source, """
        SELECT tasks, pg_size_pretty(bytes_copied) AS copied, round(awa_realised::numeric, 3) AS realised,
               round(awa_fifo::numeric, 3) AS fifo, round(awa_oracle::numeric, 3) AS oracle,
               round(capture::numeric, 2) AS capture
        FROM shardcast.prioritization_report""")
    banner("the replicas: every table there, rows as on the source once caught up")
    counts = []
    with source.connect(DB) as src:
        tables = [r[0] for r in src.execute(
            "SELECT format('%I.%I', s.schema_name, s.table_name) || ':' || t.node FROM shardcast.replication_tasks t"
            " JOIN shardcast.shards s USING (shard_id) WHERE t.state = 'done' ORDER BY 1")]
        source.wait_for_subscribers(DB)
        for entry in tables:
            table, node = entry.rsplit(":", 1)
            replica = fast if node == "replica-fast" else slow
            with replica.connect(DB) as dst:
                there = dst.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            here = src.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            counts.append((table, node, here, there))
    width = max(len(t) for t, _, _, _ in counts)
    for table, node, here, there in counts:
        print(f"  {table:<{width}}  {node:<13} source {here:>7}  replica {there:>7}  {'ok' if here == there else 'DIFFERS'}")


def main() -> None:
    settings = {"shardcast.database": f"'{DB}'", "shardcast.sample_interval": "'1s'",
                "shardcast.refresh_interval": "'5s'", "shardcast.excluded_schemas": "'scratch'",
                "shardcast.prefetch_quantile": "0.9"}
    with source_with_replicas(settings, DB, "shardcast-demo") as (source, fast, slow):
        banner(f"source: PostgreSQL 15 on 127.0.0.1:{source.port}, shared_preload_libraries = 'shardcast', "
               f"wal_level = logical; replicas on ports {fast.port} and {slow.port}")
        with source.connect(DB) as conn:
            conn.execute(SCHEMA)
            conn.execute("SELECT shardcast.set_shard_class('orders', 'critical')")
            conn.execute("SELECT shardcast.set_shard_class('audit_log', 'log')")
            wait_for("the worker to register the shop's tables", lambda: conn.execute(
                "SELECT count(*) >= 15 FROM shardcast.shards WHERE retired_at IS NULL").fetchone()[0])
            # A week of history that a query log knows about: a daily cycle on products.
            conn.execute("""
                SELECT shardcast.record_access(array_agg('products'::regclass),
                                               array_agg(now() - h * interval '1 hour'),
                                               array_agg(1000 + 800 * sin(h * pi() / 12)))
                FROM generate_series(7, 7 * 24) h""")
        print("scratch.tmp_import is not a shard: scratch is in shardcast.excluded_schemas.")
        learn(source)
        plan(source, fast, slow)
        sync(source, fast, slow)
    banner("done; the three throwaway clusters are gone")


if __name__ == "__main__":
    main()
