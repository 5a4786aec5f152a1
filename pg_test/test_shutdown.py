"""A fast shutdown stops the worker cleanly. On a cluster of its own, so that the test neither
depends on running last nor stops the cluster other tests share."""

from cluster import running_cluster, wait_for


def test_clean_exit_on_shutdown():
    with running_cluster({"shardcast.database": "'app'", "shardcast.sample_interval": "'1s'"},
                         "shardcast-shutdown") as cluster:
        with cluster.connect() as conn:
            conn.execute("CREATE DATABASE app")
        with cluster.connect("app") as conn:
            conn.execute("CREATE EXTENSION shardcast")
            conn.execute("CREATE TABLE t (id int)")
            wait_for("the worker to sample", lambda: conn.execute(
                "SELECT last_sample_at IS NOT NULL FROM shardcast.worker_status").fetchone()[0], timeout=30)
        cluster.stop()
        log = cluster.log_text()
    assert "shardcast worker exiting" in log
    assert "terminated by signal" not in log
    assert "PANIC" not in log
    assert "panicked" not in log
