"""End to end: the background worker samples a real cluster that real clients use."""

import threading
import time

import psycopg
import pytest

from cluster import wait_for
from conftest import DB


def one(conn, sql, *args):
    row = conn.execute(sql, args).fetchone()
    return None if row is None else row[0]


def live_shard(conn, table):
    return one(conn, "SELECT shard_id FROM shardcast.shards WHERE relid = to_regclass(%s) AND retired_at IS NULL", table)


def recorded(conn, table, column="scans"):
    return one(conn, f"SELECT coalesce(sum({column}), 0) FROM shardcast.access_history WHERE shard = to_regclass(%s)", table)


def registered_and_sampled(conn, table, seconds):
    """Waits until the worker has registered `table` and sampled it for `seconds` since; with 0,
    until its first reading of the table (the baseline) is committed: the sample that ends after
    the registration began is the one that follows it."""
    wait_for("registration", lambda: live_shard(conn, table))
    wait_for(f"samples of {table}", lambda: one(conn, """
        SELECT max(ended_at) > (SELECT first_seen FROM shardcast.shards
                                WHERE relid = %s::regclass AND retired_at IS NULL)
                               + make_interval(secs => %s)
        FROM shardcast.sampling_periods""", table, seconds), timeout=15)


def import_720_an_hour(conn, table):
    """Imports 60 reads every 5 minutes over the last 3 days, up to now."""
    conn.execute("""
        SELECT shardcast.record_access(array_agg(%s::regclass), array_agg(t), array_agg(60::float8))
        FROM generate_series(now() - interval '3 days', now(), interval '5 minutes') t""", [table])


def test_waiting_for_the_extension_was_logged_once(cluster):
    assert cluster.log_text().count("waiting for CREATE EXTENSION") == 1


def test_worker_is_visible_in_pg_stat_activity(db):
    row = wait_for("the worker in pg_stat_activity", lambda: db.execute(
        "SELECT backend_type, datname FROM pg_stat_activity WHERE backend_type = 'shardcast'").fetchone())
    assert row == ("shardcast", DB)


def read_by_clients(db, lookups, scans):
    """Creates tables of 1,000 rows, waits until the worker has registered them and taken its
    baseline, then reads them as a client would: `lookups` maps a table to a number of key
    lookups, `scans` to a number of sequential scans (count(*))."""
    for table in {**lookups, **scans}:
        db.execute(f"CREATE TABLE public.{table} (id int PRIMARY KEY, v text)")
        db.execute(f"INSERT INTO public.{table} SELECT i, 'x' FROM generate_series(1, 1000) i")
        registered_and_sampled(db, f"public.{table}", 0)  # the worker's baseline, before the reads
    with psycopg.connect(db.info.dsn, autocommit=True) as client:
        for table, count in lookups.items():
            for i in range(count):
                client.execute(f"SELECT v FROM public.{table} WHERE id = %s", (i + 1,)).fetchone()
        for table, count in scans.items():
            for _ in range(count):
                client.execute(f"SELECT count(*) FROM public.{table}").fetchone()


def test_client_accesses_appear_in_history(db):
    read_by_clients(db, {"hot": 200}, {"hot": 5})
    scans = wait_for("the scans to reach history", lambda: (s := recorded(db, "public.hot")) >= 205 and s, timeout=15)
    assert scans <= 210, f"{scans} scans recorded for 205 made"
    assert recorded(db, "public.hot", "tuples_read") >= 200 + 5 * 1000
    assert recorded(db, "public.hot", "tuples_written") <= 1000  # the baseline absorbed the load


def test_shard_activity_ranks_reads_as_the_forecasts_count_them(db):
    """shard_activity's reads are what shardcast.load_measure counts: by default a table looked
    up by key 100 times is read more than one scanned 5 times, as the forecasts see it; counting
    tuples, the 5,000 rows scanned outweigh the 100 looked up."""
    read_by_clients(db, {"looked_up": 100}, {"scanned": 5})
    wait_for("the reads to reach history", lambda: recorded(db, "public.looked_up") >= 100
             and recorded(db, "public.scanned") >= 5, timeout=15)

    def reads(measure):
        with db.transaction():
            db.execute(f"SET LOCAL shardcast.load_measure = {measure}")
            return dict(db.execute("""
                SELECT table_name, reads_per_sec * 900 FROM shardcast.shard_activity
                WHERE table_name IN ('looked_up', 'scanned')""").fetchall())

    scans, tuples = reads("DEFAULT"), reads("tuples")
    assert 100 <= scans["looked_up"] <= 105 and 5 <= scans["scanned"] <= 10, scans
    assert tuples["scanned"] >= 5000 and tuples["looked_up"] <= 110, tuples


