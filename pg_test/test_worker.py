"""End to end: the worker's life as a DBA sees it. Each test runs its own cluster (the worker's
database, settings and faults are the subject), so none depends on another's order or tables."""

import contextlib
import os
import re
import signal
import time

import psycopg
import pytest

from cluster import running_cluster, wait_for

APP = "app"
FAST = {"shardcast.database": f"'{APP}'", "shardcast.sample_interval": "'1s'",
        "shardcast.refresh_interval": "'1s'"}


def one(conn, sql, *args):
    row = conn.execute(sql, args).fetchone()
    return None if row is None else row[0]


@contextlib.contextmanager
def app_cluster(settings=None, extension=True):
    """A cluster whose worker samples database `app` every second; yields it and a connection
    to `app` (where the extension is created unless told otherwise)."""
    with running_cluster({**FAST, **(settings or {})}, "shardcast-worker") as cluster:
        with cluster.connect() as conn:
            conn.execute(f"CREATE DATABASE {APP}")
        with cluster.connect(APP) as db:
            if extension:
                db.execute("CREATE EXTENSION shardcast")
            yield cluster, db


def sampler_pid(conn):
    return one(conn, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'shardcast'")


def launcher_pid(conn):
    return one(conn, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'shardcast launcher'")


def sampler_activity(conn):
    return one(conn, "SELECT query FROM pg_stat_activity WHERE backend_type = 'shardcast'") or ""


def samples_during(db, seconds):
    """The samples the worker took in the next `seconds` (distinct last_sample_at seen)."""
    seen = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.add(one(db, "SELECT last_sample_at FROM shardcast.worker_status"))
        time.sleep(0.05)
    return len(seen) - 1


def collect_messages(conn):
    messages = []
    conn.add_notice_handler(lambda d: messages.append((d.severity, d.message_primary, d.message_hint)))
    return messages


def import_month(db, prefix, count):
    """`count` tables, each with 28 days of hourly history (a daily cycle plus noise), so that
    selecting their models is a full backtest."""
    for i in range(count):
        db.execute(f"CREATE TABLE public.{prefix}_{i} (id int)")
    for first in range(0, count, 1000):  # record_access takes at most a million samples a call
        db.execute(f"""
            SELECT shardcast.record_access(array_agg(format('public.{prefix}_%s', i)::regclass),
                                           array_agg(date_trunc('hour', now()) - h * interval '1 hour'),
                                           array_agg((100 + 80 * sin(h * pi() / 12) + 30 * random() + i)::float8),
                                           NULL)
            FROM generate_series({first}, {min(count, first + 1000) - 1}) i, generate_series(1, 28 * 24) h""")


def test_a_long_refresh_delays_neither_samples_nor_a_fast_shutdown():
    with app_cluster({"shardcast.refit_interval": "'1s'", "shardcast.enabled": "off"}) as (cluster, db):
        # Size the work on this build (debug or release): one refresh of every shard would take
        # about 40 s, which the worker used to do in one go, deaf to SIGTERM.
        import_month(db, "probe", 8)
        started = time.monotonic()
        db.execute("SELECT shardcast.refresh_forecasts()")
        per_shard = (time.monotonic() - started) / 8
        count = max(20, min(4000, int(40 / per_shard)))
        import_month(db, "big", count)
        db.execute("ALTER SYSTEM SET shardcast.enabled = on")
        db.execute("SELECT pg_reload_conf()")
        # The first cycles compact the imported 5-minute buckets into day rows, a batch at a time
        # after each sample; the refresh goes on in slices between them, and has forecast some
        # shards once a slice ended.
        wait_for("the compaction", lambda: one(db, """
            SELECT count(*) = 0 FROM shardcast.recent_access
            WHERE bucket_start < now() - interval '7 hours'"""), timeout=300, every=0.5)
        wait_for("the refresh to go on between samples",
                 lambda: re.search(r"forecasting: [1-9]\d* of", sampler_activity(db)), timeout=120, every=0.02)
        refreshed = one(db, "SELECT last_refresh_at FROM shardcast.worker_status")

        taken = samples_during(db, 10)
        print(f"{count} shards to select models for ({per_shard:.3f} s each): {taken} samples in 10 s")
        assert taken >= 7, f"{taken} samples in 10 s at a 1 s interval while the refresh ran"
        # Still the same refresh, going on between the samples.
        assert one(db, "SELECT last_refresh_at FROM shardcast.worker_status") == refreshed
        wait_for("the worker to forecast", lambda: "forecasting: " in sampler_activity(db), timeout=10, every=0.01)
        started = time.monotonic()
        cluster.stop("fast")
        stopped = time.monotonic() - started
        print(f"fast shutdown during the refresh took {stopped:.1f} s")
        assert stopped < 5
        log = cluster.log_text()
        exits = [line for line in log.splitlines()
                 if re.search(r"exit|terminated by signal|abnormal|PANIC|FATAL|panicked", line)]
        assert "shardcast worker exiting" in log, "\n".join(exits)
        assert "abnormal database system shutdown" not in log, "\n".join(exits)


def threads_taking(pid, signals):
    """The threads of process `pid` but its main one, each with the signals of `signals` that it
    does not block (and so may be the one to take)."""
    taking = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        if int(tid) == pid:
            continue
        with open(f"/proc/{pid}/task/{tid}/status") as status:
            blocked = int(next(line for line in status if line.startswith("SigBlk:")).split()[1], 16)
        taking[int(tid)] = [s.name for s in signals if not blocked >> (s - 1) & 1]
    return taking


def test_threads_leave_signals_to_postgresql_s_main_thread():
    # The cold-start profiles' k-means runs on a thread pool. A SIGTERM that one of its threads
    # took at a fast shutdown made pgrx's handler panic off the main thread: the worker aborted
    # and PostgreSQL went through crash recovery.
    # SIGURG wakes a process waiting on its latch: a pool thread that took it discarded it.
    signals = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
               signal.SIGQUIT, signal.SIGALRM, signal.SIGURG]
    with app_cluster() as (cluster, db):
        import_month(db, "profiled", 12)
        db.execute("SELECT shardcast.refresh_forecasts()")  # this session fits profiles too
        backend = one(db, "SELECT pg_backend_pid()")
        worker = wait_for("the worker", lambda: sampler_pid(db))
        wait_for("the worker's refresh to fit profiles", lambda: threads_taking(worker, signals),
                 timeout=60, every=0.2)
        for pid in (worker, backend):
            taking = threads_taking(pid, signals)
            assert taking, f"no pool threads in {pid}"
            assert all(not s for s in taking.values()), taking
        cluster.stop("fast")
        log = cluster.log_text()
        assert "shardcast worker exiting" in log
        assert "abnormal database system shutdown" not in log


def test_a_session_s_refresh_is_not_replaced_by_the_worker_s_until_an_interval_has_passed():
    # A session refreshes at its own horizon and reads the queue: the worker's periodic refresh
    # (at the server's horizon) comes an interval after the session's, not after its own last.
    with app_cluster({"shardcast.refresh_interval": "'20s'"}) as (cluster, db):
        import_month(db, "t", 3)
        horizons = lambda: one(db, "SELECT array_agg(DISTINCT horizon::text) FROM shardcast.forecasts")
        first = wait_for("the worker's refresh",
                         lambda: one(db, "SELECT last_refresh_at FROM shardcast.worker_status"), timeout=60)
        wait_for("its next refresh", lambda: one(
            db, "SELECT last_refresh_at FROM shardcast.worker_status") != first, timeout=60, every=0.1)
        assert horizons() == ["01:00:00"]
        # 15 s into the worker's interval of 20: by its own clock it would refresh in 5 s.
        time.sleep(15)
        db.execute("SET shardcast.horizon = '4h'")
        session = time.monotonic()  # the worker counts from the call's start (its now())
        db.execute("SELECT shardcast.refresh_forecasts()")
        assert horizons() == ["04:00:00"]
        while time.monotonic() - session < 12:
            assert horizons() == ["04:00:00"], f"replaced {time.monotonic() - session:.1f} s after the session's refresh"
            time.sleep(0.5)
        # And the worker refreshes an interval after it.
        wait_for("the worker's refresh at the server's horizon", lambda: horizons() == ["01:00:00"], timeout=30)
        assert time.monotonic() - session >= 19


def test_a_terminated_worker_comes_back():
    with app_cluster() as (cluster, db):
        first = wait_for("the sampler", lambda: sampler_pid(db))
        db.execute("SELECT pg_terminate_backend(%s)", [first])
        second = wait_for("a new sampler", lambda: (p := sampler_pid(db)) != first and p, timeout=15)
        wait_for("it to sample", lambda: one(db, "SELECT state = 'running' AND pid = %s FROM shardcast.worker_status", second))

        # The launcher too: the postmaster starts it again, and it starts a sampler.
        launcher = launcher_pid(db)
        db.execute("SELECT pg_terminate_backend(%s)", [launcher])
        wait_for("a new launcher", lambda: (p := launcher_pid(db)) and p != launcher, timeout=20)
        third = wait_for("a new sampler", lambda: (p := sampler_pid(db)) and p != second and p, timeout=20)
        assert one(db, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'shardcast'") == 1
        wait_for("it to sample", lambda: one(db, "SELECT state = 'running' AND pid = %s FROM shardcast.worker_status", third))


def test_a_dropped_database_is_waited_for_and_the_worker_comes_back_when_it_is_created():
    with app_cluster() as (cluster, db):
        wait_for("the sampler", lambda: sampler_pid(db))
        db.close()
        with cluster.connect() as postgres:
            before = len(cluster.log_text())
            postgres.execute(f"DROP DATABASE {APP} WITH (FORCE)")
            time.sleep(12)
            missing = [line for line in cluster.log_text()[before:].splitlines()
                       if f'"{APP}"' in line and "does not exist" in line]
            assert len(missing) == 1, missing
            assert sampler_pid(postgres) is None
            assert "waiting for the database" in one(
                postgres, "SELECT query FROM pg_stat_activity WHERE backend_type = 'shardcast launcher'")
            postgres.execute(f"CREATE DATABASE {APP}")
            wait_for("the sampler in the new database", lambda: one(
                postgres, "SELECT datname FROM pg_stat_activity WHERE backend_type = 'shardcast'") == APP, timeout=15)
        with cluster.connect(APP) as db:
            db.execute("CREATE EXTENSION shardcast")
            wait_for("it to sample", lambda: one(db, "SELECT state FROM shardcast.worker_status") == "running")


def test_a_missing_database_is_one_log_line_then_silence():
    with running_cluster({**FAST, "shardcast.database": "'nowhere'"}, "shardcast-worker") as cluster:
        time.sleep(15)
        lines = [line for line in cluster.log_text().splitlines()
                 if any(word in line for word in ("nowhere", "] shardcast", "background worker", "FATAL"))]
        assert len(lines) == 1, lines
        assert "FATAL" not in cluster.log_text()
        with cluster.connect() as conn:
            conn.execute("CREATE DATABASE nowhere")
            wait_for("the sampler", lambda: one(
                conn, "SELECT datname FROM pg_stat_activity WHERE backend_type = 'shardcast'") == "nowhere", timeout=15)


def test_an_empty_database_setting_is_one_warning_that_says_what_to_do():
    """No database can be named '': the launcher does not say it waits for one to be created."""
    with running_cluster({**FAST, "shardcast.database": "''"}, "shardcast-worker") as cluster:
        wait_for("the launcher's warning", lambda: "shardcast.database is empty" in cluster.log_text(), timeout=15)
        time.sleep(3)
        log = cluster.log_text()
        assert log.count("shardcast.database is empty") == 1, log
        assert "WARNING:  shardcast launcher: shardcast.database is empty" in log
        assert "the worker starts when it is created" not in log


def test_a_ddl_lock_on_a_referenced_partition_does_not_stall_sampling_or_the_refresh():
    with app_cluster() as (cluster, db):
        db.execute("""
            CREATE TABLE public.parent (id int PRIMARY KEY) PARTITION BY RANGE (id);
            CREATE TABLE public.parent_1 PARTITION OF public.parent FOR VALUES FROM (0) TO (1000);
            CREATE TABLE public.parent_2 PARTITION OF public.parent FOR VALUES FROM (1000) TO (2000);
            CREATE TABLE public.child (id int PRIMARY KEY, parent_id int REFERENCES public.parent);
            INSERT INTO public.parent SELECT generate_series(0, 1999);
            INSERT INTO public.child SELECT i, i FROM generate_series(0, 1999) i;""")
        # Registered, sized and scored before the lock.
        wait_for("scores of the new tables", lambda: one(
            db, "SELECT count(*) FROM shardcast.priority_scores WHERE shard::text IN ('parent_1', 'child')") == 2,
            timeout=30)
        time.sleep(2)
        with cluster.connect(APP, autocommit=False) as ddl:
            ddl.execute("LOCK TABLE public.parent_1 IN ACCESS EXCLUSIVE MODE")
            refreshed = one(db, "SELECT last_refresh_at FROM shardcast.worker_status")
            taken = samples_during(db, 8)
            after = one(db, "SELECT last_refresh_at FROM shardcast.worker_status")
            ddl.rollback()
        assert taken >= 6, f"{taken} samples in 8 s at a 1 s interval while a partition was locked"
        assert after > refreshed, "no refresh while a partition was locked"


def test_without_preloading_the_setup_mistake_is_named():
    with running_cluster({"shared_preload_libraries": "''"}, "shardcast-worker") as cluster:
        with cluster.connect() as conn:
            messages = collect_messages(conn)
            conn.execute("CREATE EXTENSION shardcast")
            assert ("WARNING", "shardcast is not in shared_preload_libraries: its worker does not run, so nothing is sampled",
                    "Add shardcast to shared_preload_libraries in postgresql.conf and restart the server.") in messages
            assert one(conn, "SHOW shardcast.database") == "postgres"
            assert one(conn, "SELECT state FROM shardcast.worker_status") == \
                "not running: shardcast is not in shared_preload_libraries"
        with cluster.connect() as conn:
            messages = collect_messages(conn)
            assert one(conn, "SELECT shardcast.refresh_forecasts()") == 0
            assert [m[0] for m in messages] == ["WARNING"]
            assert "shared_preload_libraries" in messages[0][2]
        # In a new session, the view first: the library is not loaded yet, so its settings do
        # not exist (it failed with 42704 "unrecognized configuration parameter").
        with cluster.connect() as conn:
            messages = collect_messages(conn)
            assert one(conn, "SELECT state FROM shardcast.worker_status") == \
                "not running: shardcast is not in shared_preload_libraries"
            assert [m[0] for m in messages] == ["WARNING"]


def test_worker_status_is_the_same_for_a_role_without_stats_privileges():
    """pg_stat_activity hides other users' backend_type from a role without pg_read_all_stats:
    read through it, worker_status told such a role "not running" while the worker ran."""
    with app_cluster() as (cluster, db):
        pid = wait_for("the sampler", lambda: sampler_pid(db))
        wait_for("the sampler's record", lambda: one(db, "SELECT state FROM shardcast.worker_status") == "running")
        db.execute("CREATE ROLE watcher LOGIN")
        with psycopg.connect(cluster.dsn(APP).replace("user=postgres", "user=watcher"), autocommit=True) as watcher:
            assert one(watcher, "SELECT backend_type FROM pg_stat_activity WHERE pid = %s", pid) is None
            assert watcher.execute("SELECT pid, database, state FROM shardcast.worker_status").fetchone() == \
                (pid, APP, "running")


def test_a_database_not_in_utf8_is_refused_with_what_to_do():
    """Names are read as UTF-8: in a LATIN1 database a table called "café" failed every call
    that read it with XX000 (pgrx cannot read such text), so CREATE EXTENSION refuses it, and so
    does the update of a 0.1.0 installed there (which would reach 0.2.0 by the back door)."""
    with running_cluster({"shared_preload_libraries": "''"}, "shardcast-worker") as cluster:
        with cluster.connect() as conn:
            conn.execute("CREATE DATABASE latin TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'")
        with cluster.connect("latin") as conn:
            with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
                conn.execute("CREATE EXTENSION shardcast")
            assert 'database "latin" is LATIN1' in str(refused.value)
            assert "ENCODING 'UTF8'" in refused.value.diag.message_hint
            assert one(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'shardcast'") == 0
            conn.execute("CREATE EXTENSION shardcast VERSION '0.1.0'")
            with pytest.raises(psycopg.errors.FeatureNotSupported):
                conn.execute("ALTER EXTENSION shardcast UPDATE")
            assert one(conn, "SELECT extversion FROM pg_extension WHERE extname = 'shardcast'") == "0.1.0"


def test_in_another_database_worker_status_says_where_the_worker_runs():
    with app_cluster() as (cluster, db):
        pid = wait_for("the sampler", lambda: sampler_pid(db))
        with cluster.connect() as conn:
            messages = collect_messages(conn)
            conn.execute("CREATE EXTENSION shardcast")
            assert [m[0] for m in messages] == ["WARNING"]
            assert 'samples database "app" (shardcast.database), not "postgres"' in messages[0][1]
            assert "shardcast.database = 'postgres'" in messages[0][2]
            assert conn.execute("SELECT pid, database, state FROM shardcast.worker_status").fetchone() == \
                (pid, APP, 'running in database "app"')
            messages.clear()
            conn.execute("SELECT shardcast.refresh_forecasts()")
            assert [m[0] for m in messages] == ["NOTICE"]
            assert 'not "postgres"' in messages[0][1]
            # No worker purges history here: a refresh does. (It grew without bound.)
            conn.execute("CREATE TABLE public.imported (id int)")
            conn.execute("SELECT shardcast.record_access('public.imported', now() - interval '1 hour', 2)")
            conn.execute("INSERT INTO shardcast.recent_access (shard_id, bucket_start, scans) "
                         "SELECT shard_id, now() - interval '30 days', 5 FROM shardcast.shards "
                         "WHERE table_name = 'imported'")
            old = "SELECT count(*) FROM shardcast.recent_access WHERE bucket_start < now() - interval '28 days'"
            assert one(conn, old) == 1
            conn.execute("SELECT shardcast.refresh_forecasts()")
            assert one(conn, old) == 0
            assert one(conn, "SELECT count(*) FROM shardcast.recent_access") == 1


def test_a_paused_worker_lets_its_database_be_dropped():
    with app_cluster() as (cluster, db):
        wait_for("the sampler", lambda: sampler_pid(db))
        db.execute("ALTER SYSTEM SET shardcast.enabled = off")
        db.execute("SELECT pg_reload_conf()")
        wait_for("the pause", lambda: one(db, "SELECT state FROM shardcast.worker_status") == "paused (shardcast.enabled = off)")
        assert sampler_pid(db) is None
        db.close()
        with cluster.connect() as postgres:
            postgres.execute(f"DROP DATABASE {APP}")
            postgres.execute(f"CREATE DATABASE {APP}")
            postgres.execute("ALTER SYSTEM RESET shardcast.enabled")
            postgres.execute("SELECT pg_reload_conf()")
        with cluster.connect(APP) as db:
            db.execute("CREATE EXTENSION shardcast")
            wait_for("sampling again", lambda: one(db, "SELECT state FROM shardcast.worker_status") == "running", timeout=15)
