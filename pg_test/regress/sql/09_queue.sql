-- The replication queue: one task copies one shard to one node.
--   enqueue(shard regclass, node text DEFAULT NULL) RETURNS bigint   -- the task id
--   enqueue_publication(publication text, node text DEFAULT NULL) RETURNS bigint  -- tasks
--   enqueue_all(node text DEFAULT NULL) RETURNS bigint             -- every live shard
-- A NULL node lets node assignment choose: highest priority first, each task goes to
-- the enabled node that would finish it earliest (capacity, current load, bytes assigned).
-- Enqueueing is idempotent: a shard never has two open tasks to one node.
-- shardcast.prioritized_queue is the dispatch order (position 1 = next): the express lane
-- first (tasks whose density, even at the lower bounds of the forecasts their score rests on,
-- is above shardcast.prefetch_quantile of the queued tasks'; under 'score' or 'fifo' the score
-- is compared: pre-replication), then
-- shardcast.ordering: 'wspt' (default: score per byte to copy, Smith's rule; density is that
-- ratio), 'score' or 'fifo', no task overtaking one
-- enqueued more than shardcast.overtake_window (1 hour) before it. Claims (10_claims) follow
-- the order stored at the last replan (every enqueue, failed completion and worker refresh).
--   allocation_plan(workers int DEFAULT NULL, bandwidth bigint DEFAULT NULL)
-- plans every queued task: a task placed on a node takes one of the node's max_concurrent
-- slots, which share its capacity x (1 - reported load); a task whose node is disabled has no
-- slot or times (NULL); tasks without a node share `workers` copy slots of `bandwidth` bytes/s
-- (defaults: shardcast.plan_workers, shardcast.plan_bandwidth), shardcast.prefetch_workers
-- slots kept for the express lane. Per task: slot, node, bandwidth share, expected start and
-- finish.
-- Sizes are those of the rows of 02_shards in PostgreSQL 15 pages (pg_total_relation_size).
\set VERBOSITY verbose
-- One shard; node assignment will choose its node. Again: the same task.
SELECT shardcast.enqueue('orders');
SELECT shardcast.enqueue('orders');
-- Given a node, the queued task without a requested node is bound to it (no second task).
-- A task keeps both: requested_node, the node asked for (NULL: any), and node, the one it
-- copies to (asked for, or chosen by node assignment).
SELECT shardcast.enqueue('orders', node => 'replica-b');
-- Every table of a publication (a partitioned table: its partitions), for replica-a.
CREATE PUBLICATION app_pub FOR TABLE customers, measurements;
SELECT shardcast.enqueue_publication('app_pub', 'replica-a');
-- A publication's tables that are no shard are named in one NOTICE and skipped (here one of
-- shardcast's own, which FOR ALL TABLES would include); an empty publication says so.
CREATE PUBLICATION mixed_pub FOR TABLE customers, shardcast.nodes;
SELECT shardcast.enqueue_publication('mixed_pub', 'replica-a');
CREATE PUBLICATION empty_pub;
SELECT shardcast.enqueue_publication('empty_pub');
-- A publication of tables that are all skipped holds no table to copy either.
CREATE PUBLICATION untracked_pub FOR TABLE shardcast.nodes;
SELECT shardcast.enqueue_publication('untracked_pub');
DROP PUBLICATION mixed_pub, empty_pub, untracked_pub;
-- Every live shard (it first registers new tables and retires dropped ones: pageviews of
-- 07_sparkline). Shards with an open task keep it; the count is of shards.
SELECT shardcast.enqueue_all();
SELECT table_name, retired_at IS NOT NULL AS retired FROM shardcast.shards WHERE table_name = 'pageviews';
-- Scores again, without the retired page-view counter (refresh_forecasts() also replans).
SELECT shardcast.refresh_forecasts();
-- Sizes are measured at enqueue when the worker has not measured them yet.
SELECT t.task_id, s.relid::regclass AS shard, t.requested_node, t.node, t.state, t.size_bytes, t.dispatch_rank
FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id) ORDER BY t.task_id;
-- The dispatch order. customers is in the express lane: most of its score is what orders lifts
-- it by (06_scores), orders' forecast is certain (its lower bound is its expected load), so even
-- at the lower bounds its density is above the 0.99 quantile of the queued tasks'. orders, with the same
-- score and four times its size, is not: the lane compares the order's key, not the load. The
-- rest by score per byte.
SELECT position, task_id, shard, size_bytes, round(score::numeric, 2) AS score, priority_weight,
       round(density::numeric, 6) AS density, tier, prefetch, node