def test_history_imported_for_a_table_created_seconds_ago_is_not_scaled_up(db):
    """A DBA creates a table and imports its history up to now: the worker has observed the table
    for seconds of the last hour, the import holds the rest. That hour is the import, not the
    import scaled up from seconds to an hour (which made it 12 times too hot)."""
    db.execute("CREATE TABLE public.imported_now (id int)")
    registered_and_sampled(db, "public.imported_now", 3)
    import_720_an_hour(db, "public.imported_now")
    db.execute("SELECT shardcast.refresh_forecasts()")
    point, observed, imported = db.execute("""
        SELECT expected, observed_hours, imported_hours FROM shardcast.forecasts
        WHERE shard = 'public.imported_now'::regclass""").fetchone()
    # 60 reads every 5 minutes: 720 an hour.
    assert 600 <= point <= 900, f"forecast {point} for an import of 720 an hour"
    assert observed == 1 and imported >= 70, (observed, imported)


def test_a_bulk_load_is_not_read_load(db):
    """A table created, loaded after the worker's first reading of it, and given a history of 720
    reads an hour: the load is rows written, not reads, and by default (write_weight 0) it does
    not make the table hot. At the former default of 0.1 its 20,000 rows were 2,000 reads, and the
    table's next hour was forecast at 1,600 (this test, when it was written)."""
    db.execute("CREATE TABLE public.loaded (id int, pad text)")
    registered_and_sampled(db, "public.loaded", 3)
    db.execute("INSERT INTO public.loaded SELECT i, 'x' FROM generate_series(1, 20000) i")
    wait_for("the load to be sampled", lambda: recorded(db, "public.loaded", "tuples_written") >= 20000, timeout=15)
    import_720_an_hour(db, "public.loaded")

    def forecast(write_weight):
        # In one transaction, so that the worker's own refresh cannot publish in between.
        with db.transaction():
            db.execute(f"SET LOCAL shardcast.write_weight = {write_weight}")
            db.execute("SELECT shardcast.refresh_forecasts()")
            return one(db, "SELECT expected FROM shardcast.forecasts WHERE shard = 'public.loaded'::regclass")

    point = forecast("DEFAULT")
    assert 600 <= point <= 900, f"forecast {point} for 720 reads an hour and a load of 20,000 rows"
    weighted = forecast(0.1)
    assert weighted > 1.5 * point, f"with write_weight 0.1 the load's 2,000 are in: {weighted} against {point}"


def test_a_table_loaded_since_its_size_was_measured_is_queued_at_its_size(db):
    """The worker measures a new table at once (empty) and written tables again only every few
    sampling intervals: a table created, loaded and enqueued at once is queued at its size now."""
    db.execute("CREATE TABLE public.filled (id int, pad text)")
    wait_for("a first size", lambda: one(db, "SELECT size_bytes FROM shardcast.shard_activity WHERE shard = 'public.filled'::regclass") is not None)
    db.execute("INSERT INTO public.filled SELECT i, repeat('x', 200) FROM generate_series(1, 20000) i")
    task = one(db, "SELECT shardcast.enqueue('public.filled')")
    try:
        size, actual = db.execute("""SELECT t.size_bytes, pg_total_relation_size('public.filled')
                                     FROM shardcast.replication_tasks t WHERE t.task_id = %s""", [task]).fetchone()
        # (Autovacuum may add a map fork to the table in between.)
        assert 4_000_000 < size <= actual < 1.05 * size, (size, actual)
    finally:
        db.execute("SELECT shardcast.cancel_task(%s)", [task])


