"""The command line: `shardcast-driver [run] ...` (the default), `shardcast-driver finish ...`,
their arguments, signals and exit codes."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys

import psycopg
from psycopg.conninfo import conninfo_to_dict

from . import __version__
from .common import EXIT_SIGINT, EXIT_USAGE, Out, has_password

EXIT_CODES = """\
exit status:
  0    every task for the nodes is done (in --follow: stopped by SIGTERM, tasks released); or nothing
       left to serve: every node removed, or its replication taken down by finish
  1    a task failed, in this run or in an earlier one and not enqueued again since
  2    usage: bad arguments, unknown --node, no node to sync to
  3    cannot connect to the source or a node, missing privileges (the GRANTs are printed), no pg_dump
  4    tasks still open: held by other drivers (--no-wait, or after --wait-timeout), or queued for a
       node disabled during the run; finish: refused, tasks still open
  130  stopped by SIGINT (Ctrl-C); 143 by SIGTERM outside --follow: claims stopped, the nodes'
       copies of the tasks in flight stopped, the tasks released (a second signal quits at once
       and leaves them to their leases)
When several apply, the first of 3, 1, 4 is the status.
"""

RUN_DESCRIPTION = """\
Copies the tables shardcast queued to their nodes, hot-first, with PostgreSQL's native logical
replication: claims tasks in the plan's order, makes each node's subscription copy the table,
completes the task when it is ready there. Then `shardcast-driver finish` takes the publications,
subscriptions and slots down (or leaves them with --keep-replicating).

commands:
  run (the default)   sync the queued tasks: shardcast-driver [run] --source CONNINFO ...
  finish              once every task is done: shardcast-driver finish --source CONNINFO ...
  citus-rebalance     run the queued Citus moves: shardcast-driver citus-rebalance --source CONNINFO ...
