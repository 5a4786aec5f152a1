"""shardcast beside Citus: a coordinator and workers with both preloaded. Skipped without Citus
(see pg_test/citus.py)."""

import pytest

from citus import citus_cluster, citus_installed
from cluster import wait_for

pytestmark = pytest.mark.skipif(not citus_installed(), reason="Citus is not installed (scripts/install-citus.sh)")

DB = "app"


def sql_error(conn, sql, *args):
    """The SQLSTATE, message and hint of the error that `sql` must raise."""
    import psycopg
    with pytest.raises(psycopg.Error) as e:
        conn.execute(sql, args or None)
    return e.value.sqlstate, e.value.diag.message_primary, e.value.diag.message_hint


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


# --- shardcast on the coordinator: history, forecasts and scores per Citus shard, the rebalance
# strategy. Each test has its own cluster; the coordinator's worker samples every node through
# Citus's connections (run_command_on_all_nodes).

import random
import subprocess
import time

from cluster import as_user

FAST = {"shardcast.sample_interval": "'1s'", "shardcast.refresh_interval": "'1h'"}


def _distributed_orders(conn, shards=8, rows=20000):
    conn.execute("CREATE EXTENSION shardcast")
    conn.execute(f"SET citus.shard_count = {shards}")
    conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, amount int)")
    conn.execute("SELECT create_distributed_table('orders', 'id')")
    conn.execute(f"INSERT INTO orders SELECT g, g % 100 FROM generate_series(1, {rows}) g")


def _keys_by_shard(conn, rows=20000):
    keys: dict[int, list[int]] = {}
    for key, shard in conn.execute(
            "SELECT g, get_shard_id_for_distribution_column('orders', g) FROM generate_series(1, %s) g",
            [rows]):
        keys.setdefault(shard, []).append(key)
    return keys


def _sampled_orders(conn):
    """_distributed_orders with every shard registered at the coordinator and read once (a
    baseline) before the workload: its keys by shard."""
    _distributed_orders(conn)
    keys = _keys_by_shard(conn)
    assert len(keys) == 8
    wait_for("every Citus shard registered", lambda: conn.execute(
        "SELECT count(*) = 8 FROM shardcast.citus_shards").fetchone()[0], timeout=30)
    time.sleep(3)
    return keys


def _skewed_reads(conn, keys, hot, n, rng):
    """n point reads through the coordinator, 95% on the hot shards' keys; reads made per shard."""
    made = {shard: 0 for shard in keys}
    cold = [s for s in keys if s not in hot]
    for _ in range(n):
        shard = rng.choice(hot) if rng.random() < 0.95 else rng.choice(cold)
        conn.execute("SELECT amount FROM orders WHERE id = %s", [rng.choice(keys[shard])])
        made[shard] += 1
    return made


def _recorded(conn):
    """Scans recorded per Citus shardid at the coordinator, all history."""
    return dict(conn.execute("""
        SELECT s.citus_shard_id, coalesce(sum(h.scans), 0)::float8
        FROM shardcast.shards s LEFT JOIN shardcast.access_history h USING (shard_id)
        WHERE s.citus_shard_id IS NOT NULL AND s.retired_at IS NULL
        GROUP BY 1""").fetchall())


def _wait_recorded(conn, expected, what, slack=0.05, timeout=40):
    """Waits until every shard's recorded scans are within tolerance of `expected` (stats reach
    the shared counters when a worker's backend is idle, within about 10 s)."""
    def close():
        got = _recorded(conn)
        ok = all(abs(got.get(s, 0) - n) <= slack * n + 5 for s, n in expected.items())
        return got if ok else None
    try:
        return wait_for(what, close, timeout=timeout, every=1)
    except Exception:
        raise AssertionError(f"{what}: recorded {_recorded(conn)}, expected {expected}")


def _worker_healthy(node):
    with node.connect(DB) as conn:
        state, error = conn.execute("SELECT state, last_error FROM shardcast.worker_status").fetchone()
    assert state == "running" and error is None, (node.port, state, error)
    assert "panicked" not in node.log_text() and "PANIC" not in node.log_text()


def test_citus_shards_have_history_forecasts_and_costs_at_the_coordinator():
    rng = random.Random(7)
    with citus_cluster(DB, workers=2, settings=FAST, name="citus-hist") as (coordinator, workers):
        with coordinator.connect(DB) as conn:
            keys = _sampled_orders(conn)
            base = _recorded(conn)
            hot = sorted(keys)[2:4]
            made = _skewed_reads(conn, keys, hot, 2000, rng)
            got = _wait_recorded(conn, {s: base.get(s, 0) + n for s, n in made.items()},
                                 "the reads in the coordinator's history")
            # Recorded at the coordinator, by shardid: the shards are not in the workers' registries.
            for worker in workers:
                with worker.connect(DB) as wconn:
                    assert wconn.execute("SELECT count(*) FROM shardcast.shards "
                                         "WHERE citus_shard_id IS NOT NULL").fetchone()[0] == 0
            assert conn.execute("SELECT shardcast.refresh_forecasts()").fetchone()[0] >= 8
            rows = conn.execute("""SELECT shardid, predicted_load, score, rank, node, colocation_id,
                                          move_group, size_bytes
                                   FROM shardcast.citus_shards ORDER BY predicted_load DESC""").fetchall()
            assert sorted(r[0] for r in rows[:2]) == hot, (rows, got)
            assert all(r[1] is not None and r[2] is not None and r[3] is not None for r in rows)
            ports = {str(w.port) for w in workers}
            assert all(r[4].split(":")[1] in ports for r in rows)
            # One colocation group; each shard its own move group (no other table colocated).
            assert len({r[5] for r in rows}) == 1 and len({r[6] for r in rows}) == 8
            cold = sorted(set(keys) - set(hot))[0]
            hot_cost, cold_cost = (conn.execute("SELECT shardcast.citus_shard_cost(%s)", [s]).fetchone()[0]
                                   for s in (hot[0], cold))
            assert hot_cost > cold_cost >= 1, (hot_cost, cold_cost)
            # Forecast with the same models as tables: in shardcast.forecasts, by shard_id.
            assert conn.execute("""SELECT count(*) FROM shardcast.forecasts f
                                   JOIN shardcast.shards s USING (shard_id)
                                   WHERE s.citus_shard_id IS NOT NULL""").fetchone()[0] == 8
            # A colocated table: its shards join the move groups, whose load is the sum.
            conn.execute("CREATE TABLE items (id bigint, order_id bigint)")
            conn.execute("SELECT create_distributed_table('items', 'order_id', colocate_with => 'orders')")
            wait_for("the colocated shards registered", lambda: conn.execute(
                "SELECT count(*) = 16 FROM shardcast.citus_shards").fetchone()[0], timeout=30)
            groups = conn.execute("""SELECT move_group, count(*) FROM shardcast.citus_shards
                                     GROUP BY 1""").fetchall()
            assert len(groups) == 8 and all(n == 2 for _, n in groups)
        for node in [coordinator, *workers]:
            _worker_healthy(node)


