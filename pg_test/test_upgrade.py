"""End to end: ALTER EXTENSION shardcast UPDATE takes a filled 0.1.0 installation to the current
version. The schema it leaves is compared with a fresh CREATE EXTENSION's through pg_dump, the
data are compared row by row with what 0.1.0 held, and the extension is used afterwards.

The 0.1.0 install script is the released one (sql/shardcast--0.1.0.sql, installed by
`make install`); the library is always the current one, as after a DBA replaced the .so and
restarted. So the 0.1.0 catalog is filled through the functions that behave alike in both
versions (record_access, set_shard_class, add_node, enqueue, claim_task, complete_task), and with
plain INSERTs for what only 0.1.0's worker wrote (daily history, forecasts, scores).
"""

import difflib
import filecmp
import re
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from cluster import pg_bindir, running_cluster, wait_for

REPO = Path(__file__).resolve().parent.parent
OLD = "0.1.0"


def one(conn, sql, *args):
    row = conn.execute(sql, args).fetchone()
    return None if row is None else row[0]


def current_version():
    return re.search(r'^version = "(.*)"', (REPO / "Cargo.toml").read_text(), re.M).group(1)


def installed_old_script():
    """The installed 0.1.0 script must be the repository's: `cargo pgrx install` alone does not
    install it (it copies only upgrade scripts), `make install` does."""
    sharedir = subprocess.run([str(pg_bindir() / "pg_config"), "--sharedir"], check=True, capture_output=True,
                              text=True).stdout.strip()
    installed = Path(sharedir) / "extension" / f"shardcast--{OLD}.sql"
    ours = REPO / "sql" / f"shardcast--{OLD}.sql"
    if not installed.exists() or not filecmp.cmp(installed, ours, shallow=False):
        pytest.fail(f"{installed} is missing or differs from {ours}: run `make install` "
                    "(or `make install-released-scripts`)")


@pytest.fixture(scope="module")
def cluster():
    installed_old_script()
    # The worker samples another database: these databases are changed only by the test.
    with running_cluster({"shardcast.database": "'postgres'"}, "shardcast-upgrade") as c:
        with c.connect() as conn:
            # Created first, so that its OID is the lowest: its grant, at the end of a chain,
            # sorts before the grants it depends on.
            conn.execute(f"CREATE ROLE {AUDITOR} NOLOGIN")
            conn.execute(f"CREATE ROLE {DRIVER} NOLOGIN")
            conn.execute(f"CREATE ROLE {OPERATOR} NOLOGIN")
        yield c


# Roles a DBA granted shardcast's functions to on 0.1.0: the update drops and creates the
# functions whose parameters were renamed (and complete_task, whose signature changed), and
# keeps their grants.
DRIVER = "upgrade_driver"
OPERATOR = "upgrade_operator"
AUDITOR = "upgrade_auditor"


def grant_0_1_0(conn, complete_task="shardcast.complete_task(bigint, boolean, text, text)"):
    """The grants a DBA gives on 0.1.0 (and, with the new signature, on a fresh install)."""
    conn.execute(f"GRANT EXECUTE ON FUNCTION shardcast.claim_task(text, text), {complete_task} TO {DRIVER}")
    conn.execute(f"GRANT EXECUTE ON FUNCTION shardcast.enqueue(regclass, text) TO {OPERATOR} WITH GRANT OPTION")
    # A grant made by a role holding the grant option (its grantor is that role).
    conn.execute(f"SET ROLE {OPERATOR}")
    conn.execute(f"GRANT EXECUTE ON FUNCTION shardcast.enqueue(regclass, text) TO {DRIVER} WITH GRANT OPTION")
    # A chain: the driver's role passes it on in turn.
    conn.execute(f"SET ROLE {DRIVER}")
    conn.execute(f"GRANT EXECUTE ON FUNCTION shardcast.enqueue(regclass, text) TO {AUDITOR}")
    conn.execute("RESET ROLE")
    conn.execute(f"REVOKE EXECUTE ON FUNCTION shardcast.manifest_json(text) FROM PUBLIC")
    conn.execute(f"GRANT EXECUTE ON FUNCTION shardcast.manifest_json(text) TO {DRIVER}")


