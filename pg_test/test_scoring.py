"""End to end: the worker forecasts and scores shards on its own, from history it sampled."""

import threading
import time

import psycopg

from cluster import wait_for
from test_sampling import live_shard, one


def test_worker_scores_what_clients_read(db):
    db.execute("""
        CREATE TABLE public.s_hot (id int PRIMARY KEY, v text);
        CREATE TABLE public.s_ref (id int PRIMARY KEY);
        CREATE TABLE public.s_cold (id int PRIMARY KEY, v text);
        INSERT INTO public.s_hot SELECT i, 'x' FROM generate_series(1, 1000) i;
        INSERT INTO public.s_cold SELECT i, 'x' FROM generate_series(1, 1000) i;""")
    db.execute("ALTER TABLE public.s_hot ADD COLUMN ref int REFERENCES public.s_ref")
    wait_for("registration", lambda: live_shard(db, "public.s_hot") and live_shard(db, "public.s_cold"))
    stop = threading.Event()

    def load():
        with psycopg.connect(db.info.dsn, autocommit=True) as client:
            while not stop.is_set():
                for i in range(50):
                    client.execute("SELECT v FROM public.s_hot WHERE id = %s", (i + 1,)).fetchone()
                client.execute("SELECT v FROM public.s_cold WHERE id = 1").fetchone()
                time.sleep(0.2)

    reader = threading.Thread(target=load)
    reader.start()
    try:
        # Ranked by what was forecast from the reads: the hot table (50 reads per cycle) is
        # predicted far busier than the cold one (1 read per cycle), not merely ranked first (the
        # first forecasts, made before any read was sampled, already rank it first: the foreign
        # key's validation scanned it once).
        wait_for("the worker to forecast the hot table from its reads", lambda: one(db, """
            SELECT h.rank < c.rank AND h.predicted_load > 5 * c.predicted_load
            FROM shardcast.priority_scores h, shardcast.priority_scores c
            WHERE h.shard = 'public.s_hot'::regclass AND c.shard = 'public.s_cold'::regclass"""), timeout=60)
    finally:
        stop.set()
        reader.join()
    status = db.execute("SELECT last_refresh_at IS NOT NULL, shards_scored, last_refresh_ms FROM shardcast.worker_status").fetchone()
    assert status[0] and status[1] >= 3 and status[2] > 0
    row = db.execute("""
        SELECT priority_weight, model, lift_source::text, sparkline FROM shardcast.priority_scores
        WHERE shard = 'public.s_hot'::regclass""").fetchone()
    # Minutes of history: no backtest is possible, so a cold-start model made the forecast.
    assert row[0] > 0 and row[1] in ("recent_mean", "cluster_profile"), row
    assert "│" in row[3]
    # The forecast is for the window starting when its history was read (the refresh publishes
    # it moments later), from what the worker observed.
    window = db.execute("""
        SELECT window_start BETWEEN computed_at - interval '1 minute' AND computed_at,
               window_end - window_start = horizon, observed_hours,
               imported_hours, change_reason
        FROM shardcast.forecasts WHERE shard = 'public.s_hot'::regclass""").fetchone()
    assert window[:4] == (True, True, 1, 0), window
    assert window[4] in ("first forecast", "refreshed with the latest history"), window
    # s_ref is referenced by the hot table: lifted toward its score, and says so.
    lifted = one(db, "SELECT lift_source::text FROM shardcast.priority_scores WHERE shard = 'public.s_ref'::regclass")
    assert lifted == "s_hot"


def test_priority_scores_neither_waits_for_a_locked_shard_nor_fails_for_a_dropped_one(db):
    """priority_scores once waited behind any ACCESS EXCLUSIVE lock on a scored shard, and failed
    with XX000 (could not open relation) after a DROP TABLE until the next sample."""
    db.execute("CREATE TABLE public.s_doomed (id int PRIMARY KEY); INSERT INTO public.s_doomed VALUES (1)")
    wait_for("the worker to score s_doomed", lambda: one(
        db, "SELECT count(*) FROM shardcast.priority_scores WHERE shard = to_regclass('public.s_doomed')"), timeout=60)
    with psycopg.connect(db.info.dsn, autocommit=False) as ddl:
        ddl.execute("LOCK TABLE public.s_doomed IN ACCESS EXCLUSIVE MODE")
        with psycopg.connect(db.info.dsn, autocommit=True) as reader:
            reader.execute("SET statement_timeout = '2s'")
            rows = reader.execute("SELECT shard::text, sparkline FROM shardcast.priority_scores").fetchall()
            assert ("s_doomed" in [r[0] for r in rows]) and all(r[1] for r in rows)
            assert reader.execute("SELECT shardcast.sparkline('public.s_doomed', '6 hours')").fetchone()[0]
            ddl.execute("DROP TABLE public.s_doomed")
            ddl.commit()
            # Dropped, not yet retired by a sample: left out, and nothing fails.
            rows = reader.execute("SELECT shard::text FROM shardcast.priority_scores").fetchall()
            assert "s_doomed" not in [r[0] for r in rows] and rows
