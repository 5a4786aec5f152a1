"""End to end: the driver syncs real subscribers with native logical replication, hot-first.

One publisher with shardcast preloaded and two subscribers of different configured capacity, all
real clusters on loopback. A pgbench workload makes some tables hot (and shifts which), shardcast
learns it, and the driver replicates every table while the writes go on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from cluster import Cluster, source_with_replicas, wait_for

DB = "app"
DRIVER = Path(__file__).resolve().parent.parent / "driver" / "shardcast_driver.py"
LEASE_SECONDS = 4

ARCHIVES = [f"archive_{i:02}" for i in range(8)]     # big, never read; created first (FIFO's first)
CATALOGS = [f"catalog_{i:02}" for i in range(12)]    # middling, read now and then
HOT = [f"hot_{i:02}" for i in range(5)]              # small, read all the time
SESSIONS = "sessions"                                # the hottest: read and updated all the time
EVENTS = "events"                                    # appended to all the time
TRENDING = "trending"                                # cold at first, hot after the shift
LEDGER = "ledger"                                    # no key: REPLICA IDENTITY FULL, updated all the time
METRICS = ["metrics_2026_10", "metrics_2026_11"]     # leaf partitions of metrics; November is read
ALL_TABLES = ARCHIVES + CATALOGS + [EVENTS, TRENDING, LEDGER] + METRICS + HOT + [SESSIONS]

SCHEMA = "\n".join(
    [f"CREATE TABLE {t} (id int PRIMARY KEY, payload text);"
     f"INSERT INTO {t} SELECT i, repeat(md5(i::text), 6) FROM generate_series(1, 20000) i;" for t in ARCHIVES]
    + [f"CREATE TABLE {t} (id int PRIMARY KEY, title text, price numeric,"
       f"                 price_with_tax numeric GENERATED ALWAYS AS (price * 1.2) STORED);"
       f"INSERT INTO {t} SELECT i, 'item ' || i, i % 100 FROM generate_series(1, 3000) i;" for t in CATALOGS]
    + [f"CREATE TABLE {EVENTS} (id bigserial PRIMARY KEY, kind text, at timestamptz DEFAULT now());"
       f"INSERT INTO {EVENTS} (kind) SELECT 'seed' FROM generate_series(1, 1000);",
       f"CREATE TABLE {TRENDING} (id int PRIMARY KEY, title text);"
       f"INSERT INTO {TRENDING} SELECT i, 'trend ' || i FROM generate_series(1, 2000) i;",
       f"CREATE TABLE {LEDGER} (id int NOT NULL, balance int); ALTER TABLE {LEDGER} REPLICA IDENTITY FULL;"
       f"INSERT INTO {LEDGER} SELECT i, 0 FROM generate_series(1, 500) i;",
       "CREATE TABLE metrics (id int, day date, v int, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);"
       "CREATE TABLE metrics_2026_10 PARTITION OF metrics FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');"
       "CREATE TABLE metrics_2026_11 PARTITION OF metrics FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');"
       "INSERT INTO metrics SELECT i, date '2026-10-01' + (i % 60), i FROM generate_series(1, 4000) i;"]
    + [f"CREATE TABLE {t} (id int PRIMARY KEY, name text);"
       f"INSERT INTO {t} SELECT i, 'row ' || i FROM generate_series(1, 1000) i;" for t in HOT]
    + [f"CREATE TABLE {SESSIONS} (id int PRIMARY KEY, seen timestamptz);"
       f"INSERT INTO {SESSIONS} SELECT i, now() FROM generate_series(1, 2000) i;",
       "ANALYZE;"])


def point_read(table: str, rows: int) -> str:
    return f"\\set id random(1, {rows})\nSELECT * FROM {table} WHERE id = :id;\n"


# pgbench scripts and weights. Phase one: sessions and the hot_* tables; after the shift, trending
# is hot and hot_04 has gone cold. Writes (events, sessions) go on while the driver syncs.
COMMON = {
    "sessions": (40, "\\set id random(1, 2000)\nUPDATE sessions SET seen = now() WHERE id = :id;\n"
                     "SELECT seen FROM sessions WHERE id = :id;\n"),
    "events": (10, "INSERT INTO events (kind) VALUES ('click');\n"),
    "ledger": (5, "\\set id random(1, 500)\nUPDATE ledger SET balance = balance + 1 WHERE id = :id;\n"),
    "metrics": (3, "\\set id random(1, 4000)\nSELECT v FROM metrics WHERE day >= '2026-11-01' AND id = :id;\n"),
    **{t: (1, point_read(t, 3000)) for t in CATALOGS},
    **{t: (10, point_read(t, 1000)) for t in HOT[:4]},
}
PHASE_ONE = {**COMMON, "hot_04": (10, point_read("hot_04", 1000))}
PHASE_TWO = {**COMMON, "trending": (15, point_read(TRENDING, 2000))}


def one(conn, query, *args):
    row = conn.execute(query, args).fetchone()
    return None if row is None else row[0]


class Workload:
    """pgbench with custom scripts, rate-limited so that three clusters share two cores."""

    def __init__(self, publisher: Cluster):
        self.publisher = publisher
        self.dir = tempfile.TemporaryDirectory()
        self.process: subprocess.Popen | None = None

    def start(self, scripts: dict[str, tuple[int, str]], seconds: int, rate: int = 300) -> None:
        self.process = self.publisher.start_pgbench(DB, scripts, self.dir.name, seconds, rate)

    def wait(self) -> None:
        _, err = self.process.communicate(timeout=600)
        assert self.process.returncode == 0, err

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            # SIGTERM, not SIGINT: a shell without job control starts background commands with
            # SIGINT ignored, and pgbench inherits that.
            self.process.send_signal(signal.SIGTERM)
            self.process.communicate(timeout=60)


def run_driver(publisher: Cluster, worker: str, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DRIVER), "--source", publisher.dsn(DB), "--worker", worker,
                           "--poll", "0.2", *extra],
                          capture_output=True, text=True, timeout=timeout)


def start_driver(publisher: Cluster, worker: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(DRIVER), "--source", publisher.dsn(DB), "--worker", worker,
                             "--poll", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def clusters():
    settings = {"shardcast.database": f"'{DB}'", "shardcast.sample_interval": "'1s'",
                "shardcast.refresh_interval": "'2s'", "shardcast.claim_lease": f"'{LEASE_SECONDS}s'",
                "shardcast.prefetch_quantile": "0.9"}
    with source_with_replicas(settings, DB, "shardcast-pub") as (publisher, fast, slow):
        with publisher.connect(DB) as conn:
            conn.execute(SCHEMA)
        yield publisher, fast, slow


def table_fingerprint(conn, table: str) -> tuple[int, str]:
    return conn.execute(f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM {table} t"
                        ).fetchone()


def spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        r = [0.0] * len(values)
        for rank, i in enumerate(order):
            r[i] = rank
        return r
    rx, ry = ranks(xs), ranks(ys)
    n = len(xs)
    return 1 - 6 * sum((a - b) ** 2 for a, b in zip(rx, ry)) / (n * (n * n - 1))


@pytest.fixture(scope="module")
def synced(clusters):
    """Learns the workload, plans, and runs the driver once over every table while writes go on."""
    publisher, fast, slow = clusters
    workload = Workload(publisher)
    with publisher.connect(DB) as pub:
        wait_for("the worker to register every table", lambda: one(
            pub, "SELECT count(*) FROM shardcast.shards WHERE retired_at IS NULL") >= len(ALL_TABLES), timeout=30)
        workload.start(PHASE_ONE, 15)
        workload.wait()
        workload.start(PHASE_TWO, 600)
        time.sleep(12)
        pub.execute("SELECT shardcast.refresh_forecasts()")
        pub.execute("SELECT shardcast.add_node('fast', 100e6, 3, %s)", [fast.dsn(DB)])
        pub.execute("SELECT shardcast.add_node('slow', 20e6, 2, %s)", [slow.dsn(DB)])
        pub.execute("SELECT shardcast.report_node_load('slow', 0.5)")
        # Hold the plan still while the driver runs, so that the test can compare with it.
        pub.execute("ALTER SYSTEM SET shardcast.refresh_interval = '1h'")
        pub.execute("SELECT pg_reload_conf()")
        time.sleep(1)
        assert one(pub, "SELECT shardcast.enqueue_all()") == len(ALL_TABLES)
        plan = {row[0]: row[1:] for row in pub.execute(
            "SELECT c.relname, q.position, q.node, q.prefetch, q.score, q.size_bytes"
            " FROM shardcast.prioritized_queue q JOIN pg_class c ON c.oid = q.shard")}
        events_before = one(pub, "SELECT max(id) FROM events")
        started = one(pub, "SELECT now()")

        listener = psycopg.connect(publisher.dsn(DB), autocommit=True)
        listener.execute("LISTEN shardcast_completion")
        driver = run_driver(publisher, "driver-1")
        notifications = [json.loads(n.payload) for n in listener.notifies(timeout=3)]
        listener.close()
        events_during = one(pub, "SELECT max(id) FROM events")
        # The copies' own scans reach the statistics when they end, and the sampler spends the
        # credits their claims granted.
        wait_for("the archives' copy credits to be spent", lambda: one(
            pub, "SELECT count(*) = 0 FROM shardcast.copy_credits c JOIN shardcast.shards s USING (shard_id)"
                 " WHERE s.table_name LIKE 'archive%%'"), timeout=30)
        time.sleep(1.5)
        report = pub.execute("SELECT awa_realised, awa_fifo, awa_oracle FROM shardcast.prioritization_report_since(%s)",
                             [started]).fetchone()
        archive_reads = one(pub, "SELECT coalesce(sum(tuples_read), 0) FROM shardcast.access_history h"
                                 " JOIN shardcast.shards s USING (shard_id)"
                                 " WHERE s.table_name LIKE 'archive%%' AND h.bucket_start + h.bucket_width > %s",
                            started)
    workload.stop()
    print(driver.stdout)
    assert driver.returncode == 0, driver.stdout + driver.stderr
    publisher.wait_for_subscribers(DB)
    return {"plan": plan, "driver": driver, "notifications": notifications, "report": report,
            "archive_reads": archive_reads,
            "events_before": events_before, "events_during": events_during}


def test_every_table_is_synced_and_equal_to_the_publisher(clusters, synced):
    publisher, fast, slow = clusters
    with publisher.connect(DB) as pub, fast.connect(DB) as f, slow.connect(DB) as s:
        assert one(pub, "SELECT count(*) FROM shardcast.replication_tasks WHERE state <> 'done'") == 0
        nodes = dict(pub.execute("SELECT s.table_name, t.node FROM shardcast.replication_tasks t"
                                 " JOIN shardcast.shards s USING (shard_id)").fetchall())
        for table in ALL_TABLES:
            dest = f if nodes[table] == "fast" else s
            assert table_fingerprint(dest, table) == table_fingerprint(pub, table), table
            assert one(dest, "SELECT srsubstate FROM pg_subscription_rel WHERE srrelid = %s::regclass", table) == "r"
        # The writes made while the driver ran reached the subscriber too.
        events = f if nodes[EVENTS] == "fast" else s
        assert synced["events_during"] > synced["events_before"]
        assert one(events, "SELECT max(id) FROM events") >= synced["events_during"]


def test_tables_become_ready_in_the_queue_order_hot_and_small_first(clusters, synced):
    publisher, _, _ = clusters
    plan = synced["plan"]
    with publisher.connect(DB) as pub:
        finished = pub.execute(
            "SELECT table_name FROM shardcast.completion_log WHERE succeeded ORDER BY finished_at").fetchall()
        # Each table's first claim and its node (a sync that failed is claimed again later, maybe
        # for the other node: its first claim counts).
        first_claims = ("SELECT DISTINCT ON (table_name) node, table_name::text AS shard, claimed_at AS at"
                        " FROM shardcast.completion_log ORDER BY table_name, claimed_at")
        claims = pub.execute(
            f"SELECT node, array_agg(shard ORDER BY at) FROM ({first_claims}) c GROUP BY node").fetchall()
        claimed_at = dict(pub.execute(f"SELECT shard, at FROM ({first_claims}) c"))
        first_done = one(pub, "SELECT min(finished_at) FROM shardcast.completion_log")
    ready_rank = {table: i for i, (table,) in enumerate(finished)}
    positions = [plan[table][0] for (table,) in finished]
    assert spearman(positions, list(range(len(positions)))) > 0.6, positions
    assert max(ready_rank[t] for t in HOT[:4] + [SESSIONS]) < min(ready_rank[t] for t in ARCHIVES)
    # The express lane: pre-replicated shards are claimed first on their node.
    express = {shard for shard, (_, _, prefetch, _, _) in plan.items() if prefetch}
    assert express, "no shard was dense enough, even at its lower bound, for pre-replication"
    assert SESSIONS in express
    for node, order in claims:
        mine = [shard for shard in order if shard in express]
        assert order[:len(mine)] == mine, (node, order)
    # ... in the first round of claims, before any sync finished (which one finishes first is a
    # race between copies under way at once).
    assert all(claimed_at[shard] < first_done for shard in express), (claimed_at, first_done, express)


def test_a_listener_hears_one_notification_per_task(clusters, synced):
    publisher, _, _ = clusters
    notes = synced["notifications"]
    with publisher.connect(DB) as pub:
        done = dict(pub.execute("SELECT task_id, priority_weight FROM shardcast.completion_log WHERE succeeded"))
        failed = [r[0] for r in pub.execute(
            "SELECT task_id FROM shardcast.completion_log WHERE NOT succeeded ORDER BY task_id")]
    # One success per task, and one failure per failed attempt (a sync retried after a failure).
    succeeded = [n for n in notes if n["succeeded"]]
    assert sorted(n["task"] for n in succeeded) == sorted(done)
    assert all(n["priority_weight"] == done[n["task"]] for n in succeeded)
    assert sorted(n["task"] for n in notes if not n["succeeded"]) == failed
    assert "100% of the priority weight" in synced["driver"].stdout


def test_node_assignment_sends_the_hot_work_to_the_fast_idle_node(clusters, synced):
    plan = synced["plan"]
    score = {"fast": 0.0, "slow": 0.0}
    for _, node, _, task_score, _ in plan.values():
        score[node] += task_score
    assert score["fast"] > 2 * score["slow"], score
    assert plan[SESSIONS][1] == "fast"


def test_prioritization_beats_fifo_on_the_same_run(synced):
    realised, fifo, oracle = synced["report"]
    print(f"access-weighted availability: realised {realised:.3f}, FIFO {fifo:.3f}, oracle {oracle:.3f}")
    assert realised > fifo + 0.2
    assert oracle >= realised - 0.05


def test_the_copies_own_reads_are_not_counted_as_load(synced):
    # Nothing but the tablesync COPY ever read the archives: 8 x 20,000 tuples that history
    # must not show, or every table just copied would look hot.
    assert synced["archive_reads"] == 0


def blocked_late_table(publisher: Cluster, fast: Cluster, name: str):
    """A new table queued for `fast` whose copy there blocks until the returned transaction ends."""
    with publisher.connect(DB) as pub:
        pub.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text);"
                    f"INSERT INTO {name} SELECT i, 'v' || i FROM generate_series(1, 5000) i")
        wait_for(f"{name} to become a shard", lambda: one(
            pub, "SELECT count(*) FROM shardcast.shards WHERE table_name = %s AND retired_at IS NULL", name))
        task = one(pub, "SELECT shardcast.enqueue(%s, 'fast')", name)
    blocker = fast.connect(DB, autocommit=False)
    blocker.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
    blocker.commit()
    # SHARE: the subscription may look the table up, its initial copy may not write into it.
    blocker.execute(f"LOCK TABLE {name} IN SHARE MODE")
    return task, blocker


def wait_for_claim(publisher: Cluster, task: int) -> None:
    with publisher.connect(DB) as pub:
        wait_for("the driver to claim the task", lambda: one(
            pub, "SELECT state = 'claimed' FROM shardcast.replication_tasks WHERE task_id = %s", task))


def test_a_killed_driver_loses_nothing_and_the_next_run_syncs_exactly_once(clusters, synced):
    publisher, fast, _ = clusters
    task, blocker = blocked_late_table(publisher, fast, "late_orders")
    doomed = start_driver(publisher, "doomed")
    try:
        wait_for_claim(publisher, task)
        with fast.connect(DB) as f:
            wait_for("the subscriber to start syncing late_orders", lambda: one(
                f, "SELECT count(*) FROM pg_subscription_rel WHERE srrelid = 'late_orders'::regclass"))
    finally:
        doomed.kill()  # SIGKILL: no release, no completion
        doomed.communicate()
    blocker.rollback()
    blocker.close()
    with publisher.connect(DB) as pub:
        assert one(pub, "SELECT claimed_by FROM shardcast.replication_tasks WHERE task_id = %s", task) == "doomed"
    driver = run_driver(publisher, "driver-2")
    assert driver.returncode == 0, driver.stdout + driver.stderr
    assert "late_orders" in driver.stdout
    publisher.wait_for_subscribers(DB)
    with publisher.connect(DB) as pub, fast.connect(DB) as f:
        state, attempts, claimed_by = pub.execute(
            "SELECT state, attempts, claimed_by FROM shardcast.replication_tasks WHERE task_id = %s", [task]).fetchone()
        assert (state, attempts, claimed_by) == ("done", 1, "driver-2")
        assert one(pub, "SELECT count(*) FROM shardcast.completion_log WHERE task_id = %s", task) == 1
        # The killed driver's copy went on on the node and is this task's copy: not "already on
        # the node, nothing copied", which the report would leave out.
        assert one(pub, "SELECT copied FROM shardcast.completion_log WHERE task_id = %s", task) is True
        assert table_fingerprint(f, "late_orders") == table_fingerprint(pub, "late_orders")


def test_ctrl_c_releases_the_tasks_in_flight(clusters, synced):
    publisher, fast, _ = clusters
    task, blocker = blocked_late_table(publisher, fast, "late_invoices")
    driver = start_driver(publisher, "interrupted")
    try:
        wait_for_claim(publisher, task)
        driver.send_signal(signal.SIGINT)
        out, _ = driver.communicate(timeout=20)
    finally:
        if driver.poll() is None:
            driver.kill()
        blocker.rollback()
        blocker.close()
    assert driver.returncode == 130, out
    assert "released" in out
    with publisher.connect(DB) as pub:
        state, attempts = pub.execute(
            "SELECT state, attempts FROM shardcast.replication_tasks WHERE task_id = %s", [task]).fetchone()
        assert (state, attempts) == ("queued", 0)
        assert one(pub, "SELECT count(*) FROM shardcast.replication_tasks WHERE state = 'claimed'") == 0
    finish = run_driver(publisher, "driver-3")
    assert finish.returncode == 0, finish.stdout + finish.stderr
    with publisher.connect(DB) as pub:
        assert one(pub, "SELECT state FROM shardcast.replication_tasks WHERE task_id = %s", task) == "done"


def test_a_table_without_replica_identity_is_refused_not_published(clusters, synced):
    publisher, _, _ = clusters
    with publisher.connect(DB) as pub:
        pub.execute("CREATE TABLE no_identity (v text); INSERT INTO no_identity VALUES ('a')")
        wait_for("no_identity to become a shard", lambda: one(
            pub, "SELECT count(*) FROM shardcast.shards WHERE table_name = 'no_identity' AND retired_at IS NULL"))
        task = one(pub, "SELECT shardcast.enqueue('no_identity', 'fast')")
    driver = run_driver(publisher, "driver-4")
    assert driver.returncode == 1, driver.stdout + driver.stderr
    with publisher.connect(DB) as pub:
        state, detail = pub.execute("SELECT state, detail FROM shardcast.replication_tasks WHERE task_id = %s",
                                    [task]).fetchone()
        assert state == "failed" and "replica identity" in detail, (state, detail)
        # Publishing it would have made the source refuse UPDATE and DELETE on it.
        assert one(pub, "SELECT count(*) FROM pg_publication_tables WHERE tablename = 'no_identity'") == 0
        pub.execute("UPDATE no_identity SET v = 'b'")
    # Until it is enqueued again (or dropped), every run for fast says it failed and exits 1.
    again = run_driver(publisher, "driver-4b", "--node", "fast")
    assert again.returncode == 1 and "failed in earlier runs" in again.stdout, again.stdout + again.stderr
    with publisher.connect(DB) as pub:
        pub.execute("DROP TABLE no_identity")


def test_an_unreachable_node_is_reported_and_its_tasks_stay_queued(clusters, synced):
    publisher, _, _ = clusters
    with publisher.connect(DB) as pub:
        pub.execute("SELECT shardcast.add_node('gone', 1e6, 1, 'host=127.0.0.1 port=1 dbname=app connect_timeout=2')")
        pub.execute("CREATE TABLE for_gone (id int PRIMARY KEY)")
        wait_for("for_gone to become a shard", lambda: one(
            pub, "SELECT count(*) FROM shardcast.shards WHERE table_name = 'for_gone' AND retired_at IS NULL"))
        task = one(pub, "SELECT shardcast.enqueue('for_gone', 'gone')")
    driver = run_driver(publisher, "driver-5", "--node", "gone")
    assert driver.returncode == 3, driver.stdout + driver.stderr  # could not connect
    assert "node gone: cannot set up shardcast_gone" in driver.stderr
    assert "add_node" not in driver.stderr  # the node is there; it cannot be reached
    with publisher.connect(DB) as pub:
        assert one(pub, "SELECT state || ':' || attempts FROM shardcast.replication_tasks WHERE task_id = %s",
                   task) == "queued:0"
        pub.execute("UPDATE shardcast.nodes SET enabled = false WHERE node = 'gone'")


def test_follow_mode_serves_new_tasks_until_ctrl_c(clusters, synced):
    publisher, _, slow = clusters
    driver = subprocess.Popen([sys.executable, str(DRIVER), "--source", publisher.dsn(DB), "--worker", "follower",
                               "--node", "slow", "--poll", "0.2", "--follow"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with publisher.connect(DB) as pub:
            pub.execute("CREATE TABLE arrives_later (id int PRIMARY KEY); INSERT INTO arrives_later VALUES (1), (2)")
            wait_for("arrives_later to become a shard", lambda: one(
                pub, "SELECT count(*) FROM shardcast.shards WHERE table_name = 'arrives_later' AND retired_at IS NULL"))
            task = one(pub, "SELECT shardcast.enqueue('arrives_later', 'slow')")
            wait_for("the following driver to sync it", lambda: one(
                pub, "SELECT state = 'done' FROM shardcast.replication_tasks WHERE task_id = %s", task), timeout=30)
        assert driver.poll() is None, "--follow exited when the queue was empty"
        driver.send_signal(signal.SIGINT)
        out, _ = driver.communicate(timeout=20)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, out
    with slow.connect(DB) as s:
        assert one(s, "SELECT count(*) FROM arrives_later") == 2


def test_node_names_become_plain_identifiers():
    sys.path.insert(0, str(DRIVER.parent))
    from shardcast_driver import Node
    assert Node("replica_a", "", 1).channel == "shardcast_replica_a"
    fancy = Node("Replica A/eu-west", "", 1).channel
    assert fancy.startswith("shardcast_replica_a_eu_west_") and fancy.isidentifier() and fancy.islower()
    assert Node("Replica-A", "", 1).channel != Node("replica-a", "", 1).channel