def test_enqueue_does_not_wait_for_a_table_under_ddl(db):
    """Measuring a table takes its lock: a table whose lock is not free at once is queued at the
    size the worker measured, without waiting for the DDL to end."""
    db.execute("CREATE TABLE public.altered (id int, pad text)")
    db.execute("INSERT INTO public.altered SELECT i, repeat('x', 200) FROM generate_series(1, 20000) i")
    wait_for("its size", lambda: one(db, "SELECT size_bytes FROM shardcast.shard_activity WHERE shard = 'public.altered'::regclass") or None, timeout=30)
    with psycopg.connect(db.info.dsn) as ddl:
        ddl.execute("LOCK TABLE public.altered IN ACCESS EXCLUSIVE MODE")
        stored = one(db, "SELECT size_bytes FROM shardcast.shards WHERE relid = 'public.altered'::regclass AND retired_at IS NULL")
        db.execute("SET statement_timeout = '5s'")
        try:
            task = one(db, "SELECT shardcast.enqueue('public.altered')")
        finally:
            db.execute("RESET statement_timeout")
        try:
            assert one(db, "SELECT size_bytes FROM shardcast.replication_tasks WHERE task_id = %s", task) == stored
        finally:
            ddl.rollback()
            db.execute("SELECT shardcast.cancel_task(%s)", [task])


def worker_waits_for(db, session):
    """Whether the worker waits, in its sampling stage, for a lock that `session` holds."""
    return one(db, """
        SELECT count(*) > 0 FROM pg_stat_activity
        WHERE backend_type = 'shardcast' AND query = 'shardcast: sampling'
          AND %s = ANY(pg_blocking_pids(pid))""", session.info.backend_pid)


def test_a_client_registering_a_table_the_worker_registers_does_not_deadlock(db):
    """A client's transaction holds the row of a bucket that the worker is about to add reads
    to, and then imports history for a table just created, which the worker has just registered.
    Registration used to share the sampling transaction: the worker held the new table's
    uncommitted row while it waited for the client's bucket, the client waited for that row, and
    PostgreSQL broke the deadlock by failing one of them."""
    db.execute("CREATE TABLE public.dl_read (id int)")
    registered_and_sampled(db, "public.dl_read", 2)
    # The client and the worker must meet in one 5-minute bucket.
    into_bucket = time.time() % 300
    if into_bucket > 270:
        time.sleep(301 - into_bucket)
    started = one(db, "SELECT now()")
    # One transaction each until the commit (the client) and the rollback (the holder) below.
    with psycopg.connect(db.info.dsn) as client, psycopg.connect(db.info.dsn) as holder:
        # The new table and the reads must reach the worker in the same cycle: the one that
        # registers the table must be the one whose sample waits for the client's bucket. Left to
        # the worker's schedule, a registration could run just before the table was committed
        # and its sample read the counters just after the reads: the worker then waited with the
        # table unregistered (and the client registered it itself), or had registered it a cycle
        # before the reads (and waited holding nothing of it). So a sample is held, after its
        # registration and its reading of the counters, while the table is created and read: the
        # next cycle registers it and samples the reads.
        holder.execute("LOCK TABLE shardcast.sampling_periods IN SHARE MODE")
        wait_for("the worker to wait in a sample", lambda: worker_waits_for(db, holder))
        client.execute("SELECT shardcast.record_access('public.dl_read', now(), 5)")
        with psycopg.connect(db.info.dsn, autocommit=True) as other:
            other.execute("CREATE TABLE public.dl_new (id int)")
            for _ in range(3):
                other.execute("SELECT count(*) FROM public.dl_read").fetchone()
        # (The session's statistics reach the worker when it ends, a moment after it is closed.)
        wait_for("the reads in the statistics", lambda: one(
            db, "SELECT seq_scan >= 3 FROM pg_stat_user_tables WHERE relid = 'public.dl_read'::regclass"))
        holder.rollback()
        wait_for("the worker to wait for the client's bucket", lambda: worker_waits_for(db, client), timeout=15)
        # Registered and committed before the sample that waits.
        assert live_shard(db, "public.dl_new")
        client.execute("SELECT shardcast.record_access('public.dl_new', now(), 7)")
        client.commit()
    wait_for("the worker's reads of dl_read", lambda: recorded(db, "public.dl_read") >= 8, timeout=15)
    assert recorded(db, "public.dl_new") == 7
    error = db.execute("SELECT last_error, last_error_at > %s FROM shardcast.worker_status", [started]).fetchone()
    assert not error[1], f"the worker failed a cycle: {error[0]}"


