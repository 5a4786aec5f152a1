"""shardcast beside Citus: a coordinator and workers with both preloaded. Skipped without Citus
(see pg_test/citus.py)."""

import pytest

from citus import citus_cluster, citus_installed
from cluster import wait_for

pytestmark = pytest.mark.skipif(not citus_installed(), reason="Citus is not installed (scripts/install-citus.sh)")

DB = "app"


def test_a_logical_shard_move_works_with_shardcast_on_every_node():
    """Citus moves shards with logical replication and drops the source's copy afterwards; the
    samplers of every node must neither get in its way nor fail on the tables it creates and
    drops."""
    with citus_cluster(DB, workers=2, settings={"shardcast.sample_interval": "'1s'"},
                       name="citus-move") as (coordinator, workers):
        with coordinator.connect(DB) as conn:
            conn.execute("CREATE EXTENSION shardcast")
            conn.execute("SET citus.shard_count = 8")
            conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, amount int)")
            conn.execute("SELECT create_distributed_table('orders', 'id')")
            conn.execute("INSERT INTO orders SELECT g, g % 100 FROM generate_series(1, 20000) g")
            # CREATE EXTENSION is propagated to the workers, whose samplers then run too.
            for worker in workers:
                with worker.connect(DB) as wconn:
                    wait_for("shardcast on the worker", lambda: wconn.execute(
                        "SELECT state = 'running' FROM shardcast.worker_status").fetchone()[0], timeout=30)
            shard, source_port = conn.execute("""
                SELECT shardid, nodeport FROM citus_shards WHERE table_name = 'orders'::regclass
                ORDER BY shardid LIMIT 1""").fetchone()
            target = next(w for w in workers if w.port != source_port)
            conn.execute("""SELECT citus_move_shard_placement(%s, '127.0.0.1', %s, '127.0.0.1', %s,
                            shard_transfer_mode => 'force_logical')""", [shard, source_port, target.port])
            assert conn.execute("SELECT nodeport FROM citus_shards WHERE shardid = %s",
                                [shard]).fetchone()[0] == target.port
            assert conn.execute("SELECT count(*), sum(amount) FROM orders").fetchone() == (20000, 990000)
            wait_for("a sample after the move", lambda: conn.execute(
                "SELECT last_sample_at > now() - interval '1 second' FROM shardcast.worker_status").fetchone()[0])
        for node in [coordinator, *workers]:
            with node.connect(DB) as conn:
                state, error = conn.execute("SELECT state, last_error FROM shardcast.worker_status").fetchone()
                assert state == "running" and error is None, (node.port, state, error)
            assert "panicked" not in node.log_text() and "PANIC" not in node.log_text()
