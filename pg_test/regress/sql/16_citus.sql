-- shardcast on Citus, where Citus is not installed: every Citus function refuses with 0A000 and
-- says how to get Citus; nothing is queued. (The Citus paths themselves run against real Citus
-- clusters in pg_test/test_citus.py.)
--   enqueue_citus_rebalance(strategy text DEFAULT 'shardcast', drain_node text DEFAULT NULL,
--                           threshold real DEFAULT NULL, max_shard_moves int DEFAULT 1000000,
--                           excluded_shard_list bigint[] DEFAULT '{}') RETURNS bigint
--   claim_citus_move(worker text, max_moves_per_node int DEFAULT 1)
--       RETURNS TABLE (task_id, shardid, table_name, colocation_id, source_node, source_host,
--                      source_port, target_node, target_host, target_port, size_bytes,
--                      priority_weight, attempts, lease_expires_at)
--   citus_moves (view)   -- the move tasks, in dispatch order
--   citus_rebalance_report(planned_at timestamptz DEFAULT NULL, moves_per_node int DEFAULT 1)
--       RETURNS TABLE (plan, move_order, moves, bytes, measured_moves, seconds,
--                      hottest_share_start, hottest_share_mean, hottest_share_end, hottest_node_end)
\set VERBOSITY verbose
SELECT count(*) AS move_tasks FROM shardcast.replication_tasks WHERE kind = 'citus_move';
SELECT shardcast.enqueue_citus_rebalance();
SELECT shardcast.enqueue_citus_rebalance('by_shard_count', drain_node => '10.0.0.5:5432');
SELECT * FROM shardcast.claim_citus_move('regress-mover');
SELECT shardcast.citus_shard_cost(102008);
SELECT * FROM shardcast.citus_rebalance_report();
SELECT * FROM shardcast.citus_rebalance_report(moves_per_node => 0);
-- The internal functions behind them too, when called directly (but for _citus_move_groups,
-- which the worker reads on any Citus coordinator).
SELECT * FROM shardcast._citus_node('10.0.0.5:5432');
SELECT shardcast._citus_keep_plans(NULL, NULL, 10, '{}', false);
SELECT count(*) AS move_tasks FROM shardcast.replication_tasks WHERE kind = 'citus_move';
SELECT * FROM shardcast.citus_moves;
-- A move task's shape is checked: a move has a shardid, a source and a target, and no
-- replication node. (Terse: the failing row's detail holds the time of the insert.)
\set VERBOSITY terse
INSERT INTO shardcast.replication_tasks (shard_id, kind, size_bytes)
SELECT min(shard_id), 'citus_move', 0 FROM shardcast.shards;
\set VERBOSITY verbose
-- Every task so far is a table copy (claim_task takes those only); the manifest says each
-- task's kind, and a move's source and target nodes.
SELECT kind, count(*) FROM shardcast.replication_tasks GROUP BY kind ORDER BY kind;
SELECT DISTINCT kind, source, target FROM shardcast.replication_manifest;
