"""`make demo`: shardcast's main job on an embedded default.

Starts a throwaway PostgreSQL 15 with shardcast preloaded, creates a small shop schema, runs a
skewed pgbench workload against it, and prints what the background worker recorded.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pg_test"))

from cluster import running_cluster, wait_for  # noqa: E402

DB = "shop"
WORKLOAD_SECONDS = 20

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text, city text);
CREATE TABLE products  (id int PRIMARY KEY, title text, price numeric);
CREATE TABLE orders    (id bigint, customer_id int REFERENCES customers, product_id int REFERENCES products,
                        at date, PRIMARY KEY (id, at))
    PARTITION BY RANGE (at);
CREATE TABLE orders_2026_10 PARTITION OF orders FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
CREATE TABLE orders_2026_11 PARTITION OF orders FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
CREATE TABLE audit_log (id bigserial PRIMARY KEY, event text, at timestamptz DEFAULT now());
CREATE TABLE archive_2019 (id int, payload text);
CREATE SCHEMA scratch;
CREATE TABLE scratch.tmp_import (id int);

INSERT INTO customers SELECT i, 'customer ' || i, 'city ' || (i % 50) FROM generate_series(1, 20000) i;
INSERT INTO products SELECT i, 'product ' || i, (i % 100) + 0.99 FROM generate_series(1, 2000) i;
INSERT INTO orders SELECT i, i % 20000 + 1, i % 2000 + 1, date '2026-10-01' + (i % 60)
    FROM generate_series(1, 100000) i;
INSERT INTO archive_2019 SELECT i, repeat('x', 500) FROM generate_series(1, 50000) i;
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
\set a random(1, 50000)
SELECT payload FROM archive_2019 WHERE id = :a;
"""),
}


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def psql(cluster, sql: str) -> None:
    subprocess.run(["psql", cluster.dsn(DB), "-X", "-P", "pager=off", "-c", sql], check=True)


def main() -> None:
    settings = {"shardcast.database": f"'{DB}'", "shardcast.sample_interval": "'1s'",
                "shardcast.refresh_interval": "'5s'", "shardcast.excluded_schemas": "'scratch'"}
    with running_cluster(settings, "shardcast-demo") as cluster:
        banner(f"PostgreSQL 15 on 127.0.0.1:{cluster.port}, shared_preload_libraries = 'shardcast', "
               "shardcast.sample_interval = 1s, shardcast.excluded_schemas = 'scratch'")
        with cluster.connect() as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        with cluster.connect(DB) as conn:
            conn.execute("CREATE EXTENSION shardcast")
            conn.execute(SCHEMA)
            conn.execute("SELECT shardcast.set_shard_class('orders', 'critical')")
            conn.execute("SELECT shardcast.set_shard_class('audit_log', 'log')")
            wait_for("the worker to register the shop's tables", lambda: conn.execute(
                "SELECT count(*) >= 6 FROM shardcast.shards WHERE retired_at IS NULL").fetchone()[0])
            # Import a week of history that a query log knows about: a daily cycle on products.
            conn.execute("""
                SELECT shardcast.record_access(array_agg('products'::regclass),
                                               array_agg(now() - h * interval '1 hour'),
                                               array_agg(1000 + 800 * sin(h * pi() / 12)))
                FROM generate_series(7, 7 * 24) h""")
        psql(cluster, "SELECT shard_id, shard, parent FROM shardcast.shard_activity ORDER BY shard_id")

        banner(f"a skewed pgbench workload for {WORKLOAD_SECONDS} s: "
               + ", ".join(f"{name} x{weight}" for name, (weight, _) in WORKLOAD.items()))
        with tempfile.TemporaryDirectory() as scripts:
            args = []
            for name, (weight, body) in WORKLOAD.items():
                path = Path(scripts) / f"{name}.sql"
                path.write_text(body)
                args += ["-f", f"{path}@{weight}"]
            subprocess.run([cluster.bin("pgbench"), "-n", "-c", "4", "-j", "2", "-T", str(WORKLOAD_SECONDS),
                            *args, cluster.dsn(DB)], check=True)
        time.sleep(2.5)  # two more samples, so the last seconds of load are recorded

        banner("shardcast.shard_activity: what the worker recorded, hottest first")
        psql(cluster, """
            SELECT shard, pg_size_pretty(size_bytes) AS size, round(reads_per_sec::numeric, 1) AS reads_per_sec,
                   round(writes_per_sec::numeric, 1) AS writes_per_sec, scans_last_hour,
                   tuples_read_last_hour, tuples_written_last_hour, tuples_read_last_day
            FROM shardcast.shard_activity ORDER BY reads_per_sec DESC, shard_id""")
        banner("shardcast.access_history: the last buckets")
        psql(cluster, """
            SELECT shard, bucket_start, bucket_width, scans, tuples_read, tuples_written, blocks_hit, blocks_read
            FROM shardcast.access_history WHERE bucket_start > now() - interval '10 minutes'
            ORDER BY tuples_read DESC""")
        banner("shardcast.access_history: imported history of products (hourly buckets, last 6 shown)")
        psql(cluster, """
            SELECT bucket_start, bucket_width, round(tuples_read::numeric) AS tuples_read
            FROM shardcast.access_history WHERE shard = 'products'::regclass
              AND bucket_width = interval '1 hour'
            ORDER BY bucket_start DESC LIMIT 6""")
        banner("shardcast.priority_scores: what to replicate first (forecast x class weight, lifted along foreign keys)")
        with cluster.connect(DB) as conn:
            conn.execute("SELECT shardcast.refresh_forecasts()")
        psql(cluster, """
            SELECT rank, shard, class, weight, round(predicted_load::numeric) AS predicted_load, model,
                   round(lift::numeric) AS lift, lift_source, round(score::numeric) AS score,
                   priority_weight, tier, sparkline
            FROM shardcast.priority_scores ORDER BY rank""")
        banner("the replication queue: two destinations, every shard enqueued (shardcast.prioritized_queue)")
        with cluster.connect(DB) as conn:
            conn.execute("SELECT shardcast.add_node('replica-fast', 200e6, 4)")
            conn.execute("SELECT shardcast.add_node('replica-slow', 20e6, 2)")
            conn.execute("SELECT shardcast.enqueue_all()")
        psql(cluster, """
            SELECT position, shard, pg_size_pretty(size_bytes) AS size, round(score::numeric) AS score,
                   priority_weight, tier, prefetch, node
            FROM shardcast.prioritized_queue""")
        banner("shardcast.allocation_plan(2 workers, 50 MB/s)")
        psql(cluster, """
            SELECT position, shard, worker, node, pg_size_pretty(bandwidth_share::bigint) || '/s' AS bandwidth,
                   round(extract(epoch FROM expected_start - now())::numeric, 2) AS start_s,
                   round(extract(epoch FROM expected_finish - now())::numeric, 2) AS finish_s
            FROM shardcast.allocation_plan(2, 50000000)""")
        banner("shardcast.worker_status")
        psql(cluster, "SELECT * FROM shardcast.worker_status")
        print("\nscratch.tmp_import is not a shard: scratch is in shardcast.excluded_schemas.")
    banner("done; the throwaway cluster is gone")


if __name__ == "__main__":
    main()
