"""`shardcast-driver citus-rebalance`: runs the Citus moves that `shardcast.enqueue_citus_rebalance`
queued, hottest per byte first, on the coordinator with `citus_move_shard_placement`.

It claims moves with `shardcast.claim_citus_move` (which keeps to the nodes' limits: at most
--moves-per-node moves in flight per node, as source or target, and one per colocation group),
runs each in a thread of its own on a connection of its own, heartbeats the lease while Citus
moves, and completes the task (done, or failed with Citus's error). A move whose group is already
on its target (a driver killed after Citus committed the move) is completed as done without a
move (`copied => false`); a claim whose lease ran out is claimed again by the next run (or by this
one: a claim left under this driver's own --worker name by a killed run counts as held, and is
waited for). A group on neither its source nor its target fails at once (claim_citus_move says
so): the rebalance is to be enqueued again. The exit status is the tasks' final states', not the
attempts': a move that failed once and then succeeded is a success. It reads the moves through
the view `shardcast.citus_moves` and the plannings through `shardcast.citus_plan_groups`, never
the task table.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from dataclasses import dataclass

import psycopg

from .common import (EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_OK, EXIT_OPEN, EXIT_SIGINT, EXIT_SIGTERM, Out, connect,
                     first_line, pretty_bytes, pretty_seconds)

DESCRIPTION = """\
Moves the Citus shard groups that shardcast queued (SELECT shardcast.enqueue_citus_rebalance()),
hottest per byte first, with citus_move_shard_placement on the coordinator: at most
--moves-per-node moves at once per node (as source or as target), one at a time per colocation
group. First copies the reference tables to the nodes that lack them (replicate_reference_tables,
as Citus's rebalancer does). Resumes after a kill: a move Citus finished is recognised, a lapsed
claim is taken again.
"""

EPILOG = """\
exit status:
  0    every queued move is done
  1    a move failed (in this run, or in an earlier one and not enqueued again since)
  3    cannot connect to the coordinator (or lost it), no shardcast 0.2 / Citus 13 there, missing
       privileges
  4    moves still open, held by other drivers or by a killed run under the same --worker name
       (--no-wait), or left to their leases
  130  stopped by SIGINT (Ctrl-C); 143 by SIGTERM: the moves in flight cancelled (Citus rolls them
       back), their tasks released; a copy of the reference tables under way cancelled
"""

# The shard transfer modes of citus_move_shard_placement; 'auto' is the rebalancer's default
# (logical replication when every table has a replica identity, else block_writes).
TRANSFER_MODES = ("auto", "force_logical", "block_writes")

# Whether an active primary node lacks a placement of a reference table (Citus's
# ReferenceTablePlacementNodeList: every active primary, the coordinator too when it is in the
# metadata). Reference tables are distributed by none with two-phase replication ('n', 't').
MISSING_REFERENCE_TABLES = """
SELECT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_dist_partition p
    JOIN pg_catalog.pg_dist_shard s ON s.logicalrelid = p.logicalrelid
    CROSS JOIN pg_catalog.pg_dist_node n
    WHERE p.partmethod = 'n' AND p.repmodel = 't' AND n.isactive AND n.noderole = 'primary'
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_placement pl
                      WHERE pl.shardid = s.shardid AND pl.groupid = n.groupid))
"""

# Where a move group's shard is now: the nodes of its placements.
PLACEMENTS = """
SELECT n.nodename || ':' || n.nodeport
FROM pg_catalog.pg_dist_placement p
JOIN pg_catalog.pg_dist_node n ON n.groupid = p.groupid AND n.noderole = 'primary'
WHERE p.shardid = %s
"""

# Moves that failed for good and were not planned again since: no later task of the same group
# (`shardid`: the group's smallest shardid, its name in every planning) and no later
# enqueue_citus_rebalance (whose plan, made from where the groups are then, has the group again
# if it still has to move).
STILL_FAILED = """
SELECT t.task_id, t.shardid, t.source_node, t.target_node, t.attempts, t.detail
FROM shardcast.citus_moves t
WHERE t.state = 'failed'
  AND NOT EXISTS (SELECT FROM shardcast.citus_moves u WHERE u.shardid = t.shardid AND u.task_id > t.task_id)
  AND NOT EXISTS (SELECT FROM shardcast.citus_plan_groups g WHERE g.planned_at > t.finished_at)
