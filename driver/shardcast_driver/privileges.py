"""What the driver's roles need, checked before anything is claimed, with the statement that
grants each missing piece.

On the source, the role of `--source` (unless a superuser):
  CONNECT on the database (libpq refuses the connection without it);
  USAGE on schema shardcast and EXECUTE on claim_task, heartbeat, complete_task, release_task;
  SELECT (conninfo) on shardcast.nodes (the other columns and the views it reads are public);
  CREATE on the database, while a node's publication `shardcast_<node>` does not exist yet
      (CREATE PUBLICATION), and ownership of it once it does (ALTER PUBLICATION, DROP PUBLICATION);
  ownership of every table it publishes (PostgreSQL 15: only a table's owner may add it to a
      publication): membership in the tables' owner role is enough;
  for `finish`: EXECUTE on alter_node (it disables the nodes it finishes first), and when a slot
      must be dropped by hand, the REPLICATION attribute.
The role the subscriptions connect to the source as (`--publisher-conninfo`'s user, default
`--source`'s): REPLICATION and SELECT on the tables.
On each node, the role of the node's conninfo: superuser in PostgreSQL 15 (CREATE SUBSCRIPTION,
ALTER SUBSCRIPTION ... REFRESH PUBLICATION, DROP SUBSCRIPTION); from PostgreSQL 16 membership in
pg_create_subscription and CREATE on the database do.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .common import FUNCTIONS, Node, manifest

# What `finish` disables the nodes with.
ALTER_NODE = "shardcast.alter_node(text, double precision, integer, text, boolean)"

# The tables the open tasks for these nodes would publish, with their owners ({manifest}: see
# common.manifest).
OPEN_TABLES = """
SELECT DISTINCT m.shard, pg_get_userbyid(c.relowner), pg_has_role(c.relowner, 'USAGE')
FROM {manifest} m JOIN pg_class c ON c.oid = to_regclass(m.shard)
WHERE m.node = ANY(%s)
ORDER BY 1
"""


def _q(conn: psycopg.Connection, name: str) -> str:
    """The name as the server would quote it: only when needed."""
    return conn.execute("SELECT quote_ident(%s)", [name]).fetchone()[0]


def source_problems(source: psycopg.Connection, nodes: list[Node] | None, publisher_conninfo: str | None,
                    finishing: bool = False) -> list[str]:
    """The GRANTs (and such) the source lacks, one statement with a comment each; [] when none.
    `nodes` None: only what reading the queue needs (before the nodes are known)."""
    user, superuser, database = source.execute(
        "SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), current_database()"
    ).fetchone()
    u, db = _q(source, user), _q(source, database)
    if not source.execute("SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'shardcast')").fetchone()[0]:
        # Not a privilege, but the same remedy: a statement a superuser runs there.
        return [f"CREATE EXTENSION shardcast;  -- in database {db}: --source names a database without shardcast"]
    fixes: list[str] = []
    if not superuser:
        if not source.execute("SELECT has_schema_privilege('shardcast', 'USAGE')").fetchone()[0]:
            return [f"GRANT USAGE ON SCHEMA shardcast TO {u};  -- the driver calls shardcast's functions"]
        if not finishing:
            missing = [signature for signature, allowed in source.execute(
                "SELECT p.oid::regprocedure::text, has_function_privilege(p.oid, 'EXECUTE') FROM pg_proc p"
                " WHERE p.pronamespace = 'shardcast'::regnamespace AND p.proname = ANY(%s)"
                " ORDER BY array_position(%s, p.proname::text)", [list(FUNCTIONS), list(FUNCTIONS)]).fetchall()
                if not allowed]
            if missing:
                fixes.append(f"GRANT EXECUTE ON FUNCTION {', '.join(missing)} TO {u};  -- claims, leases, completions")
        if not source.execute("SELECT has_column_privilege('shardcast.nodes', 'conninfo', 'SELECT')").fetchone()[0]:
            fixes.append(f"GRANT SELECT (conninfo) ON shardcast.nodes TO {u};  -- where the nodes are")
        for view in ("shardcast.replication_tasks", "shardcast.replication_manifest", "shardcast.completion_log"):
            if not source.execute("SELECT has_table_privilege(%s, 'SELECT')", [view]).fetchone()[0]:
                fixes.append(f"GRANT SELECT ON {view} TO {u};  -- the queue")
    if nodes is None or fixes:
        return fixes
    if not superuser:
        can_create = source.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()[0]
        for node in nodes:
            row = source.execute("SELECT pg_has_role(pubowner, 'USAGE'), pg_get_userbyid(pubowner)"
                                 " FROM pg_publication WHERE pubname = %s", [node.channel]).fetchone()
            if row is None and not can_create and not finishing:
                fixes.append(f"GRANT CREATE ON DATABASE {db} TO {u};  -- CREATE PUBLICATION {node.channel}")
                can_create = True  # once
            elif row is not None and not row[0]:
                fixes.append(f"ALTER PUBLICATION {_q(source, node.channel)} OWNER TO {u};  -- owned by {row[1]}")
        # (0.1.0's catalog has no alter_node: finish goes on without disabling there.) Only
        # `finish` disables nodes, and only enabled ones.
        if finishing and source.execute(
                "SELECT NOT has_function_privilege(f, 'EXECUTE') FROM to_regprocedure(%s) AS f"
                " WHERE f IS NOT NULL AND EXISTS (SELECT FROM shardcast.nodes WHERE node = ANY(%s) AND enabled)",
                [ALTER_NODE, [n.name for n in nodes]]).fetchone() == (True,):
            fixes.append(f"GRANT EXECUTE ON FUNCTION {ALTER_NODE} TO {u};  -- finish disables a node before it "
                         "takes its replication down, so that no driver sets it up again")
        if not finishing:
            owners: dict[str, list[str]] = {}
            open_tables = OPEN_TABLES.format(manifest=manifest(source))
            for shard, owner, owned in source.execute(open_tables, [[n.name for n in nodes]]).fetchall():
                if not owned:
                    owners.setdefault(owner, []).append(shard)
            for owner, tables in owners.items():
                shown = ", ".join(tables[:3]) + (f" and {len(tables) - 3} more" if len(tables) > 3 else "")
                fixes.append(f"GRANT {_q(source, owner)} TO {u};  -- PostgreSQL 15 lets only a table's owner "
                             f"publish it: {shown}")
    # The role the subscriptions log in as.
    publisher_user = conninfo_to_dict(publisher_conninfo or "").get("user") if publisher_conninfo else None
    if publisher_user and not finishing:
        row = source.execute("SELECT rolreplication OR rolsuper, rolsuper FROM pg_roles WHERE rolname = %s",
                             [publisher_user]).fetchone()
        p = _q(source, publisher_user)
        if row is None:
            fixes.append(f"CREATE ROLE {p} LOGIN REPLICATION;  -- the subscriptions connect to the source as {p}")
        else:
            if not row[0]:
                fixes.append(f"ALTER ROLE {p} REPLICATION;  -- the subscriptions connect to the source as {p}")
            if not row[1]:
                unreadable = [shard for (shard,) in source.execute(
                    "SELECT DISTINCT m.shard FROM " + manifest(source) + " m"
                    " WHERE m.node = ANY(%s) AND to_regclass(m.shard) IS NOT NULL"
                    " AND NOT has_table_privilege(%s, to_regclass(m.shard), 'SELECT') ORDER BY 1",
                    [[n.name for n in nodes], publisher_user]).fetchall()]
                if unreadable:
                    fixes.append(f"GRANT SELECT ON {', '.join(unreadable)} TO {p};  -- the initial copy reads them")
    return fixes


def node_problems(dest: psycopg.Connection, node: Node) -> list[str]:
    """What the node's role lacks to create, refresh and drop the node's subscription."""
    user, superuser, database = dest.execute(
        "SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), current_database()"
    ).fetchone()
    if superuser:
        return []
    major = dest.info.server_version // 10000
    u = _q(dest, user)
    if major < 16:
        return [f"ALTER ROLE {u} SUPERUSER;  -- on node {node.name}: in PostgreSQL {major} only a superuser may "
                "CREATE SUBSCRIPTION, REFRESH it and create the tables"]
    fixes = []
    if not dest.execute("SELECT pg_has_role('pg_create_subscription', 'MEMBER')").fetchone()[0]:
        fixes.append(f"GRANT pg_create_subscription TO {u};  -- on node {node.name}: CREATE SUBSCRIPTION")
    if not dest.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()[0]:
        fixes.append(f"GRANT CREATE ON DATABASE {_q(dest, database)} TO {u};  -- on node {node.name}")
    return fixes
