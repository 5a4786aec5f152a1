"""--dry-run: what a run would copy, in which order, to which node, and how long the plan expects
it to take (`shardcast.allocation_plan`), claiming nothing and changing nothing."""

from __future__ import annotations

import argparse

import psycopg

from .common import (EXIT_ENVIRONMENT, EXIT_OK, Out, SetupError, connect, first_line, held_by_others, iso,
                     load_nodes, pretty_bytes, pretty_seconds, published, still_failed)
from .privileges import source_problems

PLAN = """
SELECT a.position, a.task_id,
       (SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = a.shard),
       a.node, q.size_bytes, a.prefetch, a.worker,
       extract(epoch FROM a.expected_start - now())::float8, extract(epoch FROM a.expected_finish - now())::float8
FROM shardcast.allocation_plan(%s) a
JOIN shardcast.prioritized_queue q USING (task_id)
WHERE a.node = ANY(%s)
ORDER BY a.position
"""


def dry_run(args: argparse.Namespace, out: Out) -> int:
    try:
        source = connect(args.source)
    except psycopg.OperationalError as error:
        out.say(f"shardcast-driver: cannot connect to the source: {first_line(error)}", error=True)
        return EXIT_ENVIRONMENT
    with source:
        try:
            fixes = source_problems(source, None, None)
            if fixes:
                raise SetupError("missing privileges on the source; run as a superuser there:\n"
                                 + "\n".join(f"    {fix}" for fix in fixes))
            nodes = load_nodes(source, args.node)
        except SetupError as error:
            out.say(f"shardcast-driver: {error}", error=True)
            return error.status
        names = [n.name for n in nodes]
        plan_workers, bandwidth = source.execute(
            "SELECT current_setting('shardcast.plan_workers')::int,"
            "       current_setting('shardcast.plan_bandwidth')::float8").fetchone()
        workers = args.workers or plan_workers
        rows = source.execute(PLAN, [workers, names]).fetchall()
        out.say(f"dry run, nothing is claimed: {len(rows)} queued task(s) for {', '.join(names)}, in the order "
                f"of shardcast.allocation_plan({workers}) ({workers} syncs at once sharing "
                f"{pretty_bytes(bandwidth)}/s)")
        if rows:
            width = max(len(f"{shard} -> {node}") for _, _, shard, node, *_ in rows)
            out.say(f"  {'#':>4} {'task':>6}  {'table -> node':<{width}}  {'size':>9}  {'lane':<7} {'slot':>4}"
                    f"  {'start':>9}  {'finish':>9}")
            for position, task_id, shard, node, size, prefetch, slot, start, finish in rows:
                out.say(f"  {position:>4} {task_id:>6}  {shard + ' -> ' + node:<{width}}  {pretty_bytes(size):>9}  "
                        f"{'express' if prefetch else '':<7} {slot:>4}  {pretty_seconds(max(start, 0)):>9}  "
                        f"{pretty_seconds(max(finish, 0)):>9}")
            total = sum(r[4] for r in rows)
            out.say(f"expected: {pretty_bytes(total)} to copy, every task ready in about "
                    f"{pretty_seconds(max(r[8] for r in rows))} (the plan's last expected finish)")
        for task_id, shard, node, worker, until, live in held_by_others(source, names, None):
            out.say(f"task {task_id} ({shard}) on node {node} is claimed by worker {worker} until {iso(until)}"
                    + ("" if live else " (lease run out: the next claim takes it over)"))
        for task_id, shard, node, attempts, detail, _ in still_failed(source, names):
            out.say(f"{shard} -> {node} failed in an earlier run (task {task_id}, {attempts} attempts): {detail}; "
                    "a run exits 1 until it is queued again and succeeds")
        for node in nodes:
            if not published(source, node):
                out.say(f"a run would create publication {node.channel} on the source and subscription "
                        f"{node.channel} on {node.name}")
        fixes = source_problems(source, nodes, args.publisher_conninfo or args.source)
        if fixes:
            out.say("a run would stop here, missing privileges on the source:\n"
                    + "\n".join(f"    {fix}" for fix in fixes), error=True)
            return EXIT_ENVIRONMENT
    return EXIT_OK
