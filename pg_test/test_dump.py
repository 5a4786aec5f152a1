"""End to end: pg_dump and pg_restore of a database with shardcast keep what a DBA configured:
classes (edited builtin weights included), class assignments and nodes. History, forecasts,
scores, tasks and the completion log are deliberately not dumped (README, "Backup and restore")."""

import subprocess

import psycopg
import pytest

from cluster import running_cluster


def one(conn, sql, *args):
    row = conn.execute(sql, args).fetchone()
    return None if row is None else row[0]


CONFIGURED = {
    "shard_classes": "SELECT class, weight, description, builtin FROM shardcast.shard_classes ORDER BY class",
    "shard_class_assignments": "SELECT * FROM shardcast.shard_class_assignments ORDER BY schema_name, table_name",
    "nodes": "SELECT * FROM shardcast.nodes ORDER BY node",
}


@pytest.fixture(scope="module")
def source():
    with running_cluster({"shardcast.database": "'postgres'"}, "shardcast-dump") as cluster:
        with cluster.connect() as conn:
            conn.execute("CREATE DATABASE source")
        with cluster.connect("source") as db:
            db.execute("CREATE EXTENSION shardcast")
            db.execute("""
                CREATE TABLE public.orders (id int PRIMARY KEY);
                CREATE TABLE public.events (id int, at date NOT NULL) PARTITION BY RANGE (at);
                CREATE TABLE public.events_1 PARTITION OF public.events FOR VALUES FROM ('2020-01-01') TO ('2030-01-01');
                CREATE TABLE public.audit (id int);
                INSERT INTO public.orders SELECT generate_series(1, 100);
            """)
            # Builtin classes edited (a weight; a description removed), a class of the user's.
            db.execute("UPDATE shardcast.shard_classes SET weight = 20 WHERE class = 'critical'")
            db.execute("UPDATE shardcast.shard_classes SET description = NULL WHERE class = 'log'")
            db.execute("INSERT INTO shardcast.shard_classes (class, weight, description) VALUES ('hot', 5, 'mine')")
            db.execute("SELECT shardcast.set_shard_class('public.orders', 'critical')")
            db.execute("SELECT shardcast.set_shard_class('public.events', 'hot')")
            db.execute("SELECT shardcast.set_shard_class('public.audit', 'log')")
            db.execute("SELECT shardcast.add_node('n1', 1e8)")
            db.execute("SELECT shardcast.add_node('n2', 5e7, 2, 'host=replica-2 dbname=app')")
            db.execute("SELECT shardcast.report_node_load('n2', 0.25)")
            # Operational state: history, tasks (one done, one queued), completions.
            db.execute("SELECT shardcast.record_access('public.orders', now() - interval '1 hour', 50)")
            db.execute("SELECT shardcast.enqueue('public.orders', 'n1'), shardcast.enqueue('public.audit', 'n2')")
            task = one(db, "SELECT task_id FROM shardcast.claim_task('w1', 'n1')")
            db.execute("SELECT shardcast.complete_task(%s, true, NULL, 'w1')", (task,))
            configured = {name: db.execute(sql).fetchall() for name, sql in CONFIGURED.items()}
        yield cluster, configured


def restore_and_read(cluster, name, load):
    with cluster.connect() as conn:
        conn.execute(f"CREATE DATABASE {name}")
    result = load()
    assert result.returncode == 0 and "ERROR" not in result.stderr.upper().replace("ON_ERROR", ""), result.stderr
    with cluster.connect(name) as db:
        restored = {table: db.execute(sql).fetchall() for table, sql in CONFIGURED.items()}
        left_out = {table: one(db, f"SELECT count(*) FROM shardcast.{table}")
                    for table in ("shards", "recent_access", "replication_tasks", "completion_log")}
        # A restored class applies: the shard's weight is the edited one.
        db.execute("SELECT shardcast.record_access('public.orders', now(), 1)")
        weight = one(db, "SELECT weight FROM shardcast.effective_classes WHERE shard = 'public.orders'::regclass")
    return restored, left_out, weight


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_dump_and_restore_keep_the_configuration(source, fmt, tmp_path):
    cluster, configured = source
    assert [r for r in configured["shard_classes"] if r[0] == "critical"] == [("critical", 20, "read by user-facing paths; replicate first", True)]
    dump = tmp_path / f"source.{fmt}"
    subprocess.run([cluster.bin("pg_dump"), f"--format={fmt}", f"--file={dump}", cluster.dsn("source")],
                   check=True, capture_output=True, text=True)
    name = f"restored_{fmt}"
    if fmt == "custom":
        load = lambda: subprocess.run([cluster.bin("pg_restore"), "--dbname", cluster.dsn(name), str(dump)],  # noqa: E731
                                      capture_output=True, text=True)
    else:
        load = lambda: subprocess.run([cluster.bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", cluster.dsn(name),  # noqa: E731
                                       "-f", str(dump)], capture_output=True, text=True)
    restored, left_out, weight = restore_and_read(cluster, name, load)
    assert restored == configured
    assert weight == 20
    assert left_out == {"shards": 0, "recent_access": 0, "replication_tasks": 0, "completion_log": 0}


def test_a_dump_holds_the_edited_builtin_classes_only(source, tmp_path):
    """Unedited builtin rows are not dumped, so that a later release's defaults are not
    overwritten by a dump's copies of the old ones."""
    cluster, _ = source
    text = subprocess.run([cluster.bin("pg_dump"), cluster.dsn("source")],
                          check=True, capture_output=True, text=True).stdout
    rows = text.split("COPY shardcast.shard_classes", 1)[1].split("\n\\.", 1)[0].splitlines()[1:]
    assert sorted(r.split("\t")[0] for r in rows) == ["critical", "hot", "log"]


def test_inserting_an_existing_class_still_fails(source):
    """The restore path (a builtin row inserted over an existing one updates it) is only for
    builtin rows: a user's duplicate class is still a unique violation."""
    cluster, _ = source
    with cluster.connect("source") as db:
        with pytest.raises(psycopg.errors.UniqueViolation):
            db.execute("INSERT INTO shardcast.shard_classes (class, weight) VALUES ('critical', 3)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            db.execute("INSERT INTO shardcast.shard_classes (class, weight) VALUES ('hot', 3)")
        assert one(db, "SELECT weight FROM shardcast.shard_classes WHERE class = 'critical'") == 20