def test_size_is_kept_current(db):
    db.execute("CREATE TABLE public.grows (id int, pad text)")
    wait_for("a first size", lambda: one(db, "SELECT size_bytes FROM shardcast.shard_activity WHERE shard = 'public.grows'::regclass") is not None)
    db.execute("INSERT INTO public.grows SELECT i, repeat('x', 200) FROM generate_series(1, 20000) i")
    loaded = one(db, "SELECT pg_total_relation_size('public.grows')")
    # Compared with the size now, not the size right after the load: autovacuum may add the
    # visibility map and free space map forks meanwhile, and the sample must follow them too.
    wait_for("the size to follow the writes", lambda: one(
        db, """SELECT size_bytes = pg_total_relation_size('public.grows') AND size_bytes >= %s
               FROM shardcast.shard_activity WHERE shard = 'public.grows'::regclass""", loaded), timeout=90)


def test_a_queued_task_follows_its_table_s_growth_and_the_queue_is_reordered(db):
    """enqueue sizes a task once: a table loaded after it was queued takes its new size when the
    worker measures the table again, and the queue is replanned, so that the table grown tenfold
    falls behind one half as hot and now a fifth of its size or less."""
    for table, reads in (("public.early", 120), ("public.late", 60)):
        db.execute(f"CREATE TABLE {table} (id int, pad text)")
        db.execute(f"INSERT INTO {table} SELECT i, repeat('x', 200) FROM generate_series(1, 2000) i")
        wait_for(f"{table}'s size", lambda: one(db, "SELECT size_bytes FROM shardcast.shard_activity WHERE shard = %s::regclass", table), timeout=30)
        db.execute("""SELECT shardcast.record_access(array_agg(%s::regclass), array_agg(t), array_agg(%s::float8))
                      FROM generate_series(now() - interval '3 days', now(), interval '5 minutes') t""", [table, reads])
    db.execute("SELECT shardcast.refresh_forecasts()")
    early = one(db, "SELECT shardcast.enqueue('public.early')")
    late = one(db, "SELECT shardcast.enqueue('public.late')")
    # The order claims follow, as the last replan stored it (prioritized_queue computes it).
    queue = lambda: [r[0] for r in db.execute(
        "SELECT task_id FROM shardcast.replication_tasks WHERE task_id IN (%s, %s) ORDER BY dispatch_rank", [early, late])]
    try:
        assert queue() == [early, late]  # as big and twice as hot
        queued = one(db, "SELECT size_bytes FROM shardcast.replication_tasks WHERE task_id = %s", early)
        db.execute("INSERT INTO public.early SELECT i, repeat('x', 200) FROM generate_series(1, 20000) i")
        actual = one(db, "SELECT pg_total_relation_size('public.early')")
        assert actual > 5 * queued  # half as hot per byte as the other, at most
        wait_for("the queued task to take the table's size", lambda: one(
            db, "SELECT size_bytes FROM shardcast.replication_tasks WHERE task_id = %s", early) > 5 * queued, timeout=90)
        assert queue() == [late, early]
        assert one(db, "SELECT size_bytes FROM shardcast.replication_tasks WHERE task_id = %s", late) < 2 * queued
    finally:
        db.execute("SELECT shardcast.cancel_task(t) FROM unnest(%s::int8[]) t", [[early, late]])


def test_stats_reset_gives_no_negative_and_no_spike(db):
    db.execute("CREATE TABLE public.steady (id int PRIMARY KEY)")
    db.execute("INSERT INTO public.steady SELECT generate_series(1, 100)")
    registered_and_sampled(db, "public.steady", 0)
    resets_before = one(db, "SELECT resets_detected FROM shardcast.worker_status")
    made = 0
    stop = threading.Event()

    def load():
        nonlocal made
        with psycopg.connect(db.info.dsn, autocommit=True) as client:
            while not stop.is_set():
                client.execute("SELECT * FROM public.steady WHERE id = 7").fetchone()
                made += 1
                time.sleep(0.01)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(3)
        db.execute("SELECT pg_stat_reset()")
        time.sleep(4)
    finally:
        stop.set()
        worker.join()
    time.sleep(2.5)
    assert one(db, "SELECT count(*) FROM shardcast.recent_access WHERE least(scans, tuples_read, tuples_written, blocks_hit, blocks_read) < 0") == 0
    scans = recorded(db, "public.steady")
    assert 0 < scans <= made, f"{scans} scans recorded for {made} made"
    assert scans >= made * 0.5, f"only {scans} of {made} scans recorded"
    assert one(db, "SELECT resets_detected FROM shardcast.worker_status") > resets_before


