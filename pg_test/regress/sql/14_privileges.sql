-- Privileges. The API functions run as the extension's owner (SECURITY DEFINER, search_path
-- pinned), so roles need no grants on the tables. Every view is readable by everyone, like
-- pg_stat_*, and so are sparkline(), allocation_plan() and manifest_json(); functions that
-- change anything are not executable by PUBLIC, and a node's conninfo (it may hold a password)
-- is not readable by PUBLIC. The README's grants for a replication role and a read-only
-- inspector:
\set VERBOSITY verbose
CREATE ROLE regress_inspector;
GRANT USAGE ON SCHEMA shardcast TO regress_inspector;
CREATE ROLE regress_replicator;
GRANT USAGE ON SCHEMA shardcast TO regress_replicator;
GRANT EXECUTE ON FUNCTION shardcast.claim_task(text, text), shardcast.heartbeat(bigint, text),
      shardcast.complete_task(bigint, boolean, text, text, boolean), shardcast.release_task(bigint, text) TO regress_replicator;
GRANT SELECT (conninfo) ON shardcast.nodes TO regress_replicator;
-- What PUBLIC may execute, of the API.
SELECT p.oid::regprocedure AS function, has_function_privilege('regress_inspector', p.oid, 'EXECUTE') AS public_may_execute
FROM pg_proc p WHERE p.pronamespace = 'shardcast'::regnamespace AND p.proname !~ '^_' ORDER BY p.oid::regprocedure::text;

SET ROLE regress_inspector;
-- Reading works.
SELECT count(*) FROM shardcast.priority_scores;
SELECT count(*) FROM shardcast.forecasts;
SELECT count(*) FROM shardcast.shard_activity;
SELECT count(*) FROM shardcast.access_history;
SELECT count(*) FROM shardcast.effective_classes;
SELECT count(*) FROM shardcast.worker_status;
SELECT count(*) FROM shardcast.prioritized_queue;
SELECT count(*) FROM shardcast.replication_manifest;
SELECT count(*) FROM shardcast.prioritization_report;
SELECT count(*) FROM shardcast.replication_tasks;
SELECT count(*) FROM shardcast.completion_log;
SELECT count(*) FROM shardcast.shard_classes;
SELECT node, capacity_bytes_per_sec FROM shardcast.nodes ORDER BY node;
SELECT length(shardcast.sparkline('orders')) > 0 AS drawn;
SELECT count(*) FROM shardcast.allocation_plan();
SELECT jsonb_typeof(shardcast.manifest_json()) AS manifest;
-- Anything else is refused (42501).
SELECT conninfo FROM shardcast.nodes;
SELECT count(*) FROM shardcast.shards;
SELECT shardcast.record_access('orders', now(), 1);
SELECT shardcast.set_shard_class('orders', 'critical');
SELECT shardcast.refresh_forecasts();
SELECT shardcast.add_node('replica-x', 1e6);
SELECT shardcast.enqueue('orders');
SELECT * FROM shardcast.claim_task('intruder');
RESET ROLE;

-- The replication role claims, completes and reads where the nodes are.
SET ROLE regress_replicator;
SELECT task_id IS NOT NULL AS claimed FROM shardcast.claim_task('driver-1') \gset driver_
SELECT :'driver_claimed' AS claimed;
SELECT node, conninfo FROM shardcast.nodes ORDER BY node;
SELECT shardcast.enqueue('orders');
RESET ROLE;
