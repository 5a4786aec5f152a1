"""End to end: what a replica gets besides the rows. The driver gives each replica the table's
full definition from pg_dump (the types it uses, defaults, constraints, secondary indexes after
the copy, foreign keys once the referenced table is there too), and shardcast refuses at enqueue
the tables that logical replication cannot carry.

One source with shardcast preloaded and one plain PostgreSQL 15 replica; every test makes its
own tables, enqueues them for the replica and runs the driver.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from cluster import PUBLISHER_SETTINGS, SUBSCRIBER_SETTINGS, Cluster, running_cluster

DB = "app"
NODE = "replica"
DRIVER = Path(__file__).resolve().parent.parent / "driver" / "shardcast_driver.py"


def one(conn, query, *args):
    row = conn.execute(query, args).fetchone()
    return None if row is None else row[0]


@pytest.fixture(scope="module")
def pair():
    settings = {"shardcast.database": f"'{DB}'", "shardcast.sample_interval": "'1s'", **PUBLISHER_SETTINGS}
    with running_cluster(settings, "shardcast-src") as source, \
            running_cluster(SUBSCRIBER_SETTINGS, "shardcast-replica") as replica:
        for cluster in (source, replica):
            with cluster.connect() as conn:
                conn.execute(f"CREATE DATABASE {DB}")
        with source.connect(DB) as conn:
            conn.execute("CREATE EXTENSION shardcast")
            conn.execute("SELECT shardcast.add_node(%s, 100e6, 4, %s)", [NODE, replica.dsn(DB)])
        yield source, replica


def sync(source: Cluster, *tables: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Enqueues `tables` for the replica and runs the driver until the queue is empty."""
    with source.connect(DB) as conn:
        for table in tables:
            conn.execute("SELECT shardcast.enqueue(%s, %s)", [table, NODE])
    driver = subprocess.run([sys.executable, str(DRIVER), "--source", source.dsn(DB), "--node", NODE,
                             "--worker", "replica-test", "--poll", "0.2", *extra],
                            capture_output=True, text=True, timeout=300)
    print(driver.stdout, driver.stderr)
    assert driver.returncode == 0, driver.stdout + driver.stderr
    source.wait_for_subscribers(DB)
    return driver


def rows(conn, table: str) -> list[tuple]:
    return conn.execute(f"SELECT t::text FROM {table} t ORDER BY t::text").fetchall()


def plan(conn, query: str) -> str:
    return "\n".join(r[0] for r in conn.execute("EXPLAIN " + query))


