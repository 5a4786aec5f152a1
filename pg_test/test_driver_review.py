"""End to end: the driver review's findings, each reproduced on real clusters.

finish --force drops the tablesync slots of a node that cannot be reached; DDL on a replica gives
up waiting for a reader's lock (--lock-timeout) and is tried again; passwords stay out of the
process list and out of what the driver prints; a --follow driver stops once finish took its
replication down; a hint with a quote in a name is SQL that runs; a driver whose lease was taken
over leaves that copy alone when it stops; a table of the same name that is not the published
one is refused, not swapped; a run behind another driver's lease waits out loud, for a bounded
time.

The same set-up as test_driver_cli.py (its helpers): one source with shardcast preloaded and a
plain PostgreSQL 15 replica, a node of its own per test (the fixture `lane`: the node, its tables,
the driver's runs for it, and `take_down()`, which the tests that need it call).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import Iterator

import psycopg
import pytest

import test_driver_cli
from cluster import SUBSCRIBER_SETTINGS, Cluster, running_cluster, wait_for
from test_driver_cli import (DB, ROOT, copying, driver_command, enqueue, one, run, slow_table, start, task_state,
                             unslow)

# test_driver_cli's fixture: a source and a replica, this module's own (module scope).
pair = test_driver_cli.pair


class Lane:
    """A test's own node (a replica under a name of the test's, so its own publication,
    subscription and slots), its tables on the source, and the driver runs for that node alone:
    the set-up every test here shares."""

    def __init__(self, source: Cluster, replica: Cluster, node: str, max_concurrent: int):
        self.source, self.replica, self.node = source, replica, node
        with source.connect(DB) as src:
            src.execute("SELECT shardcast.add_node(%s, 100e6, %s, %s)", [node, max_concurrent, replica.dsn(DB)])

    def sql(self, statements: str, params: list | None = None) -> None:
        """Statements on the source (the test's tables, ...)."""
        with self.source.connect(DB) as src:
            src.execute(statements, params)

    def slow(self, table: str, rows: int = 40000) -> None:
        """test_driver_cli.slow_table on this lane's replica."""
        slow_table(self.source, self.replica, table, rows)

    def enqueue(self, table: str) -> int:
        return enqueue(self.source, table, self.node)

    def state(self, task: int) -> tuple:
        """(state, attempts, claimed_by) of the task."""
        return task_state(self.source, task)

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """A one-shot run of the driver for the node (of `finish` when `args` start with it)."""
        if args[:1] == ("finish",):
            return run(self.source, "finish", "--node", self.node, *args[1:], **kwargs)
        return run(self.source, "--node", self.node, *args, **kwargs)

    def run_ok(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """A run that must exit 0."""
        done = self.run(*args, **kwargs)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    @contextlib.contextmanager
    def started(self, *args: str) -> Iterator[subprocess.Popen]:
        """The driver for the node, in the background (stdout and stderr together): killed when
        the block ends with it still running (woken first, should the test have stopped it), its
        output printed."""
        driver = start(self.source, "--node", self.node, *args)
        try:
            yield driver
        finally:
            if driver.poll() is None:
                os.kill(driver.pid, signal.SIGCONT)
                driver.kill()
                print(driver.communicate()[0])

    def take_down(self) -> None:
        """Finishes the node: its subscription's apply worker would take one of the replica's
        max_logical_replication_workers from the later tests' table syncs."""
        self.run_ok("finish", "--force")


@pytest.fixture
def lane(pair):
    """lane(node, tables="", max_concurrent=4, replica=pair's) -> Lane: a node of the test's own,
    the statements `tables` run on the source."""
    def make(node: str, tables: str = "", max_concurrent: int = 4, replica: Cluster | None = None) -> Lane:
        made = Lane(pair[0], replica or pair[1], node, max_concurrent)
        if tables:
            made.sql(tables)
        return made
    return make


def output(driver: subprocess.Popen, timeout: float = 60) -> str:
    """What a driver started in the background printed, once it has exited."""
    out, _ = driver.communicate(timeout=timeout)
    print(out)
    return out


def replica_slots(source, suboid: int) -> list[str]:
    with source.connect(DB) as src:
        return [r[0] for r in src.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE %s",
                                          [f"pg\\_{suboid}\\_sync\\_%"]).fetchall()]


def waiting_for_lock(replica, table: str) -> int:
    with replica.connect(DB) as rep:
        return one(rep, "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = to_regclass(%s)", table)


# --- (9) finish --force, the node unreachable: its tablesync slots too -------------------------

def test_finish_force_drops_the_tablesync_slots_of_a_node_that_cannot_be_reached(pair, lane):
    source, _ = pair
    with running_cluster(SUBSCRIBER_SETTINGS, "shardcast-doomed") as doomed:
        with doomed.connect() as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        fgone = lane("t_fgone", replica=doomed)
        fgone.slow("t_fgone_big")
        fgone.enqueue("t_fgone_big")
        with fgone.started("--worker", "w-fgone"):  # killed at the end of the block, mid-copy
            wait_for("the node to copy t_fgone_big", lambda: copying(doomed, "t_fgone_big") > 0, timeout=60)
            with doomed.connect(DB) as rep:
                suboid = one(rep, "SELECT oid FROM pg_subscription WHERE subname = 'shardcast_t_fgone'")
            # The table's sync holds a slot of its own on the source while it copies.
            assert replica_slots(source, suboid), "no tablesync slot on the source"
        doomed.stop("immediate")  # the node goes away with its subscription, mid-copy
        finished = fgone.run("finish", "--force")
    # 3: the source is clean, but the node was not reached (its subscription is left there, and
    # finish printed what to run on it).
    assert finished.returncode == 3, finished.stdout + finished.stderr
    assert "cannot drop subscription shardcast_t_fgone on the node" in finished.stderr
    # Nothing of the node's subscription holds WAL on the source any more: neither its own slot
    # nor its table's sync slot.
    assert replica_slots(source, suboid) == [], finished.stdout + finished.stderr
    with source.connect(DB) as src:
        assert one(src, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'shardcast_t_fgone'") == 0
        assert one(src, "SELECT count(*) FROM pg_publication WHERE pubname = 'shardcast_t_fgone'") == 0
    assert "still on the source" not in finished.stderr
    with source.connect(DB) as src:
        assert one(src, "SELECT enabled FROM shardcast.nodes WHERE node = %s", fgone.node) is False


# --- (10) --lock-timeout: replica DDL behind a reader's lock -----------------------------------

def test_replica_ddl_behind_a_readers_lock_waits_without_using_up_attempts_until_the_sync_timeout(lane):
    lock = lane("t_lock", "CREATE TABLE t_lock_a (id int PRIMARY KEY, code text UNIQUE);"
                          "INSERT INTO t_lock_a SELECT i, 'c' || i FROM generate_series(1, 100) i;"
                          "CREATE TABLE t_lock_b (id int PRIMARY KEY, code text UNIQUE);"
                          "INSERT INTO t_lock_b SELECT i, 'c' || i FROM generate_series(1, 100) i")
    with lock.source.connect(DB) as src:
        attempts = int(one(src, "SHOW shardcast.max_attempts"))
    # On the replica the table is there already, and a reader keeps it open: the unique constraint
    # built after the copy (ALTER TABLE ... ADD CONSTRAINT) waits for the reader's lock.
    with lock.replica.connect(DB) as rep:
        rep.execute("CREATE TABLE t_lock_a (id int PRIMARY KEY, code text);"
                    "CREATE TABLE t_lock_b (id int PRIMARY KEY, code text)")
    reader = lock.replica.connect(DB, autocommit=False)
    try:
        reader.execute("SELECT count(*) FROM t_lock_a")  # ACCESS SHARE until the transaction ends
        task = lock.enqueue("t_lock_a")
        with lock.started("--lock-timeout", "1", "--retry-delay", "0") as driver:
            wait_for("the constraint to wait for the reader", lambda: waiting_for_lock(lock.replica, "t_lock_a"),
                     timeout=60)
            # Far longer than max_attempts × (--lock-timeout + --retry-delay): the ready table's
            # task used up none of its attempts; it is still this driver's claim.
            time.sleep(attempts * 1.5 + 2)
            assert lock.state(task)[:2] == ("claimed", 0), lock.state(task)
            reader.rollback()
            out = output(driver)
        assert driver.returncode == 0, out
        assert "FAILED" not in out
        assert ("waiting  public.t_lock_a -> t_lock: ready, but building its" in out
                and "waited 1 s (--lock-timeout) for a lock that another session holds on public.t_lock_a" in out
                and "trying again, for up to 3600 s (--sync-timeout)" in out), out
        assert lock.state(task)[:2] == ("done", 0)
        with lock.replica.connect(DB) as rep:
            assert one(rep, "SELECT count(*) FROM pg_constraint WHERE conname = 't_lock_a_code_key'") == 1
            assert one(rep, "SELECT count(*) FROM t_lock_a") == 100

        # A lock held past --sync-timeout: then, and only then, the attempt fails (and counts).
        reader.execute("SELECT count(*) FROM t_lock_b")
        other = lock.enqueue("t_lock_b")
        blocked = lock.run("--lock-timeout", "1", "--retry-delay", "0", "--sync-timeout", "4", timeout=120)
        assert blocked.returncode == 1, blocked.stdout + blocked.stderr
        failures = [line for line in blocked.stdout.splitlines() if "Z FAILED " in line and "t_lock_b" in line]
        assert len(failures) == attempts, blocked.stdout
        assert all("waited 1 s (--lock-timeout) for a lock that another session holds on public.t_lock_b" in line
                   and "gave up after trying for" in line and "(--sync-timeout)" in line for line in failures), failures
    finally:
        reader.rollback()
        reader.close()
    lock.sql("SELECT shardcast.retry_task(%s)", [other])
    lock.run_ok("--lock-timeout", "1")
    assert lock.state(other)[0] == "done"
    lock.take_down()


def test_a_lock_timeout_message_without_a_lock_timeout_of_the_drivers_own():
    import argparse
    import sys
    sys.path.insert(0, str(ROOT / "driver"))
    from shardcast_driver.common import Node, Task
    from shardcast_driver.sync import Syncer

    class Bare(Syncer):
        args = argparse.Namespace()  # another user of Syncer: no --lock-timeout

    task = Task(1, "public.t", Node("n", "", 1), 0, 0, False, 0)
    message = str(Bare().lock_timed_out("creating the table", task, RuntimeError("canceling statement")))
    assert "waited (the node's lock_timeout) for a lock" in message, message


def test_lock_timeout_must_be_positive():
    done = subprocess.run(driver_command("--source", "host=127.0.0.1 port=1", "--lock-timeout", "0"),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--lock-timeout" in done.stderr, done


# --- (11) passwords: not in the process list, never printed ------------------------------------

PASSWORD = "Sekr3t-pw-4711"


def test_passwords_stay_out_of_the_process_list_and_the_output(pair, lane, tmp_path):
    source, _ = pair
    with source.connect(DB) as src:
        # A role that must give a password (scram) to reach the source, the driver's and the
        # subscriptions' own connections alike.
        src.execute(f"CREATE ROLE t_pw_user LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        hba = one(src, "SHOW hba_file")
    original = open(hba).read()
    with open(hba, "w") as f:
        f.write("host all t_pw_user 127.0.0.1/32 scram-sha-256\n" + original)
    try:
        with source.connect(DB) as src:
            src.execute("SELECT pg_reload_conf()")
        pw = lane("t_pw", "CREATE TABLE t_pw_a (id int PRIMARY KEY); INSERT INTO t_pw_a SELECT generate_series(1, 50)")
        time.sleep(0.5)
        node = pw.node
        task = pw.enqueue("t_pw_a")
        dsn = f"host=127.0.0.1 port={source.port} dbname={DB} user=t_pw_user"
        # Without a password anywhere: the source refuses.
        refused = pw.run(dsn=dsn + " connect_timeout=5")
        assert refused.returncode == 3 and "password" in refused.stderr, refused.stdout + refused.stderr

        # The standard ways: PGPASSFILE (or ~/.pgpass, PGPASSWORD) for --source, a file for the
        # subscriptions' conninfo. Nothing warns, the password is nowhere on the command line.
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"127.0.0.1:{source.port}:*:t_pw_user:{PASSWORD}\n")
        passfile.chmod(0o600)
        conninfo_file = tmp_path / "publisher"
        conninfo_file.write_text(dsn + f" password={PASSWORD} application_name=from_the_file\n")
        conninfo_file.chmod(0o600)
        args = driver_command("--source", dsn, "--node", node, "--poll", "0.2",
                              "--publisher-conninfo-file", str(conninfo_file))
        assert PASSWORD not in " ".join(args)
        done = subprocess.run(args, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PGPASSFILE": str(passfile)})
        print(done.stdout, done.stderr)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "warning" not in done.stderr and PASSWORD not in done.stdout + done.stderr
        assert pw.state(task)[0] == "done"
        with pw.replica.connect(DB) as rep:
            assert "application_name=from_the_file" in one(
                rep, "SELECT subconninfo FROM pg_subscription WHERE subname = 'shardcast_t_pw'")
            assert one(rep, "SELECT count(*) FROM t_pw_a") == 50

        # The same from the environment; and a password on the command line: a warning, and the
        # password is not printed, even when the conninfo is malformed.
        env_run = subprocess.run(driver_command("--source", dsn, "--node", node, "--dry-run"), capture_output=True,
                                 text=True, timeout=60, env={**os.environ, "PGPASSWORD": PASSWORD,
                                                             "SHARDCAST_PUBLISHER_CONNINFO": dsn})
        assert env_run.returncode == 0 and "warning" not in env_run.stderr, env_run.stdout + env_run.stderr
        shown = pw.run("--dry-run", "--publisher-conninfo", f"{dsn} password={PASSWORD}",
                       dsn=f"{dsn} password={PASSWORD}")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "the password in --source is visible to every user of this machine in the process list" in shown.stderr
        assert "the password in --publisher-conninfo is visible" in shown.stderr
        assert "--publisher-conninfo-file or $SHARDCAST_PUBLISHER_CONNINFO" in shown.stderr
        assert PASSWORD not in shown.stdout + shown.stderr
        malformed = pw.run("--publisher-conninfo", f"{dsn} password=Sekr3t {PASSWORD}")
        assert malformed.returncode == 2, malformed.stdout + malformed.stderr
        assert "Sekr3t" not in malformed.stdout + malformed.stderr
        finished = pw.run("finish", dsn=f"{dsn} password={PASSWORD}")
        assert finished.returncode == 0, finished.stdout + finished.stderr
        assert PASSWORD not in finished.stdout + finished.stderr and "visible to every user" in finished.stderr
    finally:
        with open(hba, "w") as f:
            f.write(original)
        with source.connect(DB) as src:
            src.execute("SELECT pg_reload_conf()")


def test_a_printed_conninfo_never_shows_its_password():
    import sys
    sys.path.insert(0, str(ROOT / "driver"))
    from shardcast_driver.common import mask_passwords
    text = (f"host=h password={PASSWORD} port=5 | password = '{PASSWORD} x\\' y' | "
            f"postgresql://u:{PASSWORD}@h/db | password='{PASSWORD}")
    masked = mask_passwords(text)
    assert "Sekr3t" not in masked and masked.count("****") == 4 and "port=5" in masked, masked


# --- (14) --follow once finish took the replication down ---------------------------------------

def test_a_follower_stops_cleanly_once_finish_took_its_replication_down(pair, lane):
    source, replica = pair
    ffin = lane("t_ffin", "CREATE TABLE t_ffin_a (id int PRIMARY KEY); INSERT INTO t_ffin_a VALUES (1), (2)")
    task = ffin.enqueue("t_ffin_a")
    with ffin.started("--worker", "w-ffin", "--follow") as driver:
        wait_for("the follower to sync t_ffin_a", lambda: ffin.state(task)[0] == "done", timeout=60)
        finished = ffin.run_ok("finish")
        out = output(driver, timeout=30)
    assert driver.returncode == 0, out
    # Whichever it noticed first: finish drops the subscription, then the publication.
    assert ("publication shardcast_t_ffin is gone from the source" in out
            or "subscription shardcast_t_ffin is gone from node t_ffin" in out), out
    assert "nothing left to serve" in out and "exit 0: nothing left to serve" in out
    # It created nothing again behind finish's back.
    with source.connect(DB) as src, replica.connect(DB) as rep:
        assert one(src, "SELECT count(*) FROM pg_publication WHERE pubname = 'shardcast_t_ffin'") == 0
        assert one(rep, "SELECT count(*) FROM pg_subscription WHERE subname = 'shardcast_t_ffin'") == 0
    # Started again (a service manager's Restart=, the next one-shot run): finish disabled the
    # node, and the driver sets up nothing for it.
    assert "t_ffin: disabled in shardcast.nodes" in finished.stdout
    again = ffin.run("--follow", timeout=60)
    assert again.returncode == 2, again.stdout + again.stderr
    assert "node t_ffin is disabled" in again.stderr
    assert "SELECT shardcast.alter_node('t_ffin', enabled => true)" in again.stderr
    with source.connect(DB) as src, replica.connect(DB) as rep:
        assert one(src, "SELECT count(*) FROM pg_publication WHERE pubname = 'shardcast_t_ffin'") == 0
        assert one(rep, "SELECT count(*) FROM pg_subscription WHERE subname = 'shardcast_t_ffin'") == 0
        assert one(src, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'shardcast_t_ffin'") == 0


# --- (15) hints are SQL that runs, whatever the names ------------------------------------------

def test_the_retry_hint_quotes_names_that_hold_quotes(pair, lane, monkeypatch):
    import sys
    sys.path.insert(0, str(ROOT / "driver"))
    from shardcast_driver import common
    source, _ = pair
    node = lane("t_q'node").node
    with source.connect(DB) as src:
        src.execute('CREATE TABLE "t_q it\'s" (id int PRIMARY KEY)')
        shard = one(src, "SELECT format('%%I.%%I', 'public', 't_q it''s')")
        # The hint of an extension without retry_task: enqueue(shard, node) as literals.
        monkeypatch.setattr(common, "has_function", lambda conn, signature: False)
        hint = common.retry_hint(src, 1, shard, node)
        with src.transaction() as tx:
            task = one(src, hint)
            assert one(src, "SELECT node FROM shardcast.replication_tasks WHERE task_id = %s", task) == node
            raise psycopg.Rollback(tx)


# --- the lost-lease stop path: a copy that is someone else's now is left alone --------------------

def test_a_driver_whose_lease_was_taken_over_leaves_that_copy_alone_when_it_stops(pair, lane):
    source, replica = pair
    lost = lane("t_lost")
    lost.slow("t_lost_big")
    task = lost.enqueue("t_lost_big")
    with lost.started("--worker", "w-lost") as driver:
        wait_for("the node to copy t_lost_big", lambda: copying(replica, "t_lost_big") > 0, timeout=60)
        # The driver freezes past its lease (4 s); another worker takes the task over.
        os.kill(driver.pid, signal.SIGSTOP)
        time.sleep(5.5)
        with source.connect(DB) as src:
            assert one(src, "SELECT task_id FROM shardcast.claim_task('thief', %s)", lost.node) == task
        # It wakes up and is told to stop at once: its copy is the thief's now.
        os.kill(driver.pid, signal.SIGCONT)
        driver.send_signal(signal.SIGINT)
        out = output(driver, timeout=30)
    assert driver.returncode == 130, out
    assert "lost     public.t_lost_big -> t_lost" in out, out
    assert "released public.t_lost_big" not in out
    assert lost.state(task)[2] == "thief"
    # Still published, still in the node's subscription, its copy going on: nothing stopped it.
    with source.connect(DB) as src, replica.connect(DB) as rep:
        assert one(src, "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'shardcast_t_lost'"
                        " AND tablename = 't_lost_big'") == 1
        assert one(rep, "SELECT srsubstate FROM pg_subscription_rel WHERE srrelid = 't_lost_big'::regclass") \
            in ("d", "f", "s", "r")
        assert one(src, "SELECT count(*) FROM shardcast.completion_log WHERE task_id = %s", task) == 0
        # Its rows were not truncated either: the copy goes on, or has ended with every row.
        assert copying(replica, "t_lost_big") > 0 or one(rep, "SELECT count(*) FROM t_lost_big") == 40000


# --- the swap refusal: a table of the same name that is not the published one --------------------

def test_a_recreated_table_is_refused_not_swapped_for_the_replica_of_the_old_one(pair, lane):
    source, replica = pair
    swap = lane("t_swap", "CREATE TABLE t_swap_a (id int PRIMARY KEY, v text);"
                          "INSERT INTO t_swap_a SELECT i, 'old ' || i FROM generate_series(1, 20) i")
    first = swap.enqueue("t_swap_a")
    swap.run_ok()
    assert swap.state(first)[0] == "done"
    source.wait_for_subscribers(DB)
    with source.connect(DB) as src:
        # The table is renamed and another one takes its name, with other rows.
        src.execute("ALTER TABLE t_swap_a RENAME TO t_swap_a_old;"
                    "CREATE TABLE t_swap_a (id int PRIMARY KEY, v text);"
                    "INSERT INTO t_swap_a SELECT i, 'new ' || i FROM generate_series(1, 5) i")
        old_oid = one(src, "SELECT 't_swap_a_old'::regclass::oid")
    second = swap.enqueue("t_swap_a")
    refused = swap.run("--retry-delay", "0")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert ("public.t_swap_a on t_swap is the replica of another table of that name (renamed or re-created on the "
            "source since)") in refused.stdout
    assert "already on t_swap" not in refused.stdout
    state, _, _ = swap.state(second)
    assert state in ("failed", "queued"), state
    with source.connect(DB) as src, replica.connect(DB) as rep:
        # The replica keeps the old table's rows; the publication still holds the old table only.
        assert one(rep, "SELECT count(*) FROM t_swap_a WHERE v LIKE 'old %%'") == 20
        assert one(rep, "SELECT count(*) FROM t_swap_a WHERE v LIKE 'new %%'") == 0
        assert [r[0] for r in src.execute(
            "SELECT r.prrelid::oid FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid"
            " WHERE p.pubname = 'shardcast_t_swap'").fetchall()] == [old_oid]
        assert one(src, "SELECT count(*) FROM shardcast.completion_log WHERE task_id = %s AND succeeded", second) == 0


# --- a bounded wait behind another (dead) driver's lease ------------------------------------------

def test_a_run_behind_a_dead_drivers_lease_waits_out_loud_and_gives_up_after_the_wait_timeout(pair, lane):
    source, _ = pair
    # One slot on the node: the dead driver's claim takes it, the other task waits behind it.
    wait = lane("t_wait", "CREATE TABLE t_wait_a (id int PRIMARY KEY); CREATE TABLE t_wait_b (id int PRIMARY KEY)",
                max_concurrent=1)
    held = wait.enqueue("t_wait_a")
    behind = wait.enqueue("t_wait_b")
    with source.connect(DB) as src:
        src.execute("SET shardcast.claim_lease = '10min'")  # a dead driver with a long lease
        assert one(src, "SELECT task_id FROM shardcast.claim_task('ghost', 't_wait')") == held
    started = time.monotonic()
    waited = wait.run("--wait-timeout", "3", timeout=60)
    took = time.monotonic() - started
    assert waited.returncode == 4, waited.stdout + waited.stderr
    assert took < 30, took
    out = waited.stdout
    assert f"task {held} (public.t_wait_a) on node t_wait is held by worker ghost until" in out
    assert "; waiting (the task is this run's if that lease runs out); giving up in 3 s (--wait-timeout)" in out
    assert "1 queued task(s) for node t_wait wait for one of its 1 slot(s)" in out
    assert "exit 4: gave up after waiting 3 s (--wait-timeout) for 1 task(s) held by other drivers" in out
    assert wait.state(behind) == ("queued", 0, None)
    # --no-wait: at once, as before.
    no_wait = wait.run("--no-wait", timeout=60)
    assert no_wait.returncode == 4, no_wait.stdout + no_wait.stderr
    with source.connect(DB) as src:
        src.execute("SELECT shardcast.release_task(%s, 'ghost')", [held])
    # Once the lease is gone, the run does the work.
    wait.run_ok("--wait-timeout", "3")
    assert wait.state(held)[0] == wait.state(behind)[0] == "done"


@pytest.mark.parametrize("args", [["--wait-timeout", "-1"], ["--wait-timeout", "soon"]])
def test_wait_timeout_usage(args):
    done = subprocess.run(driver_command("--source", "host=127.0.0.1 port=1", *args), capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2, done


# --- a node disabled during a one-shot run: its claimed task finishes, the run does not hang -------

def test_a_node_disabled_during_a_run_finishes_what_it_claimed_and_the_run_exits_4(lane):
    dis = lane("t_dis", "CREATE TABLE t_dis_b (id int PRIMARY KEY)", max_concurrent=1)
    dis.slow("t_dis_a", rows=8000)  # about 2 s to copy
    first = dis.enqueue("t_dis_a")
    second = dis.enqueue("t_dis_b")
    with dis.started("--worker", "w-dis") as driver:
        wait_for("the driver to claim t_dis_a", lambda: dis.state(first)[0] == "claimed", timeout=30)
        dis.sql("SELECT shardcast.alter_node('t_dis', enabled => false)")
        out = output(driver)
    assert driver.returncode == 4, out
    assert "node t_dis is disabled (shardcast.alter_node): no more claims for it in this run" in out
    assert "exit 4: 1 task(s) still open for disabled node(s) t_dis" in out
    assert dis.state(first)[0] == "done"
    assert dis.state(second) == ("queued", 0, None)
    dis.sql("SELECT shardcast.alter_node('t_dis', enabled => true)")
    dis.run_ok()
    assert dis.state(second)[0] == "done"


# --- a second review: the findings of the review of the changes above -----------------------------

def test_a_reader_of_a_stopped_copy_delays_its_truncate_but_never_leaves_the_task_stuck(pair, lane):
    """(1) Stopping a copy empties the rows it committed; a reader's lock on the table makes the
    TRUNCATE wait (a second at a time, up to 6 × --lock-timeout), and rows left when that runs
    out are emptied by the next sync, not refused as someone else's."""
    source, replica = pair
    trunc = lane("t_trunc")
    trunc.slow("t_trunc_big")
    task = trunc.enqueue("t_trunc_big")

    def stop_behind_a_reader(hold: float) -> str:
        with trunc.started("--worker", "w-trunc", "--lock-timeout", "1") as driver, \
                contextlib.closing(replica.connect(DB, autocommit=False)) as reader:
            wait_for("the node to copy t_trunc_big", lambda: copying(replica, "t_trunc_big") > 0, timeout=60)
            with replica.connect(DB) as rep:
                # A row of the copy's table committed on the node (as a finished copy's rows are),
                # and a reader of the table.
                rep.execute("INSERT INTO t_trunc_big VALUES (-1, 'committed')")
            reader.execute("SELECT count(*) FROM t_trunc_big")
            driver.send_signal(signal.SIGINT)
            wait_for("the TRUNCATE to wait for the reader", lambda: waiting_for_lock(replica, "t_trunc_big"),
                     timeout=30, every=0.05)
            time.sleep(hold)
            reader.rollback()
            out = output(driver)
        assert driver.returncode == 130, out
        assert "released public.t_trunc_big" in out
        assert trunc.state(task) == ("queued", 0, None)
        return out

    # Longer than --lock-timeout, shorter than 6 × it: the TRUNCATE waits the reader out.
    out = stop_behind_a_reader(2.5)
    assert "emptying the stopped copy waits for a lock that another session holds there" in out
    with replica.connect(DB) as rep:
        assert one(rep, "SELECT count(*) FROM t_trunc_big") == 0

    # Longer than 6 × --lock-timeout: the rows stay, marked, and the next sync empties them.
    out = stop_behind_a_reader(8)
    assert "its rows are left, marked: the next sync of the table empties them first" in out
    with replica.connect(DB) as rep:
        assert one(rep, "SELECT count(*) FROM t_trunc_big") > 0
    unslow(replica, "t_trunc_big")
    done = trunc.run_ok("--lock-timeout", "1")
    assert "emptied  public.t_trunc_big on t_trunc: the rows of a copy stopped earlier" in done.stdout
    assert "FAILED" not in done.stdout
    assert trunc.state(task)[:2] == ("done", 0)
    with replica.connect(DB) as rep:
        assert one(rep, "SELECT count(*) FROM t_trunc_big") == 40000
        assert one(rep, "SELECT count(*) FROM t_trunc_big WHERE id = -1") == 0
        assert one(rep, "SELECT obj_description('t_trunc_big'::regclass, 'pg_class')") is None
    # Rows the driver did not leave are still refused, not emptied.
    with source.connect(DB) as src, replica.connect(DB) as rep:
        src.execute("CREATE TABLE t_trunc_mine (id int PRIMARY KEY)")
        rep.execute("CREATE TABLE t_trunc_mine (id int PRIMARY KEY); INSERT INTO t_trunc_mine VALUES (7)")
    trunc.enqueue("t_trunc_mine")
    refused = trunc.run("--retry-delay", "0")
    assert refused.returncode == 1 and "already has rows on t_trunc" in refused.stdout, refused.stdout
    with replica.connect(DB) as rep:
        assert one(rep, "SELECT count(*) FROM t_trunc_mine") == 1
    trunc.take_down()


def fake_slot(source, name: str) -> None:
    """A logical slot of that name in the source's database (test_decoding: it needs no publication)."""
    with source.connect(DB) as src:
        src.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", [name])


def stream_from(source, slot: str) -> subprocess.Popen:
    """A client streaming from the slot (active, with a walsender's pid), as another server's
    subscription would."""
    streamer = subprocess.Popen([source.bin("pg_recvlogical"), "--no-loop", "-d", source.dsn(DB), "-S", slot,
                                 "--start", "-f", "/dev/null"], stderr=subprocess.DEVNULL)
    with source.connect(DB) as src:
        wait_for(f"{slot} to be active", lambda: one(src, "SELECT active FROM pg_replication_slots"
                                                          " WHERE slot_name = %s", slot), timeout=20)
    return streamer


def slot_names(source) -> set[str]:
    with source.connect(DB) as src:
        return {r[0] for r in src.execute("SELECT slot_name FROM pg_replication_slots").fetchall()}


def test_finish_without_force_leaves_active_slots_that_a_node_without_its_subscription_only_noted(pair, lane):
    """(3) The node answers but has no subscription (its conninfo now names another server, say):
    the slots its publication's comment names may still stream to the old one. Inactive ones
    are its leftovers; an active one is left, and reported, unless --force."""
    source, replica = pair
    fnew = lane("t_fnew", "CREATE TABLE t_fnew_a (id int PRIMARY KEY); INSERT INTO t_fnew_a VALUES (1)")
    fnew.enqueue("t_fnew_a")
    fnew.run_ok()
    with replica.connect(DB) as rep:
        suboid, sysid = rep.execute("SELECT s.oid, (SELECT system_identifier FROM pg_control_system()) FROM"
                                    " pg_subscription s WHERE subname = 'shardcast_t_fnew'").fetchone()
        # The subscription goes from the node, its slot stays on the source (inactive).
        rep.execute("ALTER SUBSCRIPTION shardcast_t_fnew DISABLE;"
                    "ALTER SUBSCRIPTION shardcast_t_fnew SET (slot_name = NONE);"
                    "DROP SUBSCRIPTION shardcast_t_fnew")
    # A tablesync slot of the noted subscription that something still streams from.
    busy = f"pg_{suboid}_sync_4242_{sysid % 2 ** 64}"
    fake_slot(source, busy)
    streamer = stream_from(source, busy)
    try:
        started = time.monotonic()
        kept = fnew.run("finish")
        assert kept.returncode == 1, kept.stdout + kept.stderr
        assert time.monotonic() - started < 12  # no waiting for the walsender to go away
        assert f"replication slot {busy} on the source is in use (pid" in kept.stderr
        assert "finish --force drops them" in kept.stderr
        assert {busy, "shardcast_t_fnew"} <= slot_names(source)
        with source.connect(DB) as src:
            assert one(src, "SELECT active FROM pg_replication_slots WHERE slot_name = %s", busy)
            # Left in place, comment and all, for finish --force; the node enabled as it was.
            assert one(src, "SELECT count(*) FROM pg_publication WHERE pubname = 'shardcast_t_fnew'") == 1
            assert one(src, "SELECT enabled FROM shardcast.nodes WHERE node = 't_fnew'") is True
        forced = fnew.run("finish", "--force")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert not {busy, "shardcast_t_fnew"} & slot_names(source)
    finally:
        streamer.kill()
        streamer.wait()
        if busy in slot_names(source):
            with source.connect(DB) as src:
                wait_for("the streamer's walsender to go", lambda: not one(
                    src, "SELECT active FROM pg_replication_slots WHERE slot_name = %s", busy))
                src.execute("SELECT pg_drop_replication_slot(%s)", [busy])


def test_finish_force_trusts_no_comment_but_its_own_nodes_and_drops_no_other_nodes_slots(pair, lane):
    """(4) A node's name cannot forge the ids of another node's subscription in its publication's
    comment; (8) without a comment (an older driver's publication), the listed candidates leave
    out the slots other nodes' comments name, and an active one gets no drop statement; (10)
    another node's slots, active or not, survive finish --force."""
    source, replica = pair
    import sys
    sys.path.insert(0, str(ROOT / "driver"))
    from shardcast_driver.common import channel_name
    victim = lane("t_fb", "CREATE TABLE t_fb_a (id int PRIMARY KEY); INSERT INTO t_fb_a VALUES (1);"
                          "CREATE TABLE t_fa_a (id int PRIMARY KEY); INSERT INTO t_fa_a VALUES (1)")
    victim.enqueue("t_fb_a")
    victim.run_ok()
    with replica.connect(DB) as rep:
        suboid, sysid = rep.execute("SELECT s.oid, (SELECT system_identifier FROM pg_control_system()) FROM"
                                    " pg_subscription s WHERE subname = 'shardcast_t_fb'").fetchone()
    sysid %= 2 ** 64
    victims_sync = f"pg_{suboid}_sync_777_{sysid}"
    fake_slot(source, victims_sync)
    # A node whose name reads like the comment's ids of the victim's subscription.
    evil_lane = lane(f"(oid {suboid} on system {sysid}, slot shardcast_t_fb)")
    evil = evil_lane.node
    evil_lane.enqueue("t_fa_a")
    evil_lane.run_ok()
    with source.connect(DB) as src, replica.connect(DB) as rep:
        evil_channel = channel_name(evil)
        assert one(rep, "SELECT count(*) FROM pg_subscription WHERE subname = %s", evil_channel) == 1
        src.execute("SELECT shardcast.alter_node(%s, conninfo => 'host=127.0.0.1 port=1 connect_timeout=2')", [evil])
        # Gone, as far as the source can tell: the node is unreachable and its subscription streams no more.
        rep.execute(f'ALTER SUBSCRIPTION "{evil_channel}" DISABLE')
    try:
        forced = evil_lane.run("finish", "--force")
        assert forced.returncode == 3, forced.stdout + forced.stderr
        left = slot_names(source)
        assert {victims_sync, "shardcast_t_fb"} <= left, forced.stdout + forced.stderr
        assert evil_channel not in left
        with source.connect(DB) as src:
            assert one(src, "SELECT active FROM pg_replication_slots WHERE slot_name = 'shardcast_t_fb'")
            assert one(src, "SELECT count(*) FROM pg_publication WHERE pubname = 'shardcast_t_fb'") == 1
    finally:
        with replica.connect(DB) as rep:
            rep.execute(f'ALTER SUBSCRIPTION "{evil_channel}" SET (slot_name = NONE);'
                        f'DROP SUBSCRIPTION "{evil_channel}"')

    # A publication without the comment: the candidates for its node's tablesync slots.
    with source.connect(DB) as src:
        src.execute("SELECT shardcast.add_node('t_fc', 100e6, 1, 'host=127.0.0.1 port=1 connect_timeout=2')")
        src.execute("CREATE PUBLICATION shardcast_t_fc")
    idle, busy = "pg_900001_sync_1_1", "pg_900002_sync_1_1"
    fake_slot(source, idle)
    fake_slot(source, busy)
    streamer = stream_from(source, busy)
    try:
        listed = run(source, "finish", "--node", "t_fc", "--force")
        assert listed.returncode == 3, listed.stdout + listed.stderr
        assert f"replication slot {idle} on the source (inactive) may be a tablesync slot of shardcast_t_fc" \
            in listed.stderr
        assert f"SELECT pg_drop_replication_slot('{idle}')" in listed.stderr
        assert f"replication slot {busy} on the source may be a tablesync slot of shardcast_t_fc (the node cannot " \
               "tell); it is in use (pid" in listed.stderr
        assert f"pg_drop_replication_slot('{busy}')" not in listed.stderr
        assert victims_sync not in listed.stderr  # the victim's publication names it
        assert {idle, busy, victims_sync, "shardcast_t_fb"} <= slot_names(source)
    finally:
        streamer.kill()
        streamer.wait()
        with source.connect(DB) as src:
            for slot in (idle, busy, victims_sync):
                wait_for("the slot to be idle", lambda: not one(
                    src, "SELECT active FROM pg_replication_slots WHERE slot_name = %s", slot))
                src.execute("SELECT pg_drop_replication_slot(%s)", [slot])
    victim.take_down()


def test_a_failed_task_of_a_node_disabled_during_the_run_still_counts(lane):
    """(7) The summary and the exit status cover every node the run set up, also one disabled (or
    removed, or finished) meanwhile: 1 (a failed task) over 4 (tasks left for a disabled node)."""
    d7 = lane("t_d7", "CREATE TABLE t_d7_nokey (v text); CREATE TABLE t_d7_b (id int PRIMARY KEY)", max_concurrent=1)
    failed = d7.enqueue("t_d7_nokey")  # no replica identity: refused, every attempt
    first = d7.run("--retry-delay", "0")
    assert first.returncode == 1 and d7.state(failed)[0] == "failed", first.stdout + first.stderr
    d7.slow("t_d7_a", rows=8000)
    claimed = d7.enqueue("t_d7_a")
    d7.enqueue("t_d7_b")
    with d7.started("--worker", "w-d7") as driver:
        wait_for("the driver to claim t_d7_a", lambda: d7.state(claimed)[0] == "claimed", timeout=30)
        d7.sql("SELECT shardcast.alter_node('t_d7', enabled => false)")
        out = output(driver)
    assert driver.returncode == 1, out
    assert "exit 1: 1 task(s) failed in earlier runs" in out
    assert "public.t_d7_nokey" in out.split("summary:")[1]
    assert d7.state(claimed)[0] == "done"
    d7.take_down()


def test_the_subscription_check_connects_with_the_drivers_timeouts(pair):
    """(6) The claim loop's check of a node's subscription: keepalives, the conninfo's own
    options kept, and a statement timeout of 5 s."""
    import sys
    sys.path.insert(0, str(ROOT / "driver"))
    from shardcast_driver.common import connect
    _, replica = pair
    with connect(replica.dsn(DB) + " options='-c work_mem=7MB'", statement_timeout_ms=5000) as conn:
        assert one(conn, "SHOW statement_timeout") == "5s"
        assert one(conn, "SHOW work_mem") == "7MB"
        from psycopg.conninfo import conninfo_to_dict
        used = conninfo_to_dict(conn.info.dsn)
        assert used["keepalives_idle"] == "30" and used["tcp_user_timeout"] == "60000", used


def test_one_missing_subscription_answer_does_not_drop_a_node_two_in_a_row_do(pair, lane, monkeypatch):
    """(6) The check of a node's subscription drops the node only after two answers in a row
    that it is missing (an unreachable node counts as neither)."""
    import argparse
    import sys
    sys.path.insert(0, str(ROOT / "driver"))
    from shardcast_driver.claims import Driver
    from shardcast_driver.common import Node
    source, replica = pair
    lane("t_miss")
    with source.connect(DB) as src:
        src.execute("CREATE PUBLICATION shardcast_t_miss")
        try:
            said = []
            driver = Driver(argparse.Namespace(follow=True, worker="w-miss"))
            driver.report = type("Say", (), {"say": lambda self, line, error=False: said.append(line)})()
            driver.nodes = [Node("t_miss", replica.dsn(DB), 1)]
            answers = iter([False, None, False, False])
            monkeypatch.setattr(Driver, "subscribed", staticmethod(lambda node: next(answers)))
            for expected in (1, 1, 1, 0):
                driver.next_check = driver.next_subscription_check = 0.0
                driver.check_nodes(src)
                assert len(driver.nodes) == expected, said
            assert said == ["subscription shardcast_t_miss is gone from node t_miss (shardcast-driver finish took the "
                            "replication down?): no more claims for node t_miss"], said
        finally:
            src.execute("DROP PUBLICATION shardcast_t_miss")
