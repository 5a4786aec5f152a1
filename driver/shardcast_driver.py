#!/usr/bin/env python3
"""shardcast-driver: copies shards to their destinations hot-first with native logical replication.

It talks to shardcast through SQL only. For every enabled node with a conninfo it keeps one
publication on the source and one subscription on the node, both named `shardcast_<node>`. For
every task it claims (`shardcast.claim_task`, in the plan's order, at most `max_concurrent` per
node and `shardcast.plan_workers` in all), it:

  1. creates the table on the node from the source's definition when it is missing,
  2. adds the table to the node's publication (`ALTER PUBLICATION ... ADD TABLE ONLY`),
  3. refreshes the node's subscription (`ALTER SUBSCRIPTION ... REFRESH PUBLICATION`), which
     starts PostgreSQL's own table synchronisation (initial COPY, then catch-up),
  4. waits for the table to be ready in the node's `pg_subscription_rel`, heartbeating its lease,
  5. completes the task (`shardcast.complete_task`), which notifies `shardcast_completion`.

Every step is idempotent, so a task whose driver died is finished by the next claimer without
copying anything twice. Ctrl-C (or SIGTERM) stops claiming and releases the tasks in flight
(`shardcast.release_task`); a second Ctrl-C quits at once and leaves them to their leases.

    python3 driver/shardcast_driver.py --source 'host=pub dbname=app' [--node replica-a] [--follow]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


@dataclass
class Node:
    name: str
    conninfo: str
    max_concurrent: int
    # After a failed sync, no claims for this node until then (time.monotonic()), so that a node
    # that is briefly down does not use up every task's attempts in a second.
    resting_until: float = 0.0
    # ALTER SUBSCRIPTION takes the subscription's lock anyway; one refresh at a time per node
    # keeps concurrent syncs from waiting on each other inside the server.
    refresh_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def channel(self) -> str:
        """The publication, subscription and slot name for this node: a plain identifier."""
        plain = re.sub(r"[^a-z0-9_]", "_", self.name.lower())[:40]
        if plain != self.name:
            plain += "_" + hashlib.md5(self.name.encode()).hexdigest()[:8]
        return f"shardcast_{plain}"


@dataclass
class Task:
    task_id: int
    shard: str  # quoted qualified name, as claim_task returns it
    node: Node
    size_bytes: int
    priority_weight: int
    prefetch: bool
    attempts: int
    lost: str | None = None  # why the lease was lost, when a heartbeat found it gone


class SyncError(Exception):
    """A task that cannot be synced; the message becomes the task's failure detail."""


class LeaseLost(Exception):
    """The task's lease expired and it went back to the queue (or to another claimer)."""


class Progress:
    """One line per finished task and a running total, safe to call from every sync thread."""

    def __init__(self, total_tasks: int, total_weight: int, out=sys.stdout):
        self.lock = threading.Lock()
        self.total_tasks = max(total_tasks, 1)
        self.total_weight = max(total_weight, 1)
        self.done_tasks = self.done_bytes = self.done_weight = self.failed = 0
        self.out = out

    def say(self, line: str) -> None:
        with self.lock:
            print(line, file=self.out, flush=True)

    def finished(self, task: Task, seconds: float, error: str | None) -> None:
        with self.lock:
            if error is None:
                self.done_tasks += 1
                self.done_bytes += task.size_bytes
                self.done_weight += task.priority_weight
                outcome = "ready "
            else:
                self.failed += 1
                outcome = "FAILED"
            lane = "express" if task.prefetch else ""
            print(f"{outcome} {task.shard:<32} -> {task.node.name:<14} weight {task.priority_weight:>4} "
                  f"{pretty_bytes(task.size_bytes):>9} {seconds:6.1f} s {lane:<7} | "
                  f"{self.done_tasks}/{self.total_tasks} tasks, {pretty_bytes(self.done_bytes)}, "
                  f"{100 * self.done_weight / self.total_weight:.0f}% of the priority weight"
                  + (f"  ({error})" if error else ""), file=self.out, flush=True)


def pretty_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def connect(conninfo: str) -> psycopg.Connection:
    return psycopg.connect(conninfo, autocommit=True, application_name="shardcast-driver")