def test_driver_gives_a_replica_indexes_and_foreign_keys_once_both_tables_are_there(pair):
    source, replica = pair
    with source.connect(DB) as src:
        src.execute("""
            CREATE TABLE rp_customers (id int PRIMARY KEY, email text NOT NULL UNIQUE);
            CREATE TABLE rp_orders (id bigserial PRIMARY KEY, customer int NOT NULL REFERENCES rp_customers,
                                    placed date NOT NULL, total numeric CHECK (total >= 0));
            CREATE INDEX rp_orders_placed ON rp_orders (placed);
            INSERT INTO rp_customers SELECT i, 'c' || i || '@example.com' FROM generate_series(1, 200) i;
            INSERT INTO rp_orders (customer, placed, total)
                SELECT 1 + i % 200, date '2026-01-01' + i % 365, i FROM generate_series(1, 5000) i;""")
    # The referencing table first: its foreign key waits for the table it references.
    first = sync(source, "rp_orders")
    assert "rp_orders_customer_fkey of public.rp_orders (public.rp_customers)" in first.stdout
    with replica.connect(DB) as rep:
        assert one(rep, "SELECT count(*) FROM pg_constraint WHERE conname = 'rp_orders_customer_fkey'") == 0
    sync(source, "rp_customers")
    with source.connect(DB) as src, replica.connect(DB) as rep:
        for table in ("rp_customers", "rp_orders"):
            assert rows(rep, table) == rows(src, table), table
        rep.execute("ANALYZE rp_orders")
        rep.execute("SET enable_seqscan = off")
        rep.execute("SET enable_bitmapscan = off")
        shown = plan(rep, "SELECT placed FROM rp_orders WHERE placed = '2026-03-01'")
        assert "Index Only Scan using rp_orders_placed" in shown or "Index Scan using rp_orders_placed" in shown, shown
        shown = plan(rep, "SELECT id FROM rp_customers WHERE email = 'c7@example.com'")
        assert "rp_customers_email_key" in shown, shown
        # The foreign key, the check constraint and the unique constraint hold on the replica.
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            rep.execute("INSERT INTO rp_orders VALUES (100001, 999, '2026-01-01', 1)")
        with pytest.raises(psycopg.errors.CheckViolation):
            rep.execute("INSERT INTO rp_orders VALUES (100002, 1, '2026-01-01', -1)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            rep.execute("INSERT INTO rp_customers VALUES (1000, 'c1@example.com')")
        assert rep.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                           " WHERE conrelid = 'rp_orders'::regclass ORDER BY conname").fetchall() == \
            src.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                        " WHERE conrelid = 'rp_orders'::regclass ORDER BY conname").fetchall()
        # Writes on the source still reach the replica through the constraints.
        src.execute("INSERT INTO rp_customers VALUES (201, 'new@example.com');"
                    "INSERT INTO rp_orders (customer, placed, total) VALUES (201, '2026-06-01', 5)")
    source.wait_for_subscribers(DB)
    with replica.connect(DB) as rep:
        assert one(rep, "SELECT count(*) FROM rp_orders WHERE customer = 201") == 1
    # Again: every step finds what it would make already there. (shardcast remembers what each
    # node holds and would not queue them again: make it forget, as after a restore.)
    with source.connect(DB) as src:
        if one(src, "SELECT to_regprocedure('shardcast.forget_replica(regclass, text)') IS NOT NULL"):
            src.execute("SELECT shardcast.forget_replica(t, %s) FROM unnest(array['rp_orders', 'rp_customers']::regclass[]) t",
                        [NODE])
        src.execute("SELECT shardcast.enqueue(t, %s) FROM unnest(array['rp_orders', 'rp_customers']::regclass[]) t",
                    [NODE])
    again = sync(source)
    # Nothing is copied again: both are reported as already there, not as copies.
    assert again.stdout.count("already on replica") == 2, again.stdout
    assert "Z ready " not in again.stdout and "0 B copied" in again.stdout, again.stdout
    with replica.connect(DB) as rep:
        assert one(rep, "SELECT count(*) FROM pg_indexes WHERE tablename IN ('rp_orders', 'rp_customers')") == 4


def test_driver_copies_enum_domain_and_composite_columns_with_their_types(pair):
    source, replica = pair
    with source.connect(DB) as src:
        src.execute("""
            CREATE SCHEMA rp_kinds;
            CREATE TYPE rp_kinds.mood AS ENUM ('sad', 'ok', 'happy');
            CREATE DOMAIN rp_percent AS numeric(5, 2) CHECK (VALUE BETWEEN 0 AND 100);
            CREATE TYPE rp_reading AS (at timestamptz, mood rp_kinds.mood);
            CREATE TABLE rp_survey (id int PRIMARY KEY, mood rp_kinds.mood NOT NULL, score rp_percent,
                                    moods rp_kinds.mood[], last rp_reading);
            INSERT INTO rp_survey SELECT i, (array['sad', 'ok', 'happy'])[1 + i % 3]::rp_kinds.mood, i % 101,
                                         array['ok', 'sad']::rp_kinds.mood[], ('2026-01-01', 'happy')::rp_reading
                                  FROM generate_series(1, 300) i;""")
    sync(source, "rp_survey")
    with source.connect(DB) as src, replica.connect(DB) as rep:
        assert rows(rep, "rp_survey") == rows(src, "rp_survey")
        assert one(rep, "SELECT array_agg(enumlabel::text ORDER BY enumsortorder) FROM pg_enum"
                        " WHERE enumtypid = 'rp_kinds.mood'::regtype") == ["sad", "ok", "happy"]
        # The enum's order and the domain's check are the source's.
        assert one(rep, "SELECT max(mood)::text FROM rp_survey") == "happy"
        with pytest.raises(psycopg.errors.CheckViolation):
            rep.execute("INSERT INTO rp_survey VALUES (1000, 'ok', 101)")
    # A second table of the same types finds them there.
    with source.connect(DB) as src:
        src.execute("CREATE TABLE rp_survey_2 (id int PRIMARY KEY, mood rp_kinds.mood, score rp_percent);"
                    "INSERT INTO rp_survey_2 VALUES (1, 'ok', 50)")
    sync(source, "rp_survey_2")
    with replica.connect(DB) as rep:
        assert rep.execute("SELECT mood::text, score FROM rp_survey_2").fetchall() == [("ok", 50)]