def test_drop_and_recreate_gives_a_new_shard_and_a_retired_one(db):
    db.execute("CREATE TABLE public.phoenix (id int)")
    first = wait_for("registration", lambda: live_shard(db, "public.phoenix"))
    db.execute("DROP TABLE public.phoenix")
    db.execute("CREATE TABLE public.phoenix (id int)")
    second = wait_for("the successor", lambda: (s := live_shard(db, "public.phoenix")) != first and s)
    # Not at once: registration retires and registers in statements of their own, each seeing
    # what was committed when it began; a drop and create committed between the two register
    # the successor a cycle before its predecessor is retired.
    wait_for("the predecessor to be retired", lambda: one(
        db, "SELECT retired_at IS NOT NULL FROM shardcast.shards WHERE shard_id = %s", first))
    assert second != first


def test_partitions_are_leaf_shards(db):
    db.execute("""
        CREATE TABLE public.events (at date, v int) PARTITION BY RANGE (at);
        CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        CREATE TABLE public.events_2027 PARTITION OF public.events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')
            PARTITION BY RANGE (at);
        CREATE TABLE public.events_2027_h1 PARTITION OF public.events_2027 FOR VALUES FROM ('2027-01-01') TO ('2027-07-01');
    """)
    wait_for("the leaves", lambda: live_shard(db, "public.events_2027_h1") and live_shard(db, "public.events_2026"))
    assert live_shard(db, "public.events") is None
    assert live_shard(db, "public.events_2027") is None
    assert one(db, "SELECT parent::text FROM shardcast.shard_activity WHERE shard = 'public.events_2027_h1'::regclass") == "events_2027"


def test_retention_purges_old_history(db):
    db.execute("CREATE TABLE public.ancient (id int)")
    db.execute("SELECT shardcast.record_access('public.ancient', now() - interval '20 days', 5)")
    db.execute("SELECT shardcast.record_access('public.ancient', now() - interval '10 days', 3)")
    # History older than the retention is not even recorded (a WARNING says so).
    db.execute("SELECT shardcast.record_access('public.ancient', now() - interval '40 days', 100)")
    assert recorded(db, "public.ancient", "tuples_read") == 8
    # A shorter retention: the worker purges what is older at its next cycle.
    db.execute("ALTER SYSTEM SET shardcast.history_retention = '15d'")
    db.execute("SELECT pg_reload_conf()")
    try:
        wait_for("the purge", lambda: recorded(db, "public.ancient", "tuples_read") == 3, timeout=10)
        assert one(db, "SELECT min(bucket_start) > now() - interval '15 days' FROM shardcast.access_history WHERE shard = 'public.ancient'::regclass")
    finally:
        db.execute("ALTER SYSTEM RESET shardcast.history_retention")
        db.execute("SELECT pg_reload_conf()")


def test_bulk_import_of_a_million_samples(db):
    db.execute("CREATE TABLE public.imported (id int)")
    started = time.monotonic()
    count = one(db, """
        SELECT shardcast.record_access(array_agg('public.imported'::regclass),
                                       array_agg(now() - i * interval '2 seconds'),
                                       array_agg(1.0::float8), NULL)
        FROM generate_series(1, 1000000) i""")
    elapsed = time.monotonic() - started
    assert count == 1000000
    print(f"imported 1,000,000 samples in {elapsed:.2f} s")
    assert elapsed < 60
    assert recorded(db, "public.imported", "tuples_read") == 1000000
    wait_for("the import to be compacted", lambda: one(db, """
        SELECT count(*) = 0 FROM shardcast.recent_access JOIN shardcast.shards USING (shard_id)
        WHERE table_name = 'imported' AND bucket_start < now() - interval '7 hours'"""), timeout=10)
    assert recorded(db, "public.imported", "tuples_read") == 1000000


