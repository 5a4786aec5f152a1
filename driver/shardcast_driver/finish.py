"""`finish`: the way out once every task is done.

By default the replicas become ordinary, independent tables: for each node, on the node
`ALTER SUBSCRIPTION shardcast_<node> DISABLE` and `DROP SUBSCRIPTION` (which drops its
replication slot, and any tablesync slot, on the source; when the source cannot be reached from
the node, the slot is detached with `SET (slot_name = NONE)` and dropped on the source from
here), then `DROP PUBLICATION shardcast_<node>` on the source, and a check that no slot of the
node's subscription is left on the source. `--keep-replicating` leaves all of it in place (the
replicas keep following the source; the slots keep WAL until the subscriptions consume it) and
only checks that every task is done. Open tasks refuse it (exit 4), tasks that failed for good
too (exit 1), unless `--force`. A node whose replication it takes down is disabled first
(shardcast.alter_node), so that no driver sets it up again.
"""

from __future__ import annotations

import argparse
import time

import psycopg
from psycopg import sql

from .common import (EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_OK, EXIT_OPEN, EXIT_USAGE, Node, Out, SetupError,
                     channel_name, connect, first_line, load_nodes, manifest, published, still_failed)
from .privileges import source_problems
from .sync import noted_subscription, parse_subscription_note

# PostgreSQL's name for a tablesync worker's slot, of any subscription.
TABLESYNC_SLOT = r"^pg_[0-9]+_sync_[0-9]+_[0-9]+$"


def subscription_slots(source: psycopg.Connection, node: Node, suboid: int | None = None,
                       sysid: int | None = None, slot: str | None = None) -> list[tuple]:
    """The node subscription's logical slots left in the source's database: its own (`slot`, its
    subslotname; else named after the channel) and, with the subscription's oid and the node's
    system identifier, its tablesync workers' as PostgreSQL names them
    (ReplicationSlotNameForTablesync: pg_<subscription oid>_sync_<table oid>_<system id>).
    Each row: slot_name, active, active_pid, whether it is surely this subscription's."""
    pattern = f"^pg_{suboid}_sync_[0-9]+_{sysid}$" if suboid is not None and sysid is not None else None
    return source.execute(
        "SELECT slot_name, active, active_pid,"
        "       coalesce(slot_name = %s::text OR slot_name ~ %s::text, false)"
        " FROM pg_replication_slots"
        " WHERE database = current_database() AND slot_type = 'logical'"
        "   AND (slot_name = coalesce(%s::text, %s) OR slot_name ~ %s::text)",
        [slot, pattern, slot, node.channel, pattern]).fetchall()


def finish(args: argparse.Namespace, out: Out) -> int:
    try:
        source = connect(args.source)
    except psycopg.OperationalError as error:
        out.say(f"shardcast-driver finish: cannot connect to the source: {first_line(error)}", error=True)
        return EXIT_ENVIRONMENT
    with source:
        try:
            # What reading the nodes needs first, then (once they are known) what taking their
            # replication down needs.
            require_privileges(source, None)
            if args.node is None and (status := without_conninfo(source, out)) is not None:
                return status
            nodes = load_nodes(source, args.node, enabled_only=False)
            require_privileges(source, nodes)
        except SetupError as error:
            out.say(f"shardcast-driver finish: {error}", error=True)
            return error.status
        names = [n.name for n in nodes]
        open_tasks = source.execute(
            "SELECT m.task_id, m.shard, m.node, m.state, t.claimed_by FROM " + manifest(source) + " m"
            " JOIN shardcast.replication_tasks t USING (task_id) WHERE m.node = ANY(%s)"
            " ORDER BY m.position NULLS FIRST, m.task_id", [names]).fetchall()
        failed = still_failed(source, names)
        for task_id, shard, node, state, worker in open_tasks:
            out.say(f"open: task {task_id} {shard} -> {node} ({state}{' by ' + worker if worker else ''})")
        for task_id, shard, node, attempts, detail, _ in failed:
            out.say(f"failed: task {task_id} {shard} -> {node} ({attempts} attempts): {detail}")
        if (open_tasks or failed) and not args.force:
            what = (f"{len(open_tasks)} task(s) open" if open_tasks else "") + \
                   (" and " if open_tasks and failed else "") + (f"{len(failed)} failed" if failed else "")
            involved = sorted({node for _, _, node, *_ in open_tasks} | {node for _, _, node, *_ in failed})
            out.say(f"finish refused: {what} for {', '.join(involved)}; run the driver until they are done "
                    "(or queue the failed ones again), or finish --force to leave them undone", error=True)
            return EXIT_FAILED if failed else EXIT_OPEN  # README: 3 over 1 over 4
        if open_tasks or failed:
            out.say("--force: finishing with tasks not done; their tables may be missing or partial on the nodes")
        if args.keep_replicating:
            return keep_replicating(source, nodes, out)
        status = EXIT_OK
        remaining = []
        for node in nodes:
            # Disabled first, so that no driver (a --follow restarted by its service manager, the
            # next one-shot run) sets the replication up again behind finish's back.
            was_enabled = disable(source, node, out)
            node_status, ids, taken_down = finish_node(source, node, args.force, out)
            status = max(status, node_status, key=severity)
            if taken_down:
                remaining += subscription_slots(source, node, *ids)
                if was_enabled:
                    out.say(f"{node.name}: disabled in shardcast.nodes: drivers set up no replication to it any more "
                            f"(to replicate to it again: SELECT shardcast.alter_node({literal(source, node.name)}, "
                            "enabled => true))")
            elif was_enabled:
                source.execute("SELECT shardcast.alter_node(%s, enabled => true)", [node.name])
        if remaining:
            out.say("still on the source: " + ", ".join(r[0] for r in remaining), error=True)
            status = max(status, EXIT_FAILED, key=severity)
        elif status == EXIT_OK:
            # Other nodes may still be replicated to (finish --node): the extension stays for them.
            others = [p for (p,) in source.execute(
                "SELECT pubname::text FROM pg_publication WHERE pubname = ANY(%s) ORDER BY 1",
                [node_channels(source)]).fetchall()]
            out.say(f"finished: {', '.join(names)} hold ordinary tables now; no shardcast publication, subscription "
                    "or slot is left for them. " + (
                        f"Still replicated to: {', '.join(others)}" if others else
                        "DROP EXTENSION shardcast may follow (README, Uninstalling)"))
        return status