def test_driver_gives_a_replica_column_defaults_and_owned_sequences(pair):
    source, replica = pair
    with source.connect(DB) as src:
        src.execute("""
            CREATE TABLE rp_notes (id serial PRIMARY KEY, body text NOT NULL DEFAULT 'empty',
                                   at date DEFAULT '2026-01-01', n int GENERATED BY DEFAULT AS IDENTITY);
            INSERT INTO rp_notes (body) SELECT 'note ' || i FROM generate_series(1, 10) i;""")
    sync(source, "rp_notes")
    query = ("SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d"
             " JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
             " WHERE d.adrelid = 'rp_notes'::regclass ORDER BY 1")
    with source.connect(DB) as src, replica.connect(DB) as rep:
        assert rows(rep, "rp_notes") == rows(src, "rp_notes")
        defaults = rep.execute(query).fetchall()
        assert defaults == src.execute(query).fetchall()
        assert ("body", "'empty'::text") in defaults
        assert one(rep, "SELECT attidentity FROM pg_attribute WHERE attrelid = 'rp_notes'::regclass"
                        " AND attname = 'n'") == "d"
        assert rep.execute("INSERT INTO rp_notes (id) VALUES (1000) RETURNING body, at::text").fetchone() == \
            ("empty", "2026-01-01")


def test_driver_creates_the_sequences_that_column_defaults_share(pair):
    source, replica = pair
    with source.connect(DB) as src:
        src.execute("""
            CREATE SCHEMA rp_ids;
            CREATE SEQUENCE rp_ids.shared_seq START 1000 INCREMENT 5;
            CREATE TABLE rp_tickets (id bigint PRIMARY KEY DEFAULT nextval('rp_ids.shared_seq'), v text);
            CREATE TABLE rp_owner (id serial PRIMARY KEY, v text);
            CREATE TABLE rp_borrower (id int PRIMARY KEY DEFAULT nextval('rp_owner_id_seq'),
                                      other bigint DEFAULT nextval('rp_ids.shared_seq'), v text);
            INSERT INTO rp_tickets (v) SELECT 'ticket ' || i FROM generate_series(1, 10) i;
            INSERT INTO rp_owner (v) VALUES ('a'), ('b');
            INSERT INTO rp_borrower (v) VALUES ('c');""")
    # The borrower first: it needs another table's sequence, which the replica gets on its own,
    # and the owner after it finds its sequence there already.
    sync(source, "rp_tickets", "rp_borrower")
    sync(source, "rp_owner")
    query = ("SELECT c.relname, a.attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d"
             " JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
             " JOIN pg_class c ON c.oid = d.adrelid WHERE c.relname IN ('rp_tickets', 'rp_owner', 'rp_borrower')"
             " ORDER BY 1, 2")
    with source.connect(DB) as src, replica.connect(DB) as rep:
        for table in ("rp_tickets", "rp_owner", "rp_borrower"):
            assert rows(rep, table) == rows(src, table), table
        assert rep.execute(query).fetchall() == src.execute(query).fetchall()
        # The sequence's definition, not its value (logical replication does not carry values).
        assert rep.execute("SELECT start_value, increment_by FROM pg_sequences WHERE sequencename = 'shared_seq'"
                           ).fetchone() == (1000, 5)
        assert one(rep, "SELECT pg_get_serial_sequence('rp_owner', 'id')") == "public.rp_owner_id_seq"
        assert one(rep, "SELECT nextval('rp_ids.shared_seq')") == 1000


