"""shardcast-driver: copies shards to their nodes hot-first with native logical replication.

It talks to shardcast through SQL only (claim_task, heartbeat, complete_task, release_task). For
every enabled node with a conninfo it keeps one publication on the source and one subscription
on the node, both named `shardcast_<node>`, and feeds the subscription one table at a time in
the plan's order. `finish` takes them down again once every task is done.

    shardcast-driver --source 'host=pub dbname=app' [--node replica-a] [--follow] [--dry-run]
    shardcast-driver finish --source 'host=pub dbname=app' [--keep-replicating] [--force]
"""

# The extension's version (Cargo.toml's, shardcast.control's default_version): the driver is
# released with it and speaks its SQL API. pg_test/test_driver_cli.py checks that they agree.
__version__ = "0.2.0"

from .common import Node, Task, channel_name  # noqa: E402,F401