FROM shardcast.prioritized_queue ORDER BY position;
-- The plan. Every task is on a node: replica-a copies 4 at once at 200 MB/s (50 MB/s each;
-- the fifth waits for the first slot to free), replica-b 2 at once at 50 MB/s, half busy
-- (12.5 MB/s each). Start and finish are in seconds from now.
SELECT position, shard, worker, node, round(bandwidth_share::numeric) AS bandwidth_share,
       round(extract(epoch FROM expected_start - now())::numeric, 6) AS starts_in_s,
       round(extract(epoch FROM expected_finish - now())::numeric, 6) AS finishes_in_s
FROM shardcast.allocation_plan() ORDER BY position;
-- With every node disabled (for this transaction only) no task has a start: those given a node
-- wait for it, and those node assignment placed have no node now and wait for one to be
-- enabled. (Only where no node exists at all are tasks without one for whoever claims them,
-- sharing the plan's slots.)
BEGIN;
SELECT shardcast.alter_node('replica-a', enabled => false), shardcast.alter_node('replica-b', enabled => false);
SELECT position, shard, worker, node, round(bandwidth_share::numeric) AS bandwidth_share,
       round(extract(epoch FROM expected_start - now())::numeric, 3) AS starts_in_s,
       round(extract(epoch FROM expected_finish - now())::numeric, 3) AS finishes_in_s
FROM shardcast.allocation_plan(2, 1000000) ORDER BY position;
-- No claim takes them (a copy to no node would be remembered nowhere), and the queue says why.
SELECT count(*) AS claimed FROM shardcast.claim_task('copier-9');
SELECT position, shard, reason LIKE '%; no enabled node to copy to: not claimed until one is enabled' AS waits
FROM shardcast.queue_explained WHERE node IS NULL ORDER BY position;
ROLLBACK;
-- A node that copies next to nothing (add_node and alter_node take at least 1 byte a second;
-- a catalog of 0.1.0 may hold less): a time beyond 30,000 years is 'infinity', and the plan
-- still answers (0.1.0 failed with "interval out of range").
BEGIN;
UPDATE shardcast.nodes SET capacity_bytes_per_sec = 1e-300 WHERE node = 'replica-a';
SELECT position, shard, node, expected_start = 'infinity' AS never_starts, expected_finish = 'infinity' AS never_finishes
FROM shardcast.allocation_plan() WHERE node = 'replica-a' ORDER BY position;
ROLLBACK;

-- A task whose table is dropped is cancelled at the next replan (or by the claim that meets
-- it), and never handed out.
CREATE TABLE doomed (id int);
SELECT shardcast.enqueue('doomed');
DROP TABLE doomed;
SELECT shardcast.enqueue('events');
SELECT s.table_name, t.state, t.detail FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
WHERE s.table_name = 'doomed';
SELECT count(*) FROM shardcast.prioritized_queue;

-- Refused: NULLs (22004), an unknown node or publication (42704), a relation that is not a
-- shard (42809), an OID that names no relation (42P01).
SELECT shardcast.enqueue(NULL);
SELECT shardcast.enqueue('orders', 'replica-z');
SELECT shardcast.enqueue('order_totals');
SELECT shardcast.enqueue('measurements');
SELECT shardcast.enqueue(4000000000::oid::regclass);
SELECT shardcast.enqueue_publication(NULL);
SELECT shardcast.enqueue_publication('no_such_pub');
SELECT shardcast.enqueue_publication('app_pub', 'replica-z');
SELECT shardcast.enqueue_all('replica-z');
-- allocation_plan: workers 1-1024, bandwidth above 0 and at most 1e15 bytes/s (22023).
SELECT * FROM shardcast.allocation_plan(0);
SELECT * FROM shardcast.allocation_plan(1025);
SELECT * FROM shardcast.allocation_plan(4, 0);
SELECT * FROM shardcast.allocation_plan(4, -1);
SELECT * FROM shardcast.allocation_plan(4, 2000000000000000);