ORDER BY t.task_id
"""

# Open moves when this driver runs none: queued, and claimed (by other drivers, or under this
# driver's own name by an earlier run that was killed: held until their leases run out, then
# claimed again), with how many of those are under this name and when the first lease ends.
OPEN = """
SELECT count(*) FILTER (WHERE state = 'queued'),
       count(*) FILTER (WHERE state = 'claimed'),
       count(*) FILTER (WHERE state = 'claimed' AND claimed_by = %s),
       min(lease_expires_at) FILTER (WHERE state = 'claimed')
FROM shardcast.citus_moves WHERE state IN ('queued', 'claimed')
"""

# The major version of Citus the driver needs (as shardcast._citus_require).
CITUS_MAJOR = 13

# Heartbeats: tries per beat (a new connection each after the first fails), seconds between.
HEARTBEAT_TRIES = 3
HEARTBEAT_RETRY = 1.0


class Lost(Exception):
    """The coordinator went away, or refused what the driver needs: exit 3."""


@dataclass
class Move:
    task_id: int
    shardid: int
    table: str
    colocation_id: int
    source: str
    source_host: str
    source_port: int
    target: str
    target_host: str
    target_port: int
    size_bytes: int
    attempts: int
    started: float = 0.0
    conn: psycopg.Connection | None = None  # the connection Citus moves on, while it does (under the lock)
    outcome: str = ""  # moved, in place, failed, elsewhere, released, lost, superseded
    after: threading.Thread | None = None  # this driver's earlier move of the same group, still ending
    thread: threading.Thread | None = None


def parser() -> argparse.ArgumentParser:
    from . import __version__
    from .cli import conninfo, non_empty, positive_int, positive_seconds, seconds
    p = argparse.ArgumentParser(prog="shardcast-driver citus-rebalance", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--version", action="version", version=f"shardcast-driver {__version__}")
    p.add_argument("--source", required=True, type=conninfo,
                   help="conninfo of the Citus coordinator's database, where shardcast runs")
    p.add_argument("--transfer-mode", choices=TRANSFER_MODES, default="auto",
                   help="citus_move_shard_placement's shard_transfer_mode (default auto, as Citus's rebalancer)")
    p.add_argument("--moves-per-node", type=positive_int, default=1,
                   help="moves at once per node, counting it as source and as target (default 1, as Citus's "
                   "citus.max_background_task_executors_per_node)")
    p.add_argument("--worker", type=non_empty, default=f"driver-{os.uname().nodename}-{os.getpid()}",
                   help="the name claims are made under (default: driver-HOST-PID)")
    p.add_argument("--dry-run", action="store_true", help="print the queued moves in the order they would run")
    p.add_argument("--no-wait", action="store_true", help="when only moves that other drivers hold are left, "
                   "exit 4 at once instead of waiting for them (or for their leases to run out)")
    p.add_argument("--poll", type=positive_seconds, default=0.5, help="seconds between polls (default 0.5)")
    p.add_argument("--retry-delay", type=seconds, default=5.0,
                   help="seconds a failed move keeps its claim (and its nodes' slots) before it fails, so that "
                   "its next attempt is not at once (default 5)")
    return p


class Rebalancer:
    def __init__(self, args: argparse.Namespace, out: Out | None = None):
        self.args = args
        self.out = out or Out()
        self.stopping = threading.Event()
        self.stop_signal: int | None = None
        self.lock = threading.Lock()
        # The connection copying the reference tables while it does (see copy_reference_tables).
        self.copying: psycopg.Connection | None = None
        self.running: list[Move] = []
        self.finished: list[Move] = []
        self.threads: list[threading.Thread] = []
        self.lease = 300.0
        self.told_waiting = 0.0

    # --- signals ------------------------------------------------------------------------------

    def interrupt(self, signum, frame) -> None:
        if self.stop_signal is not None:
            # A second signal: quit now; the claims are left to their leases.
            os._exit(EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM)
        self.stop_signal = signum
        self.stopping.set()
        # No lock here: the handler runs in the main thread, which may hold it.
        cancel_quietly(self.copying)

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> int:
        try:
            source = connect(self.args.source)
        except psycopg.OperationalError as error:
            self.out.say(f"shardcast-driver: cannot connect to the coordinator: {first_line(error)}", error=True)
            return EXIT_ENVIRONMENT
        with source:
            try:
                problem = self.check(source)
                if problem:
                    self.out.say(f"shardcast-driver: {problem}", error=True)
                    return EXIT_ENVIRONMENT
                if self.args.dry_run:
                    return self.dry_run(source)
                self.lease = float(source.execute(
                    "SELECT extract(epoch FROM current_setting('shardcast.claim_lease')::interval)").fetchone()[0])
            except psycopg.Error as error:
                self.out.say(f"shardcast-driver: {first_line(error)}", error=True)
                return EXIT_ENVIRONMENT
            began = time.monotonic()
            refused = self.copy_reference_tables(source)
            if refused is not None:
                return refused
            try:
                status = self.serve(source)
            except Lost as error:
                # The moves in flight are cancelled (Citus rolls them back) and handed back where
                # the coordinator still answers; else their leases return them.
                self.out.say(f"shardcast-driver: {error}", error=True)
                self.stopping.set()
                self.join()
                self.summary(None, EXIT_ENVIRONMENT, time.monotonic() - began)
                return EXIT_ENVIRONMENT
            self.join()
            try:
                return self.summary(source, status, time.monotonic() - began)
            except psycopg.Error as error:
                self.out.say(f"shardcast-driver: lost the coordinator at the end: {first_line(error)}", error=True)
                return EXIT_ENVIRONMENT

    def copy_reference_tables(self, source: psycopg.Connection) -> int | None:
        """As Citus's own rebalancer does before it moves: a node added since the reference
        tables were created lacks them, and Citus refuses every move while one does ("there are
        missing reference tables on some nodes"). Copied only when one is missing: Citus revokes
        replicate_reference_tables from PUBLIC, and a table owner may move shards without it. A
        stop cancels the copy. Returns the exit status when the run cannot go on, else None."""
        try:
            queued = source.execute("SELECT count(*) FROM shardcast.citus_moves WHERE state = 'queued'"
                                    ).fetchone()[0]
            if not queued or not source.execute(MISSING_REFERENCE_TABLES).fetchone()[0]:
                return None
            self.out.say("copying the reference tables to the nodes that lack them first")
            self.copying = source
            try:
                if not self.stopping.is_set():
                    # The mode as an untyped literal: a cast to citus.shard_transfer_mode would
                    # need USAGE on schema citus, which a table owner need not have.
                    source.execute("SELECT pg_catalog.replicate_reference_tables(%s)", [self.args.transfer_mode])
            finally:
                self.copying = None
        except psycopg.errors.InsufficientPrivilege as error:
            self.out.say(f"shardcast-driver: a node lacks the reference tables, and Citus moves no shard until "
                         f"they are copied, which {source.info.user} may not do ({first_line(error)}): run "
                         f"SELECT replicate_reference_tables() as a superuser, or GRANT EXECUTE ON FUNCTION "
                         f"pg_catalog.replicate_reference_tables(citus.shard_transfer_mode) TO "
                         f"{source.info.user}", error=True)
            return EXIT_ENVIRONMENT
        except psycopg.Error as error:
            if not self.stopping.is_set():
                self.out.say(f"shardcast-driver: could not copy the reference tables to every node first: "
                             f"{first_line(error)}", error=True)
                return EXIT_ENVIRONMENT
        if self.stopping.is_set():
            self.out.say("stopped before any move: the reference tables' copy was cancelled", error=True)
            return EXIT_SIGINT if self.stop_signal == signal.SIGINT else EXIT_SIGTERM
        return None

    def check(self, source: psycopg.Connection) -> str | None:
        """What keeps the run from starting, or None."""
        row = source.execute(
            "SELECT to_regprocedure('shardcast.claim_citus_move(text, integer)') IS NOT NULL,"
            "       (SELECT extversion FROM pg_extension WHERE extname = 'citus')").fetchone()
        if not row[0]:
            return ("shardcast.claim_citus_move does not exist in this database: run the driver against the Citus "
                    "coordinator's database, with shardcast 0.2.0 or later (ALTER EXTENSION shardcast UPDATE)")
        if row[1] is None:
            return "Citus is not installed in this database: --source must be the Citus coordinator"
        major = row[1].split(".")[0]
        if not major.isdigit() or int(major) < CITUS_MAJOR:
            return (f"Citus {row[1]} is too old: shardcast's moves need Citus {CITUS_MAJOR} or later "
                    "(install it, then ALTER EXTENSION citus UPDATE)")
        # A worker's queue is empty (moves are queued on the coordinator): do not call that done.
        if not source.execute("SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_local_group WHERE groupid = 0)"
                              ).fetchone()[0]:
            return ("--source is a Citus worker node, not the coordinator: point it at the coordinator, where "
                    "shardcast queues the moves")
        missing = [f for f in ("shardcast.claim_citus_move(text, integer)", "shardcast.heartbeat(bigint, text)",
                               "shardcast.complete_task(bigint, boolean, text, text, boolean)",
                               "shardcast.release_task(bigint, text)")
                   if not source.execute("SELECT has_function_privilege(%s, 'EXECUTE')", [f]).fetchone()[0]]
        if missing:
            grants = "; ".join(f"GRANT EXECUTE ON FUNCTION {f} TO {source.info.user}" for f in missing)
            return f"user {source.info.user} may not run what the driver needs: {grants}"
        return None

    def dry_run(self, source: psycopg.Connection) -> int:
        rows = source.execute(
            "SELECT position, task_id, shardid, source_node, target_node, size_bytes, predicted_load, load_per_byte"
            " FROM shardcast.citus_moves WHERE state = 'queued' ORDER BY position").fetchall()
        if not rows:
            self.out.say("no queued Citus move (SELECT shardcast.enqueue_citus_rebalance() queues the plan)")
        for position, task, shard, src, dst, size, load, density in rows:
            self.out.say(f"{position:>4}. task {task}: shard group {shard} {src} -> {dst}, {pretty_bytes(size or 0)}, "
                         f"predicted load {load:.1f} ({density:.3g} per byte)")
        return EXIT_OK

    def serve(self, source: psycopg.Connection) -> int | None:
        """Claims what the nodes allow until nothing is left, or a stop; returns EXIT_OPEN when
        only held moves are left under --no-wait. Raises Lost when the coordinator goes away or
        refuses a claim."""
        self.out.say(f"shardcast-driver citus-rebalance as {self.args.worker}: transfer mode "
                     f"{self.args.transfer_mode}, {self.args.moves_per_node} move(s) per node")
        try:
            while not self.stopping.is_set():
                claimed = 0
                while not self.stopping.is_set():
                    row = source.execute("SELECT * FROM shardcast.claim_citus_move(%s, %s)",
                                         [self.args.worker, self.args.moves_per_node]).fetchone()
                    if row is None:
                        break
                    claimed += 1
                    self.start(Move(*row[:2], str(row[2]), *row[3:11], row[12]))
                with self.lock:
                    busy = len(self.running)
                if not claimed and not busy:
                    # None of this driver's moves runs: a claim under its name is a killed run's.
                    queued, held, mine, lease_end = source.execute(OPEN, [self.args.worker]).fetchone()
                    if not queued and not held:
                        return None
                    whose = (f"{held - mine} by other drivers, {mine} under this driver's name by an earlier run"
                             if mine else "by other drivers")
                    if held and self.args.no_wait:
                        # What is queued waits behind them (one move per colocation group, the
                        # nodes' limits): nothing here can go on before their leases end.
                        self.out.say(f"{held} move(s) held ({whose}), {queued} queued behind them: not waiting "
                                     "(--no-wait)", error=True)
                        return EXIT_OPEN
                    if time.monotonic() - self.told_waiting > 60:
                        self.told_waiting = time.monotonic()
                        self.out.say(f"waiting: {held} move(s) held ({whose}; their leases end by {lease_end}), "
                                     f"{queued} queued behind them")
                self.stopping.wait(self.args.poll)
        except psycopg.OperationalError as error:
            raise Lost(f"lost the coordinator: {first_line(error)}") from error
        except psycopg.Error as error:
            hint = f" (hint: {error.diag.message_hint})" if error.diag.message_hint else ""
            raise Lost(f"the coordinator refused a claim: {first_line(error)}{hint}") from error
        return None

    def start(self, move: Move) -> None:
        move.started = time.monotonic()
        thread = threading.Thread(target=self.execute, args=(move,), name=f"move-{move.task_id}", daemon=True)
        with self.lock:
            # This driver may still be ending an earlier move of the same group (its lease lost,
            # its move cancelled): the new claim waits for it, never moving the group twice at once.
            move.after = next((m.thread for m in self.running if m.shardid == move.shardid), None)
            move.thread = thread
            self.running.append(move)
        self.threads.append(thread)
        thread.start()

    def cancel(self, move: Move) -> None:
        with self.lock:
            conn = move.conn
        cancel_quietly(conn)

    def join(self) -> None:
        if self.stopping.is_set():
            with self.lock:
                moving = list(self.running)
            if moving:
                self.out.say(f"stopping: cancelling {len(moving)} move(s) in flight (Citus rolls them back)")
            # Again until the threads end: a move that was about to start when the stop came is
            # cancelled once its statement runs.
            while any(t.is_alive() for t in self.threads):
                with self.lock:
                    moving = list(self.running)
                for move in moving:
                    self.cancel(move)
                for thread in self.threads:
                    thread.join(1.0)
        for thread in self.threads:
            thread.join()

    # --- one move -----------------------------------------------------------------------------

    def execute(self, move: Move) -> None:
        """Moves one group (in its own thread), heartbeating its lease on a connection of its own."""
        what = (f"task {move.task_id}: {move.table} shard group {move.shardid} ({pretty_bytes(move.size_bytes)}) "
                f"{move.source} -> {move.target}")
        lost = threading.Event()
        done = threading.Event()
        try:
            control = connect(self.args.source)
        except psycopg.OperationalError as error:
            self.out.say(f"{what}: cannot connect: {first_line(error)}; its lease returns it to the queue", error=True)
            self.finish(move, "lost")
            return
        with control:
            beat = threading.Thread(target=self.heartbeat, args=(move, lost, done), daemon=True)
            beat.start()
            if move.after is not None and move.after.is_alive():
                self.out.say(f"{what}: waiting for this driver's earlier move of the group to end")
                move.after.join()
            try:
                if move.after is not None and not self.still_mine(control, move):
                    # The earlier move recorded the outcome under this claim: nothing left to do.
                    outcome, detail = "superseded", None
                else:
                    outcome, detail = self.move(move, what, lost)
            except Exception as error:  # a bug here must not leave the task claimed silently
                outcome, detail = "failed", f"driver error: {first_line(error)}"
            if outcome == "failed":
                # Its next attempt (shardcast.max_attempts) not at once: a node that is down or
                # a lock that is held needs a moment; the lease is still heartbeaten meanwhile.
                self.out.say(f"{what}: failed: {detail}; retrying in {self.args.retry_delay:g} s "
                             "(if attempts are left)", error=True)
                self.stopping.wait(self.args.retry_delay)
            done.set()
            beat.join()
            if outcome == "superseded":
                self.finish(move, outcome)
                return
            if lost.is_set():
                self.out.say(f"{what}: lease lost ({detail or outcome}); the move is left to its next claimer",
                             error=True)
                self.finish(move, "lost")
                return
            try:
                if outcome == "released":
                    control.execute("SELECT shardcast.release_task(%s, %s)", [move.task_id, self.args.worker])
                    self.out.say(f"{what}: released")
                else:
                    # Elsewhere (moved since its claim): a failure, without the retry delay; the
                    # next claim fails it for good at once (claim_citus_move checks the placement).
                    control.execute("SELECT shardcast.complete_task(%s, %s, %s, %s, %s)",
                                    [move.task_id, outcome not in ("failed", "elsewhere"), detail, self.args.worker,
                                     outcome == "moved"])
                    took = pretty_seconds(time.monotonic() - move.started)
                    if outcome == "failed":
                        # A failure goes back to the queue until shardcast.max_attempts: say which.
                        state, attempts, most = control.execute(
                            "SELECT state, attempts, current_setting('shardcast.max_attempts')::int"
                            " FROM shardcast.citus_moves WHERE task_id = %s", [move.task_id]).fetchone()
                        # (Queued again, it may be claimed again before this reads it: only
                        # `failed` is for good.)
                        if state != "failed":
                            self.out.say(f"{what}: failed after {took} (attempt {attempts} of {most}; queued again): "
                                         f"{detail}", error=True)
                        else:
                            self.out.say(f"{what}: FAILED after {took} (attempt {attempts} of {most}, the last): "
                                         f"{detail}", error=True)
                    elif outcome == "elsewhere":
                        self.out.say(f"{what}: {detail}", error=True)
                    elif outcome == "moved":
                        self.out.say(f"{what}: moved in {took}")
                    else:
                        self.out.say(f"{what}: {detail}")
            except psycopg.Error as error:
                self.out.say(f"{what}: could not record the outcome ({first_line(error)}); its lease returns it "
                             "to the queue", error=True)
                outcome = "lost"
        self.finish(move, outcome)

    def still_mine(self, control: psycopg.Connection, move: Move) -> bool:
        row = control.execute("SELECT state = 'claimed' AND claimed_by = %s FROM shardcast.citus_moves "
                              "WHERE task_id = %s", [self.args.worker, move.task_id]).fetchone()
        return bool(row and row[0])

    def move(self, move: Move, what: str, lost: threading.Event | None = None) -> tuple[str, str | None]:
        """Runs citus_move_shard_placement unless the group is already on its target: (outcome,
        detail)."""
        conn = connect(self.args.source)
        try:
            # A driver that dies mid-move must not leave Citus moving behind the next claimer's
            # back: the server checks every second that we are still there, and cancels the move
            # (Citus rolls it back) when we are not.
            conn.execute("SET client_connection_check_interval = '1s'")
            conn.execute("SELECT set_config('application_name', %s, false)", [f"shardcast-driver move {move.task_id}"])
            nodes = {r[0] for r in conn.execute(PLACEMENTS, [move.shardid])}
            if move.target in nodes and move.source not in nodes:
                return "in place", f"already on {move.target}: nothing to move"
            if move.source not in nodes:  # nor on its target
                return "elsewhere", (f"shard group {move.shardid} is on {', '.join(sorted(nodes)) or 'no node'}, "
                                     f"on neither {move.source} nor {move.target}: enqueue the rebalance again")
            # The connection is set under the lock before the stop is checked: a stop from here
            # on finds it and cancels the move (again until the move ends, see join).
            with self.lock:
                move.conn = conn
            if self.stopping.is_set() or (lost is not None and lost.is_set()):
                with self.lock:
                    move.conn = None
                return "released", None
            attempt = f" (attempt {move.attempts + 1})" if move.attempts else ""
            self.out.say(f"{what}: moving{attempt}")
            try:
                conn.execute("SELECT pg_catalog.citus_move_shard_placement(%s, %s, %s, %s, %s, "
                             "shard_transfer_mode => %s)",
                             [move.shardid, move.source_host, move.source_port, move.target_host, move.target_port,
                              self.args.transfer_mode])
            except psycopg.errors.QueryCanceled as error:
                if self.stopping.is_set():
                    return "released", None
                if lost is not None and lost.is_set():
                    return "failed", f"cancelled: the lease was lost ({first_line(error)})"
                return "failed", first_line(error)
            except psycopg.Error as error:
                detail = first_line(error)
                if error.diag.message_hint:
                    detail += f" (hint: {error.diag.message_hint})"
                return "failed", detail
            finally:
                with self.lock:
                    move.conn = None
            return "moved", f"moved from {move.source} to {move.target}"
        finally:
            conn.close()

    def heartbeat(self, move: Move, lost: threading.Event, done: threading.Event) -> None:
        """Renews the lease every third of it until the move ends. A connection that fails is
        opened again (HEARTBEAT_TRIES tries a beat); a lease that cannot be renewed (refused, or
        no connection) is lost: the move is cancelled (whoever claims the task next moves it)."""
        every = max(self.lease / 3, 0.5)
        conn: psycopg.Connection | None = None
        try:
            while not done.wait(every):
                problem = None
                for attempt in range(HEARTBEAT_TRIES):
                    if attempt:
                        if done.wait(min(HEARTBEAT_RETRY, every / HEARTBEAT_TRIES)):
                            return
                    try:
                        if conn is None or conn.closed:
                            conn = connect(self.args.source)
                        conn.execute("SELECT shardcast.heartbeat(%s, %s)", [move.task_id, self.args.worker])
                        problem = None
                        break
                    except psycopg.OperationalError as error:  # no connection: open one again
                        problem = f"heartbeat failed: {first_line(error)}"
                        if conn is not None:
                            conn.close()
                        conn = None
                    except psycopg.Error as error:  # the server refused: the lease is gone
                        problem = f"heartbeat refused: {first_line(error)}"
                        break
                if problem is not None:
                    lost.set()
                    self.out.say(f"task {move.task_id}: {problem}; cancelling the move", error=True)
                    self.cancel(move)
                    return
        finally:
            if conn is not None:
                conn.close()

    def finish(self, move: Move, outcome: str) -> None:
        move.outcome = outcome
        with self.lock:
            self.running = [m for m in self.running if m is not move]
            self.finished.append(move)

    # --- the end ------------------------------------------------------------------------------

    def summary(self, source: psycopg.Connection | None, status: int | None, seconds: float) -> int:
        """The run's counts, then the exit status from the tasks' final states: a move that failed
        once and then succeeded is no failure. `source` None: the coordinator is gone."""
        count = {k: sum(1 for m in self.finished if m.outcome == k)
                 for k in ("moved", "in place", "failed", "elsewhere", "released", "lost")}
        moved_bytes = sum(m.size_bytes for m in self.finished if m.outcome == "moved")
        self.out.say(f"done in {pretty_seconds(seconds)}: {count['moved']} moved ({pretty_bytes(moved_bytes)}), "
                     f"{count['in place']} already in place, {count['failed']} failed attempt(s)"
                     + (f", {count['elsewhere']} moved elsewhere meanwhile" if count["elsewhere"] else "")
                     + (f", {count['released']} released" if count["released"] else "")
                     + (f", {count['lost']} left to their leases" if count["lost"] else ""))
        if self.stop_signal is not None:
            return EXIT_SIGINT if self.stop_signal == signal.SIGINT else EXIT_SIGTERM
        if source is None:
            return EXIT_ENVIRONMENT
        failed = source.execute(STILL_FAILED).fetchall()
        for task, shard, src, dst, attempts, detail in failed:
            self.out.say(f"failed: task {task}, shard group {shard} {src} -> {dst} after {attempts} attempt(s): "
                         f"{detail} (SELECT shardcast.retry_task({task}) queues it again; "
                         "shardcast.enqueue_citus_rebalance() plans anew)", error=True)
        if failed:
            return EXIT_FAILED
        if status is None and count["lost"]:
            # A lost move this run did not take up again is left to its next claimer.
            queued, held, _, _ = source.execute(OPEN, [self.args.worker]).fetchone()
            if queued or held:
                return EXIT_OPEN
        return EXIT_OK if status is None else status


def cancel_quietly(conn: psycopg.Connection | None) -> None:
    """Cancels what `conn` runs, if anything: the statement may have ended meanwhile."""
    if conn is not None:
        try:
            conn.cancel()
        except Exception:
            pass


def citus_rebalance(argv: list[str], out: Out | None = None) -> int:
    args = parser().parse_args(argv)
    rebalancer = Rebalancer(args, out)
    signal.signal(signal.SIGINT, rebalancer.interrupt)
    signal.signal(signal.SIGTERM, rebalancer.interrupt)
    return rebalancer.run()