def ensure_channel(source: psycopg.Connection, node: Node, publisher_conninfo: str) -> None:
    """Creates the node's publication on the source and its subscription on the node, if missing."""
    if not source.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [node.channel]).fetchone():
        try:
            source.execute(sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(node.channel)))
        except psycopg.errors.DuplicateObject:
            pass  # another driver created it meanwhile
    with connect(node.conninfo) as dest:
        exists = dest.execute(
            "SELECT 1 FROM pg_subscription WHERE subname = %s"
            " AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [node.channel]).fetchone()
        if not exists:
            try:
                dest.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}").format(
                    sql.Identifier(node.channel), sql.Literal(publisher_conninfo), sql.Identifier(node.channel)))
            except psycopg.errors.DuplicateObject:
                pass  # another driver created it meanwhile


# Read with an empty search_path, so that every type, function and collation outside
# pg_catalog comes out schema-qualified and means the same on the destination.
TABLE_DEFINITION = """
SELECT n.nspname, c.relname, c.relreplident,
       (SELECT string_agg(format('%%I %%s%%s%%s%%s', a.attname, format_type(a.atttypid, a.atttypmod),
                   CASE WHEN a.attcollation <> t.typcollation
                        THEN format(' COLLATE %%I.%%I', cn.nspname, co.collname) ELSE '' END,
                   CASE WHEN a.attgenerated = 's'
                        THEN format(' GENERATED ALWAYS AS (%%s) STORED', pg_get_expr(d.adbin, d.adrelid)) ELSE '' END,
                   CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END), ', ' ORDER BY a.attnum)
        FROM pg_attribute a
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_collation co ON co.oid = a.attcollation
        LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p'),
       i.indisprimary, pg_get_indexdef(i.indexrelid), ic.relname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisreplident
LEFT JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE c.oid = %s::regclass
"""


def create_table_statements(source: psycopg.Connection, shard: str) -> list[sql.Composable]:
    """The statements that create `shard` on a destination: columns, types, collations, NOT NULL,
    generated columns, primary key and replica identity. Foreign keys, other indexes, defaults
    and triggers are left out: logical replication's apply does not need them, and foreign keys
    would tie a table's sync to the tables it references."""
    if source.execute("SELECT to_regclass(%s)", [shard]).fetchone()[0] is None:
        raise SyncError(f"{shard} no longer exists on the source")
    with source.transaction():
        source.execute("SET LOCAL search_path = ''")
        row = source.execute(TABLE_DEFINITION, [shard]).fetchone()
    schema, table, replident, columns, primary_key, identity_is_primary, identity_index, identity_name = row
    if replident == "n" or (replident == "d" and primary_key is None):
        # Adding it to a publication would make the source refuse UPDATE and DELETE on it.
        raise SyncError(f"{shard} has no replica identity; give it a primary key or "
                        f"ALTER TABLE {shard} REPLICA IDENTITY FULL, then retry")
    qualified = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    body = columns or ""
    if primary_key:
        body += f", {primary_key}"
    statements: list[sql.Composable] = [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)),
        sql.SQL("CREATE TABLE {} ({})").format(qualified, sql.SQL(body)),
    ]
    if replident == "f":
        statements.append(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(qualified))
    elif replident == "i" and identity_index and not identity_is_primary:
        # The primary key's index, when it is the identity, comes with the primary key.
        statements.append(sql.SQL(identity_index))
        statements.append(sql.SQL("ALTER TABLE {} REPLICA IDENTITY USING INDEX {}").format(
            qualified, sql.Identifier(identity_name)))
    return statements