USER_TABLES = """
    CREATE TABLE public.customers (id int PRIMARY KEY, name text);
    CREATE TABLE public.orders (id int PRIMARY KEY, customer int REFERENCES public.customers, total numeric);
    CREATE TABLE public.events (id int, at timestamptz NOT NULL) PARTITION BY RANGE (at);
    CREATE TABLE public.events_1 PARTITION OF public.events FOR VALUES FROM ('2020-01-01') TO ('2030-01-01');
    CREATE TABLE public.events_2 PARTITION OF public.events FOR VALUES FROM ('2030-01-01') TO ('2040-01-01');
    CREATE TABLE public.archive (id int);
"""


def create_database(cluster, name, version=None, tables=True):
    with cluster.connect() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    conn = cluster.connect(name)
    conn.execute("CREATE EXTENSION shardcast" + (f" VERSION '{version}'" if version else ""))
    if tables:
        conn.execute(USER_TABLES)
    return conn


# --- The schema, as pg_dump sees it ------------------------------------------------------------

def schema_dump(cluster, db):
    """`pg_dump --schema-only` of the whole database, extension members included.

    A plain dump leaves out what an extension's scripts created (it dumps CREATE EXTENSION), so
    the dump is taken in binary-upgrade mode, the one pg_upgrade uses: it writes every member
    object (tables, columns, defaults, constraints, indexes, triggers, views, functions with all
    their attributes, comments, initial privileges and the GRANTs since) followed by its
    `ALTER EXTENSION shardcast ADD`, and the extension's version and pg_dump registrations.
    Then what pg_upgrade needs but no schema is, is taken out: the OIDs, relfilenodes and
    transaction ids to preserve, the fast-default value of a column added with a default that
    was dropped since, and the placeholders of dropped columns (invisible to SQL). The
    registrations (pg_extension_config_dump) are written as a sorted list of table and
    condition, since their order is only the order they were made in."""
    text = subprocess.run([cluster.bin("pg_dump"), "--schema-only", "--binary-upgrade", "-d", cluster.dsn(db)],
                          check=True, capture_output=True, text=True).stdout
    with cluster.connect(db) as conn:
        config = conn.execute("""
            SELECT coalesce(string_agg(format('%s %s', c::regclass, quote_literal(w)), ', '
                                       ORDER BY c::regclass::text), '')
            FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(c, w)
            WHERE e.extname = 'shardcast'""").fetchone()[0]
    text = re.sub(r"'\{[0-9,]*\}', '.*?', ARRAY\[", f"config_dump => [{config}], ARRAY[", text)
    # Dropped columns: the placeholder in CREATE TABLE, and the block that drops it again.
    text = re.sub(r"\n    \"\.+pg\.dropped\.\d+\.+\" [^\n]*", "", text)
    text = text.replace(",\n);", "\n);")
    text = re.sub(r"-- For binary upgrade, recreate dropped column\.\n(.*\n)*?ALTER TABLE ONLY [^\n]* DROP COLUMN [^\n]*\n",
                  "", text)
    text = re.sub(r"-- set missing value\.\nSELECT pg_catalog\.binary_upgrade_set_missing_value\([^\n]*\n", "", text)
    text = re.sub(r"relfrozenxid = '\d+', relminmxid = '\d+'", "relfrozenxid = X, relminmxid = X", text)
    text = re.sub(r"WHERE oid = '\d+'", "WHERE oid = X", text)
    # Sequence positions are data (binary-upgrade dumps write them even without data).
    text = re.sub(r"(SELECT pg_catalog\.setval\('[^']*'), \d+, (true|false)\)", r"\1, X)", text)
    lines = [line for line in text.splitlines()
             if "binary_upgrade_set_next_" not in line and not line.startswith(("\\restrict", "\\unrestrict"))]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text)


def dump_diff(a, b, names=("upgraded", "fresh")):
    return "\n".join(difflib.unified_diff(a.splitlines(), b.splitlines(), *names, lineterm="", n=2))


# --- The 0.1.0 installation ---------------------------------------------------------------------