"""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0 seconds, not {text}")
    return value


# PostgreSQL's lock_timeout is a whole number of milliseconds up to INT_MAX.
MAX_LOCK_TIMEOUT_SECONDS = 2147483


def lock_seconds(text: str) -> float:
    value = positive_seconds(text)
    if value > MAX_LOCK_TIMEOUT_SECONDS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_LOCK_TIMEOUT_SECONDS} seconds (PostgreSQL's "
                                         f"largest lock_timeout), not {text}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 seconds or more, not {text}")
    return value


def non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def conninfo(text: str) -> str:
    try:
        given = conninfo_to_dict(text)
    except psycopg.ProgrammingError as error:
        if has_password(text):
            # libpq's message quotes the text it stumbled on, which may be part of the password.
            raise argparse.ArgumentTypeError("not a conninfo (libpq's message is not shown: it may quote the "
                                             "password)") from None
        raise argparse.ArgumentTypeError(f"not a conninfo: {error}") from None
    # libpq parses a port only when it connects ("invalid integer value"): a usage error here.
    ports = str(given.get("port") or "").split(",")
    if any(p.strip() and not re.fullmatch(r"\s*\+?[0-9]+\s*", p) for p in ports):
        raise argparse.ArgumentTypeError(f"not a conninfo: port {given['port']!r} is not a number")
    return text


def common_arguments(parser: argparse.ArgumentParser, nodes: str = "every enabled node with a conninfo") -> None:
    parser.add_argument("--version", action="version", version=f"shardcast-driver {__version__}")
    parser.add_argument("--source", required=True, type=conninfo,
                        help="conninfo of the database where shardcast runs")
    parser.add_argument("--node", action="append", type=non_empty,
                        help=f"only this node (repeatable; default: {nodes})")


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shardcast-driver", description=RUN_DESCRIPTION, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    common_arguments(parser)
    parser.add_argument("--publisher-conninfo", type=conninfo,
                        help="conninfo the subscribers use to reach the source (default: --publisher-conninfo-file, "
                        f"then ${PUBLISHER_CONNINFO_ENV}, then --source); a password in it shows in the process list: "
                        "prefer the file or the environment variable")
    parser.add_argument("--publisher-conninfo-file", metavar="PATH", type=non_empty,
                        help="read --publisher-conninfo from this file (mode 0600), so that its password stays out "
                        "of the process list")
    parser.add_argument("--worker", type=non_empty, default=f"driver-{os.uname().nodename}-{os.getpid()}",
                        help="the name claims are made under (default: driver-HOST-PID)")
    parser.add_argument("--workers", type=positive_int, help="syncs at once over all nodes, 1 or more (default: "
                        "the plan's, shardcast.plan_workers); each node also keeps to its max_concurrent")
    parser.add_argument("--follow", action="store_true", help="keep waiting for new tasks instead of exiting when "
                        "the queue is empty (a service: SIGTERM stops it cleanly with status 0)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be copied, in which order, to "
                        "which node, and the plan's expected time; claim nothing, change nothing")
    # --no-wait and --wait contradict each other: say so rather than let one silently win.
    waiting = parser.add_mutually_exclusive_group()
    waiting.add_argument("--no-wait", action="store_true", help="when only tasks that other drivers hold are left, "
                        "exit 4 at once instead of waiting for them (or for their leases to run out)")
    parser.add_argument("--wait-timeout", type=seconds, default=900.0, metavar="SECONDS",
                        help="when only tasks that other drivers hold are left, wait at most this long for them (or "
                        "for their leases to run out), then exit 4 (default 900; --follow waits without a bound)")
    waiting.add_argument("--wait", action="store_true", help="wait for the tasks other drivers hold as long as they "
                        "hold them, without --wait-timeout's bound")
    parser.add_argument("--lock-timeout", type=lock_seconds, default=10.0, metavar="SECONDS",
                        help="how long a statement that creates or alters a table, index or constraint on a node "
                        "waits for a lock there (a reader's, say) before it gives up and is tried again, within the "
                        "same claim and without using up an attempt, until --sync-timeout (default 10)")
    parser.add_argument("--poll", type=positive_seconds, default=0.5, help="seconds between polls (default 0.5)")
    parser.add_argument("--progress-interval", type=positive_seconds, default=5.0, metavar="SECONDS",
                        help="how often to print the bytes a copy has reached on its node, when changed (default 5)")
    parser.add_argument("--retry-delay", type=seconds, default=5.0,
                        help="seconds without claims for a node after one of its syncs failed (default 5)")
    parser.add_argument("--sync-timeout", type=positive_seconds, default=3600.0,
                        help="seconds a table may take to become ready before its task fails (default 3600)")
    parser.add_argument("--bare", action="store_true",
                        help="give replicas only what apply needs (columns, primary key, replica identity), read "
                        "from the catalog, instead of the table's full definition from pg_dump (types, defaults, "
                        "constraints, indexes, foreign keys)")
    parser.add_argument("--pg-dump", metavar="PATH", type=non_empty,
                        help="the pg_dump to read definitions with, of the source's major version or newer; "
                        "pg_restore is taken from the same directory (default: PostgreSQL's own for the source's "
                        "version, then 15's, then the one on PATH)")
    return parser


def finish_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardcast-driver finish", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES,
        allow_abbrev=False,
        description="Once every task for the nodes is done: drop the driver's subscriptions on the nodes (DISABLE, "
        "DROP SUBSCRIPTION, which drops their slots on the source) and its publications on the source, and check "
        "that no slot of theirs is left, so that the replicas become ordinary, independent tables and the source "
        "keeps no WAL for them. Refused while tasks are open (4) or failed (1), unless --force.")
    # Disabled nodes too: a node disabled for good still has its publication, subscription and slot.
    common_arguments(parser, nodes="every node with a conninfo, disabled ones included")
    parser.add_argument("--keep-replicating", action="store_true",
                        help="leave the publications, subscriptions and slots: the replicas keep following the "
                        "source (whose slots keep WAL until consumed); only check that every task is done")
    parser.add_argument("--force", action="store_true",
                        help="finish even with tasks open or failed, and drop a node's publication and slots on the "
                        "source even when the node cannot be reached (exit 3: its subscription is left there), or "
                        "when a walsender still uses a slot its publication's comment names")
    return parser


PUBLISHER_CONNINFO_ENV = "SHARDCAST_PUBLISHER_CONNINFO"


def resolve_conninfos(args: argparse.Namespace, out: Out) -> int | None:
    """--publisher-conninfo from the file or the environment when not given, and a warning for each
    password given on the command line (every user of the machine sees it in `ps`). Returns an
    exit status when the arguments are unusable."""
    publisher = getattr(args, "publisher_conninfo", None)
    path = getattr(args, "publisher_conninfo_file", None)
    if publisher is not None and path is not None:
        out.say("shardcast-driver: --publisher-conninfo and --publisher-conninfo-file exclude each other", error=True)
        return EXIT_USAGE
    if path is not None:
        try:
            text = open(path, encoding="utf-8").read().strip()
            if os.stat(path).st_mode & 0o077:
                out.say(f"shardcast-driver: warning: {path} can be read by other users; chmod 600 {path}",
                        error=True)
        except OSError as error:
            out.say(f"shardcast-driver: cannot read --publisher-conninfo-file: {error}", error=True)
            return EXIT_USAGE
        try:
            args.publisher_conninfo = conninfo(text)
        except argparse.ArgumentTypeError as error:
            out.say(f"shardcast-driver: {path}: {error}", error=True)
            return EXIT_USAGE
    elif publisher is None and hasattr(args, "publisher_conninfo") and os.environ.get(PUBLISHER_CONNINFO_ENV):
        try:
            args.publisher_conninfo = conninfo(os.environ[PUBLISHER_CONNINFO_ENV])
        except argparse.ArgumentTypeError as error:
            out.say(f"shardcast-driver: ${PUBLISHER_CONNINFO_ENV}: {error}", error=True)
            return EXIT_USAGE
    given = [("--source", args.source)] + ([("--publisher-conninfo", publisher)] if publisher is not None else [])
    for option, value in given:
        if has_password(value):
            how = ("PGPASSWORD, ~/.pgpass or PGPASSFILE" if option == "--source" else
                   f"--publisher-conninfo-file or ${PUBLISHER_CONNINFO_ENV} (or in the ~/.pgpass of the nodes' server "
                   "user: the subscriptions connect from the nodes)")
            out.say(f"shardcast-driver: warning: the password in {option} is visible to every user of this machine "
                    f"in the process list (ps); give it with {how} instead", error=True)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = Out()
    try:
        if argv[:1] == ["citus-rebalance"]:  # Citus shard moves: citus.py
            from .citus import citus_rebalance
            return citus_rebalance(argv[1:], out)
        if argv[:1] == ["finish"]:
            from .finish import finish
            args = finish_parser().parse_args(argv[1:])
            return resolve_conninfos(args, out) or finish(args, out)
        args = run_parser().parse_args(argv[1:] if argv[:1] == ["run"] else argv)
        status = resolve_conninfos(args, out)
        if status is not None:
            return status
        if args.dry_run:
            from .dryrun import dry_run
            return dry_run(args, out)
        from .claims import Driver
        driver = Driver(args, out)
        signal.signal(signal.SIGINT, driver.interrupt)
        signal.signal(signal.SIGTERM, driver.interrupt)
        return driver.run()
    except KeyboardInterrupt:
        out.say("interrupted", error=True)
        return EXIT_SIGINT


if __name__ == "__main__":
    sys.exit(main())