class Driver:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.worker = args.worker
        self.stopping = threading.Event()
        self.quit_now = False
        self.threads: list[threading.Thread] = []
        self.nodes: list[Node] = []
        self.progress: Progress | None = None
        self.failed = False
        self.in_flight: dict[int, Task] = {}
        self.done = threading.Event()
        self.slot_freed = threading.Event()

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        try:
            status = self.serve()
        except psycopg.Error as error:
            # The source went away: stop, and let the syncs in flight hand their tasks back if
            # they still can (their leases cover them otherwise).
            print(f"shardcast-driver: {str(error).strip()}", file=sys.stderr, flush=True)
            self.stopping.set()
            status = EXIT_FAILED
        for thread in self.threads:
            while thread.is_alive() and not self.quit_now:
                thread.join(0.2)
        self.done.set()
        if status == EXIT_OK and self.failed:
            return EXIT_FAILED
        return status

    def serve(self) -> int:
        with connect(self.args.source) as source:
            nodes = self.load_nodes(source)
            for node in nodes:
                try:
                    ensure_channel(source, node, self.args.publisher_conninfo or self.args.source)
                    self.nodes.append(node)
                except psycopg.Error as error:
                    self.failed = True
                    print(f"node {node.name}: cannot set up {node.channel}, skipped: {str(error).strip()}",
                          file=sys.stderr, flush=True)
            if not self.nodes:
                print("no enabled node with a conninfo that works: see shardcast.nodes and shardcast.add_node",
                      file=sys.stderr)
                return EXIT_FAILED
            self.lease, plan_workers = source.execute(
                "SELECT extract(epoch FROM current_setting('shardcast.claim_lease')::interval)::float8,"
                "       current_setting('shardcast.plan_workers')::int").fetchone()
            self.workers = self.args.workers or plan_workers
            tasks, weight = source.execute(
                "SELECT count(*), coalesce(sum(priority_weight), 0) FROM shardcast.replication_manifest"
                " WHERE destination = ANY(%s)", [[n.name for n in self.nodes]]).fetchone()
            self.progress = Progress(tasks, weight)
            heartbeats = threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True)
            heartbeats.start()
            self.progress.say(f"shardcast-driver {self.worker}: {tasks} open tasks, up to {self.workers} syncs at "
                              "once: " + ", ".join(f"{n.name} ({n.max_concurrent} at once)" for n in self.nodes))
            while not self.stopping.is_set():
                claimed = self.claim_what_the_plan_allows(source)
                if not claimed and not self.busy() and not self.args.follow and self.queue_is_empty(source):
                    break
                # A sync that finishes frees its slot at once; otherwise poll for new tasks.
                self.slot_freed.wait(self.args.poll)
                self.slot_freed.clear()
        return EXIT_INTERRUPTED if self.stopping.is_set() else EXIT_OK

    def load_nodes(self, source: psycopg.Connection) -> list[Node]:
        rows = source.execute(
            "SELECT node, conninfo, max_concurrent FROM shardcast.nodes"
            " WHERE enabled AND conninfo IS NOT NULL AND (%s::text[] IS NULL OR node = ANY(%s))"
            " ORDER BY node", [self.args.node, self.args.node]).fetchall()
        return [Node(name, conninfo, max_concurrent) for name, conninfo, max_concurrent in rows]

    def syncing_on(self, node: Node) -> int:
        return sum(1 for task in list(self.in_flight.values()) if task.node is node)

    def busy(self) -> bool:
        return bool(self.in_flight)

    def queue_is_empty(self, source: psycopg.Connection) -> bool:
        """No task left for our nodes, not even one claimed by a driver that may have died: its
        lease will expire and a claim here will take it over."""
        return not source.execute(
            "SELECT 1 FROM shardcast.replication_manifest WHERE destination = ANY(%s) LIMIT 1",
            [[n.name for n in self.nodes]]).fetchone()

    def claim_what_the_plan_allows(self, source: psycopg.Connection) -> int:
        """Claims tasks in the plan's order across our nodes, while we and their nodes have room."""
        claimed = 0
        full: set[str] = set()
        while len(self.in_flight) < self.workers and not self.stopping.is_set():
            now = time.monotonic()
            open_nodes = [n for n in self.nodes if self.syncing_on(n) < n.max_concurrent
                          and n.resting_until <= now and n.name not in full]
            if not open_nodes:
                break
            # The node whose next task comes first in the stored dispatch order. With nothing
            # queued, a claim still returns tasks whose lease expired to the queue: try each node.
            next_node = source.execute(
                "SELECT node FROM shardcast.replication_tasks WHERE state = 'queued' AND node = ANY(%s)"
                " ORDER BY dispatch_rank, task_id LIMIT 1", [[n.name for n in open_nodes]]).fetchone()
            candidates = [n for n in open_nodes if n.name == next_node[0]] if next_node else open_nodes
            row, node = None, None
            for node in candidates:
                row = source.execute(
                    "SELECT task_id, qualified_name, size_bytes, priority_weight, prefetch, attempts"
                    " FROM shardcast.claim_task(%s, %s)", [self.worker, node.name]).fetchone()
                if row is not None:
                    break
                full.add(node.name)  # at its limit counting other drivers' claims, or taken meanwhile
            if row is None:
                if next_node is None:
                    break
                continue
            task = Task(row[0], row[1], node, row[2], row[3], row[4], row[5])
            self.in_flight[task.task_id] = task
            thread = threading.Thread(target=self.sync, args=(task,), name=f"sync-{task.task_id}")
            self.threads.append(thread)
            thread.start()
            claimed += 1
        self.threads = [t for t in self.threads if t.is_alive()]
        return claimed

    # --- one task -------------------------------------------------------------------------

    def sync(self, task: Task) -> None:
        started = time.monotonic()
        try:
            with connect(self.args.source) as source:
                try:
                    if self.replicate(task, source):
                        source.execute("SELECT shardcast.complete_task(%s, true, %s, %s)",
                                       [task.task_id, f"ready on {task.node.name} via {task.node.channel}",
                                        self.worker])
                        self.progress.finished(task, time.monotonic() - started, None)
                    elif not self.quit_now:
                        source.execute("SELECT shardcast.release_task(%s, %s)", [task.task_id, self.worker])
                        self.progress.say(f"released {task.shard} -> {task.node.name} (stopping)")
                except (LeaseLost, psycopg.errors.ObjectNotInPrerequisiteState) as error:
                    # The lease expired and the task is someone else's now: leave it to them.
                    self.progress.say(f"lost {task.shard} -> {task.node.name}: {error}")
                except (SyncError, psycopg.Error) as error:
                    self.failed = True
                    task.node.resting_until = time.monotonic() + self.args.retry_delay
                    detail = str(error).strip().splitlines()[0]
                    source.execute("SELECT shardcast.complete_task(%s, false, %s, %s)",
                                   [task.task_id, detail, self.worker])
                    self.progress.finished(task, time.monotonic() - started, detail)
        except psycopg.Error as error:
            # Could not even report: the lease returns the task to the queue.
            self.failed = True
            self.progress.say(f"error {task.shard} -> {task.node.name}: {error}; its lease will expire")
        finally:
            self.in_flight.pop(task.task_id, None)
            self.slot_freed.set()

    def replicate(self, task: Task, source: psycopg.Connection) -> bool:
        """Makes the destination copy the shard; True once it is ready there, False when stopping."""
        try:
            dest = connect(task.node.conninfo)
        except psycopg.OperationalError as error:
            raise SyncError(f"cannot connect to {task.node.name}: {str(error).strip()}") from error
        with dest:
            return self.replicate_to(task, source, dest)

    def replicate_to(self, task: Task, source: psycopg.Connection, dest: psycopg.Connection) -> bool:
        statements = create_table_statements(source, task.shard)  # also refuses a table without identity
        if dest.execute("SELECT to_regclass(%s)", [task.shard]).fetchone()[0] is None:
            try:
                self.create_table(dest, statements)
            except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
                # Another sync created the same new schema at the same moment: it is there now.
                self.create_table(dest, statements)
        elif self.subscription_state(task, dest) is None and dest.execute(
                sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.SQL(task.shard))).fetchone()[0]:
            # The initial copy would collide with these rows and retry for ever.
            raise SyncError(f"{task.shard} already has rows on {task.node.name}; empty it (or drop it) and retry")
        self.add_to_publication(task, source)
        with task.node.refresh_lock:
            dest.execute(sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION").format(
                sql.Identifier(task.node.channel)))
        return self.wait_until_ready(task, source, dest)

    def add_to_publication(self, task: Task, source: psycopg.Connection) -> None:
        published = source.execute(
            "SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid"
            " WHERE p.pubname = %s AND r.prrelid = to_regclass(%s)", [task.node.channel, task.shard]).fetchone()
        if published:
            return
        try:
            source.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE ONLY {}").format(
                sql.Identifier(task.node.channel), sql.SQL(task.shard)))
        except psycopg.errors.DuplicateObject:
            pass  # another driver added it meanwhile

    def heartbeat(self) -> None:
        """Renews the lease of every task in flight, every third of a lease, from a connection
        of its own: a sync may block for long in the server (a lock on its table, say), and its
        lease must not expire for that."""
        source = None
        while not self.done.wait(self.lease / 3):
            try:
                source = source if source is not None and not source.closed else connect(self.args.source)
                for task in list(self.in_flight.values()):
                    try:
                        source.execute("SELECT shardcast.heartbeat(%s, %s)", [task.task_id, self.worker])
                    except psycopg.errors.ObjectNotInPrerequisiteState as error:
                        task.lost = str(error).strip()
                    except psycopg.Error as error:
                        if source.closed or source.broken:
                            raise
                        self.progress.say(f"heartbeat of {task.shard}: {str(error).strip()}")
            except psycopg.Error as error:
                # Connect again at the next beat; a lease lasts three beats.
                self.progress.say(f"heartbeats: {str(error).strip()}; retrying")
                if source is not None:
                    source.close()
                source = None
        if source is not None:
            source.close()

    @staticmethod
    def create_table(dest: psycopg.Connection, statements: list[sql.Composable]) -> None:
        with dest.transaction():
            for statement in statements:
                dest.execute(statement)

    @staticmethod
    def subscription_state(task: Task, dest: psycopg.Connection) -> str | None:
        """The table's state in the node's subscription (`r` = ready), None when it is not in it."""
        row = dest.execute(
            "SELECT r.srsubstate FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid"
            " WHERE s.subname = %s AND r.srrelid = to_regclass(%s)", [task.node.channel, task.shard]).fetchone()
        return row[0] if row else None

    def wait_until_ready(self, task: Task, source: psycopg.Connection, dest: psycopg.Connection) -> bool:
        deadline = time.monotonic() + self.args.sync_timeout
        missing_since = None
        while True:
            state = self.subscription_state(task, dest)
            if state == "r":
                return True
            if state is None:
                # The refresh ran before the publication change was visible; run it again.
                missing_since = missing_since or time.monotonic()
                if time.monotonic() - missing_since > 2:
                    with task.node.refresh_lock:
                        dest.execute(sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION").format(
                            sql.Identifier(task.node.channel)))
                    missing_since = None
            if self.stopping.is_set():
                return False
            if task.lost:
                raise LeaseLost(task.lost)
            if time.monotonic() > deadline:
                raise SyncError(f"not ready after {self.args.sync_timeout:.0f} s (state {state or 'missing'})")
            self.stopping.wait(self.args.poll)

    # --- signals --------------------------------------------------------------------------

    def interrupt(self, signum, frame) -> None:
        if self.stopping.is_set():
            self.quit_now = True
            os._exit(EXIT_INTERRUPTED)
        self.stopping.set()
        self.slot_freed.set()
        print(f"\nstopping: releasing {len(self.in_flight)} task(s) in flight (again to quit now and leave them "
              "to their leases)", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="conninfo of the database where shardcast runs")
    parser.add_argument("--publisher-conninfo",
                        help="conninfo the subscribers use to reach the source (default: --source)")
    parser.add_argument("--node", action="append", help="only this node (repeatable; default: every "
                        "enabled node with a conninfo)")
    parser.add_argument("--worker", default=f"driver-{os.uname().nodename}-{os.getpid()}",
                        help="the name claims are made under")
    parser.add_argument("--workers", type=int, help="syncs at once over all nodes (default: the plan's, "
                        "shardcast.plan_workers); each node also keeps to its max_concurrent")
    parser.add_argument("--follow", action="store_true", help="keep waiting for new tasks instead of "
                        "exiting when the queue is empty")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between polls (default 0.5)")
    parser.add_argument("--retry-delay", type=float, default=5.0,
                        help="seconds without claims for a node after one of its syncs failed (default 5)")
    parser.add_argument("--sync-timeout", type=float, default=3600.0,
                        help="seconds a table may take to become ready before its task fails")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    driver = Driver(parse_args(argv))
    signal.signal(signal.SIGINT, driver.interrupt)
    signal.signal(signal.SIGTERM, driver.interrupt)
    return driver.run()


if __name__ == "__main__":
    sys.exit(main())
