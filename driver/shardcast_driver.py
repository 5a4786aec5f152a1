#!/usr/bin/env python3
"""shardcast-driver: copies shards to their destinations hot-first with native logical replication.

It talks to shardcast through SQL only. For every enabled node with a conninfo it keeps one
publication on the source and one subscription on the node, both named `shardcast_<node>`. For
every task it claims (`shardcast.claim_task`, in the plan's order, at most `max_concurrent` per
node and `shardcast.plan_workers` in all), it:

  1. creates the table on the node when it is missing, from pg_dump of the source's table (with
     the types it uses, defaults, constraints and replica identity; `--bare`: only what apply
     needs, from the catalog),
  2. adds the table to the node's publication (`ALTER PUBLICATION ... ADD TABLE ONLY`),
  3. refreshes the node's subscription (`ALTER SUBSCRIPTION ... REFRESH PUBLICATION`), which
     starts PostgreSQL's own table synchronisation (initial COPY, then catch-up),
  4. waits for the table to be ready in the node's `pg_subscription_rel`, heartbeating its lease,
  5. builds the table's other indexes and unique constraints, and adds the foreign keys whose
     referenced table is on the node too (the others wait for it, or for the end of the run),
  6. completes the task (`shardcast.complete_task`), which notifies `shardcast_completion`.

Every step is idempotent, so a task whose driver died is finished by the next claimer without
copying anything twice. Ctrl-C (or SIGTERM) stops claiming and releases the tasks in flight
(`shardcast.release_task`); a second Ctrl-C quits at once and leaves them to their leases.

    python3 driver/shardcast_driver.py --source 'host=pub dbname=app' [--node replica-a] [--follow]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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
SELECT n.nspname, c.relname, c.relreplident, c.relpersistence,
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
    (schema, table, replident, persistence, columns, primary_key, identity_is_primary, identity_index,
     identity_name) = row
    if persistence != "p":
        # shardcast.enqueue refuses these; this one became unlogged after it was enqueued.
        raise SyncError(f"{shard} is {'an unlogged' if persistence == 'u' else 'a temporary'} table, which logical "
                        f"replication cannot copy; ALTER TABLE {shard} SET LOGGED, then enqueue it again")
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


# --- the replica's full definition of a table (the default; --bare keeps only the above) -------
#
# What a table is made of comes from pg_dump's own output for that table, so that a replica gets
# what `pg_dump -t` + `pg_restore` would give it, quoting and all. pg_dump writes a custom-format
# archive; `pg_restore -l` lists its entries with the source catalog's OIDs, which tell each
# entry's object exactly (no parsing of names or SQL), and `pg_restore -L` writes the SQL of the
# entries chosen. The table's entries go in three steps:
#
#   before the copy: the table (columns, types, collations, defaults, NOT NULL, CHECK, generated
#       columns, REPLICA IDENTITY FULL), its owned sequences (serial, identity) and their defaults,
#       the primary key and the replica identity index: apply needs the identity from the first
#       change it applies;
#   after the table is ready: the other unique constraints and indexes (building them once, after
#       the copy, is faster than keeping them up to date row by row during it);
#   foreign keys: once the referenced table is on the node too (and ready there); until then they
#       wait, and are added when a later task brings that table, or at the end of the run.
#
# Left out: triggers and rules (their functions are not dumped with a table, and apply does not
# fire them), row security and policies (they name roles), comments, extended statistics,
# partition attachment (a leaf partition is a table of its own on a replica), ownership and
# privileges.

# pg_dump's and pg_restore's options for every archive: definitions only, and nothing that names
# roles, tablespaces or security label providers that a replica may not have.
DUMP_OPTIONS = ["--schema-only", "--no-owner", "--no-privileges", "--no-tablespaces", "--no-security-labels"]
# Entry kinds in `pg_restore -l` output, longest first: some are prefixes of others.
TOC_KINDS = sorted(["TABLE", "SEQUENCE", "SEQUENCE OWNED BY", "DEFAULT", "CONSTRAINT", "CHECK CONSTRAINT",
                    "FK CONSTRAINT", "INDEX", "INDEX ATTACH", "TABLE ATTACH", "TYPE", "DOMAIN"],
                   key=len, reverse=True)
TOC_LINE = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")


def dump_pattern(schema: str, name: str | None = None) -> str:
    """A pg_dump pattern that matches exactly this schema (and name): double-quoted parts are
    taken literally, whatever characters they hold."""
    quote = lambda part: '"' + part.replace('"', '""') + '"'  # noqa: E731
    return quote(schema) if name is None else f"{quote(schema)}.{quote(name)}"


@dataclass
class TocEntry:
    line: str
    oid: int  # the object's OID in the source (0 for entries that have none)
    kind: str


class PgDump:
    """pg_dump and pg_restore (of one installation) run against the source."""

    def __init__(self, pg_dump: str, source_conninfo: str):
        self.pg_dump = pg_dump
        self.pg_restore = str(Path(pg_dump).with_name("pg_restore"))
        params = conninfo_to_dict(source_conninfo)
        password = params.pop("password", None)
        params.setdefault("application_name", "shardcast-driver")
        # The password goes through the environment, not the command line that `ps` shows.
        self.conninfo = make_conninfo("", **params)
        self.env = dict(os.environ)
        if password is not None:
            self.env["PGPASSWORD"] = password

    @staticmethod
    def locate(explicit: str | None, source_major: int) -> str:
        """--pg-dump, else the source's major version's own pg_dump (Debian's layout), else 15's,
        else the one on PATH."""
        if explicit:
            return explicit
        for candidate in (f"/usr/lib/postgresql/{source_major}/bin/pg_dump", "/usr/lib/postgresql/15/bin/pg_dump"):
            if os.access(candidate, os.X_OK):
                return candidate
        found = shutil.which("pg_dump")
        if found is None:
            raise SyncError("pg_dump not found: install PostgreSQL's client programs, pass --pg-dump PATH, "
                            "or run with --bare")
        return found

    def check(self, source_major: int) -> None:
        """pg_dump dumps servers of its own major version and older only; pg_restore must be its twin."""
        versions = []
        for program in (self.pg_dump, self.pg_restore):
            try:
                out = subprocess.run([program, "--version"], capture_output=True, text=True, check=True).stdout
            except (OSError, subprocess.CalledProcessError) as error:
                raise SyncError(f"cannot run {program}: {error}") from error
            found = re.search(r"\)\s+(\d+)", out)
            if found is None:
                raise SyncError(f"cannot tell the version of {program} from {out.strip()!r}")
            versions.append(int(found.group(1)))
        if versions[0] != versions[1]:
            raise SyncError(f"{self.pg_dump} is version {versions[0]} but {self.pg_restore} is {versions[1]}")
        if versions[0] < source_major:
            raise SyncError(f"{self.pg_dump} is version {versions[0]}, older than the source's PostgreSQL "
                            f"{source_major}: pass the pg_dump of PostgreSQL {source_major} or newer with --pg-dump")

    def run(self, args: list[str], what: str) -> str:
        done = subprocess.run(args, capture_output=True, text=True, env=self.env)
        if done.returncode != 0:
            message = done.stderr.strip().replace("\n", "; ") or f"exit status {done.returncode}"
            raise SyncError(f"{what}: {message}")
        return done.stdout

    @contextlib.contextmanager
    def archive(self, selection: list[str], what: str) -> Iterator["Archive"]:
        with tempfile.TemporaryDirectory(prefix="shardcast-driver-") as directory:
            path = str(Path(directory) / "dump")
            self.run([self.pg_dump, *DUMP_OPTIONS, "--format=custom", "--strict-names", *selection,
                      "--file", path, "--dbname", self.conninfo], f"pg_dump of {what}")
            yield Archive(self, directory, path, what)


class Archive:
    def __init__(self, dumper: PgDump, directory: str, path: str, what: str):
        self.dumper, self.directory, self.path, self.what = dumper, directory, path, what
        self.entries = []
        for line in dumper.run([dumper.pg_restore, "--list", path], f"pg_restore --list of {what}").splitlines():
            parsed = TOC_LINE.match(line)
            if parsed is None:
                continue  # comments
            rest = parsed.group(4)
            kind = next((k for k in TOC_KINDS if rest.startswith(k + " ")), rest.split(" ", 1)[0])
            self.entries.append(TocEntry(line, int(parsed.group(3)), kind))

    def script(self, entries: list[TocEntry]) -> str:
        """The SQL of these entries, in the archive's (dependency) order, as pg_restore writes it:
        SET statements first (search_path = '' among them), then the entries."""
        if not entries:
            return ""
        listing = Path(self.directory) / "list"
        listing.write_text("".join(e.line + "\n" for e in entries))
        out = self.dumper.run([self.dumper.pg_restore, *DUMP_OPTIONS, "--use-list", str(listing), "--file", "-",
                               self.path], f"pg_restore of {self.what}")
        # pg_restore 15.14 and later fence a script with psql's \restrict KEY ... \unrestrict KEY;
        # these are psql commands, not SQL.
        fence = re.search(r"^\\restrict (\S+)$", out, re.M)
        if fence:
            out = re.sub(r"^\\(un)?restrict " + re.escape(fence.group(1)) + r"$", "", out, flags=re.M)
        return out


# Types a table's columns need, from the source catalog: the columns' types and, recursively,
# domains' base types, arrays' elements, composite types' attributes, ranges' subtypes and
# multiranges' ranges. Deepest first, so that a type comes after those it is made of.
NEEDED_TYPES = """
WITH RECURSIVE needed(oid, depth) AS (
    SELECT a.atttypid, 0 FROM pg_attribute a
    WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
    SELECT d.oid, n.depth + 1
    FROM needed n JOIN pg_type t ON t.oid = n.oid
    CROSS JOIN LATERAL (
        SELECT t.typbasetype WHERE t.typtype = 'd'
        UNION ALL SELECT t.typelem WHERE t.typelem <> 0 AND t.typlen = -1
        UNION ALL SELECT a.atttypid FROM pg_attribute a
                  WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL SELECT r.rngsubtype FROM pg_range r WHERE t.typtype = 'r' AND r.rngtypid = t.oid
        UNION ALL SELECT r.rngtypid FROM pg_range r WHERE t.typtype = 'm' AND r.rngmultitypid = t.oid) d(oid)
    WHERE n.depth < 32
)
SELECT t.oid, ns.nspname, format('%%I.%%I', ns.nspname, t.typname), t.typtype,
       (SELECT e.extname FROM pg_depend dep JOIN pg_extension e ON e.oid = dep.refobjid
        WHERE dep.classid = 'pg_type'::regclass AND dep.objid = t.oid AND dep.deptype = 'e'),
       t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) <> 'c'