def fill_0_1_0(conn):
    """What a DBA's 0.1.0 installation holds: history, classes (one builtin weight edited),
    nodes, tasks queued, claimed, done and failed, completions, forecasts and scores."""
    conn.execute("""
        INSERT INTO public.customers SELECT g, 'c' || g FROM generate_series(1, 200) g;
        INSERT INTO public.orders SELECT g, 1 + g % 200, g FROM generate_series(1, 2000) g;
        INSERT INTO public.events SELECT g, '2025-06-01'::timestamptz + g * interval '1 min' FROM generate_series(1, 500) g;
        INSERT INTO public.archive SELECT generate_series(1, 100);
        ANALYZE;
    """)
    # Imported history: recent 5-minute buckets, one sample at a time and in bulk.
    for minutes in (5, 20, 65, 130, 300):
        conn.execute("SELECT shardcast.record_access('public.orders', now() - %s * interval '1 min', %s, %s)",
                     (minutes, 100 + minutes, minutes / 10))
    conn.execute("""
        SELECT shardcast.record_access(array_agg(t), array_agg(now() - h * interval '1 hour'), array_agg(10.0 * h))
        FROM unnest(ARRAY['public.customers', 'public.events_1', 'public.archive']::regclass[]) t,
             generate_series(1, 6) h""")
    # Compacted history as 0.1.0's worker wrote it: one row per shard and UTC day, 24 slots.
    conn.execute("""
        INSERT INTO shardcast.daily_access (shard_id, day, scans, tuples_read, tuples_written, blocks_hit, blocks_read)
        SELECT s.shard_id, current_date - d,
               array_agg((s.shard_id * 10 + d + h)::real ORDER BY h), array_agg((h * 100)::real ORDER BY h),
               array_agg((h % 3)::real ORDER BY h), array_agg((h * 7)::real ORDER BY h), array_agg((h % 5)::real ORDER BY h)
        FROM shardcast.shards s, generate_series(1, 3) d, generate_series(0, 23) h
        GROUP BY s.shard_id, d""")
    # Classes: a builtin weight edited, a class of the user's, tables and a partitioned parent.
    conn.execute("UPDATE shardcast.shard_classes SET weight = 20 WHERE class = 'critical'")
    conn.execute("INSERT INTO shardcast.shard_classes (class, weight, description) VALUES ('hot', 5, 'mine')")
    conn.execute("SELECT shardcast.set_shard_class('public.orders', 'critical')")
    conn.execute("SELECT shardcast.set_shard_class('public.events', 'hot')")
    conn.execute("SELECT shardcast.set_shard_class('public.archive', 'log')")
    # Nodes, tasks: one done, one failed, one claimed, the rest queued.
    conn.execute("SELECT shardcast.add_node('n1', 1e8)")
    conn.execute("SELECT shardcast.add_node('n2', 5e7, 2, 'host=replica-2 dbname=app')")
    conn.execute("SELECT shardcast.report_node_load('n2', 0.5)")
    for table, node in (("orders", "n1"), ("customers", "n1"), ("events_1", "n2"), ("archive", "n2")):
        conn.execute("SELECT shardcast.enqueue(%s::regclass, %s)", (f"public.{table}", node))
    done = one(conn, "SELECT task_id FROM shardcast.claim_task('w1', 'n1')")
    conn.execute("SELECT shardcast.complete_task(%s, true, 'copied', 'w1')", (done,))
    failed = one(conn, "SELECT task_id FROM shardcast.claim_task('w1', 'n1')")
    conn.execute("SELECT shardcast.complete_task(%s, false, 'connection refused', 'w1')", (failed,))
    claimed = one(conn, "SELECT task_id FROM shardcast.claim_task('w2', 'n2')")
    conn.execute("SELECT shardcast.heartbeat(%s, 'w2')", (claimed,))
    # 0.1.0 could hold two open tasks for one shard and node (once given, once assigned).
    queued = one(conn, "SELECT task_id FROM shardcast.replication_tasks WHERE state = 'queued' ORDER BY task_id LIMIT 1")
    duplicate = one(conn, """
        INSERT INTO shardcast.replication_tasks (shard_id, destination, node, size_bytes, dispatch_rank)
        SELECT shard_id, NULL, node, size_bytes, 99 FROM shardcast.replication_tasks WHERE task_id = %s
        RETURNING task_id""", queued)
    # Forecasts and scores as 0.1.0's refresh wrote them.
    conn.execute("""
        INSERT INTO shardcast.forecast_state (shard_id, computed_at, horizon, model, point, lower, upper,
                                              backtest_mase, history_points, selected_at, selected_model,
                                              error_low, error_high)
        SELECT shard_id, now(), '2 hours', 'seasonal_naive', 10, 5, 20, 0.8, 72, now(), 'seasonal_naive', -5, 10
        FROM shardcast.shards""")
    conn.execute("""
        INSERT INTO shardcast.scores (shard_id, computed_at, predicted_load, class, weight, base_score, lift,
                                      lift_source, score, priority_weight, tier, rank)
        SELECT shard_id, now(), 10, 'normal', 1, 10, 1, NULL, 10, 1000, 1, row_number() OVER (ORDER BY shard_id)
        FROM shardcast.shards""")
    conn.execute("UPDATE shardcast.worker_state SET state = 'running', samples_written = 42, last_error = 'old'")
    return {"done": done, "failed": failed, "claimed": claimed, "queued": queued, "duplicate": duplicate}


