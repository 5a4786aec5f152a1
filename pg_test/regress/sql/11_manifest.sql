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
-- An unknown node (42704).
SELECT shardcast.manifest_json('replica-z');