def require_privileges(source: psycopg.Connection, nodes: list[Node] | None) -> None:
    """Raises SetupError with the GRANTs to run when the role lacks what finishing needs."""
    fixes = source_problems(source, nodes, None, finishing=True)
    if fixes:
        raise SetupError(f"missing privileges on the source for role {source.info.user}; run as a superuser "
                         "there:\n" + "\n".join(f"    {fix}" for fix in fixes))


def node_channels(source: psycopg.Connection) -> list[str]:
    """The publication (and subscription and slot) name of every node in shardcast.nodes."""
    return [channel_name(name) for (name,) in source.execute("SELECT node FROM shardcast.nodes").fetchall()]


def without_conninfo(source: psycopg.Connection, out: Out) -> int | None:
    """Where no node has a conninfo (the driver's way to a node), the status to end with: 0 when
    no node's publication or slot is on the source either (the driver replicated to none), 2 when
    some are (a node whose conninfo was cleared after it replicated: `finish` must not say there
    is nothing to take down). None where some node has a conninfo: `finish` goes on."""
    if source.execute("SELECT EXISTS (SELECT FROM shardcast.nodes WHERE conninfo IS NOT NULL)").fetchone()[0]:
        return None
    channels = node_channels(source)
    left = [name for (name,) in source.execute(
        "SELECT pubname FROM pg_publication WHERE pubname = ANY(%s)"
        " UNION SELECT slot_name FROM pg_replication_slots WHERE slot_name = ANY(%s) ORDER BY 1",
        [channels, channels]).fetchall()]
    if left:
        out.say(f"shardcast-driver finish: no node has a conninfo, but {', '.join(left)} is on the source: set the "
                "node's conninfo again (shardcast.alter_node) and run finish, or drop them by hand (README, "
                "Uninstalling)", error=True)
        return EXIT_USAGE
    out.say("nothing to finish: no node in shardcast.nodes has a conninfo, so the driver replicated to none. "
            "DROP EXTENSION shardcast may follow (README, Uninstalling)")
    return EXIT_OK


def literal(source: psycopg.Connection, text: str) -> str:
    return sql.Literal(text).as_string(source)


def disable(source: psycopg.Connection, node: Node, out: Out) -> bool:
    """Marks the node disabled (shardcast.alter_node); True when it was enabled before."""
    if not source.execute("SELECT enabled FROM shardcast.nodes WHERE node = %s", [node.name]).fetchone()[0]:
        return False
    try:
        source.execute("SELECT shardcast.alter_node(%s, enabled => false)", [node.name])
        return True
    except psycopg.Error as error:
        out.say(f"{node.name}: cannot disable it ({first_line(error)}): a driver started later would set its "
                f"replication up again; run SELECT shardcast.alter_node({literal(source, node.name)}, enabled => "
                "false) as a role that may", error=True)
        return False


def severity(status: int) -> int:
    return {EXIT_OK: 0, EXIT_FAILED: 1, EXIT_ENVIRONMENT: 2}.get(status, 1)


