-- Claims: how a replication script works the queue.
--   claim_task(worker text, node text DEFAULT NULL)  -- the next task, under a lease
--   heartbeat(task_id bigint, worker text DEFAULT NULL)      -- renews the lease; returns its end
--   complete_task(task_id bigint, succeeded bool DEFAULT true, detail text DEFAULT NULL, worker text DEFAULT NULL,
--                 copied bool DEFAULT true)                 -- copied => false: already in sync (15_lifecycle)
--   release_task(task_id bigint, worker text DEFAULT NULL)   -- hands it back, no attempt counted
-- A claim takes the first queued task in the stored order (FOR UPDATE SKIP LOCKED), within its
-- node's max_concurrent, and leases it for shardcast.claim_lease (5 minutes); it first returns
-- expired leases to the queue (one attempt each; failed after shardcast.max_attempts, 3). No
-- row: nothing to do. A completion is recorded in shardcast.completion_log and announced with
-- NOTIFY shardcast_completion (a JSON payload; psql prints it with the backend's PID, so it is
-- not shown here: pg_test/ checks it). A failure puts the task back in the queue.
\set VERBOSITY verbose
SELECT task_id, shard, qualified_name, node, size_bytes, priority_weight, prefetch, attempts,
       lease_expires_at > now() AS leased
FROM shardcast.claim_task('copier-1') \gset first_
SELECT :first_task_id AS task_id, :'first_shard' AS shard, :'first_node' AS node, :first_priority_weight AS priority_weight,
       :'first_prefetch' AS prefetch, :'first_leased' AS leased;
-- The lease is renewed by a heartbeat (it returns the lease's new end).
SELECT shardcast.heartbeat(:first_task_id, 'copier-1') > now() AS renewed;
SELECT shardcast.complete_task(:first_task_id, worker => 'copier-1');
SELECT task_id, table_name, node, worker, succeeded, attempts, priority_weight, size_bytes, duration >= '0' AS timed, detail
FROM shardcast.completion_log ORDER BY task_id;
-- A claim for one node takes that node's next task; copier-2 keeps it for now.
SELECT task_id, shard, node, attempts FROM shardcast.claim_task('copier-2', node => 'replica-a') \gset held_
SELECT :held_task_id AS task_id, :'held_shard' AS shard, :'held_node' AS node;
-- A node's max_concurrent bounds its claims: with 1, replica-a takes no second task while
-- copier-2 copies to it.
UPDATE shardcast.nodes SET max_concurrent = 1 WHERE node = 'replica-a';
SELECT count(*) FROM shardcast.claim_task('copier-3', 'replica-a');
UPDATE shardcast.nodes SET max_concurrent = 4 WHERE node = 'replica-a';
-- A disabled node gets no claims: replica-c has none.
SELECT count(*) FROM shardcast.claim_task('copier-3', 'replica-c');
-- A failure: back in the queue in its place, one attempt counted, the detail kept.
SELECT task_id, shard, node FROM shardcast.claim_task('copier-3') \gset failed_
SELECT :failed_task_id AS task_id, :'failed_shard' AS shard;
SELECT shardcast.complete_task(:failed_task_id, false, 'could not connect to ' || :'failed_node');
SELECT task_id, state, attempts, claimed_by, detail FROM shardcast.replication_tasks WHERE task_id = :failed_task_id;
-- Released by a script that stops: back in the queue in its place, no attempt counted.
SELECT task_id = :failed_task_id AS same_task, attempts FROM shardcast.claim_task('copier-3');
SELECT shardcast.release_task(:failed_task_id, 'copier-3');
SELECT task_id, state, attempts, claimed_by, detail FROM shardcast.replication_tasks WHERE task_id = :failed_task_id;

-- Refused: an unknown task (42704); a task that is not claimed (done, or queued) or that
-- another worker claimed (55000); NULLs (22004); an unknown node (42704).
SELECT shardcast.heartbeat(999999);
SELECT shardcast.complete_task(999999);
SELECT shardcast.release_task(999999);
SELECT shardcast.complete_task(:first_task_id);
SELECT shardcast.heartbeat(:first_task_id);
SELECT shardcast.complete_task(:failed_task_id);
SELECT shardcast.release_task(:failed_task_id);
SELECT shardcast.heartbeat(:held_task_id, 'copier-9');
SELECT shardcast.complete_task(:held_task_id, true, NULL, 'copier-9');
SELECT shardcast.release_task(:held_task_id, 'copier-9');
SELECT * FROM shardcast.claim_task(NULL);
SELECT * FROM shardcast.claim_task('copier-1', 'replica-z');
-- A worker name is printable text of 1 to 255 bytes (22023): it is kept in claimed_by and
-- completion_log, and repeated in messages.
SELECT * FROM shardcast.claim_task('');
SELECT * FROM shardcast.claim_task(repeat('w', 256));
SELECT * FROM shardcast.claim_task(E'copier\n1');
SELECT shardcast.heartbeat(NULL);
SELECT shardcast.complete_task(NULL);
SELECT shardcast.complete_task(:held_task_id, NULL);
SELECT shardcast.release_task(NULL);
-- Its own worker completes it.
SELECT shardcast.complete_task(:held_task_id, worker => 'copier-2');

-- Leases run out. A lease that has run out can be neither renewed nor completed (55000),
-- whether or not a claim has returned the task to the queue yet; its claimer can still release
-- it. The message names the moment the lease ran out, which differs at every run: those calls
-- go through a helper that shows the error with that moment masked.
CREATE FUNCTION pg_temp.try(statement text, OUT code text, OUT message text, OUT hint text) AS $$
BEGIN
    EXECUTE statement;
    code := '00000';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    message := regexp_replace(message, 'expired at .*$', 'expired at <time>');
END
$$ LANGUAGE plpgsql;
SET shardcast.claim_lease = '1s';
SELECT task_id, node, attempts FROM shardcast.claim_task('copier-6') \gset short_
SELECT task_id FROM shardcast.claim_task('copier-8') \gset other_
RESET shardcast.claim_lease;
SELECT pg_sleep(1.2);
\x on
SELECT * FROM pg_temp.try(format('SELECT shardcast.heartbeat(%s)', :short_task_id));
SELECT * FROM pg_temp.try(format('SELECT shardcast.complete_task(%s)', :short_task_id));
\x off
SELECT shardcast.release_task(:other_task_id, 'copier-8');
-- The next claim returns the expired task to the queue, one more attempt counted, and takes
-- the first task in the order: the same one.
SELECT task_id = :short_task_id AS same_task, attempts FROM shardcast.claim_task('copier-7');
SELECT state, attempts, claimed_by, detail FROM shardcast.replication_tasks WHERE task_id = :short_task_id;
-- After shardcast.max_attempts attempts (3) a task fails for good.
SELECT shardcast.complete_task(:short_task_id, false, 'disk full on ' || :'short_node');
SELECT state, attempts, detail FROM shardcast.replication_tasks WHERE task_id = :short_task_id;
SELECT task_id, table_name, node, worker, succeeded, attempts, priority_weight, detail
FROM shardcast.completion_log ORDER BY finished_at, task_id;
SELECT task_id, shard, state FROM shardcast.replication_manifest ORDER BY task_id;
