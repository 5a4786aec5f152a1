"""One task: make the node's subscription copy one table, report its progress, and stop the copy
on the node when the driver stops.

For a table it:
  1. creates it on the node when it is missing (schema.py),
  2. adds it to the node's publication (`ALTER PUBLICATION ... ADD TABLE ONLY`),
  3. refreshes the node's subscription (`ALTER SUBSCRIPTION ... REFRESH PUBLICATION`), which
     starts PostgreSQL's own table synchronisation (initial COPY, then catch-up),
  4. waits for the table to be ready in the node's `pg_subscription_rel`, printing the bytes the
     node's tablesync worker has copied (`pg_stat_progress_copy`) every --progress-interval,
  5. builds the table's other indexes and unique constraints, and adds the foreign keys whose
     referenced table is on the node too.

Stopping (SIGINT, SIGTERM) before the table is ready stops the copy on the node: the table goes
out of the publication and a REFRESH PUBLICATION takes it out of the subscription, which stops
its tablesync worker at once (its COPY is rolled back) and drops the worker's slot on the source;
rows that a finished copy had already committed are truncated, so that the next claimer starts
from an empty table (a reader's lock can delay that TRUNCATE; rows left when it outlasts the
driver's patience are marked, and the next sync empties them first).

DDL on the node waits --lock-timeout for a lock, then is tried again within the same claim until
--sync-timeout: a reader's long transaction costs no attempt.
"""

from __future__ import annotations

import json
import re
import time
from typing import Callable, TypeVar

import psycopg
from psycopg import sql

from .common import (LeaseLost, Node, SyncError, Task, connect, first_line, pretty_bytes, pretty_seconds,
                     published)
from .schema import (FOREIGN_KEYS_ON_REPLICA, FOREIGN_KEYS_ON_SOURCE, TABLES_ON_REPLICA, TableDefinition,
                     create_table_statements, dump_pattern, run_on_replica, set_lock_timeout, table_definition)

COPIED, ALREADY, STOPPED = "copied", "already", "stopped"

T = TypeVar("T")


def ensure_channel(source: psycopg.Connection, node: Node, publisher_conninfo: str,
                   dest: psycopg.Connection) -> None:
    """Creates the node's publication on the source and its subscription on the node, if missing."""
    if not published(source, node):
        try:
            source.execute(sql.SQL("CREATE PUBLICATION {}").format(sql.Identifier(node.channel)))
        except psycopg.errors.DuplicateObject:
            pass  # another driver created it meanwhile
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
    note_subscription(source, node, dest)


# What the source must know of a node's subscription to find its slots without the node: the
# subscription's OID and the node's system identifier name its tablesync slots
# (pg_<subscription oid>_sync_<table oid>_<system identifier>), which `finish --force` drops
# when the node cannot be reached. Kept as the comment of the node's publication, as JSON after a
# fixed prefix (a node's name may hold any text: it is a JSON string there, never parsed as ids).
SUBSCRIPTION_NOTE_PREFIX = "shardcast-driver: "


def subscription_note(node: Node, suboid: int, sysid: int, slot: str | None) -> str:
    return SUBSCRIPTION_NOTE_PREFIX + json.dumps({
        "subscription": node.channel, "node": node.name, "oid": int(suboid), "system_identifier": str(sysid),
        "slot": slot, "tablesync_slots": f"pg_{int(suboid)}_sync_<table oid>_{sysid}"})


def parse_subscription_note(comment: str | None, channel: str) -> tuple[int, int, str | None] | None:
    """(subscription OID, node system identifier, slot name or None) from a publication comment
    that note_subscription wrote for this very channel's subscription; None for anything else (no
    comment, another format, another channel, ids that are not numbers)."""
    if not comment or not comment.startswith(SUBSCRIPTION_NOTE_PREFIX):
        return None
    try:
        note = json.loads(comment[len(SUBSCRIPTION_NOTE_PREFIX):])
    except ValueError:
        return None
    if not isinstance(note, dict) or note.get("subscription") != channel:
        return None
    suboid, sysid, slot = note.get("oid"), note.get("system_identifier"), note.get("slot")
    if isinstance(suboid, bool) or not isinstance(suboid, int) or suboid <= 0:
        return None
    if not isinstance(sysid, str) or not re.fullmatch(r"[0-9]{1,20}", sysid) or int(sysid) >= 2 ** 64:
        return None
    # The subscription's own slot is named after the channel (CREATE SUBSCRIPTION's default);
    # anything else named there is not trusted.
    return suboid, int(sysid), slot if slot == channel else None