FROM (SELECT oid, max(depth) AS depth FROM needed GROUP BY oid) n
JOIN pg_type t ON t.oid = n.oid
JOIN pg_namespace ns ON ns.oid = t.typnamespace
WHERE ns.nspname NOT IN ('pg_catalog', 'information_schema')
  AND NOT (t.typelem <> 0 AND t.typlen = -1)  -- arrays come with their element type
  AND t.typtype <> 'm'                        -- and multiranges with their range type
ORDER BY n.depth DESC, t.oid
"""

# The table's constraints and indexes in the source, with the names a replica knows them by.
TABLE_PARTS = """
SELECT 'constraint', k.oid, k.contype::text, k.conname, NULL,
       k.contype = 'p' OR (k.conindid <> 0 AND EXISTS (SELECT FROM pg_index i WHERE i.indexrelid = k.conindid
                                                       AND i.indisreplident)),
       CASE WHEN k.contype = 'f' THEN format('%%I.%%I', fn.nspname, f.relname) END
FROM pg_constraint k
LEFT JOIN pg_class f ON f.oid = k.confrelid
LEFT JOIN pg_namespace fn ON fn.oid = f.relnamespace
WHERE k.conrelid = %s::regclass
UNION ALL
SELECT 'index', i.indexrelid, NULL, ic.relname, format('%%I.%%I', n.nspname, ic.relname),
       i.indisprimary OR i.indisreplident, NULL
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
WHERE i.indrelid = %s::regclass
"""


@dataclass
class Step:
    """One index or constraint built after the copy, unless the replica has it already."""
    what: str
    script: str
    exists: tuple[str, list]  # a query for the replica, and its parameters


@dataclass
class ForeignKey:
    table: str
    name: str
    references: str
    script: str


@dataclass
class NeededType:
    oid: int
    schema: str
    name: str  # quoted qualified
    extension: str | None  # the extension it belongs to, if any
    creatable: bool  # an enum, domain, composite, range or multirange type of its own


@dataclass
class TableDefinition:
    shard: str
    schema: str
    types: list[NeededType]  # deepest first
    pre_copy: str
    post_copy: list[Step]
    foreign_keys: list[ForeignKey]


def constraint_exists(table: str, name: str) -> tuple[str, list]:
    return ("SELECT EXISTS (SELECT FROM pg_constraint WHERE conrelid = to_regclass(%s) AND conname = %s)",
            [table, name])


def table_definition(source: psycopg.Connection, dumper: PgDump, shard: str) -> TableDefinition:
    """What a replica needs to hold `shard` as the source does, from pg_dump of that table."""
    with source.transaction():
        source.execute("SET LOCAL search_path = ''")
        schema, name, qualified, inherits = source.execute(
            "SELECT n.nspname, c.relname, format('%%I.%%I', n.nspname, c.relname),"
            "       EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = c.oid AND NOT c.relispartition)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s::regclass",
            [shard]).fetchone()
        parts = source.execute(TABLE_PARTS, [shard, shard]).fetchall()
        types = source.execute(NEEDED_TYPES, [shard]).fetchall()
    constraints = {oid: (contype, conname, identity, references)
                   for kind, oid, contype, conname, _, identity, references in parts if kind == "constraint"}
    indexes = {oid: (qualified_index, identity)
               for kind, oid, _, _, qualified_index, identity, _ in parts if kind == "index"}
    pre_copy: list[TocEntry] = []
    post_copy: list[Step] = []
    foreign_keys: list[ForeignKey] = []
    with dumper.archive(["--table", dump_pattern(schema, name)], shard) as archive:
        for entry in archive.entries:
            if entry.kind in ("TABLE", "SEQUENCE", "SEQUENCE OWNED BY", "DEFAULT"):
                pre_copy.append(entry)
            elif entry.kind in ("CONSTRAINT", "CHECK CONSTRAINT", "FK CONSTRAINT") and entry.oid in constraints:
                contype, conname, identity, references = constraints[entry.oid]
                if entry.kind == "FK CONSTRAINT":
                    foreign_keys.append(ForeignKey(qualified, conname, references, archive.script([entry])))
                elif identity:
                    pre_copy.append(entry)
                else:
                    post_copy.append(Step(f"constraint {conname}", archive.script([entry]),
                                          constraint_exists(qualified, conname)))
            elif entry.kind == "INDEX" and entry.oid in indexes:
                qualified_index, identity = indexes[entry.oid]
                if identity:
                    pre_copy.append(entry)
                else:
                    post_copy.append(Step(f"index {qualified_index}", archive.script([entry]),
                                          ("SELECT to_regclass(%s) IS NOT NULL", [qualified_index])))
            # Everything else is left out: see above.
        if inherits:
            # pg_dump writes CREATE TABLE ... INHERITS (parent), which needs the parents on the
            # replica: an inheritance child is made from the catalog instead, as with --bare
            # (every column its own, primary key and replica identity), and gets the rest after
            # the copy.
            script = "".join(s.as_string(source) + ";\n" for s in create_table_statements(source, shard))
        else:
            script = archive.script(pre_copy)
    needed = [NeededType(oid, type_schema, type_name, extension, typtype in "edcrm" and not rowtype)
              for oid, type_schema, type_name, typtype, extension, rowtype in types]
    return TableDefinition(qualified, schema, needed, script, post_copy, foreign_keys)


def run_on_replica(dest: psycopg.Connection, scripts: list[str | sql.Composable]) -> None:
    """Runs scripts of pg_restore in one transaction on a replica. They begin with SET statements
    (and `set_config('search_path', '', false)`) that last for the session: RESET ALL gives the
    session its own settings back afterwards, whatever happened."""
    try:
        with dest.transaction():
            for script in scripts:
                if not isinstance(script, str) or script.strip():
                    dest.execute(script)
    finally:
        if not dest.closed:
            with contextlib.suppress(psycopg.Error):
                dest.execute("RESET ALL")


# On a replica: its tables, with their state in the node's subscription (NULL: not in it).
TABLES_ON_REPLICA = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),
       (SELECT r.srsubstate::text FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
        WHERE s.subname = %s AND r.srrelid = c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
"""
FOREIGN_KEYS_ON_REPLICA = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), k.conname
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE k.contype = 'f'
"""
# On the source: foreign keys from or to the given tables (NULL: all), as pg_dump dumps them with
# their table (a partition's inherited ones come with its parent, which a replica does not have).
FOREIGN_KEYS_ON_SOURCE = """
SELECT t.name, k.conname, f.name
FROM pg_constraint k
CROSS JOIN LATERAL (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = k.conrelid) t(name)
CROSS JOIN LATERAL (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = k.confrelid) f(name)
WHERE k.contype = 'f' AND k.conparentid = 0
  AND (%s::text[] IS NULL OR t.name = ANY(%s::text[]) OR f.name = ANY(%s::text[]))
