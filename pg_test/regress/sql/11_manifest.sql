-- Manifests: what a replication script copies, where and in which order, for tools that do
-- not speak SQL. shardcast.replication_manifest has one row per open task (queued or
-- claimed): the shard as a quoted qualified name, the source's identity (system identifier and
-- database), node, size, priority weight, position (queued tasks only), tier, prefetch
-- and state.
--   manifest_json(node text DEFAULT NULL) RETURNS jsonb
-- returns the same as one document ("version" changes only when a field changes meaning or
-- goes away). generated_at and the system identifier differ at every run: they are left out
-- below.
\set VERBOSITY verbose
-- One task in flight: claimed tasks have no position.
SELECT task_id, shard FROM shardcast.claim_task('copier-10');
SELECT task_id, shard, source_system_identifier = (SELECT system_identifier FROM pg_control_system()) AS this_cluster,
       source_database, node, size_bytes, priority_weight, position, tier, prefetch, state
FROM shardcast.replication_manifest ORDER BY position NULLS LAST, task_id;
SELECT jsonb_pretty(shardcast.manifest_json('replica-a') - 'generated_at' #- '{source,system_identifier}');
SELECT m ? 'generated_at' AS dated, m -> 'source' ? 'system_identifier' AS identified,
       jsonb_array_length(m -> 'tasks') AS tasks, m -> 'node' AS node
FROM shardcast.manifest_json() AS m;
-- A queued task whose table was dropped (or renamed) is left out until the next claim or
-- replan cancels it, as the queue leaves it out: positions count what can be claimed, and
-- position 1 is the task claim_task hands out next.
CREATE TABLE manifest_gone (id int);
SELECT shardcast.enqueue('manifest_gone', 'replica-a') > 0 AS queued;
DROP TABLE manifest_gone;
SELECT count(*) FILTER (WHERE shard = 'public.manifest_gone') AS gone_listed,
       min(position) AS first, max(position) = count(*) AS numbered_without_gaps
FROM shardcast.replication_manifest WHERE state = 'queued' AND kind = 'copy';
SELECT (SELECT task_id FROM shardcast.replication_manifest WHERE position = 1 AND kind = 'copy')
     = (SELECT task_id FROM shardcast.prioritized_queue WHERE position = 1) AS first_is_next;
-- An unknown node (42704).
SELECT shardcast.manifest_json('replica-z');