def test_a_moved_shard_keeps_its_history_and_a_down_node_is_unknown_not_idle():
    rng = random.Random(11)
    with citus_cluster(DB, workers=2, settings=FAST, name="citus-mv") as (coordinator, workers):
        with coordinator.connect(DB) as conn:
            keys = _sampled_orders(conn)
            base = _recorded(conn)
            hot = sorted(keys)[:2]
            made = _skewed_reads(conn, keys, hot, 1000, rng)
            expected = {s: base.get(s, 0) + n for s, n in made.items()}
            _wait_recorded(conn, expected, "the reads before the move")
            shard = hot[0]
            shard_id, source_port = conn.execute("""
                SELECT s.shard_id, c.nodeport FROM shardcast.shards s
                JOIN citus_shards c ON c.shardid = s.citus_shard_id
                WHERE s.citus_shard_id = %s AND s.retired_at IS NULL""", [shard]).fetchone()
            target = next(w for w in workers if w.port != source_port)
            written = """SELECT coalesce(sum(tuples_written), 0) FROM shardcast.access_history
                         WHERE shard_id = %s"""
            written_before = conn.execute(written, [shard_id]).fetchone()[0]
            conn.execute("""SELECT citus_move_shard_placement(%s, '127.0.0.1', %s, '127.0.0.1', %s,
                            shard_transfer_mode => 'force_logical')""", [shard, source_port, target.port])
            wait_for("the move in citus_shards", lambda: conn.execute(
                "SELECT node FROM shardcast.citus_shards WHERE shardid = %s",
                [shard]).fetchone()[0] == f"127.0.0.1:{target.port}", timeout=20)
            time.sleep(3)
            # Same shard, same history: neither reset nor counted twice (the copy's writes on
            # the target are not load).
            after_move = _recorded(conn)
            assert abs(after_move[shard] - expected[shard]) <= 0.05 * expected[shard] + 5, (after_move, expected)
            assert conn.execute("""SELECT shard_id FROM shardcast.shards
                                   WHERE citus_shard_id = %s AND retired_at IS NULL""",
                                [shard]).fetchone()[0] == shard_id
            assert conn.execute(written, [shard_id]).fetchone()[0] == written_before
            # The reading after the move was a baseline: that span is a gap, not idle.
            assert conn.execute("SELECT count(*) FROM shardcast.shard_gaps WHERE shard_id = %s",
                                [shard_id]).fetchone()[0] == 1
            made = _skewed_reads(conn, keys, hot, 1000, rng)
            expected = {s: after_move.get(s, 0) + n for s, n in made.items()}
            _wait_recorded(conn, expected, "the reads after the move, on the new node")

            # A worker down: the coordinator keeps sampling the other; the down node's shards
            # have a gap while it is down, and continue when it is back.
            down = workers[0]
            down.stop()
            down_shards = {r[0] for r in conn.execute(
                "SELECT s.shard_id FROM shardcast.citus_shards c JOIN shardcast.shards s "
                "ON s.citus_shard_id = c.shardid AND s.retired_at IS NULL WHERE c.node = %s",
                [f"127.0.0.1:{down.port}"])}
            assert down_shards
            wait_for("gaps for the down node's shards", lambda: conn.execute(
                "SELECT count(DISTINCT shard_id) FROM shardcast.shard_gaps "
                "WHERE shard_id = ANY(%s) AND ended_at > now() - interval '2 seconds'",
                [list(down_shards)]).fetchone()[0] == len(down_shards), timeout=30)
            up = [s for s in keys if conn.execute(
                "SELECT node FROM shardcast.citus_shards WHERE shardid = %s", [s]).fetchone()[0]
                != f"127.0.0.1:{down.port}"]
            before = _recorded(conn)
            reads = {s: 0 for s in up}
            for _ in range(300):
                s = rng.choice(up)
                conn.execute("SELECT amount FROM orders WHERE id = %s", [rng.choice(keys[s])])
                reads[s] += 1
            _wait_recorded(conn, {s: before.get(s, 0) + n for s, n in reads.items()},
                           "reads of the nodes that are up while one is down")
            state, error = conn.execute("SELECT state, last_error FROM shardcast.worker_status").fetchone()
            assert state == "running" and error is None, (state, error)
            subprocess.run(as_user([str(down.bindir / "pg_ctl"), "-D", str(down.data), "-l", str(down.log),
                                    "-w", "start"]), check=True, capture_output=True)
            time.sleep(4)
            before = _recorded(conn)
            back = sorted(keys, key=lambda s: s not in [k for k in keys if k not in up])[0]
            for _ in range(200):
                conn.execute("SELECT amount FROM orders WHERE id = %s", [rng.choice(keys[back])])
            _wait_recorded(conn, {back: before.get(back, 0) + 200}, "reads of the node that came back")
            assert conn.execute("SELECT shardcast.refresh_forecasts()").fetchone()[0] >= 8
        _worker_healthy(coordinator)
        assert "did not answer" in coordinator.log_text()
        # Said once by the sample, not again at every size pass (citus_shard_sizes() warns for
        # each node it cannot reach).
        assert "citus_shard_sizes()" not in coordinator.log_text()


def test_the_shardcast_strategy_evens_predicted_load_across_nodes():
    rng = random.Random(3)
    with citus_cluster(DB, workers=3, settings=FAST, name="citus-rb") as (coordinator, workers):
        third = workers[2]
        with coordinator.connect(DB) as conn:
            # The third worker takes no shards at first: it is "added" later.
            conn.execute("SELECT citus_set_node_property('127.0.0.1', %s, 'shouldhaveshards', false)",
                         [third.port])
            keys = _sampled_orders(conn)
            # Hot shards on one worker, so that this worker is overloaded.
            by_node: dict[int, list[int]] = {}
            for shardid, port in conn.execute("SELECT shardid, nodeport FROM citus_shards "
                                              "WHERE table_name = 'orders'::regclass"):
                by_node.setdefault(port, []).append(shardid)
            first = sorted(by_node)[0]
            hot = sorted(by_node[first])[:3]
            base = _recorded(conn)
            made = _skewed_reads(conn, keys, hot, 3000, rng)
            _wait_recorded(conn, {s: base.get(s, 0) + n for s, n in made.items()}, "the skewed reads")
            conn.execute("SELECT shardcast.refresh_forecasts()")
            assert conn.execute("SELECT shardcast.citus_register_strategy()").fetchone()[0] == "shardcast"
            assert conn.execute("SELECT shardcast.citus_register_strategy(0.1)").fetchone()[0] == "shardcast"
            assert conn.execute("SELECT count(*) FROM pg_dist_rebalance_strategy "
                                "WHERE name = 'shardcast'").fetchone()[0] == 1
            conn.execute("SELECT citus_set_node_property('127.0.0.1', %s, 'shouldhaveshards', true)",
                         [third.port])
            cost = dict(conn.execute("SELECT shardid, shardcast.citus_shard_cost(shardid) FROM citus_shards "
                                     "WHERE table_name = 'orders'::regclass").fetchall())
            place = {s: port for port, shards in by_node.items() for s in shards}

            def per_node(placement):
                load = {w.port: 0.0 for w in workers}
                for s, port in placement.items():
                    load[port] += cost[s]
                return load

            before = per_node(place)
            plan = conn.execute("""SELECT shardid, sourceport, targetport
                                   FROM get_rebalance_table_shards_plan(rebalance_strategy := 'shardcast')""").fetchall()
            assert plan, "the shardcast strategy moves shards to the new node"
            after_place = dict(place)
            for shardid, source, target in plan:
                assert after_place[shardid] == source
                after_place[shardid] = target
            after = per_node(after_place)
            assert max(after.values()) < max(before.values()), (before, after, plan)
            assert max(after.values()) - min(after.values()) < max(before.values()) - min(before.values())
            # The rebalance itself, with the strategy.
            conn.execute("SELECT citus_rebalance_start(rebalance_strategy := 'shardcast', shard_transfer_mode := 'force_logical')")
            wait_for("the rebalance to finish", lambda: conn.execute(
                "SELECT state::text FROM citus_rebalance_status() ORDER BY job_id DESC LIMIT 1"
            ).fetchone()[0] in ("finished", "failed", "cancelled"), timeout=120, every=1)
            assert conn.execute("SELECT state::text FROM citus_rebalance_status() ORDER BY job_id DESC LIMIT 1"
                                ).fetchone()[0] == "finished"
            moved = dict(conn.execute("SELECT shardid, nodeport FROM citus_shards "
                                      "WHERE table_name = 'orders'::regclass").fetchall())
            assert max(per_node(moved).values()) < max(before.values())
            wait_for("the moves in shardcast.citus_shards", lambda: conn.execute(
                "SELECT count(*) FROM shardcast.citus_shards WHERE node = %s",
                [f"127.0.0.1:{third.port}"]).fetchone()[0] > 0, timeout=20)
        _worker_healthy(coordinator)


