-- An operator's tools: the queue remembers what it copied, nodes and tasks can be changed and
-- undone, reports cover one run, and the allocation plan follows each node's limits.
--   node_replicas (view)                            -- what is on each node (shardcast.replicas)
--   forget_replica(shard regclass, node text) RETURNS boolean
--   alter_node(node text, capacity_bytes_per_sec float8 DEFAULT NULL, max_concurrent int DEFAULT NULL,
--              conninfo text DEFAULT NULL, enabled bool DEFAULT NULL)   -- NULL: unchanged
--   remove_node(node text) RETURNS bigint           -- the number of queued tasks cancelled
--   cancel_task(task_id bigint), retry_task(task_id bigint)
--   complete_task(task_id bigint, succeeded bool DEFAULT true, detail text DEFAULT NULL,
--                 worker text DEFAULT NULL, copied bool DEFAULT true)  -- copied => false: in sync
--   prioritization_report_since(since timestamptz, until timestamptz)   -- claimed and finished in [since, until)
--   prioritization_report_for(worker text)          -- one worker's (one driver run's) copies
\set VERBOSITY verbose
SELECT shardcast.add_node('lc-a', 100e6, 2);
SELECT shardcast.add_node('lc-b', 50e6, 1);
CREATE TABLE lc_one (id int PRIMARY KEY);
CREATE TABLE lc_two (id int PRIMARY KEY);
CREATE TABLE lc_three (id int PRIMARY KEY);
CREATE PUBLICATION lc_pub FOR TABLE lc_one, lc_two, lc_three;

-- A queue with memory. The README's block: a publication to one node...
SELECT shardcast.enqueue_publication('lc_pub', 'lc-a');
-- ... copied by one run (complete_task records each copy in shardcast.replicas) ...
SELECT task_id AS t1 FROM shardcast.claim_task('lc-run-1', 'lc-a') \gset
SELECT shardcast.complete_task(:t1, worker => 'lc-run-1');
SELECT task_id AS t2 FROM shardcast.claim_task('lc-run-1', 'lc-a') \gset
SELECT shardcast.complete_task(:t2, worker => 'lc-run-1');
SELECT task_id AS t3 FROM shardcast.claim_task('lc-run-1', 'lc-a') \gset
-- (a table found already in sync: done, but nothing copied)
SELECT shardcast.complete_task(:t3, true, 'already in sync', 'lc-run-1', copied => false);
SELECT shard, node, task_id = ANY (ARRAY[:t1, :t2, :t3]) AS by_the_run, copied_at IS NOT NULL AS copied_at_set, data_copied
FROM shardcast.node_replicas WHERE node = 'lc-a' ORDER BY shard::text;
-- ... then the same again: nothing new. A shard already on the node is skipped, with a NOTICE
-- for one shard (its task, the one that copied it, comes back) and one NOTICE for many.
SELECT shardcast.enqueue_publication('lc_pub', 'lc-a');
SELECT shardcast.enqueue_publication('lc_pub');
SELECT shardcast.enqueue('lc_one') = :t1 AS the_copying_task;
SELECT shardcast.enqueue('lc_one', 'lc-a') = :t1 AS the_copying_task;
SELECT count(*) AS open_tasks FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
WHERE s.table_name LIKE 'lc\_%' AND t.state IN ('queued', 'claimed');
-- Another node only when it is named; after forget_replica, the same node again.
SELECT shardcast.enqueue('lc_one', 'lc-b') AS to_b \gset
SELECT shardcast.forget_replica('lc_two', 'lc-a');
SELECT shardcast.forget_replica('lc_two', 'lc-a');
SELECT shardcast.enqueue('lc_two', 'lc-a') AS two_again \gset
SELECT t.task_id = :to_b AS to_b, s.table_name, t.node, t.state
FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
WHERE s.table_name LIKE 'lc\_%' AND t.state = 'queued' ORDER BY t.task_id;
-- Refused: NULLs (22004), an unknown node (42704), an OID that names no relation (42P01), a
-- relation that holds no shard (42809).
SELECT shardcast.forget_replica(NULL, 'lc-a');
SELECT shardcast.forget_replica('lc_one', NULL);
SELECT shardcast.forget_replica('lc_one', 'lc-z');
SELECT shardcast.forget_replica(99999::oid::regclass, 'lc-a');
SELECT shardcast.forget_replica('pg_class', 'lc-a');

-- Tasks: cancel a queued one, retry a failed or cancelled one (attempts reset).
SELECT shardcast.cancel_task(:two_again);
SELECT state, attempts, detail FROM shardcast.replication_tasks WHERE task_id = :two_again;
SELECT shardcast.retry_task(:two_again);
SELECT state, attempts, detail FROM shardcast.replication_tasks WHERE task_id = :two_again;
-- Refused: a claimed task cannot be cancelled, a queued or done one retried, a finished one
-- cancelled (55000); unknown tasks (42704); NULLs (22004).
SELECT task_id AS claimed FROM shardcast.claim_task('lc-run-2', 'lc-b') \gset
SELECT shardcast.cancel_task(:claimed);
SELECT shardcast.retry_task(:two_again);
SELECT shardcast.retry_task(:t1);
SELECT shardcast.cancel_task(:t1);
SELECT shardcast.cancel_task(999999);
SELECT shardcast.retry_task(999999);
SELECT shardcast.cancel_task(NULL);
SELECT shardcast.retry_task(NULL);
-- A retry while another open task copies the shard to that node is refused (55000).
SELECT shardcast.cancel_task(:two_again);
SELECT shardcast.enqueue('lc_two', 'lc-a') AS two_third \gset
SELECT shardcast.retry_task(:two_again);
SELECT shardcast.cancel_task(:two_third);
-- A retry of a task whose shard is on that node already is refused (42710): it would copy it
-- again; forget the copy first to do that on purpose.
SELECT shardcast.enqueue('lc_two', 'lc-a') AS two_fourth \gset
SELECT task_id = :two_fourth AS claimed_it FROM shardcast.claim_task('lc-run-3', 'lc-a');
SELECT shardcast.complete_task(:two_fourth, worker => 'lc-run-3');
SELECT shardcast.retry_task(:two_again);