def note_subscription(source: psycopg.Connection, node: Node, dest: psycopg.Connection) -> None:
    """Records the node subscription's OID, slot and the node's system identifier in the comment of
    its publication on the source (best effort: finish --force falls back to listing slots)."""
    try:
        row = dest.execute(
            "SELECT s.oid, s.subslotname::text, (SELECT system_identifier FROM pg_control_system())"
            " FROM pg_subscription s WHERE s.subname = %s"
            " AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [node.channel]).fetchone()
        if row is None:
            return
        note = subscription_note(node, row[0], row[2] % 2 ** 64, row[1])
        current = source.execute("SELECT obj_description(oid, 'pg_publication') FROM pg_publication"
                                 " WHERE pubname = %s", [node.channel]).fetchone()
        if current is not None and current[0] != note:
            source.execute(sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(sql.Identifier(node.channel),
                                                                             sql.Literal(note)))
    except psycopg.Error:
        pass


def noted_subscription(source: psycopg.Connection, node: Node) -> tuple[int, int, str | None] | None:
    """(subscription OID, node system identifier, slot name or None) as note_subscription recorded them."""
    row = source.execute("SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %s",
                         [node.channel]).fetchone()
    return parse_subscription_note(row[0], node.channel) if row else None


# On a node: the comment that marks a table holding the rows of a copy the driver stopped but
# could not empty (a reader's lock outlasted its patience); the next sync of the table empties it.
LEFTOVER_NOTE = "shardcast-driver: rows of a stopped copy by subscription {channel}; the next sync empties them"


def refresh(node: Node, dest: psycopg.Connection) -> None:
    with node.refresh_lock:
        dest.execute(sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION").format(sql.Identifier(node.channel)))


class Syncer:
    """The sync steps; mixed into the Driver (claims.py), whose attributes they use: args, dumper,
    stopping, report."""

    @property
    def lock_timeout(self) -> float | None:
        return getattr(self.args, "lock_timeout", None)

    def lock_timed_out(self, what: str, task: Task, error: BaseException, waited: float | None = None) -> SyncError:
        """A DDL statement on the node gave up waiting for a lock, for good (`waited`: for how long
        it tried again, until --sync-timeout) or because the driver stops."""
        how = (f"waited {self.lock_timeout:g} s (--lock-timeout)" if self.lock_timeout is not None
               else "waited (the node's lock_timeout)")
        given_up = (f"gave up after trying for {waited:.0f} s (--sync-timeout)" if waited is not None
                    else "gave up, to be tried again")
        return SyncError(f"{what} on {task.node.name} {how} for a lock that another session holds on {task.shard} "
                         f"there (a long transaction of a reader or writer: see pg_locks on {task.node.name}); "
                         f"{given_up}: {first_line(error)}")

    def patiently(self, task: Task, what: str, action: Callable[[], T]) -> T:
        """Runs `action` (DDL on the node, each statement waiting --lock-timeout for a lock). While
        another session's lock keeps it waiting, tries again every --retry-delay (at least 0.5 s)
        within the same claim, its lease heartbeated meanwhile: a reader's long transaction costs
        no attempt. Only when that lasts --sync-timeout does the attempt fail (and count); when
        the driver stops, the task is handed back."""
        started = time.monotonic()
        told = None
        while True:
            try:
                return action()
            except psycopg.errors.LockNotAvailable as error:
                now = time.monotonic()
                if task.lost:
                    raise LeaseLost(task.lost) from error
                if self.stopping.is_set():
                    raise self.lock_timed_out(what, task, error) from error
                if now - started >= getattr(self.args, "sync_timeout", 3600.0):
                    raise self.lock_timed_out(what, task, error, now - started) from error
                if told is None or now - told >= 60:
                    told = now
                    how = (f"{self.lock_timeout:g} s (--lock-timeout)" if self.lock_timeout is not None
                           else "the node's lock_timeout")
                    self.report.say(f"waiting  {task.shard} -> {task.node.name}: {what} waited {how} for a lock that "
                                    f"another session holds on {task.shard} there (see pg_locks on "
                                    f"{task.node.name}); trying again, for up to "
                                    f"{getattr(self.args, 'sync_timeout', 3600.0):.0f} s (--sync-timeout)")
                self.stopping.wait(max(getattr(self.args, "retry_delay", 1.0), 0.5))

    def replicate(self, task: Task, source: psycopg.Connection) -> str:
        """Makes the node copy the shard: COPIED once it is ready there, ALREADY when it was in sync
        there before, STOPPED when the driver stops first (the node's copy stopped)."""
        try:
            dest = connect(task.node.conninfo)
        except psycopg.OperationalError as error:
            raise SyncError(f"cannot connect to {task.node.name}: {first_line(error)}") from error
        with dest:
            return self.replicate_to(task, source, dest)

    def replicate_to(self, task: Task, source: psycopg.Connection, dest: psycopg.Connection) -> str:
        statements = create_table_statements(source, task.shard)  # also refuses a table without identity
        definition = None if self.dumper is None else table_definition(source, self.dumper, task.shard)
        if dest.execute("SELECT to_regclass(%s)", [task.shard]).fetchone()[0] is None:
            self.create_table(task, dest, statements, definition)
            task.created = True
        elif self.subscription_state(task, dest) is None and dest.execute(
                sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.SQL(task.shard))).fetchone()[0]:
            if self.leftover(task, dest):
                # A copy that the driver stopped and could not empty then (a reader's lock): its rows
                # are the driver's own, and go now.
                def empty() -> None:
                    with dest.transaction():  # the rows and the mark go together
                        set_lock_timeout(dest, self.lock_timeout)
                        dest.execute(sql.SQL("TRUNCATE ONLY {}").format(sql.SQL(task.shard)))
                        dest.execute(sql.SQL("COMMENT ON TABLE {} IS NULL").format(sql.SQL(task.shard)))

                self.patiently(task, "emptying the rows of a stopped copy", empty)
                self.report.say(f"emptied  {task.shard} on {task.node.name}: the rows of a copy stopped earlier")
            else:
                # The initial copy would collide with these rows and retry for ever.
                raise SyncError(f"{task.shard} already has rows on {task.node.name} and is not in its subscription "
                                f"{task.node.channel}; empty it (or drop it) and retry")
        if self.stopping.is_set() and self.stop_copy(task, source, dest) == STOPPED:
            return STOPPED
        # "Already in sync" only for the very table this node's publication holds: a table of the
        # same name that is ready on the node but is not the one published (renamed or re-created
        # on the source) is another table's replica, and must not be reported as this one's copy.
        was_published = self.published(task, source)
        if not was_published and self.subscription_state(task, dest) == "r":
            raise SyncError(f"{task.shard} on {task.node.name} is the replica of another table of that name "
                            f"(renamed or re-created on the source since); drop it on {task.node.name}, "
                            "or take the old table out of the publication, and retry")
        self.add_to_publication(task, source)
        try:
            already = was_published and self.subscription_state(task, dest) == "r"
            if not already:
                refresh(task.node, dest)
                if not self.wait_until_ready(task, dest) and self.stop_copy(task, source, dest) == STOPPED:
                    return STOPPED
        except LeaseLost:
            raise
        except Exception as error:
            if not self.stopping.is_set():
                self.withdraw(task, source, dest, error)
            raise
        if definition is not None:
            self.complete_definition(task, dest, definition)
            self.add_foreign_keys(task.node, source, dest, [definition.shard], {definition.shard: definition})
        if already and task.attempts > 0 and self.lease_expired_before(task, source):
            # Ready because an earlier attempt of this very task copied it, whose driver died
            # before it could complete the task (its lease ran out; a failed or released attempt
            # takes the table out of the publication): that copy is this task's, not a table
            # that was there before.
            self.report.say(f"ready    {task.shard} on {task.node.name}: copied by an earlier attempt of task "
                            f"{task.task_id}")
            return COPIED
        return ALREADY if already else COPIED

    def add_to_publication(self, task: Task, source: psycopg.Connection) -> None:
        if self.published(task, source):
            return
        try:
            source.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE ONLY {}").format(
                sql.Identifier(task.node.channel), sql.SQL(task.shard)))
        except psycopg.errors.DuplicateObject:
            pass  # another driver added it meanwhile

    @staticmethod
    def lease_expired_before(task: Task, source: psycopg.Connection) -> bool:
        """Whether the task's last attempt ended with its lease running out (shardcast's
        expire_leases notes it in the task's detail, which a claim leaves as it is)."""
        row = source.execute("SELECT detail FROM shardcast.replication_tasks WHERE task_id = %s",
                             [task.task_id]).fetchone()
        return row is not None and (row[0] or "").startswith("lease expired")

    @staticmethod
    def published(task: Task, source: psycopg.Connection) -> bool:
        return source.execute(
            "SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid"
            " WHERE p.pubname = %s AND r.prrelid = to_regclass(%s)", [task.node.channel, task.shard]
        ).fetchone() is not None

    @staticmethod
    def subscription_state(task: Task, dest: psycopg.Connection) -> str | None:
        """The table's state in the node's subscription (`r` = ready), None when it is not in it."""
        row = dest.execute(
            "SELECT r.srsubstate FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid"
            " WHERE s.subname = %s AND r.srrelid = to_regclass(%s)", [task.node.channel, task.shard]).fetchone()
        return row[0] if row else None

    @staticmethod
    def copy_progress(task: Task, dest: psycopg.Connection) -> tuple[int, int] | None:
        """Bytes and rows the node's tablesync worker has copied into the table so far (its COPY)."""
        return dest.execute(
            "SELECT p.bytes_processed, p.tuples_processed FROM pg_stat_progress_copy p"
            " WHERE p.relid = to_regclass(%s) AND p.datid = (SELECT oid FROM pg_database"
            "                                                WHERE datname = current_database())",
            [task.shard]).fetchone()

    def wait_until_ready(self, task: Task, dest: psycopg.Connection) -> bool:
        """True once the table is ready on the node; False when the driver stops first."""
        started = time.monotonic()
        deadline = started + self.args.sync_timeout
        next_progress = started + self.args.progress_interval
        last_progress = None
        missing_since = None
        while True:
            state = self.subscription_state(task, dest)
            if state == "r":
                return True
            if state is None:
                # The refresh ran before the publication change was visible; run it again.
                missing_since = missing_since or time.monotonic()
                if time.monotonic() - missing_since > 2:
                    refresh(task.node, dest)
                    missing_since = None
            if task.lost:
                raise LeaseLost(task.lost)
            if self.stopping.is_set():
                return False
            now = time.monotonic()
            if now >= next_progress:
                next_progress = now + self.args.progress_interval
                progress = self.copy_progress(task, dest)
                if progress is not None and progress != last_progress:
                    last_progress = progress
                    self.report.say(f"copying  {task.shard} -> {task.node.name}: {pretty_bytes(progress[0])} "
                                    f"({progress[1]} rows) copied after {pretty_seconds(now - started)}; "
                                    f"{pretty_bytes(task.size_bytes)} on the source")
                elif progress is None and state in ("f", "s") and last_progress != state:
                    last_progress = state
                    self.report.say(f"copying  {task.shard} -> {task.node.name}: copied, catching up with the "
                                    f"writes made meanwhile ({pretty_seconds(now - started)})")
            if now > deadline:
                raise SyncError(f"not ready after {self.args.sync_timeout:.0f} s (state {state or 'missing'})")
            self.stopping.wait(self.args.poll)

    def stop_copy(self, task: Task, source: psycopg.Connection, dest: psycopg.Connection) -> str:
        """Stops the node's copy of the table: out of the publication, then out of the subscription
        (REFRESH PUBLICATION stops the table's tablesync worker and drops its slot). Returns COPIED
        when the table turned out to be ready already. Touches nothing on the node when the lease
        is gone: the table may be another driver's copy by now."""
        try:
            source.execute("SELECT shardcast.heartbeat(%s, %s)", [task.task_id, self.worker])
        except psycopg.Error as error:
            raise LeaseLost(f"lease not renewed, copy left alone: {first_line(error)}") from error
        state = self.subscription_state(task, dest)
        if state == "r":
            return COPIED  # ready just as the driver stops: finish it, it costs nothing more
        if self.published(task, source):
            try:
                source.execute(sql.SQL("ALTER PUBLICATION {} DROP TABLE ONLY {}").format(
                    sql.Identifier(task.node.channel), sql.SQL(task.shard)))
            except psycopg.errors.UndefinedObject:
                pass  # taken out meanwhile
        if state is not None:
            refresh(task.node, dest)
            # The worker is gone when the refresh commits; make sure, for a moment.
            for _ in range(50):
                if not dest.execute(
                        "SELECT 1 FROM pg_stat_subscription WHERE subname = %s AND relid = to_regclass(%s)",
                        [task.node.channel, task.shard]).fetchone() and self.copy_progress(task, dest) is None:
                    break
                time.sleep(0.1)
            else:
                raise SyncError(f"the copy of {task.shard} on {task.node.name} did not stop")
        if (state is not None or task.created) and dest.execute(
                sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.SQL(task.shard))).fetchone()[0]:
            # A copy that had finished (catching up when stopped) committed its rows: the next
            # claimer starts from an empty table.
            self.empty_stopped_copy(task, source, dest)
        task.stopped_how = (f"copy stopped on {task.node.name}" if state is not None
                            else f"nothing was copying on {task.node.name} yet")
        return STOPPED

    def truncate(self, task: Task, dest: psycopg.Connection, lock_timeout: float | None) -> None:
        with dest.transaction():
            set_lock_timeout(dest, lock_timeout)
            dest.execute(sql.SQL("TRUNCATE ONLY {}").format(sql.SQL(task.shard)))

    def leftover(self, task: Task, dest: psycopg.Connection) -> bool:
        """Whether the table's rows on the node are a stopped copy's that the driver marked."""
        return dest.execute("SELECT obj_description(to_regclass(%s), 'pg_class') = %s",
                            [task.shard, LEFTOVER_NOTE.format(channel=task.node.channel)]).fetchone()[0] is True

    def empty_stopped_copy(self, task: Task, source: psycopg.Connection, dest: psycopg.Connection) -> None:
        """TRUNCATE of the stopped copy, which is out of the publication and the subscription by
        now. A reader of the half-copied table may hold a lock on it: tries again, a second at a
        time (so that other sessions do not queue behind the TRUNCATE for long), heartbeating
        the lease, for up to 6 × --lock-timeout (60 s by default). If the lock outlasts that, the
        table is marked (its comment) so that the next sync of it empties it: the task is never
        stuck on rows of its own copy."""
        patience = 6 * (self.lock_timeout if self.lock_timeout is not None else 10.0)
        deadline = time.monotonic() + patience
        told = False
        while True:
            try:
                self.truncate(task, dest, min(self.lock_timeout or 1.0, 1.0))
                if told:
                    self.report.say(f"emptied  {task.shard} on {task.node.name}: the stopped copy")
                return
            except psycopg.errors.LockNotAvailable as error:
                if task.lost:
                    raise LeaseLost(task.lost) from error
                if getattr(self, "quit_now", False) or time.monotonic() >= deadline:
                    self.mark_leftover(task, dest)
                    raise SyncError(f"emptying the stopped copy of {task.shard} on {task.node.name} waited "
                                    f"{patience:g} s for a lock that another session holds there (see pg_locks on "
                                    f"{task.node.name}); its rows are left, marked: the next sync of the table "
                                    f"empties them first: {first_line(error)}") from error
                if not told:
                    told = True
                    self.report.say(f"waiting  {task.shard} -> {task.node.name}: emptying the stopped copy waits for a "
                                    f"lock that another session holds there (see pg_locks on {task.node.name}); "
                                    f"trying again for up to {patience:g} s")
                try:
                    source.execute("SELECT shardcast.heartbeat(%s, %s)", [task.task_id, self.worker])
                except psycopg.Error as beat:
                    raise LeaseLost(f"lease not renewed, copy left as it is: {first_line(beat)}") from beat
                time.sleep(0.2)

    def mark_leftover(self, task: Task, dest: psycopg.Connection) -> None:
        """Best effort: COMMENT ON TABLE takes a lock that readers and writers do not block."""
        try:
            if dest.execute("SELECT obj_description(to_regclass(%s), 'pg_class') IS NULL",
                            [task.shard]).fetchone()[0] or self.leftover(task, dest):
                with dest.transaction():
                    set_lock_timeout(dest, self.lock_timeout)
                    dest.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
                        sql.SQL(task.shard), sql.Literal(LEFTOVER_NOTE.format(channel=task.node.channel))))
        except psycopg.Error:
            pass

    def withdraw(self, task: Task, source: psycopg.Connection, dest: psycopg.Connection, why: BaseException) -> None:
        """After a failed (or timed-out) sync, best effort: the table out of the publication and the
        subscription, so that its tablesync slot does not keep the source's WAL (stop_copy)."""
        try:
            self.stop_copy(task, source, dest)
            return
        except LeaseLost:
            return
        except Exception as error:
            self.report.say(f"{task.shard} failed on {task.node.name} ({first_line(why)}); could not take it out of "
                            f"{task.node.channel}: {first_line(error)}", error=True)
        try:
            if self.published(task, source):
                source.execute(sql.SQL("ALTER PUBLICATION {} DROP TABLE ONLY {}").format(
                    sql.Identifier(task.node.channel), sql.SQL(task.shard)))
        except Exception as error:
            self.report.say(f"{task.shard}: could not drop it from publication {task.node.channel}: "
                            f"{first_line(error)}", error=True)

    def create_table(self, task: Task, dest: psycopg.Connection, statements: list[sql.Composable],
                     definition: TableDefinition | None) -> None:
        """Creates the table on the node: with --bare from `statements`, else the types it needs
        that the node lacks, then its definition before the copy (see TableDefinition)."""
        def create() -> None:
            if definition is None:
                with dest.transaction():
                    set_lock_timeout(dest, self.lock_timeout)
                    for statement in statements:
                        dest.execute(statement)
            else:
                types = self.types_script(task, dest, definition)
                schema = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(definition.schema))
                run_on_replica(dest, [schema, types, definition.pre_copy], self.lock_timeout)

        for attempt in range(2):
            try:
                self.patiently(task, "creating the table", create)
                return
            except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema,
                    psycopg.errors.DuplicateObject, psycopg.errors.DuplicateTable):
                # Another sync created the same new schema or type at the same moment: it is there
                # now, and the second attempt leaves it be.
                if dest.execute("SELECT to_regclass(%s)", [task.shard]).fetchone()[0] is not None:
                    return
                if attempt:
                    raise

    def types_script(self, task: Task, dest: psycopg.Connection, definition: TableDefinition) -> str:
        """CREATE TYPE and CREATE DOMAIN for the types the table needs that the node lacks.

        pg_dump -t does not dump the types a table uses. They come from pg_dump of their schemas
        with every table left out (`-n s -T 's.*'`), and of that only their own TYPE and DOMAIN
        entries, chosen by OID: pg_dump's output is the definition PostgreSQL itself restores
        (every kind, option, constraint, collation and quoting, in dependency order), where SQL
        rebuilt from pg_type, pg_enum and pg_constraint would have to follow each release's
        catalog and would drift from it. The catalog only says which types are needed."""
        assert self.dumper is not None
        missing = [t for t in definition.types
                   if dest.execute("SELECT to_regtype(%s) IS NULL", [t.name]).fetchone()[0]]
        if not missing:
            return ""
        for needed in missing:
            if needed.extension is not None:
                extension = dest.execute("SELECT quote_ident(%s)", [needed.extension]).fetchone()[0]
                raise SyncError(f"{task.shard} has a column of type {needed.name}, of extension "
                                f"{needed.extension}: CREATE EXTENSION {extension} on {task.node.name} first")
            if not needed.creatable:
                raise SyncError(f"{task.shard} has a column of type {needed.name}, which the driver cannot create "
                                f"(a base type, or a table's row type): create it on {task.node.name} first")
        schemas = sorted({t.schema for t in missing})
        selection = [option for schema in schemas
                     for option in ("--schema", dump_pattern(schema), "--exclude-table", dump_pattern(schema) + ".*")]
        wanted = {t.oid for t in missing}
        with self.dumper.archive(selection, f"the types of {task.shard}") as archive:
            entries = [e for e in archive.entries if e.kind in ("TYPE", "DOMAIN") and e.oid in wanted]
            lost = [t.name for t in missing if t.oid not in {e.oid for e in entries}]
            if lost:
                raise SyncError(f"pg_dump did not dump type {', '.join(lost)} that {task.shard} needs")
            creates = "".join(sql.SQL("CREATE SCHEMA IF NOT EXISTS {};\n").format(sql.Identifier(s)).as_string(dest)
                              for s in schemas)
            return creates + archive.script(entries)

    def complete_definition(self, task: Task, dest: psycopg.Connection, definition: TableDefinition) -> None:
        """After the copy: the indexes and constraints that the node does not have yet."""
        for step in definition.post_copy:
            query, params = step.exists
            if dest.execute(query, params).fetchone()[0]:
                continue
            try:
                self.patiently(task, f"ready, but building its {step.what}",
                               lambda: run_on_replica(dest, [step.script], self.lock_timeout))
            except psycopg.Error as error:
                raise SyncError(f"ready on {task.node.name}, but its {step.what} could not be built there: "
                                f"{first_line(error)}") from error

    def add_foreign_keys(self, node: Node, source: psycopg.Connection, dest: psycopg.Connection,
                         tables: list[str] | None = None,
                         definitions: dict[str, TableDefinition] | None = None) -> list[str]:
        """Adds the foreign keys from or to `tables` (None: every table) whose two tables are both
        on the node (ready there, or not in its subscription at all) and that the node lacks.
        Returns those still waiting: for the table they reference, or because adding one failed
        (it is tried again next time). A foreign key never fails a copy."""
        present = dict(dest.execute(TABLES_ON_REPLICA, [node.channel]).fetchall())
        have = {(table, name) for table, name in dest.execute(FOREIGN_KEYS_ON_REPLICA).fetchall()}
        rows = source.execute(FOREIGN_KEYS_ON_SOURCE, [tables, tables, tables]).fetchall()
        usable = lambda table: table in present and present[table] in (None, "r")  # noqa: E731
        waiting: list[str] = []
        wanted: dict[str, set[str]] = {}
        for table, name, references in rows:
            if not usable(table) or (table, name) in have:
                continue
            if usable(references):
                wanted.setdefault(table, set()).add(name)
            else:
                waiting.append(f"{name} of {table} ({references})")
        for table, names in wanted.items():
            try:
                definition = (definitions or {}).get(table) or table_definition(source, self.dumper, table)
            except (SyncError, psycopg.Error) as error:
                waiting += [f"{name} of {table} ({str(error).strip()})" for name in sorted(names)]
                continue
            for key in definition.foreign_keys:
                if key.name not in names:
                    continue
                try:
                    run_on_replica(dest, [key.script], self.lock_timeout)
                except psycopg.Error as error:
                    waiting.append(f"{key.name} of {table} ({first_line(error)})")
        return waiting
