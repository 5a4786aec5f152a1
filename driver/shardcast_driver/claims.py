"""The claim loop: claims tasks in the plan's order (`shardcast.claim_task`, at most
`max_concurrent` per node and `--workers` / `shardcast.plan_workers` in all), syncs each in a
thread of its own (sync.py), heartbeats their leases, completes or releases them, and says why it
waits when other drivers hold the tasks that are left."""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time

import psycopg

from . import __version__
from .common import (EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_OK, EXIT_OPEN, EXIT_SIGINT, EXIT_SIGTERM, LeaseLost, Node,
                     EXIT_USAGE, Out, SetupError, SyncError, Task, connect, disabled_hint, first_line, has_function,
                     held_by_others, iso, load_nodes, manifest, MANIFEST_0_1, retry_hint, still_failed)
from .privileges import node_problems, source_problems
from .report import Report
from .schema import PgDump
from .sync import ALREADY, COPIED, Syncer, ensure_channel


class Driver(Syncer):
    def __init__(self, args: argparse.Namespace, out: Out | None = None):
        self.args = args
        self.worker = args.worker
        self.out = out or Out()
        self.stopping = threading.Event()
        self.stop_signal: int | None = None
        self.quit_now = False
        self.threads: list[threading.Thread] = []
        self.nodes: list[Node] = []  # the nodes served now: fewer once one is removed, finished or disabled
        self.all_nodes: list[Node] = []  # the nodes set up at the start: the summary and exit status cover them
        self.gone_nodes: set[str] = set()  # removed, or their replication taken down (finish)
        self.missing_subscription: dict[str, int] = {}  # node -> consecutive checks that found no subscription
        self.skipped_nodes: list[str] = []
        self.report: Report | None = None
        self.in_flight: dict[int, Task] = {}
        self.flight_lock = threading.Lock()
        self.told_stop = False
        self.stopping_count = 0  # tasks in flight when the signal came
        self.done = threading.Event()
        self.slot_freed = threading.Event()
        self.dumper: PgDump | None = None  # None with --bare
        self.held: list[tuple] = []  # other drivers' claims left when the run ended (--no-wait)
        self.told_held: dict[tuple, float] = {}  # (task, worker) -> when we last said we wait for it
        self.waiting_since: float | None = None  # since when only other drivers' tasks are left
        self.gave_up: float | None = None  # waited this long for them, then stopped (--wait-timeout)
        self.lease = 300.0
        self.gone: list[str] = []  # why nodes stopped being served: removed, or their replication taken down
        self.told_disabled: set[str] = set()
        self.disabled: list[str] = []  # nodes disabled during a one-shot run: left with their tasks queued
        self.next_check = 0.0
        self.next_subscription_check = 0.0
        # The manifest relation the claim loop reads (common.manifest), looked up once in serve():
        # the catalog's shape does not change under a run. The wrapper reads any catalog.
        self.manifest = MANIFEST_0_1

    # --- the run --------------------------------------------------------------------------

    def run(self) -> int:
        try:
            with connect(self.args.source) as source:
                status, why = self.serve(source)
                if self.report is not None:
                    self.join_syncs()
                    status, why = self.final_status(source, status, why)
                    failed = still_failed(source, [n.name for n in self.all_nodes])
                    hints = {row[0]: retry_hint(source, row[0], row[1], row[2]) for row in failed}
                    self.report.summary(failed, self.held, self.skipped_nodes, status, why, hints)
                return status
        except SetupError as error:
            self.out.say(f"shardcast-driver: {error}", error=True)
            return error.status
        except psycopg.OperationalError as error:
            if self.report is None:
                self.out.say(f"shardcast-driver: cannot connect to the source: {first_line(error)}", error=True)
                return EXIT_ENVIRONMENT
            # The source went away mid-run: stop, and let the syncs in flight hand their tasks
            # back if they still can (their leases cover them otherwise).
            self.out.say(f"shardcast-driver: lost the source: {first_line(error)}", error=True)
            self.stopping.set()
            self.join_syncs()
            return EXIT_ENVIRONMENT
        except psycopg.Error as error:
            what = "missing privilege" if isinstance(error, psycopg.errors.InsufficientPrivilege) else "error"
            self.out.say(f"shardcast-driver: {what} on the source: {first_line(error)}", error=True)
            self.stopping.set()
            self.join_syncs()
            return EXIT_ENVIRONMENT
        finally:
            self.done.set()

    def join_syncs(self) -> None:
        self.tell_stop()
        for thread in self.threads:
            while thread.is_alive() and not self.quit_now:
                thread.join(0.2)
                self.tell_stop()
        self.tell_stop()

    def final_status(self, source: psycopg.Connection, status: int | None, why: str) -> tuple[int, str]:
        if self.stop_signal is not None:
            if self.stop_signal == signal.SIGTERM and self.args.follow:
                return EXIT_OK, "stopped by SIGTERM (--follow): tasks in flight released"
            name = "SIGINT" if self.stop_signal == signal.SIGINT else "SIGTERM"
            return (EXIT_SIGINT if self.stop_signal == signal.SIGINT else EXIT_SIGTERM,
                    f"stopped by {name}: tasks in flight released")
        if status is not None:
            return status, why
        counts = self.report.counts()
        # Every node of the run, those removed, finished or disabled meanwhile included: a task of
        # theirs that failed (in this run or an earlier one) still counts.
        failed = still_failed(source, [n.name for n in self.all_nodes])
        if self.skipped_nodes:
            return EXIT_ENVIRONMENT, f"node(s) {', '.join(self.skipped_nodes)} could not be used"
        if counts["failed"] or failed:
            attempts = self.report.failed_attempts
            return EXIT_FAILED, f"{max(len(failed), counts['failed'])} task(s) failed" + (
                f" ({attempts} failed attempt(s) in this run)" if attempts else " in earlier runs")
        if self.held:
            if self.gave_up is not None:
                return EXIT_OPEN, (f"gave up after waiting {self.gave_up:.0f} s (--wait-timeout) for "
                                   f"{len(self.held)} task(s) held by other drivers")
            return EXIT_OPEN, f"{len(self.held)} task(s) still held by other drivers"
        if self.disabled:
            left = source.execute("SELECT count(*) FROM " + self.manifest + " m WHERE node = ANY(%s)",
                                  [self.disabled]).fetchone()[0]
            if left:
                return EXIT_OPEN, (f"{left} task(s) still open for disabled node(s) {', '.join(self.disabled)}: "
                                   "they run once the node is enabled again (shardcast.alter_node(..., enabled => "
                                   "true))")
        if self.gone and not self.nodes:
            return EXIT_OK, "nothing left to serve: " + "; ".join(self.gone)
        return EXIT_OK, "every task done"

    def serve(self, source: psycopg.Connection) -> tuple[int | None, str]:
        """Sets up and runs the claim loop. Returns (None, '') when the loop ended as it should,
        else the exit status that stopped it early and why."""
        fixes = source_problems(source, None, None)
        if fixes:
            raise SetupError(self.missing(source, "the source", fixes))
        nodes = load_nodes(source, self.args.node)
        publisher = self.args.publisher_conninfo or self.args.source
        fixes = source_problems(source, nodes, publisher)
        if fixes:
            raise SetupError(self.missing(source, "the source", fixes))
        if not self.args.bare:
            source_major = source.info.server_version // 10000
            try:
                self.dumper = PgDump(PgDump.locate(self.args.pg_dump, source_major), self.args.source)
                self.dumper.check(source_major)
            except SyncError as error:
                raise SetupError(str(error)) from error
        if not self.args.node:
            for (name,) in source.execute("SELECT node FROM shardcast.nodes WHERE NOT enabled AND conninfo IS NOT NULL"
                                          " ORDER BY node").fetchall():
                self.out.say(f"node {name} is disabled, not served: {disabled_hint(name)}")
        for node in nodes:
            try:
                with connect(node.conninfo) as dest:
                    fixes = node_problems(dest, node)
                    if fixes:
                        self.out.say(self.missing(dest, f"node {node.name}", fixes), error=True)
                        self.skipped_nodes.append(node.name)
                        continue
                    # Disabled since load_nodes (finish disables a node before it takes its
                    # replication down): set nothing up again behind its back.
                    enabled = source.execute("SELECT enabled FROM shardcast.nodes WHERE node = %s",
                                             [node.name]).fetchone()
                    if not enabled or not enabled[0]:
                        self.out.say(f"node {node.name} is disabled, not served: {disabled_hint(node.name)}")
                        continue
                    ensure_channel(source, node, publisher, dest)
                self.nodes.append(node)
            except psycopg.Error as error:
                self.skipped_nodes.append(node.name)
                self.out.say(f"node {node.name}: cannot set up {node.channel}, skipped: {first_line(error)}",
                             error=True)
        if not self.nodes:
            if not self.skipped_nodes:
                raise SetupError("no node to sync to: disabled meanwhile (above)", EXIT_USAGE)
            raise SetupError(f"no node to sync to: {', '.join(self.skipped_nodes)} could not be set up (above); "
                             "their tasks stay queued")
        self.all_nodes = list(self.nodes)
        self.lease, plan_workers, max_attempts = source.execute(
            "SELECT extract(epoch FROM current_setting('shardcast.claim_lease')::interval)::float8,"
            "       current_setting('shardcast.plan_workers')::int,"
            "       current_setting('shardcast.max_attempts')::int").fetchone()
        self.workers = self.args.workers or plan_workers
        self.complete_copied = has_function(source, "shardcast.complete_task(bigint, boolean, text, text, boolean)")
        self.manifest = manifest(source)
        names = [n.name for n in self.nodes]
        tasks, weight = source.execute(
            "SELECT count(*), coalesce(sum(priority_weight), 0) FROM " + self.manifest + " m"
            " WHERE node = ANY(%s)", [names]).fetchone()
        self.report = Report(self.out, tasks, weight, max_attempts)
        threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True).start()
        self.report.say(f"shardcast-driver {__version__} ({self.worker}): {tasks} open task(s), up to {self.workers} "
                        "sync(s) at once: " + ", ".join(f"{n.name} ({n.max_concurrent} at once)" for n in self.nodes))
        failed = still_failed(source, names)
        if failed:
            self.report.say(f"{len(failed)} task(s) failed in earlier runs and are not queued again: "
                            + ", ".join(f"{shard} -> {node}" for _, shard, node, *_ in failed)
                            + " (listed at the end; unless they are queued again and succeed, this run exits 1 when it ends "
                            "by itself: a stop by signal has its own status)")
        while not self.stopping.is_set():
            self.check_nodes(source)
            if not self.nodes:
                # Every node was removed or its replication taken down (finish) meanwhile, or
                # disabled (a one-shot run).
                if self.gone:
                    self.report.say("nothing left to serve: " + "; ".join(self.gone) + "; stopping")
                break
            claimed = self.claim_what_the_plan_allows(source)
            waiting = False
            if not claimed and not self.in_flight and not self.queue_is_empty(source):
                held = self.waiting_for_others(source)
                # Nothing to claim, nothing in flight, no node resting after a failure: the run
                # waits for other drivers' claims (those tasks, or the node slots they take).
                resting = any(n.resting_until > time.monotonic() for n in self.nodes)
                if held and self.args.no_wait and not self.args.follow and not resting:
                    self.held = held
                    break
                if held and not self.args.follow and not resting and not getattr(self.args, "wait", True):
                    # Not for ever: a dead driver's lease may be long, a live driver's copy longer.
                    waiting = True
                    waited = time.monotonic() - self.waiting_since
                    if waited >= self.args.wait_timeout:
                        self.report.say(f"gave up waiting after {waited:.0f} s (--wait-timeout): {len(held)} task(s) "
                                        "still held by other drivers (--wait waits for them without a bound)")
                        self.held, self.gave_up = held, waited
                        break
            if not waiting:
                self.waiting_since = None
            if not claimed and not self.in_flight and not self.args.follow and self.queue_is_empty(source):
                break
            # A sync that finishes frees its slot at once; otherwise poll for new tasks.
            self.slot_freed.wait(self.args.poll)
            self.slot_freed.clear()
        self.tell_stop()
        self.join_syncs()
        if not self.stopping.is_set():
            self.add_waiting_foreign_keys(source)
        return None, ""

    def missing(self, conn: psycopg.Connection, where: str, fixes: list[str]) -> str:
        return (f"missing privileges on {where} for role {conn.info.user}; run as a superuser there:\n"
                + "\n".join(f"    {fix}" for fix in fixes))

    def waiting_for_others(self, source: psycopg.Connection) -> list[tuple]:
        """Nothing to claim, nothing in flight, yet tasks are open: other drivers hold them (or a
        dead driver's lease has not run out). Says so, once per task and holder, and again every
        minute while it lasts."""
        held = held_by_others(source, [n.name for n in self.nodes], self.worker)
        now = time.monotonic()
        if self.waiting_since is None:
            self.waiting_since = now
        bounded = not self.args.follow and not getattr(self.args, "wait", True)
        for task_id, shard, node, worker, until, live in held:
            key = (task_id, worker)
            if now - self.told_held.get(key, -1e9) < 60:
                continue
            self.told_held[key] = now
            if self.args.no_wait and not self.args.follow:
                self.report.say(f"task {task_id} ({shard}) on node {node} is held by worker {worker} until "
                                f"{iso(until)}; not waiting (--no-wait)")
            elif live:
                left = self.args.wait_timeout - (now - self.waiting_since) if bounded else None
                self.report.say(f"task {task_id} ({shard}) on node {node} is held by worker {worker} until "
                                f"{iso(until)}; waiting (the task is this run's if that lease runs out)"
                                + (f"; giving up in {max(left, 0):.0f} s (--wait-timeout)" if bounded else ""))
            else:
                self.report.say(f"task {task_id} ({shard}) on node {node}: the lease of worker {worker} ran out at "
                                f"{iso(until)}; taking it over")
        if held and not (self.args.no_wait and not self.args.follow):
            # Queued tasks that cannot be claimed because other drivers' claims fill their node.
            for node, queued, limit in source.execute(
                    "SELECT m.node, count(*), n.max_concurrent FROM " + self.manifest + " m"
                    " JOIN shardcast.nodes n USING (node) WHERE m.state = 'queued' AND m.node = ANY(%s)"
                    " GROUP BY m.node, n.max_concurrent ORDER BY 1", [[n.name for n in self.nodes]]).fetchall():
                key = ("slots", node)
                if now - self.told_held.get(key, -1e9) < 60:
                    continue
                self.told_held[key] = now
                self.report.say(f"{queued} queued task(s) for node {node} wait for one of its {limit} slot(s) "
                                "(max_concurrent), taken by the claims above")
        return held

    def check_nodes(self, source: psycopg.Connection) -> None:
        """Every 2 s: stops serving a node that was removed (shardcast.remove_node) or whose
        replication was taken down meanwhile (shardcast-driver finish: its publication on the
        source, or its subscription on the node, is gone), and says when a node is disabled (no
        claims for it until it is enabled again)."""
        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + 2.0
        names = [n.name for n in self.nodes]
        enabled = dict(source.execute("SELECT node, enabled FROM shardcast.nodes WHERE node = ANY(%s)",
                                      [names]).fetchall())
        published = {p for (p,) in source.execute("SELECT pubname::text FROM pg_publication WHERE pubname = ANY(%s)",
                                                  [[n.channel for n in self.nodes]]).fetchall()}
        check_subscriptions = now >= self.next_subscription_check
        if check_subscriptions:
            self.next_subscription_check = now + 10.0
        for node in list(self.nodes):
            why = None
            if node.name not in enabled:
                why = f"node {node.name} was removed (shardcast.remove_node)"
            elif node.channel not in published:
                why = (f"publication {node.channel} is gone from the source (shardcast-driver finish took the "
                       f"replication to {node.name} down?)")
            elif check_subscriptions:
                subscribed = self.subscribed(node)
                # Twice in a row (10 s apart): one answer is not enough to stop serving a node.
                missing = self.missing_subscription.get(node.name, 0) + 1 if subscribed is False else 0
                self.missing_subscription[node.name] = missing
                if missing >= 2:
                    why = (f"subscription {node.channel} is gone from node {node.name} (shardcast-driver finish took "
                           "the replication down?)")
            if why is not None:
                self.report.say(f"{why}: no more claims for node {node.name}")
                self.gone.append(why)
                self.gone_nodes.add(node.name)
                self.nodes = [n for n in self.nodes if n is not node]
            elif not enabled[node.name] and not self.args.follow:
                # A one-shot run does not wait for it: the tasks claimed for it finish, the others
                # stay queued (exit 4).
                self.report.say(f"node {node.name} is disabled (shardcast.alter_node): no more claims for it in this "
                                "run; its queued tasks stay queued until it is enabled again")
                self.disabled.append(node.name)
                self.nodes = [n for n in self.nodes if n is not node]
            elif not enabled[node.name] and node.name not in self.told_disabled:
                self.told_disabled.add(node.name)
                self.report.say(f"node {node.name} is disabled: no claims for it until it is enabled again")
            elif enabled[node.name]:
                self.told_disabled.discard(node.name)

    @staticmethod
    def subscribed(node: Node) -> bool | None:
        """Whether the node still has its subscription; None when it cannot be asked (a node that is
        down for a moment has not been taken down). The claim loop waits for the answer: the
        driver's keepalives and tcp_user_timeout bound a node that stops answering, and the query
        gives up after 5 s."""
        try:
            with connect(node.conninfo, statement_timeout_ms=5000) as dest:
                return dest.execute(
                    "SELECT 1 FROM pg_subscription WHERE subname = %s"
                    " AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    [node.channel]).fetchone() is not None
        except psycopg.Error:
            return None

    def add_waiting_foreign_keys(self, source: psycopg.Connection) -> None:
        """At the end of a run: every foreign key between tables that are on a node now (this run's
        or earlier runs') and that it lacks."""
        if self.dumper is None:
            return
        # The nodes disabled during the run too (their tables of this run need their keys); not
        # those removed or whose replication was taken down.
        for node in [n for n in self.all_nodes if n.name not in self.gone_nodes]:
            try:
                with connect(node.conninfo) as dest:
                    waiting = self.add_foreign_keys(node, source, dest)
            except (psycopg.Error, SyncError) as error:
                self.report.say(f"foreign keys on {node.name}: {first_line(error)}", error=True)
                continue
            if waiting:
                self.report.say(f"{node.name}: {len(waiting)} foreign key(s) wait for the table they reference: "
                                + ", ".join(waiting))

    def syncing_on(self, node: Node) -> int:
        return sum(1 for task in list(self.in_flight.values()) if task.node is node)

    def open_tasks(self, source: psycopg.Connection) -> int:
        return source.execute("SELECT count(*) FROM " + self.manifest + " m WHERE node = ANY(%s)",
                              [[n.name for n in self.nodes]]).fetchone()[0]

    def queue_is_empty(self, source: psycopg.Connection) -> bool:
        """No task left for our nodes, not even one claimed by a driver that may have died: its
        lease will expire and a claim here will take it over."""
        return not source.execute(
            "SELECT 1 FROM " + self.manifest + " m WHERE node = ANY(%s) LIMIT 1",
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
            # The node whose next task comes first in the stored dispatch order (the manifest's
            # position). With nothing queued, a claim still returns tasks whose lease expired to
            # the queue: try each node. With one node open there is nothing to choose, and the
            # manifest (which numbers every open task: 0.2 s at 100,000) is not read.
            next_node = None if len(open_nodes) == 1 else source.execute(
                "SELECT node FROM " + self.manifest + " m WHERE state = 'queued' AND kind = 'copy' AND node = ANY(%s)"
                " ORDER BY position, task_id LIMIT 1", [[n.name for n in open_nodes]]).fetchone()
            candidates = [n for n in open_nodes if n.name == next_node[0]] if next_node else open_nodes
            row, node = None, None
            for node in candidates:
                try:
                    row = source.execute(
                        "SELECT task_id, qualified_name, size_bytes, priority_weight, prefetch, attempts"
                        " FROM shardcast.claim_task(%s, %s)", [self.worker, node.name]).fetchone()
                except psycopg.errors.UndefinedObject:
                    # The node was removed (shardcast.remove_node) while this driver ran: serve the
                    # others; its tasks were cancelled with it.
                    self.report.say(f"node {node.name} was removed: no more claims for it")
                    self.gone.append(f"node {node.name} was removed (shardcast.remove_node)")
                    self.gone_nodes.add(node.name)
                    self.nodes = [n for n in self.nodes if n.name != node.name]
                    row = None
                    full.add(node.name)
                    continue
                if row is not None:
                    break
                full.add(node.name)  # at its limit counting other drivers' claims, or taken meanwhile
            if row is None:
                if next_node is None:
                    break
                continue
            task = Task(row[0], row[1], node, row[2], row[3], row[4], row[5])
            with self.flight_lock:
                self.in_flight[task.task_id] = task
            thread = threading.Thread(target=self.sync, args=(task,), name=f"sync-{task.task_id}")
            self.threads.append(thread)
            thread.start()
            claimed += 1
        self.threads = [t for t in self.threads if t.is_alive()]
        return claimed

    # --- one task -------------------------------------------------------------------------

    def on_source(self, source: psycopg.Connection, query: str, params: list) -> None:
        """heartbeat, complete_task or release_task: 55000 from them means the lease is gone."""
        try:
            source.execute(query, params)
        except psycopg.errors.ObjectNotInPrerequisiteState as error:
            raise LeaseLost(first_line(error)) from error

    def sync(self, task: Task) -> None:
        started = time.monotonic()
        try:
            with connect(self.args.source) as source:
                try:
                    outcome = self.replicate(task, source)
                    if outcome in (COPIED, ALREADY):
                        detail = (f"ready on {task.node.name} via {task.node.channel}" if outcome == COPIED
                                  else f"already on {task.node.name} (in sync via {task.node.channel})")
                        if self.complete_copied:
                            # Tells shardcast that nothing was copied: the report leaves it out.
                            self.on_source(source, "SELECT shardcast.complete_task(%s, true, %s, %s, %s)",
                                           [task.task_id, detail, self.worker, outcome == COPIED])
                        else:
                            self.on_source(source, "SELECT shardcast.complete_task(%s, true, %s, %s)",
                                           [task.task_id, detail, self.worker])
                        self.report.done(task, time.monotonic() - started, outcome == COPIED)
                    elif not self.quit_now:
                        self.on_source(source, "SELECT shardcast.release_task(%s, %s)", [task.task_id, self.worker])
                        self.report.released(task, time.monotonic() - started, f"stopping; {task.stopped_how}")
                except LeaseLost as error:
                    # The lease expired and the task is someone else's now: leave it to them.
                    self.report.lost(task, time.monotonic() - started, first_line(error))
                except Exception as error:
                    if isinstance(error, psycopg.OperationalError) and source.broken:
                        raise
                    detail = first_line(error)
                    if not isinstance(error, (SyncError, psycopg.Error)):
                        # A bug, not the table: say so once, then fail the task like any other error.
                        detail = f"{type(error).__name__}: {detail}"
                        self.report.say(f"sync of {task.shard} -> {task.node.name}: unexpected error {detail}",
                                        error=True)
                    if self.stopping.is_set() and not self.quit_now:
                        # Stopping: hand it back whatever went wrong (stopping the copy on an
                        # unreachable node, say); no attempt counted.
                        self.on_source(source, "SELECT shardcast.release_task(%s, %s)", [task.task_id, self.worker])
                        self.report.released(task, time.monotonic() - started, f"stopping; {detail}")
                        return
                    task.node.resting_until = time.monotonic() + self.args.retry_delay
                    self.on_source(source, "SELECT shardcast.complete_task(%s, false, %s, %s)",
                                   [task.task_id, detail, self.worker])
                    self.report.failed(task, time.monotonic() - started, detail)
        except LeaseLost as error:
            self.report.lost(task, time.monotonic() - started, first_line(error))
        except Exception as error:
            # Could not even report: the lease returns the task to the queue.
            try:
                self.report.lost(task, time.monotonic() - started,
                                 f"cannot report to the source ({first_line(error)}); its lease will expire")
            except Exception:
                pass
        finally:
            with self.flight_lock:
                if self.in_flight.get(task.task_id) is task:
                    del self.in_flight[task.task_id]
            self.slot_freed.set()

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
                        task.lost = first_line(error)
                    except Exception as error:
                        if source.closed or source.broken:
                            raise
                        self.report.say(f"heartbeat of {task.shard}: {first_line(error)}", error=True)
            except Exception as error:
                # Connect again at the next beat; a lease lasts three beats.
                self.report.say(f"heartbeats: {first_line(error)}; retrying", error=True)
                if source is not None:
                    source.close()
                source = None
        if source is not None:
            source.close()

    # --- signals --------------------------------------------------------------------------

    def interrupt(self, signum, frame) -> None:
        """Only sets flags (printing takes a lock the interrupted thread may hold): the claim loop
        says what happens (tell_stop)."""
        if self.stopping.is_set():
            self.quit_now = True
            os._exit(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)
        self.stop_signal = signum
        self.stopping_count = len(self.in_flight)
        self.stopping.set()
        self.slot_freed.set()

    def tell_stop(self) -> None:
        if self.stop_signal is None or self.told_stop:
            return
        self.told_stop = True
        name = "SIGINT" if self.stop_signal == signal.SIGINT else "SIGTERM"
        self.out.say(f"stopping ({name}): no more claims; stopping the copies of {self.stopping_count} task(s) in "
                     "flight on their nodes and releasing them (again to quit now and leave them to their leases)",
                     error=True)