def finish_node(source: psycopg.Connection, node: Node, force: bool,
                out: Out) -> tuple[int, tuple[int | None, int | None, str | None], bool]:
    """Takes the node's replication down. Returns the status, what names the subscription's slots
    on the source (its OID, the node's system identifier, its slot), and whether the
    replication was taken down (False: left in place)."""
    channel = sql.Identifier(node.channel)
    suboid = sysid = slot = None
    detached = unreached = False
    # The node answers without the subscription: the slots the publication's comment names may
    # be used by another server still (alter_node pointed the node at a new one while the old
    # subscriber streams on), so an active one is dropped only with --force.
    only_noted = False
    # Recorded on the source by the driver (sync.note_subscription): its tablesync slots can be
    # found even when the node cannot be reached.
    noted = noted_subscription(source, node)
    try:
        with connect(node.conninfo) as dest:
            row = dest.execute(
                "SELECT s.oid, s.subslotname, (SELECT count(*) FROM pg_subscription_rel r WHERE r.srsubid = s.oid),"
                "       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
                " FROM pg_subscription s WHERE s.subname = %s"
                " AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                [node.channel]).fetchone()
            if row is None:
                out.say(f"{node.name}: no subscription {node.channel} on the node")
                if noted is not None:
                    # Dropped without its slots (slot_name = NONE): those the driver noted go too.
                    suboid, sysid, slot = noted
                    only_noted = True
            else:
                suboid, slot, tables, _ = row
                try:
                    # The subscriber's system identifier: the last part of its tablesync slots' names.
                    sysid = dest.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
                    sysid %= 2 ** 64  # a bigint here, printed unsigned (UINT64_FORMAT) in the name
                except psycopg.Error as error:
                    if noted is not None and noted[0] == suboid:
                        sysid = noted[1]
                    else:
                        out.say(f"{node.name}: cannot read its system identifier ({first_line(error)}); "
                                "its tablesync slots, if any, are left on the source", error=True)
                dest.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(channel))
                try:
                    dest.execute(sql.SQL("DROP SUBSCRIPTION {}").format(channel))
                except psycopg.Error as error:
                    # Typically: the node cannot reach the source to drop the slot there.
                    out.say(f"{node.name}: DROP SUBSCRIPTION {node.channel} could not drop its slot on the source "
                            f"({first_line(error)}); detaching the slot (slot_name = NONE) and dropping it from here")
                    dest.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(channel))
                    dest.execute(sql.SQL("DROP SUBSCRIPTION {}").format(channel))
                    detached = True
                out.say(f"{node.name}: subscription {node.channel} dropped; its {tables} table(s) are ordinary "
                        "tables of the node now")
    except psycopg.Error as error:
        out.say(f"{node.name}: cannot drop subscription {node.channel} on the node: {first_line(error)}", error=True)
        if not force:
            # Say what is left: a node that never replicated has nothing on the source.
            left = [f"publication {node.channel}"] if published(source, node) else []
            ids = (suboid, sysid, slot) if suboid is not None else (noted or ())
            left += [f"slot {row[0]}" for row in subscription_slots(source, node, *ids)]
            if left:
                out.say(f"{node.name}: {', '.join(left)} left on the source (the subscription still uses them); run "
                        "finish again once the node is reachable, or with --force", error=True)
            else:
                out.say(f"{node.name}: no publication or slot of it on the source; if the node has a subscription "
                        f"{node.channel}, run finish again once it is reachable, or finish --force if it never "
                        "replicated", error=True)
            return EXIT_ENVIRONMENT, (suboid, sysid, slot), False
        out.say(f"{node.name}: --force: dropping publication {node.channel} and its slots on the source anyway; on "
                f"the node run ALTER SUBSCRIPTION {node.channel} DISABLE; ALTER SUBSCRIPTION {node.channel} SET "
                f"(slot_name = NONE); DROP SUBSCRIPTION {node.channel}", error=True)
        detached = unreached = True
        if suboid is None and noted is not None:
            suboid, sysid, slot = noted
        elif suboid is None:
            # Not recorded (a publication of an older driver): tablesync slots cannot be told from
            # other subscriptions' here. Name the candidates; drop none of them.
            list_candidates(source, node, out)
    status = EXIT_OK
    if only_noted and not force:
        busy = [(name, pid) for name, active, pid, ours in subscription_slots(source, node, suboid, sysid, slot)
                if active and ours]
        if busy:
            for name, pid in busy:
                out.say(f"{node.name}: replication slot {name} on the source is in use (pid {pid}); the publication's "
                        f"comment names it as subscription {node.channel}'s, but the node has no such subscription: "
                        "another server may still stream from it (the node's conninfo changed?). Left alone, with "
                        f"publication {node.channel}; finish --force drops them (terminating that walsender)",
                        error=True)
            return EXIT_FAILED, (suboid, sysid, slot), False
    if published(source, node):
        source.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(channel))
        out.say(f"{node.name}: publication {node.channel} dropped on the source")
    else:
        out.say(f"{node.name}: no publication {node.channel} on the source")
    deadline = time.monotonic() + 15
    while True:
        left = subscription_slots(source, node, suboid, sysid, slot)
        if not left:
            break
        # Noted only (the node has no such subscription): an active slot is left alone, unless --force.
        droppable = lambda active, ours: ours and (not active or force or not only_noted)  # noqa: E731
        busy = [name for name, active, _, ours in left if active and droppable(active, ours)]
        if busy and time.monotonic() < deadline and not detached:
            time.sleep(0.2)  # a walsender that has not noticed its subscription is gone yet
            continue
        for name, active, pid, ours in left:
            if active and not droppable(active, ours):
                # Named like the channel, but not known to be this subscription's: someone uses it.
                out.say(f"{node.name}: replication slot {name} on the source is in use (pid {pid}) and not known to "
                        f"be subscription {node.channel}'s; left alone", error=True)
                status = EXIT_FAILED
                continue
            try:
                for tries in range(5 if active else 1):
                    if active:
                        # A subscriber's worker restarts and takes the slot again: end it again.
                        source.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                                       " WHERE slot_name = %s AND active_pid IS NOT NULL", [name])
                        time.sleep(0.5)
                    try:
                        source.execute("SELECT pg_drop_replication_slot(%s)", [name])
                        break
                    except psycopg.errors.ObjectInUse:
                        if tries == (4 if active else 0):
                            raise
                out.say(f"{node.name}: replication slot {name} dropped on the source")
            except psycopg.Error as error:
                hint = ""
                if isinstance(error, psycopg.errors.InsufficientPrivilege):
                    role = source.execute("SELECT quote_ident(current_user)").fetchone()[0]
                    hint = f" (ALTER ROLE {role} REPLICATION, or drop it as a superuser)"
                out.say(f"{node.name}: cannot drop replication slot {name} on the source: {first_line(error)}{hint}",
                        error=True)
                status = EXIT_ENVIRONMENT if hint else EXIT_FAILED
        break
    if unreached:
        # The publication and slots are gone from the source, but the subscription is left on the
        # node (the statements above drop it there): not all done.
        status = max(status, EXIT_ENVIRONMENT, key=severity)
    return status, (suboid, sysid, slot), True