-- Nodes: alter_node changes what it is given (a blank conninfo clears it); validated like
-- add_node. A disabled node gets no new claims; its claimed tasks finish.
SELECT shardcast.alter_node('lc-b', max_concurrent => 2, conninfo => 'host=lc-b', enabled => false);
SELECT node, capacity_bytes_per_sec, max_concurrent, enabled FROM shardcast.nodes WHERE node LIKE 'lc-%' ORDER BY node;
SELECT count(*) AS claimed_on_disabled FROM shardcast.claim_task('lc-run-2', 'lc-b');
SELECT shardcast.heartbeat(:claimed) > now() AS still_renewed;
SELECT shardcast.alter_node('lc-b', 75e6, conninfo => '  ', enabled => true);  -- blank: no conninfo
SELECT node, capacity_bytes_per_sec, max_concurrent, conninfo IS NULL AS no_conninfo, enabled FROM shardcast.nodes WHERE node = 'lc-b';
-- The duplicate-node hint names alter_node.
SELECT shardcast.add_node('lc-a', 1e6);
-- Refused: an unknown node (42704), bad values (22023), NULL node (22004).
SELECT shardcast.alter_node('lc-z', 1e6);
SELECT shardcast.alter_node('lc-a', 0);
SELECT shardcast.alter_node('lc-a', 'NaN');
SELECT shardcast.alter_node('lc-a', max_concurrent => 0);
SELECT shardcast.alter_node(NULL, enabled => true);

-- remove_node refuses a node with tasks in flight (55006): disable it, let them finish.
SELECT shardcast.remove_node('lc-b');
SELECT shardcast.complete_task(:claimed, worker => 'lc-run-2');
-- Then it goes: its queued tasks are cancelled, its copies forgotten; completion_log keeps
-- the history that names it.
SELECT shardcast.enqueue('lc_three', 'lc-b') AS three_to_b \gset
SELECT shardcast.remove_node('lc-b') AS cancelled;
SELECT state, node, detail FROM shardcast.replication_tasks WHERE task_id = :three_to_b;
SELECT count(*) AS copies_on_b FROM shardcast.replicas WHERE node = 'lc-b';
SELECT table_name, node, worker, succeeded, copied FROM shardcast.completion_log WHERE node LIKE 'lc-%' ORDER BY finished_at, task_id;
SELECT shardcast.remove_node('lc-b');
SELECT shardcast.remove_node(NULL);

-- Reports per run: lc-run-1 copied two tables (the third was in sync: not a copy); lc-run-2 one.
SELECT tasks, bytes_copied FROM shardcast.prioritization_report_for('lc-run-1');
SELECT tasks, bytes_copied FROM shardcast.prioritization_report_for('lc-run-2');
SELECT count(*) FROM shardcast.prioritization_report_for('nobody');
SELECT count(*) FROM shardcast.prioritization_report_since(now() + interval '1 hour', NULL);
SELECT (SELECT tasks FROM shardcast.prioritization_report_since(now() - interval '1 hour', now() + interval '1 hour'))
     = (SELECT tasks FROM shardcast.prioritization_report_since(now() - interval '1 hour')) AS same;
SELECT * FROM shardcast.prioritization_report_for(NULL);
-- A window that ends before it starts is refused (22023); an empty one, [t, t), has no copies.
SELECT * FROM shardcast.prioritization_report_since('2026-01-02', '2026-01-01');
SELECT count(*) FROM shardcast.prioritization_report_since('2026-01-01', '2026-01-01');
SELECT shardcast.complete_task(1, true, NULL, NULL, NULL);

-- The allocation plan follows each node: at most max_concurrent copies at once, sharing
-- capacity x (1 - reported load). lc-a takes 2 at once at 100 MB/s, 60% busy: 20 MB/s each.
SELECT shardcast.forget_replica(s, 'lc-a') FROM unnest(ARRAY['lc_one', 'lc_two', 'lc_three']::regclass[]) s;
SELECT shardcast.enqueue_publication('lc_pub', 'lc-a');
SELECT shardcast.report_node_load('lc-a', 0.6);
SELECT shard, worker, node, round(bandwidth_share::numeric) AS bandwidth_share,
       expected_start = now() AS starts_now, expected_finish > expected_start AS finishes_later
FROM shardcast.allocation_plan() WHERE node = 'lc-a' ORDER BY position;

-- Why each task has its place: shardcast.queue_explained, the queue's own decision per task
-- (express lane; after which task, by what key; held back by the overtake window), and what
-- holds its node back (disabled, at its concurrency limit).
SELECT position, shard, round(density::numeric, 9) AS density, prefetch, node, reason
FROM shardcast.queue_explained ORDER BY position;
