"""What every part of the driver shares: exit codes, nodes, tasks, errors, connections, output."""

from __future__ import annotations

import hashlib
import re
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

# Exit codes (README, "Replicating with the driver"). When several apply, the first of 3, 1, 4.
EXIT_OK = 0            # every task for the nodes is done (or, in --follow, a clean stop by SIGTERM; or nothing
                       # left to serve: the nodes removed or their replication taken down by `finish`)
EXIT_FAILED = 1        # a task failed in this run, or is still failed from an earlier run
EXIT_USAGE = 2         # bad arguments, unknown --node, no node to sync to (argparse's own code)
EXIT_ENVIRONMENT = 3   # cannot connect to the source or a node, missing privileges, no pg_dump
EXIT_OPEN = 4          # tasks still open: held by another driver (--no-wait, --wait-timeout), queued for a node
                       # disabled during the run, or `finish` refused
EXIT_SIGINT = 130      # stopped by Ctrl-C (SIGINT); tasks released, copies stopped
EXIT_SIGTERM = 143     # stopped by SIGTERM in a one-shot run (in --follow: 0)

# The functions the driver calls (their signatures are read from the catalog: complete_task
# gained `copied` in 0.2.0).
FUNCTIONS = ("claim_task", "heartbeat", "complete_task", "release_task")


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
        return channel_name(self.name)


# Only ASCII letters are folded, as PostgreSQL folds identifiers: remove_node computes the same
# name in SQL (src/catalog/nodes.rs, DRIVER_CHANNEL), where lower() of other letters depends on
# the collation.
ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def channel_name(node: str) -> str:
    plain = re.sub(r"[^a-z0-9_]", "_", node.translate(ASCII_LOWER))[:40]
    if plain != node:
        plain += "_" + hashlib.md5(node.encode()).hexdigest()[:8]
    return f"shardcast_{plain}"


def published(source: psycopg.Connection, node: Node) -> bool:
    """Whether the node's publication is on the source."""
    return source.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [node.channel]).fetchone() is not None


@dataclass
class Task:
    task_id: int
    shard: str  # quoted qualified name, as claim_task returns it
    node: Node
    size_bytes: int
    priority_weight: int
    prefetch: bool
    attempts: int  # failed attempts before this claim
    lost: str | None = None  # why the lease was lost, when a heartbeat found it gone
    created: bool = False  # this task created the table on the node
    stopped_how: str = ""  # what stopping did on the node


class SyncError(Exception):
    """A task that cannot be synced; the message becomes the task's failure detail."""


class LeaseLost(Exception):
    """The task's lease expired and it went back to the queue (or to another claimer)."""


class SetupError(Exception):
    """The run cannot start: `status` is the exit code (EXIT_ENVIRONMENT or EXIT_USAGE)."""

    def __init__(self, message: str, status: int = EXIT_ENVIRONMENT):
        super().__init__(message)
        self.status = status


# Connection defaults so that a node or source that stops answering fails a statement in about a
# minute instead of hanging (and outliving the task's lease); the conninfo's own values win.
KEEPALIVES = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
              "keepalives_count": 3, "tcp_user_timeout": 60000}


def connect(conninfo: str, statement_timeout_ms: int | None = None) -> psycopg.Connection:
    """`statement_timeout_ms`: every statement of the session gives up after that long (added to
    the conninfo's own `options`)."""
    given = conninfo_to_dict(conninfo)
    defaults: dict = {key: value for key, value in KEEPALIVES.items() if key not in given}
    if statement_timeout_ms is not None:
        defaults["options"] = f"{given.get('options') or ''} -c statement_timeout={int(statement_timeout_ms)}".strip()
    return psycopg.connect(conninfo, autocommit=True, application_name="shardcast-driver", **defaults)