TABLES = {  # table -> its key, for a stable order
    "shards": "shard_id", "recent_access": "shard_id, bucket_start", "daily_access": "shard_id, day",
    "worker_state": "singleton", "shard_classes": "class", "shard_class_assignments": "schema_name, table_name",
    "scores": "shard_id", "nodes": "node", "replication_tasks": "task_id", "copy_credits": "task_id",
    "completion_log": "task_id, finished_at", "forecast_state": "shard_id",
}


def snapshot(conn):
    return {table: [row[0] for row in conn.execute(
                f"SELECT to_jsonb(t) FROM shardcast.{table} t ORDER BY {key}")]
            for table, key in TABLES.items()}


# --- Tests --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upgraded(cluster):
    """A database filled at 0.1.0, its snapshot, then ALTER EXTENSION shardcast UPDATE."""
    conn = create_database(cluster, "upgraded", OLD)
    assert one(conn, "SELECT extversion FROM pg_extension WHERE extname = 'shardcast'") == OLD
    tasks = fill_0_1_0(conn)
    grant_0_1_0(conn)
    before = snapshot(conn)
    # A DBA who replicates everything: FOR ALL TABLES includes shardcast's own tables, and an
    # UPDATE or DELETE of a table without a replica identity then fails (55000).
    conn.execute("CREATE PUBLICATION everything FOR ALL TABLES")
    conn.execute("ALTER EXTENSION shardcast UPDATE")
    conn.execute("DROP PUBLICATION everything")
    yield conn, before, tasks
    conn.close()


