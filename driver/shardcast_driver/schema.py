"""Table definitions for replicas: from the source's catalog (`--bare`) or from pg_dump of the
table (the default), with the types it uses, its indexes, constraints and foreign keys."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .common import SyncError


# Read with an empty search_path, so that every type, function and collation outside
# pg_catalog comes out schema-qualified and means the same on the node.
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
    """The statements that create `shard` on a node: columns, types, collations, NOT NULL,
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

# Sequences the table's column defaults use (`DEFAULT nextval('shared_seq')`) that the table does
# not own: pg_dump -t does not dump them, and the CREATE TABLE would fail on a replica without them.
SHARED_SEQUENCES = """
SELECT DISTINCT s.oid, n.nspname, s.relname
FROM pg_attrdef d
JOIN pg_depend dep ON dep.classid = 'pg_attrdef'::regclass AND dep.objid = d.oid
                  AND dep.refclassid = 'pg_class'::regclass AND dep.deptype = 'n'
JOIN pg_class s ON s.oid = dep.refobjid AND s.relkind = 'S'
JOIN pg_namespace n ON n.oid = s.relnamespace
WHERE d.adrelid = %s::regclass
  AND NOT EXISTS (SELECT FROM pg_depend o WHERE o.classid = 'pg_class'::regclass AND o.objid = s.oid
                  AND o.refobjid = d.adrelid AND o.deptype IN ('a', 'i'))
ORDER BY 1
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
        shared = source.execute(SHARED_SEQUENCES, [shard]).fetchall()
    constraints = {oid: (contype, conname, identity, references)
                   for kind, oid, contype, conname, _, identity, references in parts if kind == "constraint"}
    indexes = {oid: (qualified_index, identity)
               for kind, oid, _, _, qualified_index, identity, _ in parts if kind == "index"}
    pre_copy: list[TocEntry] = []
    post_copy: list[Step] = []
    foreign_keys: list[ForeignKey] = []
    selection = ["--table", dump_pattern(schema, name)]
    for _, seq_schema, seq_name in shared:
        selection += ["--table", dump_pattern(seq_schema, seq_name)]
    with dumper.archive(selection, shard) as archive:
        for entry in archive.entries:
            if entry.kind in ("TABLE", "SEQUENCE", "SEQUENCE OWNED BY", "DEFAULT"):
                # With the sequences its defaults share (entries of their own: pg_dump writes no
                # OWNED BY for a sequence whose owning table it does not dump).
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
            # A sequence (a serial's, or a shared one) may be on the replica already, made for another
            # table that uses it: keep it as it is.
            script = re.sub(r"^CREATE SEQUENCE ", "CREATE SEQUENCE IF NOT EXISTS ", script, flags=re.M)
            schemas = sorted({seq_schema for _, seq_schema, _ in shared if seq_schema != schema})
            script = "".join(sql.SQL("CREATE SCHEMA IF NOT EXISTS {};\n").format(sql.Identifier(s)).as_string(source)
                             for s in schemas) + script
    needed = [NeededType(oid, type_schema, type_name, extension, typtype in "edcrm" and not rowtype)
              for oid, type_schema, type_name, typtype, extension, rowtype in types]
    return TableDefinition(qualified, schema, needed, script, post_copy, foreign_keys)


# pg_restore's scripts turn the lock timeout off (`SET lock_timeout = 0;`); the driver's own stays.
RESTORE_LOCK_TIMEOUT = re.compile(r"^SET lock_timeout = 0;$", re.M)


def set_lock_timeout(dest: psycopg.Connection, lock_timeout: float | None) -> None:
    """Inside a transaction: its statements wait at most `lock_timeout` seconds for a lock (a
    reader's on the table, say), then fail with LockNotAvailable (55P03)."""
    if lock_timeout is not None:
        milliseconds = max(1, round(lock_timeout * 1000))  # 0 would turn it off
        dest.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{milliseconds}ms")))


def run_on_replica(dest: psycopg.Connection, scripts: list[str | sql.Composable],
                   lock_timeout: float | None = None) -> None:
    """Runs scripts of pg_restore in one transaction on a replica, each statement waiting at most
    `lock_timeout` seconds for a lock. They begin with SET statements (and
    `set_config('search_path', '', false)`) that last for the session: RESET ALL gives the
    session its own settings back afterwards, whatever happened."""
    try:
        with dest.transaction():
            set_lock_timeout(dest, lock_timeout)
            for script in scripts:
                if isinstance(script, str) and lock_timeout is not None:
                    script = RESTORE_LOCK_TIMEOUT.sub("", script)
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