# `password=...` in a conninfo (a value plain or single-quoted) and the password of a URI
# (postgresql://user:secret@host): what mask_passwords hides in everything the driver prints.
PASSWORD_IN_CONNINFO = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|(?:[^\s\\]|\\.)+)", re.I)
PASSWORD_IN_URI = re.compile(r"(\bpostgres(?:ql)?://[^:/@\s]*:)([^@\s]*)(@)", re.I)


def mask_passwords(text: str) -> str:
    """The text with every conninfo password in it replaced by ****."""
    text = PASSWORD_IN_CONNINFO.sub(lambda m: m.group(1) + "****", text)
    return PASSWORD_IN_URI.sub(lambda m: m.group(1) + "****" + m.group(3), text)


def has_password(conninfo: str) -> bool:
    """Whether a conninfo (key=value or URI) carries a password of its own."""
    try:
        return bool(conninfo_to_dict(conninfo).get("password"))
    except psycopg.Error:
        return bool(PASSWORD_IN_CONNINFO.search(conninfo) or PASSWORD_IN_URI.search(conninfo))


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def stamp() -> str:
    """Now, ISO-8601 in UTC, to the millisecond."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Out:
    """Timestamped lines, whole, from any thread."""

    def __init__(self, out=None, err=None):
        self.lock = threading.Lock()
        self.out = out
        self.err = err

    def say(self, line: str, error: bool = False) -> None:
        stream = (self.err or sys.stderr) if error else (self.out or sys.stdout)
        with self.lock:
            # Never echo a password: a conninfo can reach a message (an error that quotes it).
            for part in mask_passwords(line).splitlines() or [""]:
                print(f"{stamp()} {part}", file=stream, flush=True)


def iso(moment: datetime) -> str:
    """A timestamp from the database, ISO-8601 in UTC, to the second."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pretty_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def pretty_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def load_nodes(source: psycopg.Connection, only: list[str] | None, enabled_only: bool = True) -> list[Node]:
    """The nodes with a conninfo (enabled ones only, unless told), or those named; an unknown
    name is a usage error."""
    rows = source.execute(
        "SELECT node, conninfo, max_concurrent, enabled FROM shardcast.nodes"
        " WHERE (%s::text[] IS NULL OR node = ANY(%s)) ORDER BY node", [only, only]).fetchall()
    known = {name for name, *_ in rows}
    unknown = [name for name in only or [] if name not in known]
    if unknown:
        raise SetupError(f"no node {', '.join(unknown)} in shardcast.nodes (add it with shardcast.add_node)",
                         EXIT_USAGE)
    usable, disabled = [], []
    for name, conninfo, max_concurrent, enabled in rows:
        if conninfo is None:
            if only:
                raise SetupError(f"node {name} has no conninfo: the driver cannot reach it", EXIT_USAGE)
            continue
        if enabled_only and not enabled:
            if only:
                raise SetupError(f"node {name} is disabled (shardcast.nodes.enabled): {disabled_hint(name)}",
                                 EXIT_USAGE)
            disabled.append(name)
            continue
        usable.append(Node(name, conninfo, max_concurrent))
    if not usable:
        raise SetupError("no enabled node with a conninfo in shardcast.nodes: add one with "
                         "shardcast.add_node(name, capacity, max_concurrent, conninfo)"
                         + (f"; disabled: {', '.join(disabled)}: {disabled_hint(disabled[0])}" if disabled else ""),
                         EXIT_USAGE)
    return usable


def disabled_hint(name: str) -> str:
    """Why the driver leaves a disabled node alone, and how to serve it again."""
    quoted = "'" + name.replace("'", "''") + "'"
    return ("`shardcast-driver finish` took its replication down and disabled it (or shardcast.alter_node(..., "
            "enabled => false) paused it); the driver sets up no publication or subscription for a disabled node. "
            f"To replicate to it again: SELECT shardcast.alter_node({quoted}, enabled => true)")


