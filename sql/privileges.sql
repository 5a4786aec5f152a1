-- Who may use what. Anyone may look, as with the pg_stat_* views; what changes state (history
-- imports, classes, forecasts on demand, nodes, the queue, claims) is for the roles it is granted
-- to (GRANT EXECUTE ON FUNCTION shardcast.record_access(...) TO importer). Functions that write
-- run as their owner (SECURITY DEFINER, search_path pinned), so a grant on the function is all
-- a role needs.

GRANT USAGE ON SCHEMA shardcast TO PUBLIC;
GRANT SELECT ON shardcast.access_history, shardcast.shard_activity, shardcast.worker_status,
    shardcast.effective_classes, shardcast.shard_classes, shardcast.shard_candidates TO PUBLIC;
REVOKE EXECUTE ON FUNCTION shardcast.set_shard_class(regclass, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION shardcast.record_access(regclass, timestamptz, double precision, double precision) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION shardcast.record_access(regclass[], timestamptz[], double precision[], double precision[]) FROM PUBLIC;

GRANT SELECT ON shardcast.priority_scores, shardcast.forecasts TO PUBLIC;
REVOKE EXECUTE ON FUNCTION shardcast.refresh_forecasts() FROM PUBLIC;

GRANT SELECT ON shardcast.prioritized_queue, shardcast.replication_manifest,
    shardcast.replication_tasks, shardcast.completion_log TO PUBLIC;
-- conninfo may hold a password: readable, like pg_subscription.subconninfo, only where granted.
GRANT SELECT (node, capacity_bytes_per_sec, max_concurrent, current_load, load_reported_at, enabled, added_at)
    ON shardcast.nodes TO PUBLIC;

REVOKE EXECUTE ON FUNCTION
    shardcast.add_node(text, double precision, integer, text),
    shardcast.report_node_load(text, double precision),
    shardcast.enqueue(regclass, text),
    shardcast.enqueue_publication(text, text),
    shardcast.enqueue_all(text),
    shardcast.claim_task(text, text),
    shardcast.heartbeat(bigint, text),
    shardcast.complete_task(bigint, boolean, text, text, boolean),
    shardcast.release_task(bigint, text),
    shardcast.alter_node(text, double precision, integer, text, boolean),
    shardcast.remove_node(text),
    shardcast.cancel_task(bigint),
    shardcast.retry_task(bigint),
    shardcast.forget_replica(regclass, text)
FROM PUBLIC;
GRANT SELECT ON shardcast.node_replicas, shardcast.queue_explained TO PUBLIC;

GRANT SELECT ON shardcast.prioritization_report TO PUBLIC;

-- Citus moves (citus.sql): the move queue, the kept plannings and the rebalance report are for
-- everyone to read (shard ids, nodes and loads, as in citus_shards); queueing a rebalance (which
-- may mark a node for draining) and claiming moves are granted.
GRANT SELECT ON shardcast.citus_moves, shardcast.citus_plan_groups, shardcast.citus_plan_moves TO PUBLIC;
REVOKE EXECUTE ON FUNCTION shardcast.enqueue_citus_rebalance(text, text, real, integer, bigint[]),
    shardcast.claim_citus_move(text, integer),
    shardcast._citus_plan(name, real, integer, bigint[], boolean),
    shardcast._citus_keep_plans(name, real, integer, bigint[], boolean),
    shardcast._citus_move_groups(),
    shardcast._citus_move_order(bigint[], text[], text[], double precision[], double precision[], text[], double precision[]) FROM PUBLIC;