def test_worker_status_moves(db):
    first = db.execute("SELECT last_sample_at, samples_written FROM shardcast.worker_status").fetchone()
    later = wait_for("a new sample", lambda: (r := db.execute(
        "SELECT last_sample_at, samples_written, state, pid, shards_tracked, last_cycle_ms FROM shardcast.worker_status").fetchone())[0] > first[0] and r)
    assert later[2] == "running"
    assert later[3] == one(db, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'shardcast'")
    assert later[4] >= 5
    assert later[5] > 0


def test_an_error_in_a_cycle_is_recorded_and_the_next_cycle_runs(db):
    db.execute("CREATE TABLE public.flaky (id int)")
    # Sampled, not only registered: a scan made before the worker's first reading of the table
    # is in that reading (its baseline), and no cycle would write it.
    registered_and_sampled(db, "public.flaky", 0)
    db.execute("ALTER TABLE shardcast.recent_access ADD CONSTRAINT sabotage CHECK (scans < 0) NOT VALID")
    try:
        db.execute("SELECT count(*) FROM public.flaky")
        wait_for("the error to show", lambda: one(db, "SELECT last_error FROM shardcast.worker_status"), timeout=10)
        assert "sabotage" in one(db, "SELECT last_error FROM shardcast.worker_status")
    finally:
        db.execute("ALTER TABLE shardcast.recent_access DROP CONSTRAINT sabotage")
    pid = one(db, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'shardcast'")
    after_error = one(db, "SELECT last_error_at FROM shardcast.worker_status")
    wait_for("a good cycle after the error", lambda: one(
        db, "SELECT last_sample_at > %s AND state = 'running' FROM shardcast.worker_status", after_error), timeout=10)
    assert one(db, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'shardcast'") == pid


def test_enabled_off_pauses_without_a_server_restart(db):
    db.execute("ALTER SYSTEM SET shardcast.enabled = off")
    db.execute("SELECT pg_reload_conf()")
    try:
        wait_for("the pause", lambda: one(db, "SELECT state FROM shardcast.worker_status").startswith("paused"))
        paused_at = one(db, "SELECT last_sample_at FROM shardcast.worker_status")
        time.sleep(2.5)
        assert one(db, "SELECT last_sample_at FROM shardcast.worker_status") == paused_at
        # A paused worker holds no connection to its database (it can be dropped).
        assert one(db, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'shardcast'") == 0
    finally:
        db.execute("ALTER SYSTEM RESET shardcast.enabled")
        db.execute("SELECT pg_reload_conf()")
    wait_for("sampling again", lambda: one(db, "SELECT state FROM shardcast.worker_status") == "running")
    assert one(db, "SELECT pid FROM shardcast.worker_status") == \
        one(db, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'shardcast'")


@pytest.mark.parametrize("setting, value, sqlstate", [
    ("shardcast.sample_interval", "0", "22023"),
    ("shardcast.sample_interval", "2 days", "22023"),
    ("shardcast.sample_interval", "often", "22023"),
    ("shardcast.history_retention", "10min", "22023"),
    ("shardcast.enabled", "maybe", "22023"),
    ("shardcast.sampel_interval", "1s", "42704"),
])
def test_invalid_settings_are_refused(db, setting, value, sqlstate):
    with pytest.raises(psycopg.Error) as refused:
        db.execute(f"ALTER SYSTEM SET {setting} = '{value}'")
    assert refused.value.sqlstate == sqlstate


def test_worker_survives_drop_and_create_extension(cluster, db):
    db.execute("CREATE TABLE public.survivor (id int PRIMARY KEY)")
    db.execute("INSERT INTO public.survivor SELECT generate_series(1, 100)")
    pid = one(db, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'shardcast'")
    db.execute("DROP EXTENSION shardcast")
    time.sleep(2.5)
    assert one(db, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'shardcast'") == pid
    db.execute("CREATE EXTENSION shardcast")
    wait_for("sampling in the new extension", lambda: one(db, "SELECT last_sample_at FROM shardcast.worker_status"))
    assert one(db, "SELECT pid FROM shardcast.worker_status") == pid
    registered_and_sampled(db, "public.survivor", 0)
    with psycopg.connect(db.info.dsn, autocommit=True) as client:
        for _ in range(10):
            client.execute("SELECT count(*) FROM public.survivor").fetchone()
    wait_for("accesses recorded again", lambda: recorded(db, "public.survivor") >= 10, timeout=10)
    assert recorded(db, "public.survivor") <= 12
