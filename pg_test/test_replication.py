"""End to end: replication scripts drive the queue over real, concurrent connections."""

import json
import threading
import time

import psycopg

from cluster import wait_for


def one(conn, sql, *args):
    row = conn.execute(sql, args).fetchone()
    return None if row is None else row[0]


def test_sixteen_parallel_claimers_never_share_a_task(db):
    db.execute("""
        DO $$ BEGIN
            FOR i IN 1..120 LOOP
                EXECUTE format('CREATE TABLE public.r_%s (id int)', i);
            END LOOP;
        END $$""")
    queued = one(db, "SELECT shardcast.enqueue_all()")
    assert queued >= 120
    open_tasks = {r[0] for r in db.execute("SELECT task_id FROM shardcast.replication_tasks WHERE state = 'queued'")}
    claimed: list[list[int]] = [[] for _ in range(16)]
    errors = []

    def claimer(i):
        try:
            with psycopg.connect(db.info.dsn, autocommit=True) as conn:
                while True:
                    row = conn.execute("SELECT task_id FROM shardcast.claim_task(%s)", (f"w{i}",)).fetchone()
                    if row is None:
                        return
                    claimed[i].append(row[0])
                    conn.execute("SELECT shardcast.complete_task(%s, true, NULL, %s)", (row[0], f"w{i}"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    every = [task for mine in claimed for task in mine]
    assert len(every) == len(set(every)), "a task was handed out twice"
    assert open_tasks <= set(every)
    assert sum(1 for mine in claimed if mine) > 1, "the claimers did not run concurrently"
    assert one(db, "SELECT count(*) FROM shardcast.completion_log WHERE task_id = ANY(%s)", list(open_tasks)) == len(open_tasks)


def test_a_claimer_that_dies_loses_nothing(db):
    db.execute("CREATE TABLE public.r_fragile (id int)")
    task = one(db, "SELECT shardcast.enqueue('public.r_fragile')")
    dying = psycopg.connect(db.info.dsn, autocommit=True)
    dying.execute("SET shardcast.claim_lease = '1s'")
    got = None
    while got != task:  # claim until we hold our task (others may be queued ahead)
        row = dying.execute("SELECT task_id FROM shardcast.claim_task('doomed')").fetchone()
        assert row is not None
        got = row[0]
    dying.close()  # dies mid-task: no heartbeat, no completion
    time.sleep(1.5)
    with psycopg.connect(db.info.dsn, autocommit=True) as survivor:
        again = None
        while again != task:
            row = survivor.execute("SELECT task_id, attempts FROM shardcast.claim_task('survivor')").fetchone()
            assert row is not None, "the task did not come back"
            again, attempts = row
        assert attempts == 1
        survivor.execute("SELECT shardcast.complete_task(%s, true, NULL, 'survivor')", (task,))
    assert one(db, "SELECT count(*) FROM shardcast.completion_log WHERE task_id = %s AND succeeded", task) == 1
    assert one(db, "SELECT state FROM shardcast.replication_tasks WHERE task_id = %s", task) == "done"


def test_heartbeats_keep_a_lease(db):
    db.execute("CREATE TABLE public.r_slow (id int)")
    task = one(db, "SELECT shardcast.enqueue('public.r_slow')")
    with psycopg.connect(db.info.dsn, autocommit=True) as worker:
        # Heartbeats every half second hold a 3 s lease for 4 s: past the lease, with room for a
        # stall of seconds on a loaded machine.
        worker.execute("SET shardcast.claim_lease = '3s'")
        got = None
        while got != task:
            got = worker.execute("SELECT task_id FROM shardcast.claim_task('steady')").fetchone()[0]
        for _ in range(8):
            time.sleep(0.5)
            worker.execute("SELECT shardcast.heartbeat(%s)", (task,))
        assert one(db, "SELECT state || ':' || claimed_by FROM shardcast.replication_tasks WHERE task_id = %s", task) == "claimed:steady"
        worker.execute("SELECT shardcast.complete_task(%s)", (task,))


def test_completion_notifications_reach_a_listener(db, cluster):
    db.execute("CREATE TABLE public.r_told (id int)")
    task = one(db, "SELECT shardcast.enqueue('public.r_told')")
    received = []
    listening = threading.Event()

    def listen():
        with psycopg.connect(db.info.dsn, autocommit=True) as listener:
            listener.execute("LISTEN shardcast_completion")
            listening.set()
            for note in listener.notifies(timeout=15):
                payload = json.loads(note.payload)
                received.append(payload)
                if payload["task"] == task:
                    return

    thread = threading.Thread(target=listen)
    thread.start()
    listening.wait(5)
    with psycopg.connect(db.info.dsn, autocommit=True) as worker:
        got = None
        while got != task:
            got = worker.execute("SELECT task_id FROM shardcast.claim_task('teller')").fetchone()[0]
            if got != task:
                worker.execute("SELECT shardcast.complete_task(%s)", (got,))
        worker.execute("SELECT shardcast.complete_task(%s, true, 'copied')", (task,))
    thread.join(20)
    mine = [p for p in received if p["task"] == task]
    assert len(mine) == 1
    assert mine[0]["shard"] == "public.r_told"
    assert mine[0]["succeeded"] is True
    assert set(mine[0]) >= {"task", "shard", "node", "priority_weight", "size", "duration", "succeeded", "attempts"}


def test_the_report_shows_hot_first_beat_fifo(db):
    db.execute("CREATE TABLE public.r_cold (id int); CREATE TABLE public.r_hot (id int PRIMARY KEY)")
    db.execute("INSERT INTO public.r_hot SELECT generate_series(1, 100)")
    wait_for("registration", lambda: one(db, "SELECT count(*) = 2 FROM shardcast.shards WHERE table_name IN ('r_cold', 'r_hot') AND retired_at IS NULL"))
    since = one(db, "SELECT now()")
    # Catalog order would copy the cold table first.
    cold = one(db, "SELECT shardcast.enqueue('public.r_cold')")
    hot = one(db, "SELECT shardcast.enqueue('public.r_hot')")
    stop = threading.Event()

    def load():
        with psycopg.connect(db.info.dsn, autocommit=True) as client:
            while not stop.is_set():
                client.execute("SELECT id FROM public.r_hot WHERE id = 5").fetchone()
                time.sleep(0.01)

    reader = threading.Thread(target=load)
    reader.start()
    try:
        with psycopg.connect(db.info.dsn, autocommit=True) as worker:
            for task in (hot, cold):  # the order shardcast would choose: the hot table first
                with worker.transaction():  # a concurrent replan cannot reorder in between
                    worker.execute("UPDATE shardcast.replication_tasks SET dispatch_rank = 0 WHERE task_id = %s", (task,))
                    got = worker.execute("SELECT task_id FROM shardcast.claim_task('reporter')").fetchone()[0]
                assert got == task
                time.sleep(1.5)
                worker.execute("SELECT shardcast.complete_task(%s)", (task,))
        time.sleep(2.5)  # the last accesses reach history
    finally:
        stop.set()
        reader.join()
    row = db.execute("SELECT tasks, awa_realised, awa_fifo, awa_oracle, capture FROM shardcast.prioritization_report_since(%s)", (since,)).fetchone()
    tasks, realised, fifo, oracle, capture = row
    assert tasks == 2
    assert realised > fifo, row
    assert oracle >= fifo, row
    assert 0 <= realised <= 1 and 0 <= fifo <= 1


def claim_this(conn, task, worker):
    """Claims `task` ahead of whatever else is queued (other tests' tasks)."""
    with conn.transaction():  # a concurrent replan cannot reorder in between
        conn.execute("UPDATE shardcast.replication_tasks SET dispatch_rank = 0 WHERE task_id = %s", (task,))
        row = conn.execute("SELECT task_id, attempts FROM shardcast.claim_task(%s)", (worker,)).fetchone()
    assert row is not None and row[0] == task, row
    return row


def test_allocation_plan_is_bounded_for_a_role_without_grants(db):
    """allocation_plan(50000000, 1) as a role with no grants once ran 195 s under a 2 s statement
    timeout, and (2147483647, 1) took 16.8 GB: now out-of-range workers are refused at once and
    the largest plan costs what the queue needs."""
    db.execute("DROP ROLE IF EXISTS r_nobody; CREATE ROLE r_nobody LOGIN")
    db.execute("""
        DO $$ BEGIN
            FOR i IN 1..100 LOOP
                EXECUTE format('CREATE TABLE public.p_%s (id int)', i);
            END LOOP;
        END $$""")
    assert one(db, "SELECT shardcast.enqueue_all()") >= 100
    with psycopg.connect(db.info.dsn.replace("user=postgres", "user=r_nobody"), autocommit=True) as nobody:
        assert one(nobody, "SELECT current_user") == "r_nobody"
        nobody.execute("SET statement_timeout = '2s'")
        for workers in (1025, 50000000, 2147483647):  # the smallest first: unbounded, the others ran for minutes
            started = time.monotonic()
            try:
                nobody.execute("SELECT count(*) FROM shardcast.allocation_plan(%s, 1)", (workers,))
                raise AssertionError(f"allocation_plan({workers}, 1) was accepted")
            except psycopg.errors.InvalidParameterValue as error:
                assert "1024" in str(error) and error.diag.message_hint
            assert time.monotonic() - started < 1
        started = time.monotonic()
        planned = one(nobody, "SELECT count(DISTINCT worker) FROM shardcast.allocation_plan(1024, 1)")
        assert planned == min(1024, one(db, "SELECT count(*) FROM shardcast.prioritized_queue"))
        assert time.monotonic() - started < 2
    db.execute("""
        DO $$ BEGIN
            FOR i IN 1..100 LOOP
                EXECUTE format('DROP TABLE public.p_%s', i);
            END LOOP;
        END $$""")


def test_a_long_detail_is_announced_cut_and_kept_whole(db):
    """complete_task(t, false, repeat('e', 8000)) once failed with 22023 (payload string too long)
    and left the task claimed."""
    db.execute("CREATE TABLE public.r_verbose (id int)")
    task = one(db, "SELECT shardcast.enqueue('public.r_verbose')")
    received = []
    listening = threading.Event()

    def listen():
        with psycopg.connect(db.info.dsn, autocommit=True) as listener:
            listener.execute("LISTEN shardcast_completion")
            listening.set()
            for note in listener.notifies(timeout=15):
                payload = json.loads(note.payload)
                if payload["task"] == task:
                    received.append(payload)
                    return

    thread = threading.Thread(target=listen)
    thread.start()
    listening.wait(5)
    with psycopg.connect(db.info.dsn, autocommit=True) as worker:
        claim_this(worker, task, "verbose")
        worker.execute("SELECT shardcast.complete_task(%s, true, repeat('e', 8000))", (task,))
    thread.join(20)
    assert len(received) == 1
    assert received[0]["detail"] == "e" * 500 + "…"
    assert one(db, "SELECT state || ':' || length(detail) FROM shardcast.replication_tasks WHERE task_id = %s", task) == "done:8000"
    assert one(db, "SELECT length(detail) FROM shardcast.completion_log WHERE task_id = %s", task) == 8000


def test_an_expired_lease_cannot_be_heartbeaten_or_completed(db):
    """With claim_lease = 2s, a heartbeat 3 s after the claim once succeeded as long as nobody
    had returned the task to the queue yet (a claim, or the worker's refresh); the README says an
    expired lease is 55000."""
    db.execute("CREATE TABLE public.r_sleepy (id int)")
    task = one(db, "SELECT shardcast.enqueue('public.r_sleepy')")
    # The worker's refresh also returns expired leases to the queue: none during this test, so
    # that the task is still 'claimed', its lease over, when it is heartbeaten.
    db.execute("ALTER SYSTEM SET shardcast.refresh_interval = '1h'")
    db.execute("SELECT pg_reload_conf()")
    time.sleep(1.5)
    try:
        with psycopg.connect(db.info.dsn, autocommit=True) as worker:
            worker.execute("SET shardcast.claim_lease = '2s'")
            claim_this(worker, task, "sleepy")
            time.sleep(3)
            assert one(db, "SELECT state FROM shardcast.replication_tasks WHERE task_id = %s", task) == "claimed"
            for sql in ("SELECT shardcast.heartbeat(%s, 'sleepy')",
                        "SELECT shardcast.complete_task(%s, true, NULL, 'sleepy')"):
                try:
                    worker.execute(sql, (task,))
                    raise AssertionError(f"{sql} succeeded on an expired lease")
                except psycopg.errors.ObjectNotInPrerequisiteState as error:
                    assert "lease" in error.diag.message_primary and error.diag.message_hint, error
        # Still claimed until a claim returns it: the next claim does, with one more attempt.
        assert one(db, "SELECT state FROM shardcast.replication_tasks WHERE task_id = %s", task) == "claimed"
        with psycopg.connect(db.info.dsn, autocommit=True) as survivor:
            assert claim_this(survivor, task, "survivor")[1] == 1
            survivor.execute("SELECT shardcast.complete_task(%s)", (task,))
    finally:
        db.execute("ALTER SYSTEM RESET shardcast.refresh_interval")
        db.execute("SELECT pg_reload_conf()")