# Tasks that failed for good (max_attempts) and were not enqueued again since, of tables that
# still exist: what an earlier run left undone. Their names come from the completion log
# (shardcast.shards is not public).
STILL_FAILED = """
SELECT t.task_id, coalesce(format('%%I.%%I', l.schema_name, l.table_name), 'shard ' || t.shard_id),
       t.node, t.attempts, t.detail, t.finished_at
FROM shardcast.replication_tasks t
LEFT JOIN LATERAL (SELECT c.schema_name, c.table_name FROM shardcast.completion_log c
                   WHERE c.task_id = t.task_id ORDER BY c.finished_at DESC LIMIT 1) l ON true
WHERE t.state = 'failed' AND t.node = ANY(%s)
  AND NOT EXISTS (SELECT FROM shardcast.replication_tasks u
                  WHERE u.shard_id = t.shard_id AND u.node = t.node AND u.task_id > t.task_id)
  AND (l.table_name IS NULL OR to_regclass(format('%%I.%%I', l.schema_name, l.table_name)) IS NOT NULL)
ORDER BY t.task_id
"""

# Open tasks claimed by someone (else): the leases a run may have to wait for.
HELD = """
SELECT t.task_id, m.shard, t.node, t.claimed_by, t.lease_expires_at, t.lease_expires_at > now()
FROM shardcast.replication_tasks t JOIN shardcast.replication_manifest m USING (task_id)
WHERE t.state = 'claimed' AND t.node = ANY(%s) AND t.claimed_by IS DISTINCT FROM %s
ORDER BY t.lease_expires_at, t.task_id
"""


def still_failed(source: psycopg.Connection, nodes: list[str]) -> list[tuple]:
    return source.execute(STILL_FAILED, [nodes]).fetchall()


def held_by_others(source: psycopg.Connection, nodes: list[str], worker: str | None) -> list[tuple]:
    return source.execute(HELD, [nodes, worker]).fetchall()


# The open tasks as the driver reads them from shardcast.replication_manifest: its column `node`
# was `destination` in 0.1.0's catalog, which the driver still serves (to_jsonb reads either),
# and 0.1.0 had table copies only (no `kind`). `position` is the dispatch order, per kind.
MANIFEST_0_1 = """(SELECT m.task_id, m.shard, m.state, m.position, m.priority_weight,
               coalesce(to_jsonb(m) ->> 'node', to_jsonb(m) ->> 'destination') AS node,
               coalesce(to_jsonb(m) ->> 'kind', 'copy') AS kind
        FROM shardcast.replication_manifest m)"""


def manifest(conn: psycopg.Connection) -> str:
    """The manifest to read, as a relation with the columns task_id, shard, state, position,
    priority_weight, node and kind: the view itself on 0.2.0's catalog, [MANIFEST_0_1] on 0.1.0's.
    Not the wrapper everywhere: its to_jsonb of every row costs about 1.8 s per query at 100,000
    open tasks (the view alone, 0.2 s), and the claim loop reads the manifest for every claim."""
    current = conn.execute(
        "SELECT count(*) = 2 FROM pg_attribute WHERE attrelid = 'shardcast.replication_manifest'::regclass"
        " AND attname IN ('node', 'kind') AND NOT attisdropped").fetchone()[0]
    return "shardcast.replication_manifest" if current else MANIFEST_0_1


def has_function(conn: psycopg.Connection, signature: str) -> bool:
    return conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", [signature]).fetchone()[0]


def retry_hint(conn: psycopg.Connection, task_id: int, shard: str, node: str) -> str:
    """How to queue a failed task again, with what this version of shardcast offers."""
    if has_function(conn, "shardcast.retry_task(bigint)"):
        return f"SELECT shardcast.retry_task({int(task_id)})"
    # Literals, quoted as the server quotes them: a table or node name may hold a quote.
    return sql.SQL("SELECT shardcast.enqueue({}, {})").format(sql.Literal(shard), sql.Literal(node)).as_string(conn)