@pytest.fixture(scope="module")
def fresh(cluster):
    """The schema dump of a fresh CREATE EXTENSION shardcast, with the same user tables."""
    with create_database(cluster, "fresh") as conn:
        if one(conn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'tests'"):
            pytest.fail("the installed shardcast is a `cargo pgrx test` build (schema tests): run `make install`")
        grant_0_1_0(conn, "shardcast.complete_task(bigint, boolean, text, text, boolean)")
    return schema_dump(cluster, "fresh")


def test_the_update_leaves_the_schema_of_a_fresh_install(cluster, upgraded, fresh):
    conn, _, _ = upgraded
    assert one(conn, "SELECT extversion FROM pg_extension WHERE extname = 'shardcast'") == current_version()
    after = schema_dump(cluster, "upgraded")
    # The dumps hold what they should, so that equality means something.
    for expected in ("CREATE TABLE shardcast.sampling_periods", "ALTER EXTENSION shardcast ADD VIEW shardcast.forecasts",
                     "COMMENT ON COLUMN shardcast.daily_access.hours_present", "GRANT SELECT ON TABLE shardcast.worker_status",
                     "CREATE TABLE public.orders", "'shardcast', 'shardcast', false, '" + current_version() + "'",
                     "config_dump => [shardcast.nodes ''",
                     # The DBA's grants (grant_0_1_0), as GRANTs of their own, not initial privileges.
                     f"GRANT ALL ON FUNCTION shardcast.claim_task(worker text, node text) TO {DRIVER};",
                     f"GRANT ALL ON FUNCTION shardcast.enqueue(shard regclass, node text) TO {OPERATOR} WITH GRANT OPTION;"):
        assert expected in fresh, expected
    assert after == fresh, dump_diff(after, fresh)


def test_0_1_0_functions_work_on_the_new_library_before_the_update(cluster):
    """Between installing the new library and ALTER EXTENSION UPDATE, 0.1.0's SQL functions run
    the new code on the 0.1.0 catalog: what they read must exist there (Citus's column does not)."""
    conn = create_database(cluster, "before_update", OLD)
    try:
        fill_0_1_0(conn)
        conn.execute("CREATE PUBLICATION before_update_pub FOR TABLE public.archive")
        assert conn.execute("SELECT shardcast.sparkline('public.orders', '6 hours')").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM shardcast.priority_scores").fetchone()[0] > 0
        assert conn.execute("SELECT shardcast.enqueue_all()").fetchone()[0] >= 0
        assert conn.execute("SELECT shardcast.enqueue_publication('before_update_pub')").fetchone()[0] >= 0
        # 0.1.0's column replication_tasks.destination (requested_node since 0.2.0), and its
        # manifest's column destination (node), read and written by the new library.
        assert conn.execute("SELECT shardcast.enqueue('public.events_2', 'n1')").fetchone()[0] > 0
        manifest = conn.execute("SELECT shardcast.manifest_json('n1')").fetchone()[0]
        assert manifest["node"] == "n1" and manifest["tasks"]
        assert all(t["node"] == "n1" for t in manifest["tasks"])
        assert conn.execute("SELECT task_id FROM shardcast.claim_task('w9', 'n1')").fetchone() is not None
        # A refresh would write 0.2.0's forecasts into 0.1.0's tables: it says to update first.
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
            conn.execute("SELECT shardcast.refresh_forecasts()")
        assert f"is version {OLD} in this database" in refused.value.diag.message_primary
        assert "ALTER EXTENSION shardcast UPDATE" in refused.value.diag.message_hint
    finally:
        conn.close()


def test_the_update_keeps_grants_on_functions_it_drops_and_creates(upgraded):
    """claim_task, enqueue and manifest_json lose their parameter destination (node now), and
    complete_task takes copied: each is dropped and created, with the grants made on 0.1.0.
    The grants stay the DBA's, not initial privileges of the extension (which pg_dump would
    leave out); the schema comparison with a fresh install granted alike checks that too."""
    conn, _, _ = upgraded
    for role, function, grantable in (
            (DRIVER, "shardcast.claim_task(text, text)", False),
            (DRIVER, "shardcast.complete_task(bigint, boolean, text, text, boolean)", False),
            (DRIVER, "shardcast.manifest_json(text)", False),
            (OPERATOR, "shardcast.enqueue(regclass, text)", True),
            (DRIVER, "shardcast.enqueue(regclass, text)", True),
            (AUDITOR, "shardcast.enqueue(regclass, text)", False)):
        assert one(conn, "SELECT has_function_privilege(%s, %s, 'EXECUTE')", role, function), (role, function)
        assert one(conn, "SELECT has_function_privilege(%s, %s, 'EXECUTE WITH GRANT OPTION')",
                   role, function) == grantable, (role, function)
        assert not one(conn, """SELECT EXISTS (SELECT FROM pg_init_privs i, aclexplode(i.initprivs) a
                                WHERE i.objoid = %s::regprocedure AND a.grantee = %s::regrole)""",
                       function, role), (role, function)
    # The operator's grant is still the operator's.
    assert one(conn, """SELECT pg_get_userbyid(a.grantor) FROM pg_proc p, aclexplode(p.proacl) a
                        WHERE p.oid = 'shardcast.enqueue(regclass, text)'::regprocedure
                          AND a.grantee = %s::regrole""", DRIVER) == OPERATOR
    assert one(conn, """SELECT pg_get_userbyid(a.grantor) FROM pg_proc p, aclexplode(p.proacl) a
                        WHERE p.oid = 'shardcast.enqueue(regclass, text)'::regprocedure
                          AND a.grantee = %s::regrole""", AUDITOR) == DRIVER
    assert one(conn, "SELECT proargnames FROM pg_proc WHERE oid = 'shardcast.claim_task(text, text)'::regprocedure")[:2] == ["worker", "node"]
    assert not one(conn, "SELECT has_function_privilege('public', 'shardcast.claim_task(text, text)', 'EXECUTE')")
    assert not one(conn, "SELECT has_function_privilege('public', 'shardcast.manifest_json(text)', 'EXECUTE')")
    # The helpers of the update are gone.
    assert one(conn, "SELECT to_regclass('shardcast._update_grants')") is None
    assert one(conn, "SELECT count(*) FROM pg_proc WHERE proname IN ('_update_save_grants', '_update_restore_grants')") == 0


def test_the_schema_comparison_sees_differences(cluster, fresh):
    """The comparison is not blind: 0.1.0 itself, a fresh install with one default changed and
    one with a privilege taken away compare unequal to a fresh install."""
    create_database(cluster, "old", OLD).close()
    old = schema_dump(cluster, "old")
    assert old != fresh
    assert "+CREATE TABLE shardcast.sampling_periods (" in dump_diff(old, fresh)
    with create_database(cluster, "changed") as conn:
        conn.execute("ALTER TABLE shardcast.nodes ALTER COLUMN max_concurrent SET DEFAULT 5")
    diff = dump_diff(schema_dump(cluster, "changed"), fresh)
    assert "max_concurrent integer DEFAULT 5 NOT NULL" in diff, diff
    with create_database(cluster, "changed_grant") as conn:
        conn.execute("REVOKE SELECT ON shardcast.forecasts FROM PUBLIC")
    assert schema_dump(cluster, "changed_grant") != fresh


def test_the_update_keeps_the_data(upgraded):
    conn, before, tasks = upgraded
    after = snapshot(conn)
    for table, rows in before.items():
        if table == "forecast_state":
            continue
        # Rows as 0.1.0 had them: columns that 0.2.0 added are compared below.
        kept = [{k: v for k, v in row.items() if k in rows[0]} for row in after[table]] if rows else after[table]
        if table == "replication_tasks":
            # 0.1.0's destination is requested_node.
            rows = [{("requested_node" if k == "destination" else k): v for k, v in r.items()} for r in rows]
            kept = [{k: v for k, v in row.items() if k in rows[0]} for row in after[table]]
            # The later of two open tasks for one shard and node is cancelled, nothing else changes.
            dup = next(r for r in kept if r["task_id"] == tasks["duplicate"])
            assert (dup["state"], dup["detail"]) == ("cancelled", f"a duplicate of task {tasks['queued']} for the same node")
            assert dup["finished_at"] is not None
            kept = [r for r in kept if r["task_id"] != tasks["duplicate"]]
            rows = [r for r in rows if r["task_id"] != tasks["duplicate"]]
        assert kept == rows, table
    assert len(before["recent_access"]) >= 20 and len(before["daily_access"]) >= 12
    assert all(r["hours_present"] == 2 ** 24 - 1 for r in after["daily_access"])
    states = {r["task_id"]: (r["state"], r["claimed_by"]) for r in after["replication_tasks"]}
    assert states[tasks["claimed"]] == ("claimed", "w2")
    assert states[tasks["queued"]] == ("queued", None)
    assert states[tasks["done"]][0] == "done" and states[tasks["failed"]][0] in ("queued", "failed")
    assert {r["class"]: r["weight"] for r in after["shard_classes"]} == {"critical": 20, "normal": 1, "log": 0.1, "hot": 5}
    assert len(after["completion_log"]) >= 2
    # Forecasts are derived: dropped by the update, made again by the next refresh. The history
    # 0.1.0 kept counts as sampled, one period from the first shard seen to the update.
    assert after["forecast_state"] == []
    assert conn.execute("""
        SELECT count(*) = 1 AND min(p.started_at) = (SELECT min(first_seen) FROM shardcast.shards)
        FROM shardcast.sampling_periods p""").fetchone()[0]


def test_the_extension_works_after_the_update(upgraded):
    conn, before, tasks = upgraded
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    conn.execute("SELECT shardcast.record_access('public.orders', now() - interval '1 min', 500, 5)")
    assert one(conn, """SELECT shardcast.record_access(ARRAY['public.customers', 'public.events_2']::regclass[],
                                                       ARRAY[now(), now()], ARRAY[5, 6]::float8[])""") == 2
    assert one(conn, "SELECT shardcast.refresh_forecasts()") >= 4
    assert one(conn, "SELECT count(*) FROM shardcast.forecasts WHERE shard = 'public.orders'::regclass AND window_start IS NOT NULL") == 1
    assert one(conn, "SELECT class FROM shardcast.priority_scores WHERE shard = 'public.orders'::regclass") == "critical"
    assert one(conn, "SELECT weight FROM shardcast.effective_classes WHERE shard = 'public.events_1'::regclass") == 5
    assert one(conn, "SELECT count(*) FROM shardcast.worker_status") == 1
    assert one(conn, "SELECT length(shardcast.sparkline('public.orders')) > 0")

    # The task claimed before the update completes; the queued ones are claimed and completed.
    conn.execute("SELECT shardcast.heartbeat(%s, 'w2')", (tasks["claimed"],))
    conn.execute("SELECT shardcast.complete_task(%s, true, NULL, 'w2')", (tasks["claimed"],))
    new = one(conn, "SELECT shardcast.enqueue('public.events_2', 'n1')")
    assert new > max(r["task_id"] for r in before["replication_tasks"])
    claimed = []
    while (row := conn.execute("SELECT task_id, shard FROM shardcast.claim_task('w3')").fetchone()) is not None:
        claimed.append(row[0])
        conn.execute("SELECT shardcast.complete_task(%s, true, NULL, 'w3')", (row[0],))
    assert tasks["queued"] in claimed and new in claimed
    assert tasks["duplicate"] not in claimed
    assert one(conn, "SELECT count(*) FROM shardcast.replication_tasks WHERE state IN ('queued', 'claimed')") == 0
    assert one(conn, "SELECT count(*) FROM shardcast.completion_log") == len(before["completion_log"]) + 1 + len(claimed)
    assert one(conn, "SELECT tasks FROM shardcast.prioritization_report") >= 3


def test_the_worker_waits_for_the_update_then_samples():
    """The library is replaced and the server restarted before ALTER EXTENSION UPDATE: the worker
    says once that it waits for the update, instead of failing every cycle against the old
    catalog, and samples as soon as the update commits."""
    settings = {"shardcast.database": "'app'", "shardcast.sample_interval": "'1s'",
                "shardcast.refresh_interval": "'1s'"}
    with running_cluster(settings, "shardcast-upgrade-worker") as cluster:
        with cluster.connect() as conn:
            conn.execute("CREATE DATABASE app")
        with cluster.connect("app") as db:
            db.execute(f"CREATE EXTENSION shardcast VERSION '{OLD}'")
            db.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
            wait_for("the worker to wait for the update",
                     lambda: "waiting for ALTER EXTENSION shardcast UPDATE" in cluster.log_text(), timeout=30)
            time.sleep(4)
            log = cluster.log_text()
            assert log.count("waiting for ALTER EXTENSION shardcast UPDATE") == 1, log
            assert "sampling cycle failed" not in log, log
            assert one(db, "SELECT state FROM shardcast.worker_status") == \
                f"waiting for ALTER EXTENSION shardcast UPDATE (the library is {current_version()}, the extension {OLD})"
            db.execute("ALTER EXTENSION shardcast UPDATE")
            updated = one(db, "SELECT now()")
            wait_for("a sample after the update", lambda: one(
                db, "SELECT last_sample_at > %s FROM shardcast.worker_status", updated), timeout=30)
            wait_for("the worker to register t", lambda: one(
                db, "SELECT count(*) FROM shardcast.shards WHERE table_name = 't'"), timeout=30)
            assert one(db, "SELECT state FROM shardcast.worker_status") == "running"
            assert one(db, "SELECT max(ended_at) > %s FROM shardcast.sampling_periods", updated)
            assert "sampling cycle failed" not in cluster.log_text()