def list_candidates(source: psycopg.Connection, node: Node, out: Out) -> None:
    """The tablesync slots in the source's database that may be the node's: those that no other
    shardcast publication's comment names, with whether they are in use. A drop statement only
    for an inactive one: an active slot streams to someone."""
    others = []
    for pubname, comment in source.execute(
            "SELECT pubname::text, obj_description(oid, 'pg_publication') FROM pg_publication"
            " WHERE pubname <> %s AND obj_description(oid, 'pg_publication') IS NOT NULL", [node.channel]).fetchall():
        noted = parse_subscription_note(comment, pubname)
        if noted is not None:
            others.append(f"pg_{noted[0]}_sync_[0-9]+_{noted[1]}")
    for name, active, pid in source.execute(
            "SELECT slot_name, active, active_pid FROM pg_replication_slots WHERE database = current_database()"
            " AND slot_type = 'logical' AND slot_name ~ %s AND NOT slot_name ~ ANY(%s::text[]) ORDER BY 1",
            [TABLESYNC_SLOT, [f"^{p}$" for p in others]]).fetchall():
        if active:
            out.say(f"{node.name}: replication slot {name} on the source may be a tablesync slot of {node.channel} "
                    f"(the node cannot tell); it is in use (pid {pid}): it streams to a running server, left alone",
                    error=True)
        else:
            out.say(f"{node.name}: replication slot {name} on the source (inactive) may be a tablesync slot of "
                    f"{node.channel} (the node cannot tell); if it is, SELECT "
                    f"pg_drop_replication_slot({literal(source, name)})", error=True)



def keep_replicating(source: psycopg.Connection, nodes: list[Node], out: Out) -> int:
    for node in nodes:
        slots = subscription_slots(source, node, None)
        lag = source.execute(
            "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn))"
            " FROM pg_replication_slots WHERE slot_name = %s", [node.channel]).fetchone()
        out.say(f"{node.name}: left replicating: publication and subscription {node.channel}"
                + (f", slot {node.channel} ({'active' if slots[0][1] else 'INACTIVE'}, {lag[0]} behind)"
                   if slots and lag else ", no slot on the source"))
    out.say("--keep-replicating: every task is done; the replicas keep following the source, and each slot keeps "
            "the source's WAL until its subscription has consumed it. Run finish without --keep-replicating "
            "to make them independent")
    return EXIT_OK