def test_a_load_plan_leaves_out_the_idle_groups_citus_fills_gaps_with():
    """Under shardcast's cost an idle shard costs next to nothing; with the load on one shard that
    cannot move usefully, Citus's plan moves the idle shards from the hot node to the other one,
    each a "better" balance by its tiny cost. They carry no load: enqueue_citus_rebalance leaves them
    out (and says so), but a drain still moves everything."""
    with citus_cluster(DB, workers=2, settings=FAST, name="citus-idle") as (coordinator, workers):
        with coordinator.connect(DB) as conn:
            keys = _sampled_orders(conn)
            hot = min(keys)
            base = _recorded(conn)
            for key in keys[hot][:600]:
                conn.execute("SELECT amount FROM orders WHERE id = %s", [key])
            _wait_recorded(conn, {hot: base.get(hot, 0) + 600}, "the hot shard's reads")
            conn.execute("SELECT shardcast.refresh_forecasts()")
            conn.execute("SELECT shardcast.citus_register_strategy()")
            # Idle: forecast at most 1, or under a twentieth of the mean group's (the others were
            # read once or so while the table was made).
            loads = dict(conn.execute(
                "SELECT shardid, coalesce(predicted_load, 0) FROM shardcast.citus_shards").fetchall())
            mean = sum(loads.values()) / len(loads)
            idle = {s for s, load in loads.items() if load <= 1 or load < 0.05 * mean}
            assert hot not in idle and len(idle) == 7, loads
            planned = [r[0] for r in conn.execute(
                "SELECT shardid FROM get_rebalance_table_shards_plan(rebalance_strategy := 'shardcast')")]
            # Citus's own plan fills the gap with idle shards (else this test would show nothing).
            assert planned and set(planned) <= idle, planned
            notices = []
            conn.add_notice_handler(lambda d: notices.append((d.message_primary, d.message_hint)))
            assert conn.execute("SELECT shardcast.enqueue_citus_rebalance('shardcast')").fetchone()[0] == 0
            assert any(m.startswith(f"left out {len(planned)} move(s) of Citus's plan") and h for m, h in notices), notices
            assert conn.execute("SELECT count(*) FROM shardcast.citus_moves").fetchone()[0] == 0
            # The report's planning of the shardcast strategy leaves them out too.
            assert conn.execute("SELECT count(*) FROM shardcast.citus_plan_moves WHERE strategy = 'shardcast'"
                                ).fetchone()[0] == 0
            # A drain moves every group off the node, idle or not.
            hot_node = conn.execute("SELECT node FROM shardcast.citus_shards WHERE shardid = %s", [hot]).fetchone()[0]
            on_node = conn.execute("SELECT count(*) FROM shardcast.citus_shards WHERE node = %s",
                                   [hot_node]).fetchone()[0]
            import psycopg
            with conn.transaction():
                assert conn.execute("SELECT shardcast.enqueue_citus_rebalance('shardcast', drain_node => %s)",
                                    [hot_node]).fetchone()[0] == on_node
                raise psycopg.Rollback()
        _worker_healthy(coordinator)


def test_citus_bad_input_is_a_clean_error():
    with citus_cluster(DB, workers=1, settings=FAST, name="citus-bad") as (coordinator, workers):
        with coordinator.connect(DB) as conn:
            _distributed_orders(conn, shards=4, rows=100)
            conn.execute("CREATE TABLE countries (code text PRIMARY KEY)")
            conn.execute("SELECT create_reference_table('countries')")
            conn.execute("CREATE TABLE settings (k text PRIMARY KEY)")
            conn.execute("SELECT citus_add_local_table_to_metadata('settings')")

            state, message, hint = sql_error(conn, "SELECT shardcast.citus_shard_cost(999999999)")
            assert state == "42704" and "does not exist" in message and "citus_shards" in hint
            ref = conn.execute("SELECT shardid FROM pg_dist_shard WHERE logicalrelid = 'countries'::regclass").fetchone()[0]
            state, message, hint = sql_error(conn, "SELECT shardcast.citus_shard_cost(%s)", ref)
            assert state == "42809" and "reference table" in message and hint
            local = conn.execute("SELECT shardid FROM pg_dist_shard WHERE logicalrelid = 'settings'::regclass").fetchone()[0]
            state, message, hint = sql_error(conn, "SELECT shardcast.citus_shard_cost(%s)", local)
            assert state == "42809" and "Citus local table" in message and hint
            state, message, hint = sql_error(conn, "SELECT shardcast.citus_shard_cost(NULL)")
            assert state == "22004"
            state, message, hint = sql_error(conn, "SELECT shardcast.citus_register_strategy(-1)")
            assert state == "22023" and hint
            # A Citus older than 13 (its recorded version, changed inside a transaction).
            conn.execute("BEGIN")
            conn.execute("UPDATE pg_extension SET extversion = '12.1-1' WHERE extname = 'citus'")
            state, message, hint = sql_error(conn, "SELECT shardcast.citus_register_strategy()")
            assert state == "0A000" and "too old" in message and "13" in hint
            conn.execute("ROLLBACK")
            # Neither the reference nor the local table is sampled as a Citus shard.
            wait_for("the distributed table's shards registered", lambda: conn.execute(
                "SELECT count(*) = 4 FROM shardcast.citus_shards").fetchone()[0], timeout=30)
            assert conn.execute("SELECT count(*) FROM shardcast.citus_shards WHERE table_name::text "
                                "IN ('countries', 'settings')").fetchone()[0] == 0
        _worker_healthy(coordinator)