def test_driver_bare_gives_only_what_apply_needs(pair):
    source, replica = pair
    with source.connect(DB) as src:
        src.execute("CREATE TABLE rp_plain (id int PRIMARY KEY, v text DEFAULT 'x');"
                    "CREATE INDEX rp_plain_v ON rp_plain (v); INSERT INTO rp_plain VALUES (1, 'a')")
    sync(source, "rp_plain", extra=("--bare",))
    with replica.connect(DB) as rep:
        assert rep.execute("SELECT * FROM rp_plain").fetchall() == [(1, "a")]
        assert one(rep, "SELECT to_regclass('rp_plain_v')") is None
        assert one(rep, "SELECT count(*) FROM pg_attrdef WHERE adrelid = 'rp_plain'::regclass") == 0


def test_enqueue_refuses_unlogged_and_temporary_tables_before_the_driver_sees_them(pair):
    source, _ = pair
    with source.connect(DB) as src:
        notices: list[tuple[str | None, str | None, str | None, str | None]] = []
        src.add_notice_handler(lambda d: notices.append(
            (d.sqlstate, d.severity_nonlocalized, d.message_primary, d.message_hint)))
        src.execute("""
            CREATE UNLOGGED TABLE rp_scratch (id int PRIMARY KEY);
            CREATE TEMPORARY TABLE rp_session (id int PRIMARY KEY);
            CREATE TABLE rp_events (id int, day int, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
            CREATE UNLOGGED TABLE rp_events_staging PARTITION OF rp_events FOR VALUES FROM (0) TO (10);
            CREATE TABLE rp_events_kept PARTITION OF rp_events FOR VALUES FROM (10) TO (20);
            CREATE PUBLICATION rp_events_pub FOR TABLE rp_events;""")
        for table, hint in (("rp_scratch", "ALTER TABLE public.rp_scratch SET LOGGED"),
                            ("pg_temp.rp_session", "into a permanent table")):
            with pytest.raises(psycopg.errors.FeatureNotSupported) as refused:
                src.execute("SELECT shardcast.enqueue(%s, %s)", [table, NODE])
            assert refused.value.sqlstate == "0A000"
            assert "cannot be replicated" in refused.value.diag.message_primary
            assert hint in refused.value.diag.message_hint
        # The bulk functions skip such tables with a NOTICE each and enqueue the rest (rolled back
        # here, so that the other tests' runs do not sync every table again).
        with src.transaction() as tx:
            assert one(src, "SELECT shardcast.enqueue_publication('rp_events_pub', %s)", NODE) == 1
            src.execute("SELECT shardcast.enqueue_all(%s)", [NODE])
            queued = dict(src.execute(
                "SELECT s.table_name::text, count(t.task_id) FROM shardcast.shards s"
                " LEFT JOIN shardcast.replication_tasks t ON t.shard_id = s.shard_id AND t.state = 'queued'"
                " WHERE s.table_name LIKE 'rp\\_%%' AND s.retired_at IS NULL GROUP BY 1").fetchall())
            raise psycopg.Rollback(tx)
        assert queued["rp_events_kept"] == 1 and queued["rp_events_staging"] == 0 and queued["rp_scratch"] == 0
        skipped = [n[:3] for n in notices if "cannot be replicated" in (n[2] or "")]
        staging = 'unlogged table "public.rp_events_staging" cannot be replicated, skipping'
        scratch = 'unlogged table "public.rp_scratch" cannot be replicated, skipping'
        # enqueue_publication's, then enqueue_all's (by name).
        assert skipped == [("0A000", "NOTICE", staging), ("0A000", "NOTICE", staging), ("0A000", "NOTICE", scratch)], \
            notices
        assert all("SET LOGGED" in (n[3] or "") for n in notices if "cannot be replicated" in (n[2] or ""))