ORDER BY 1, 2
"""


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
        self.dumper: PgDump | None = None  # None with --bare

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
            if not self.args.bare:
                source_major = source.info.server_version // 10000
                try:
                    self.dumper = PgDump(PgDump.locate(self.args.pg_dump, source_major), self.args.source)
                    self.dumper.check(source_major)
                except SyncError as error:
                    print(f"shardcast-driver: {error}", file=sys.stderr, flush=True)
                    return EXIT_FAILED
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
            if not self.stopping.is_set():
                self.add_waiting_foreign_keys(source)
        return EXIT_INTERRUPTED if self.stopping.is_set() else EXIT_OK

    def add_waiting_foreign_keys(self, source: psycopg.Connection) -> None:
        """At the end of a run: every foreign key between tables that are on a node now (this run's
        or earlier runs') and that it lacks."""
        if self.dumper is None:
            return
        for node in self.nodes:
            try:
                with connect(node.conninfo) as dest:
                    waiting = self.add_foreign_keys(node, source, dest)
            except (psycopg.Error, SyncError) as error:
                self.progress.say(f"foreign keys on {node.name}: {str(error).strip()}")
                continue
            if waiting:
                self.progress.say(f"{node.name}: {len(waiting)} foreign key(s) wait for the table they reference: "
                                  + ", ".join(waiting))

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
        definition = None if self.dumper is None else table_definition(source, self.dumper, task.shard)
        if dest.execute("SELECT to_regclass(%s)", [task.shard]).fetchone()[0] is None:
            self.create_table(task, dest, statements, definition)
        elif self.subscription_state(task, dest) is None and dest.execute(
                sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.SQL(task.shard))).fetchone()[0]:
            # The initial copy would collide with these rows and retry for ever.
            raise SyncError(f"{task.shard} already has rows on {task.node.name}; empty it (or drop it) and retry")
        self.add_to_publication(task, source)
        with task.node.refresh_lock:
            dest.execute(sql.SQL("ALTER SUBSCRIPTION {} REFRESH PUBLICATION").format(
                sql.Identifier(task.node.channel)))
        if not self.wait_until_ready(task, source, dest):
            return False
        if definition is not None:
            self.complete_definition(task, dest, definition)
            self.add_foreign_keys(task.node, source, dest, [definition.shard], {definition.shard: definition})
        return True

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

    def create_table(self, task: Task, dest: psycopg.Connection, statements: list[sql.Composable],
                     definition: TableDefinition | None) -> None:
        """Creates the table on the node: with --bare from `statements`, else the types it needs
        that the node lacks, then its definition before the copy (see TableDefinition)."""
        for attempt in range(2):
            try:
                if definition is None:
                    with dest.transaction():
                        for statement in statements:
                            dest.execute(statement)
                else:
                    types = self.types_script(task, dest, definition)
                    schema = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(definition.schema))
                    run_on_replica(dest, [schema, types, definition.pre_copy])
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
                raise SyncError(f"{task.shard} has a column of type {needed.name}, of extension "
                                f"{needed.extension}: CREATE EXTENSION {needed.extension} on {task.node.name} first")
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
                run_on_replica(dest, [step.script])
            except psycopg.Error as error:
                detail = str(error).strip().splitlines()[0]
                raise SyncError(f"ready on {task.node.name}, but its {step.what} could not be built there: "
                                f"{detail}") from error

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
                    run_on_replica(dest, [key.script])
                except psycopg.Error as error:
                    detail = str(error).strip().splitlines()[0]
                    waiting.append(f"{key.name} of {table} ({detail})")
        return waiting

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
    parser.add_argument("--bare", action="store_true",
                        help="give replicas only what apply needs (columns, primary key, replica identity), read "
                        "from the catalog, instead of the table's full definition from pg_dump (types, defaults, "
                        "constraints, indexes, foreign keys)")
    parser.add_argument("--pg-dump", metavar="PATH",
                        help="the pg_dump to read definitions with, of the source's major version or newer; "
                        "pg_restore is taken from the same directory (default: PostgreSQL's own for the source's "
                        "version, then 15's, then the one on PATH)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    driver = Driver(parse_args(argv))
    signal.signal(signal.SIGINT, driver.interrupt)
    signal.signal(signal.SIGTERM, driver.interrupt)
    return driver.run()


if __name__ == "__main__":
    sys.exit(main())