def test_sampling_cost_per_cycle_at_256_shards_on_2_workers():
    """The figure in the README: the coordinator's cycle time (worker_status.last_cycle_ms) with
    256 Citus shards on 2 workers, sampled every second."""
    with citus_cluster(DB, workers=2, settings=FAST, name="citus-cost") as (coordinator, workers):
        with coordinator.connect(DB) as conn:
            conn.execute("CREATE EXTENSION shardcast")
            conn.execute("SET citus.shard_count = 256")
            conn.execute("CREATE TABLE events (id bigint, payload text)")
            conn.execute("SELECT create_distributed_table('events', 'id')")
            conn.execute("INSERT INTO events SELECT g, 'x' FROM generate_series(1, 10000) g")
            wait_for("every Citus shard registered", lambda: conn.execute(
                "SELECT count(*) = 256 FROM shardcast.citus_shards").fetchone()[0], timeout=60)
            cycles = []
            last = None
            deadline = time.time() + 20
            while time.time() < deadline:
                at, ms = conn.execute("SELECT last_sample_at, last_cycle_ms FROM shardcast.worker_status").fetchone()
                if at != last and last is not None:
                    cycles.append(ms)
                last = at
                time.sleep(0.3)
            cycles.sort()
            median = cycles[len(cycles) // 2]
            print(f"\ncoordinator cycle with 256 Citus shards x 2 workers: median {median:.1f} ms, "
                  f"max {cycles[-1]:.1f} ms over {len(cycles)} cycles")
            assert len(cycles) >= 10 and median < 1000, cycles
        _worker_healthy(coordinator)


# --- Hot-first moves: shardcast.enqueue_citus_rebalance queues Citus's plan as move tasks (one
# per move group, the most imbalance relieved per byte first) and `shardcast-driver citus-rebalance`
# runs them with citus_move_shard_placement.

import json
import signal
import sys
import threading
from pathlib import Path

DRIVER = Path(__file__).resolve().parent.parent / "driver" / "shardcast_driver.py"
# A short lease, so that a killed driver's claim lapses within seconds.
MOVES = {**FAST, "shardcast.claim_lease": "'3s'"}


def _citus_driver(coordinator, *args):
    return [sys.executable, str(DRIVER), "citus-rebalance", "--source", coordinator.dsn(DB), "--poll", "0.2", *args]


def _placement(conn):
    return dict(conn.execute("SELECT shardid, nodename || ':' || nodeport FROM citus_shards").fetchall())


def test_hot_first_moves_to_an_added_node_and_a_killed_driver_resumes():
    rng = random.Random(5)
    with citus_cluster(DB, workers=3, settings=MOVES, name="citus-hot") as (coordinator, workers):
        third = workers[2]
        with coordinator.connect(DB) as conn:
            conn.execute("SELECT citus_set_node_property('127.0.0.1', %s, 'shouldhaveshards', false)", [third.port])
            _distributed_orders(conn)
            # A colocated table: each move group is two shards, moved together.
            conn.execute("CREATE TABLE items (id bigint, order_id bigint)")
            conn.execute("SELECT create_distributed_table('items', 'order_id', colocate_with => 'orders')")
            conn.execute("INSERT INTO items SELECT g, g FROM generate_series(1, 20000) g")
            keys = _keys_by_shard(conn)
            wait_for("every Citus shard registered", lambda: conn.execute(
                "SELECT count(*) = 16 FROM shardcast.citus_shards").fetchone()[0], timeout=30)
            # The third node joins: Citus's plan (by shard count) moves groups to it, in its order.
            conn.execute("SELECT citus_set_node_property('127.0.0.1', %s, 'shouldhaveshards', true)", [third.port])
            plan = [r[0] for r in conn.execute(
                "SELECT shardid FROM get_rebalance_table_shards_plan(rebalance_strategy := 'by_shard_count') "
                "WHERE table_name = 'orders'::regclass")]
            assert len(plan) >= 2, plan
            # The group Citus would move last is the hot one.
            hot = plan[-1]
            time.sleep(3)
            base = _recorded(conn)
            made = _skewed_reads(conn, keys, [hot], 1500, rng)
            _wait_recorded(conn, {s: base.get(s, 0) + n for s, n in made.items()}, "the hot group's reads")
            conn.execute("SELECT shardcast.refresh_forecasts()")
            # Registered, so that the report compares its plan too.
            conn.execute("SELECT shardcast.citus_register_strategy()")

            notices = []
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            started = time.monotonic()
            assert conn.execute("SELECT shardcast.enqueue_citus_rebalance('by_shard_count')").fetchone()[0] == len(plan)
            plan_ms = (time.monotonic() - started) * 1000
            # Only the plan asked for speaks: the comparison plans kept for the report (the
            # 'shardcast' strategy's improvement_threshold, say) print no "Ignoring move".
            assert not any("Ignoring move" in n for n in notices), notices
            moves = conn.execute("""SELECT shardid, source_node, target_node, size_bytes, predicted_load, state
                                    FROM shardcast.citus_moves ORDER BY position""").fetchall()
            # One task per move group, the hot group first (Citus's order had it last).
            assert [m[0] for m in moves][0] == hot and sorted(m[0] for m in moves) == sorted(plan), (moves, plan)
            assert all(m[2] == f"127.0.0.1:{third.port}" and m[5] == "queued" for m in moves)
            assert moves[0][4] > max(m[4] for m in moves[1:])
            # Both shards of a group are counted in its bytes.
            sizes = [r[0] for r in conn.execute("SELECT shard_size FROM citus_shards WHERE shardid IN "
                                                "(SELECT shardid FROM shardcast.citus_shards WHERE move_group = %s)",
                                                [hot])]
            assert len(sizes) == 2 and moves[0][3] > max(sizes), (moves[0], sizes)
            # Enqueueing again keeps the open tasks: no duplicate.
            assert conn.execute("SELECT shardcast.enqueue_citus_rebalance('by_shard_count')").fetchone()[0] == len(plan)
            assert conn.execute("SELECT count(*) FROM shardcast.replication_tasks WHERE kind = 'citus_move'"
                                ).fetchone()[0] == len(plan)
            # The table driver's claims never take a move.
            assert conn.execute("SELECT * FROM shardcast.claim_task('table-driver')").fetchone() is None
            manifest = conn.execute("SELECT shardcast.manifest_json()").fetchone()[0]
            assert [t["kind"] for t in manifest["tasks"]] == ["citus_move"] * len(plan)
            assert manifest["tasks"][0]["source"] == moves[0][1] and manifest["tasks"][0]["target"] == moves[0][2]
            assert all(t["node"] is None for t in manifest["tasks"])

            # A drain plans only moves off the drained node; rolled back here.
            conn.execute("BEGIN")
            drained = f"127.0.0.1:{workers[0].port}"
            conn.execute("SELECT shardcast.enqueue_citus_rebalance('by_shard_count', drain_node => %s)", [drained])
            sources = {r[0] for r in conn.execute(
                "SELECT source_node FROM shardcast.citus_moves WHERE state = 'queued'")}
            assert sources == {drained}, sources
            conn.execute("ROLLBACK")

            # The last queued group is moved by hand before the driver runs: the driver finds it
            # on its target and completes its task without a move.
            by_hand = moves[-1]
            conn.execute("""SELECT citus_move_shard_placement(%s, '127.0.0.1', %s, '127.0.0.1', %s,
                            shard_transfer_mode => 'block_writes')""",
                         [by_hand[0], int(by_hand[1].split(":")[1]), int(by_hand[2].split(":")[1])])

            listener = coordinator.connect(DB)
            listener.execute("LISTEN shardcast_completion")
            # The driver, killed with SIGKILL while the first move runs.
            first = subprocess.Popen(_citus_driver(coordinator, "--transfer-mode", "force_logical"),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                wait_for("the first move under way", lambda: conn.execute(
                    "SELECT count(*) FROM shardcast.citus_moves WHERE state = 'claimed'").fetchone()[0] == 1,
                         timeout=30, every=0.05)
                claimed = conn.execute("SELECT task_id, shardid FROM shardcast.citus_moves "
                                       "WHERE state = 'claimed'").fetchone()
                assert claimed[1] == hot
                time.sleep(0.3)
                first.send_signal(signal.SIGKILL)
                first.wait(10)
            finally:
                if first.poll() is None:
                    first.kill()
            # Every row stays readable through the coordinator while the moves run.
            second = subprocess.Popen(_citus_driver(coordinator, "--transfer-mode", "force_logical",
                                                    "--worker", "resumed"),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            reads = 0
            while second.poll() is None:
                assert conn.execute("SELECT count(*), sum(amount) FROM orders").fetchone() == (20000, 990000)
                reads += 1
                time.sleep(0.2)
            output = second.stdout.read()
            assert second.returncode == 0, output
            assert reads > 0
            print(f"\nplan time {plan_ms:.0f} ms for {len(plan)} moves\n" + output)

            rows = conn.execute("""SELECT task_id, shardid, state, moved, claimed_by, attempts,
                                          extract(epoch FROM duration), detail
                                   FROM shardcast.citus_moves ORDER BY task_id""").fetchall()
            assert all(r[2] == "done" and r[4] == "resumed" for r in rows), rows
            # The killed driver's move was taken up again after its lease ran out (an attempt):
            # moved again, or found already on its target if Citus had committed it, as its own
            # task's detail and output line say. One more attempt when the killed move's rollback
            # still held the group's locks then (a loaded machine): it failed, and the next moved.
            resumed = next(r for r in rows if r[0] == claimed[0])
            resumed_lines = [line for line in output.splitlines() if f" task {claimed[0]}: " in line]
            assert 1 <= resumed[5] <= 2, (resumed, output)
            if resumed[3]:
                assert resumed[7].startswith("moved from") and any(" moved in " in line for line in resumed_lines), \
                    (resumed, output)
            else:
                assert resumed[7].startswith("already on") and any("already on" in line for line in resumed_lines), \
                    (resumed, output)
            in_place = next(r for r in rows if r[1] == by_hand[0])
            assert in_place[3] is False and f"already on {by_hand[2]}" in output, (in_place, output)
            # The moves the report measures: those that moved (not the group moved by hand, nor the
            # killed driver's group if Citus had committed its move).
            durations = [float(r[6]) for r in rows if r[3]]
            print(f"move durations: {', '.join(f'{d:.1f} s' for d in durations)}")
            # Every group is where the plan put it, and every row is still there.
            placement = _placement(conn)
            for shardid, _, target, *_ in moves:
                assert placement[shardid] == target
                items = conn.execute("SELECT s.shardid FROM pg_dist_shard s WHERE s.logicalrelid = 'items'::regclass "
                                     "AND s.shardminvalue = (SELECT shardminvalue FROM pg_dist_shard "
                                     "WHERE shardid = %s)", [shardid]).fetchone()[0]
                assert placement[items] == target
            assert conn.execute("SELECT count(*), sum(amount) FROM orders").fetchone() == (20000, 990000)
            assert conn.execute("SELECT count(*) FROM items i JOIN orders o ON o.id = i.order_id").fetchone()[0] == 20000
            # Completions were announced, at the target node: one success per task, and a failure
            # for each failed attempt of the killed driver's group (the one the rollback's locks
            # made fail, if any; see above).
            notes = [json.loads(n.payload) for n in listener.notifies(timeout=2)]
            listener.close()
            assert {n["node"] for n in notes} == {f"127.0.0.1:{third.port}"}, notes
            assert sorted(n["task"] for n in notes if n["succeeded"]) == sorted(r[0] for r in rows), notes
            failed = [n["task"] for n in notes if not n["succeeded"]]
            assert failed == [claimed[0]] * (resumed[5] - 1), (notes, resumed)
            # What the order was worth: the same plan in Citus's order keeps the hot group on its
            # old node longer; both end alike. Citus's by_disk_size plan is there to compare.
            report = conn.execute("""SELECT plan, move_order, moves, measured_moves, seconds,
                                             hottest_share_start, hottest_share_mean, hottest_share_end,
                                             hottest_node_end
                                      FROM shardcast.citus_rebalance_report()""").fetchall()
            print("rebalance report:\n" + "\n".join(map(str, report)))
            rows = {(r[0], r[1]): r for r in report}
            ours, theirs = rows[("by_shard_count", "shardcast")], rows[("by_shard_count", "citus")]
            assert ours[2] == theirs[2] == len(plan) and ours[3] == len(durations), (report, durations)
            # The group moved by hand takes the measured moves' time (at least the quickest).
            assert abs(ours[4] - theirs[4]) < 1e-6 and ours[4] >= sum(durations) + min(durations) - 1e-6, \
                (report, durations)
            assert ours[5] == theirs[5] and abs(ours[7] - theirs[7]) < 1e-9, report
            # (The hottest share need not fall monotonically: a cold group moved onto the node that
            # took the hot one raises that node's share.)
            assert ours[6] <= theirs[6] + 1e-12, report
            assert {("by_disk_size", "citus"), ("by_disk_size", "shardcast"), ("shardcast", "citus"),
                    ("shardcast", "shardcast")} <= set(rows), report
            # Whatever the order, a plan ends with the same placement.
            for plan_name in {r[0] for r in report}:
                ends = {round(r[7], 9) for r in report if r[0] == plan_name and r[7] is not None}
                assert len(ends) <= 1, report
            # The plan is carried out: enqueueing again queues nothing.
            assert conn.execute("SELECT shardcast.enqueue_citus_rebalance('by_shard_count')").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM shardcast.replication_tasks "
                                "WHERE state IN ('queued', 'claimed')").fetchone()[0] == 0
            # A run with nothing to do exits 0.
            idle = subprocess.run(_citus_driver(coordinator), capture_output=True, text=True, timeout=60)
            assert idle.returncode == 0, idle.stdout + idle.stderr
        _worker_healthy(coordinator)


def test_the_driver_first_copies_the_reference_tables_to_a_node_added_since():
    """A node added after the reference tables were created lacks them, and Citus refuses to
    move a shard there until they are copied ("there are missing reference tables on some
    nodes"). Citus's rebalancer copies them first; so does the driver, so that the README's
    recipe after citus_add_node works as written."""
    with citus_cluster(DB, workers=2, settings=MOVES, name="citus-ref") as (coordinator, workers):
        added = workers[1]
        with coordinator.connect(DB) as conn:
            conn.execute("SELECT citus_remove_node('127.0.0.1', %s)", [added.port])
            _distributed_orders(conn, shards=4, rows=2000)
            conn.execute("CREATE TABLE regions (id int PRIMARY KEY, name text)")
            conn.execute("SELECT create_reference_table('regions')")
            conn.execute("INSERT INTO regions SELECT g, 'region ' || g FROM generate_series(1, 10) g")
            before = conn.execute("SELECT count(*), sum(amount) FROM orders").fetchone()
            conn.execute("SELECT citus_add_node('127.0.0.1', %s)", [added.port])
            on_added = """SELECT count(*) FROM pg_dist_placement p JOIN pg_dist_shard s USING (shardid)
                          JOIN pg_dist_node n ON n.groupid = p.groupid
                          WHERE s.logicalrelid = 'regions'::regclass AND n.nodeport = %s"""
            assert conn.execute(on_added, [added.port]).fetchone()[0] == 0
            wait_for("every Citus shard registered", lambda: conn.execute(
                "SELECT count(*) = 4 FROM shardcast.citus_shards").fetchone()[0], timeout=30)
            queued = conn.execute("SELECT shardcast.enqueue_citus_rebalance('by_shard_count')").fetchone()[0]
            assert queued >= 1
            # A role with the driver's grants but not replicate_reference_tables (Citus revokes it
            # from PUBLIC) is told what to grant, before any move is tried.
            conn.execute("CREATE ROLE mover LOGIN")
            conn.execute("GRANT EXECUTE ON FUNCTION shardcast.claim_citus_move(text, integer), "
                         "shardcast.heartbeat(bigint, text), "
                         "shardcast.complete_task(bigint, boolean, text, text, boolean), "
                         "shardcast.release_task(bigint, text) TO mover")
            command = _citus_driver(coordinator, "--transfer-mode", "block_writes")
            as_mover = [c.replace("user=postgres", "user=mover") for c in command]
            refused = subprocess.run(as_mover, capture_output=True, text=True, timeout=120)
            assert refused.returncode == 3, refused.stdout + refused.stderr
            assert "GRANT EXECUTE ON FUNCTION pg_catalog.replicate_reference_tables" in refused.stderr, refused.stderr
            assert conn.execute("SELECT count(*) FROM shardcast.citus_moves WHERE state = 'queued'"
                                ).fetchone()[0] == queued
            run = subprocess.run(command, capture_output=True, text=True, timeout=300)
            assert run.returncode == 0, run.stdout + run.stderr
            assert "copying the reference tables" in run.stdout + run.stderr
            assert conn.execute("SELECT count(*) FROM shardcast.citus_moves WHERE state = 'done'"
                                ).fetchone()[0] == queued, run.stdout
            assert conn.execute(on_added, [added.port]).fetchone()[0] == 1
            placement = _placement(conn)
            assert f"127.0.0.1:{added.port}" in placement.values(), placement
            assert conn.execute("SELECT count(*), sum(amount) FROM orders").fetchone() == before
            assert conn.execute("SELECT count(*) FROM orders o JOIN regions r ON r.id = 1 + o.id % 10"
                                ).fetchone()[0] == before[0]
        _worker_healthy(coordinator)


def test_enqueue_citus_rebalance_bad_input_enqueues_nothing_and_claims_keep_the_limits():
    import psycopg
    with citus_cluster(DB, workers=1, settings=MOVES, name="citus-badmv") as (coordinator, workers):
        with coordinator.connect(DB) as conn:
            _distributed_orders(conn, shards=4, rows=100)

            # 'shardcast' is not registered yet: the hint says how.
            state, message, hint = sql_error(conn, "SELECT shardcast.enqueue_citus_rebalance()")
            assert state == "42704" and "shardcast" in message and "citus_register_strategy" in hint
            state, message, hint = sql_error(conn, "SELECT shardcast.enqueue_citus_rebalance('by_load')")
            assert state == "42704" and "by_load" in message and "pg_dist_rebalance_strategy" in hint
            state, message, hint = sql_error(conn, "SELECT shardcast.enqueue_citus_rebalance(NULL, 'localhost')")
            assert state == "22023" and "host:port" in message and hint
            state, message, hint = sql_error(conn, "SELECT shardcast.enqueue_citus_rebalance(NULL, '127.0.0.1:1')")
            assert state == "42704" and "pg_dist_node" in message and "pg_dist_node" in hint
            state, message, hint = sql_error(conn, "SELECT shardcast.enqueue_citus_rebalance(NULL, max_shard_moves => 0)")
            assert state == "22023" and hint
            state, message, hint = sql_error(conn, "SELECT shardcast.enqueue_citus_rebalance(NULL, excluded_shard_list => NULL)")
            assert state == "22004" and hint
            state, message, hint = sql_error(conn, "SELECT * FROM shardcast.claim_citus_move(NULL)")
            assert state == "22004" and hint
            state, message, hint = sql_error(conn, "SELECT * FROM shardcast.claim_citus_move('w', 0)")
            assert state == "22023" and hint
            state, message, hint = sql_error(conn, "SELECT * FROM shardcast.claim_citus_move('w', NULL)")
            assert state == "22004" and hint
            state, message, hint = sql_error(conn, "SELECT shardcast.enqueue_citus_rebalance(NULL, max_shard_moves => NULL)")
            assert state == "22004" and hint
            # A threshold that is no distance from the average (Citus plans at 1.5 as at 0.1).
            for threshold in ("'NaN'", "'Infinity'", "-0.1"):
                state, message, hint = sql_error(
                    conn, f"SELECT shardcast.enqueue_citus_rebalance(NULL, threshold => {threshold})")
                assert state == "22023" and "threshold" in message and hint, threshold
            # On a worker node: the queue is the coordinator's, said in SQL and by the driver (3,
            # not "0 moved").
            with workers[0].connect(DB) as worker:  # (Citus propagated CREATE EXTENSION shardcast)
                state, message, hint = sql_error(worker, "SELECT shardcast.enqueue_citus_rebalance('by_shard_count')")
                assert state == "0A000" and "worker node" in message and "coordinator" in hint
            on_worker = subprocess.run(_citus_driver(workers[0]), capture_output=True, text=True, timeout=60)
            assert on_worker.returncode == 3 and "not the coordinator" in on_worker.stderr, \
                on_worker.stdout + on_worker.stderr
            for worker in ["''", "' w'", "E'w\\n'", "repeat('w', 256)"]:
                state, message, hint = sql_error(conn, f"SELECT * FROM shardcast.claim_citus_move({worker})")
                assert state == "22023" and "worker name" in message and hint, worker
            conn.execute("BEGIN")
            conn.execute("UPDATE pg_extension SET extversion = '12.1-1' WHERE extname = 'citus'")
            state, message, hint = sql_error(conn, "SELECT shardcast.enqueue_citus_rebalance('by_shard_count')")
            assert state == "0A000" and "too old" in message and "13" in hint
            conn.execute("ROLLBACK")
            # A drain of the only worker fails in Citus's planner (nowhere to go): the node keeps
            # its shards and its shouldhaveshards, nothing is queued.
            with pytest.raises(psycopg.Error):
                conn.execute("SELECT shardcast.enqueue_citus_rebalance('by_shard_count', %s)",
                              [f"127.0.0.1:{workers[0].port}"])
            assert conn.execute("SELECT shouldhaveshards FROM pg_dist_node WHERE nodeport = %s",
                                [workers[0].port]).fetchone()[0]
            assert conn.execute("SELECT count(*) FROM shardcast.replication_tasks").fetchone()[0] == 0
            # A balanced cluster: nothing to move, said in a NOTICE.
            notices = []
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            assert conn.execute("SELECT shardcast.enqueue_citus_rebalance('by_shard_count')").fetchone()[0] == 0
            assert any("no moves" in n for n in notices), notices
            # The driver: a database without Citus is an environment error (3).
            with coordinator.connect() as plain:
                plain.execute("CREATE DATABASE plain")
            no_citus = subprocess.run([sys.executable, str(DRIVER), "citus-rebalance", "--source",
                                       coordinator.dsn("plain")], capture_output=True, text=True, timeout=60)
            assert no_citus.returncode == 3, no_citus.stdout + no_citus.stderr
            bad_mode = subprocess.run(_citus_driver(coordinator, "--transfer-mode", "fast"),
                                      capture_output=True, text=True, timeout=60)
            assert bad_mode.returncode == 2 and "transfer-mode" in bad_mode.stderr

            # Claims keep to the limits: one move in flight per node (as source or target) and
            # one per colocation group, unless max_moves_per_node says more; table claims never
            # take a move. Moves of three colocation groups, between made-up nodes (a claim does
            # not reach them).
            for table in ("c2", "c3"):
                conn.execute(f"CREATE TABLE {table} (id bigint)")
                conn.execute(f"SELECT create_distributed_table('{table}', 'id', colocate_with => 'none')")
            shard = {}
            for table in ("orders", "c2", "c3"):
                shard[table] = [r[0] for r in conn.execute(
                    "SELECT shardid FROM pg_dist_shard WHERE logicalrelid = %s::regclass ORDER BY shardid", [table])]
            wait_for("the new tables' shards registered", lambda: conn.execute(
                "SELECT count(*) = 12 FROM shardcast.citus_shards").fetchone()[0], timeout=30)
            moves = [("orders", 0, "n1", "n2"), ("orders", 1, "n3", "n4"), ("c2", 0, "n1", "n5"), ("c3", 0, "n6", "n7")]
            for rank, (table, i, source, target) in enumerate(moves, 1):
                conn.execute("""INSERT INTO shardcast.replication_tasks (shard_id, kind, citus_shard_id,
                                       citus_colocation_id, citus_source, citus_target, size_bytes, dispatch_rank)
                                SELECT s.shard_id, 'citus_move', %s, p.colocationid, %s, %s, 0, %s
                                FROM shardcast.shards s, pg_dist_partition p
                                WHERE s.citus_shard_id = %s AND s.retired_at IS NULL
                                  AND p.logicalrelid = %s::regclass""",
                             [shard[table][i], source, target, rank, shard[table][i], table])

            def claim(per_node):
                row = conn.execute("SELECT shardid, source_node, target_node FROM shardcast.claim_citus_move('w', %s)",
                                   [per_node]).fetchone()
                return row and (row[0], row[1], row[2])

            # Two drivers claiming at once: the second waits for the first's claim to commit, and
            # then sees it (claims of moves are serialised).
            other = coordinator.connect(DB)
            other.execute("BEGIN")
            assert other.execute("SELECT shardid FROM shardcast.claim_citus_move('w2', 1)").fetchone()[0] == \
                shard["orders"][0]
            second: list = []
            racer = threading.Thread(target=lambda: second.append(claim(1)))
            racer.start()
            time.sleep(0.5)
            assert racer.is_alive() and not second, "the second claim did not wait for the first"
            other.execute("COMMIT")
            other.close()
            racer.join(10)
            # The second orders move waits for its colocation group, the c2 move for node n1.
            assert second == [(shard["c3"][0], "n6", "n7")]
            assert claim(1) is None
            assert claim(2) == (shard["c2"][0], "n1", "n5")
            assert claim(2) is None
            assert conn.execute("SELECT * FROM shardcast.claim_task('table-driver')").fetchone() is None
            conn.execute("DELETE FROM shardcast.replication_tasks")

            # A move that Citus refuses fails with Citus's error after its attempts, and the
            # driver exits 1; a later enqueue_citus_rebalance whose plan no longer has the group
            # settles it (exit 0).
            worker = f"127.0.0.1:{workers[0].port}"
            conn.execute("""INSERT INTO shardcast.replication_tasks (shard_id, kind, citus_shard_id,
                                   citus_colocation_id, citus_source, citus_target, size_bytes)
                            SELECT s.shard_id, 'citus_move', s.citus_shard_id, 1, %s, '127.0.0.1:1', 0
                            FROM shardcast.shards s WHERE s.citus_shard_id = %s AND s.retired_at IS NULL""",
                         [worker, shard["orders"][0]])
            failing = subprocess.run(_citus_driver(coordinator, "--retry-delay", "0"), capture_output=True,
                                     text=True, timeout=120)
            assert failing.returncode == 1, failing.stdout + failing.stderr
            state, attempts, detail = conn.execute("SELECT state, attempts, detail FROM shardcast.citus_moves"
                                                   ).fetchone()
            assert state == "failed" and attempts == 3 and detail, (state, attempts, detail)
            assert detail in failing.stderr
            # Each failed attempt says whether the move goes back to the queue.
            assert "queued again" in failing.stderr and "of 3, the last" in failing.stderr, failing.stderr
            again = subprocess.run(_citus_driver(coordinator), capture_output=True, text=True, timeout=60)
            assert again.returncode == 1 and "retry_task" in again.stderr, again.stdout + again.stderr
            assert conn.execute("SELECT shardcast.enqueue_citus_rebalance('by_shard_count')").fetchone()[0] == 0
            settled = subprocess.run(_citus_driver(coordinator), capture_output=True, text=True, timeout=60)
            assert settled.returncode == 0, settled.stdout + settled.stderr

            # A group on neither its source nor its target (one of them a Citus node) fails at
            # its claim, without an attempt, saying to enqueue the rebalance again.
            coordinator_node = f"127.0.0.1:{coordinator.port}"
            insert_move = """INSERT INTO shardcast.replication_tasks (shard_id, kind, citus_shard_id,
                                    citus_colocation_id, citus_source, citus_target, size_bytes)
                             SELECT s.shard_id, 'citus_move', s.citus_shard_id, p.colocationid, %s, %s, 0
                             FROM shardcast.shards s JOIN pg_dist_shard d ON d.shardid = s.citus_shard_id
                             JOIN pg_dist_partition p USING (logicalrelid)
                             WHERE s.citus_shard_id = %s AND s.retired_at IS NULL"""
            conn.execute(insert_move, [coordinator_node, "127.0.0.1:1", shard["orders"][2]])
            assert claim(1) is None
            state, attempts, detail = conn.execute(
                "SELECT state, attempts, detail FROM shardcast.citus_moves WHERE shardid = %s",
                [shard["orders"][2]]).fetchone()
            assert state == "failed" and attempts == 0 and worker in detail and "enqueue" in detail, detail
            conn.execute("DELETE FROM shardcast.replication_tasks")

            # A driver restarted under the same --worker name while its killed run's claim is
            # open waits for that lease and moves the group (it does not exit 0 at once). The
            # move fails once (Citus moves nothing to a node that should have no shards, here
            # the coordinator, until it may) and then succeeds: the run exits 0.
            conn.execute("SELECT citus_set_node_property('127.0.0.1', %s, 'shouldhaveshards', false)",
                         [coordinator.port])
            conn.execute(insert_move, [worker, coordinator_node, shard["orders"][1]])
            assert claim(1) is not None  # under 'w': the killed run's claim
            mover = subprocess.Popen(_citus_driver(coordinator, "--worker", "w", "--retry-delay", "2",
                                                   "--transfer-mode", "block_writes"),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            lines = []
            try:
                for line in mover.stdout:
                    lines.append(line)
                    if "failed:" in line:
                        break
                conn.execute("SELECT citus_set_node_property('127.0.0.1', %s, 'shouldhaveshards', true)",
                             [coordinator.port])
                lines.append(mover.stdout.read())
                mover.wait(60)
            finally:
                if mover.poll() is None:
                    mover.kill()
            output = "".join(lines)
            assert mover.returncode == 0, output
            assert "under this driver's name" in output and "shouldn't have a shard" in output, output
            state, attempts, moved = conn.execute(
                "SELECT state, attempts, moved FROM shardcast.citus_moves WHERE shardid = %s",
                [shard["orders"][1]]).fetchone()
            # An attempt for the lapsed lease, one for the failure, then the move.
            assert (state, attempts, moved) == ("done", 2, True), (state, attempts, moved, output)
            assert _placement(conn)[shard["orders"][1]] == coordinator_node

            # A Citus older than 13 is an environment error before any claim (exit 3).
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'citus'").fetchone()[0]
            conn.execute("UPDATE pg_extension SET extversion = '12.1-1' WHERE extname = 'citus'")
            try:
                old = subprocess.run(_citus_driver(coordinator), capture_output=True, text=True, timeout=60)
            finally:
                conn.execute("UPDATE pg_extension SET extversion = %s WHERE extname = 'citus'", [version])
            assert old.returncode == 3 and "too old" in old.stderr and "Traceback" not in old.stderr, \
                old.stdout + old.stderr

            # The shards of colocation group 0 (an append table's, whose shardminvalue is NULL) are
            # colocated with nothing: each is a move group of its own.
            conn.execute("CREATE TABLE events (id bigint)")
            conn.execute("SELECT create_distributed_table('events', 'id', 'append')")
            appended = [conn.execute("SELECT master_create_empty_shard('events')").fetchone()[0] for _ in range(2)]
            wait_for("the append table's shards registered", lambda: conn.execute(
                "SELECT count(*) = 2 FROM shardcast.citus_shards WHERE shardid = ANY(%s)", [appended]).fetchone()[0],
                timeout=30)
            groups = conn.execute("SELECT shardid, move_group, colocation_id FROM shardcast.citus_shards "
                                  "WHERE shardid = ANY(%s)", [appended]).fetchall()
            assert all(group == shardid and colocation == 0 for shardid, group, colocation in groups), groups
        _worker_healthy(coordinator)


# --- The driver's threads without a cluster: the heartbeat's reconnects, and one move per group.


def _rebalancer(lease=0.3):
    import argparse
    sys.path.insert(0, str(DRIVER.parent))
    from shardcast_driver import citus as driver_citus
    from shardcast_driver.common import Out
    args = argparse.Namespace(source="host=nowhere", worker="w", transfer_mode="auto", moves_per_node=1,
                              retry_delay=0.0, poll=0.1, no_wait=False, dry_run=False)
    rebalancer = driver_citus.Rebalancer(args, Out())
    rebalancer.lease = lease
    return driver_citus, rebalancer


def _move(driver_citus, task_id=1, shardid=100):
    return driver_citus.Move(task_id, shardid, "orders", 1, "a:1", "a", 1, "b:1", "b", 1, 0, 0)


def test_the_heartbeat_opens_its_connection_again_and_a_lease_it_cannot_renew_cancels_the_move(monkeypatch):
    import psycopg
    driver_citus, rebalancer = _rebalancer()
    beats, cancels, connects = [], [], []

    class Conn:
        closed = False

        def execute(self, sql, args):
            beats.append(args)

        def cancel(self):
            cancels.append(1)

        def close(self):
            self.closed = True

    def flaky(conninfo):  # down for the first two tries, then up
        connects.append(1)
        if len(connects) <= 2:
            raise psycopg.OperationalError("connection refused")
        return Conn()

    monkeypatch.setattr(driver_citus, "connect", flaky)
    move = _move(driver_citus)
    lost, done = threading.Event(), threading.Event()
    beat = threading.Thread(target=rebalancer.heartbeat, args=(move, lost, done))
    beat.start()
    wait_for("a heartbeat", lambda: beats, timeout=10, every=0.05)
    done.set()
    beat.join(10)
    assert not lost.is_set() and beats[0] == [1, "w"] and len(connects) == 3

    def down(conninfo):
        connects.append(1)
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(driver_citus, "connect", down)
    connects.clear()
    move.conn = Conn()
    lost, done = threading.Event(), threading.Event()
    beat = threading.Thread(target=rebalancer.heartbeat, args=(move, lost, done))
    beat.start()
    beat.join(10)
    # Never reached: the lease is lost, and the move cancelled (its next claimer moves it).
    assert lost.is_set() and cancels == [1] and len(connects) == driver_citus.HEARTBEAT_TRIES
    done.set()


def test_a_claim_of_a_group_the_driver_still_moves_waits_for_that_move(monkeypatch):
    driver_citus, rebalancer = _rebalancer()
    order, release = [], threading.Event()

    def execute(move):
        if move.after is not None:
            move.after.join()
        else:
            release.wait(10)
        order.append(move)
        rebalancer.finish(move, "moved")

    monkeypatch.setattr(rebalancer, "execute", execute)
    first, again, other = _move(driver_citus, 1, 100), _move(driver_citus, 1, 100), _move(driver_citus, 2, 200)
    rebalancer.start(first)
    rebalancer.start(again)  # the same task claimed again after its lease ran out
    rebalancer.start(other)
    assert again.after is first.thread and other.after is None
    time.sleep(0.2)
    assert order == [] and len(rebalancer.running) == 3
    release.set()
    rebalancer.join()
    assert len(order) == 3 and order.index(again) > order.index(first) and rebalancer.running == []


class _Copying:
    """A coordinator's connection as copy_reference_tables uses it: `missing` says whether a node
    lacks a reference table; `during_copy` runs while replicate_reference_tables does."""

    class info:
        user = "mover"

    def __init__(self, missing, during_copy=None):
        self.missing, self.during_copy = missing, during_copy
        self.statements, self.cancels = [], 0

    def execute(self, sql, args=None):
        import psycopg
        self.statements.append(sql)
        if "replicate_reference_tables" in sql:
            self.during_copy()
            if self.cancels:
                raise psycopg.errors.QueryCanceled("canceling statement due to user request")
        row = (1,) if "count(*)" in sql else (self.missing,)
        return type("Result", (), {"fetchone": lambda _: row})()

    def cancel(self):
        self.cancels += 1


def test_the_reference_tables_are_copied_only_when_missing_and_a_stop_cancels_the_copy():
    driver_citus, rebalancer = _rebalancer()
    # Every node has them: nothing is copied (a role without the grant runs as before).
    conn = _Copying(missing=False)
    assert rebalancer.copy_reference_tables(conn) is None
    assert not any("replicate_reference_tables" in s for s in conn.statements)
    # A SIGTERM while Citus copies (which may take long) cancels the copy, and the run ends with
    # the signal's status before any move.
    conn = _Copying(missing=True, during_copy=lambda: rebalancer.interrupt(signal.SIGTERM, None))
    assert rebalancer.copy_reference_tables(conn) == driver_citus.EXIT_SIGTERM
    assert conn.cancels == 1 and rebalancer.copying is None
