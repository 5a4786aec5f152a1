-- shardcast views: what a DBA looks at. pg_stat_* conventions: snake_case, timestamptz, bytes.

-- The relations that are shards right now: ordinary tables and leaf partitions, outside system
-- schemas, shardcast's own schema, temporary schemas and the schemas listed in
-- shardcast.excluded_schemas. The one place that decides what a shard is.
CREATE VIEW shardcast.shard_candidates AS
SELECT c.oid AS relid,
       n.nspname AS schema_name,
       c.relname AS table_name,
       p.inhparent AS parent_relid
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_inherits p ON c.relispartition AND p.inhrelid = c.oid
WHERE c.relkind = 'r'
  AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'shardcast')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
  AND n.nspname <> ALL (
        shardcast._name_list(coalesce(pg_catalog.current_setting('shardcast.excluded_schemas', true), '')));
COMMENT ON VIEW shardcast.shard_candidates IS
    'Relations that are shards now (tables and leaf partitions outside excluded schemas).';

-- Every stored history bucket: 5-minute buckets for recent hours, hourly buckets before that.
-- shard is NULL for retired shards (their OID may belong to another table now).
CREATE VIEW shardcast.access_history AS
SELECT s.shard_id,
       CASE WHEN s.retired_at IS NULL THEN s.relid::regclass END AS shard,
       s.schema_name,
       s.table_name,
       r.bucket_start,
       interval '5 minutes' AS bucket_width,
       r.scans,
       r.tuples_read,
       r.tuples_written,
       r.blocks_hit,
       r.blocks_read
FROM shardcast.recent_access r
JOIN shardcast.shards s USING (shard_id)
UNION ALL
SELECT s.shard_id,
       CASE WHEN s.retired_at IS NULL THEN s.relid::regclass END,
       s.schema_name,
       s.table_name,
       (d.day + make_interval(hours => h.hour - 1)) AT TIME ZONE 'UTC',
       interval '1 hour',
       d.scans[h.hour],
       d.tuples_read[h.hour],
       d.tuples_written[h.hour],
       d.blocks_hit[h.hour],
       d.blocks_read[h.hour]
FROM shardcast.daily_access d
JOIN shardcast.shards s USING (shard_id)
CROSS JOIN LATERAL generate_series(1, 24) AS h(hour)
WHERE d.scans[h.hour] <> 0 OR d.tuples_read[h.hour] <> 0 OR d.tuples_written[h.hour] <> 0
   OR d.blocks_hit[h.hour] <> 0 OR d.blocks_read[h.hour] <> 0;
COMMENT ON VIEW shardcast.access_history IS
    'Access deltas per shard and bucket (5-minute buckets recently, hourly before).';

-- One row per live shard: what a DBA looks at first. Its reads are what the session's
-- shardcast.load_measure counts (scans by default, as the worker's forecasts count them), so that
-- the hottest shards here are not merely those read by sequential scans of many rows. (Lower-case:
-- a session without the library keeps a SET value as typed.)
CREATE VIEW shardcast.shard_activity AS
WITH recent AS (
    SELECT shard_id,
           sum(CASE pg_catalog.lower(pg_catalog.current_setting('shardcast.load_measure', true))
                   WHEN 'tuples' THEN tuples_read
                   WHEN 'blocks' THEN blocks_hit + blocks_read
                   ELSE scans
               END) FILTER (WHERE bucket_start >= now() - interval '15 minutes') AS reads_15m,
           sum(tuples_written) FILTER (WHERE bucket_start >= now() - interval '15 minutes') AS writes_15m,
           sum(scans) FILTER (WHERE bucket_start >= now() - interval '1 hour') AS scans_1h,
           sum(tuples_read) FILTER (WHERE bucket_start >= now() - interval '1 hour') AS tuples_read_1h,
           sum(tuples_written) FILTER (WHERE bucket_start >= now() - interval '1 hour') AS tuples_written_1h,
           sum(scans) AS scans_recent,
           sum(tuples_read) AS tuples_read_recent,
           sum(tuples_written) AS tuples_written_recent,
           max(bucket_start) AS last_bucket
    FROM shardcast.recent_access
    WHERE bucket_start >= now() - interval '1 day'
    GROUP BY shard_id
), older AS (
    SELECT d.shard_id,
           sum(d.scans[h]) AS scans,
           sum(d.tuples_read[h]) AS tuples_read,
           sum(d.tuples_written[h]) AS tuples_written
    FROM shardcast.daily_access d
    CROSS JOIN LATERAL generate_series(1, 24) AS h
    WHERE d.day >= (now() AT TIME ZONE 'UTC')::date - 1
      AND (d.day + make_interval(hours => h - 1)) AT TIME ZONE 'UTC' >= now() - interval '1 day'
    GROUP BY d.shard_id
)
SELECT s.shard_id,
       s.relid::regclass AS shard,
       s.schema_name,
       s.table_name,
       s.parent_relid::regclass AS parent,
       s.size_bytes,
       s.size_updated_at,
       s.first_seen,
       r.last_bucket AS last_active_bucket,
       coalesce(r.reads_15m, 0) / 900.0 AS reads_per_sec,
       coalesce(r.writes_15m, 0) / 900.0 AS writes_per_sec,
       coalesce(r.scans_1h, 0) AS scans_last_hour,
       coalesce(r.tuples_read_1h, 0) AS tuples_read_last_hour,
       coalesce(r.tuples_written_1h, 0) AS tuples_written_last_hour,
       coalesce(r.scans_recent, 0) + coalesce(o.scans, 0) AS scans_last_day,
       coalesce(r.tuples_read_recent, 0) + coalesce(o.tuples_read, 0) AS tuples_read_last_day,
       coalesce(r.tuples_written_recent, 0) + coalesce(o.tuples_written, 0) AS tuples_written_last_day
FROM shardcast.shards s
LEFT JOIN recent r USING (shard_id)
LEFT JOIN older o USING (shard_id)
WHERE s.retired_at IS NULL;
COMMENT ON VIEW shardcast.shard_activity IS
    'One row per live shard: size, recent rates (last 15 minutes; reads as shardcast.load_measure counts them), last hour and last day totals.';

-- The worker's record in this database (worker_state, written by the sampler), and where its
-- processes are: pg_stat_activity shows them to every database, so a database the worker does
-- not sample says where it is, and a missing worker says why.
CREATE VIEW shardcast.worker_status AS
SELECT a.pid,
       coalesce(a.datname, pg_catalog.current_setting('shardcast.database', true)::name) AS database,
       CASE
           WHEN a.pid IS NOT NULL AND a.datname <> pg_catalog.current_database()
               THEN 'running in database "' || a.datname || '"'
           WHEN a.pid IS NOT NULL AND a.pid = w.pid THEN w.state
           WHEN a.pid IS NOT NULL THEN 'starting'
           WHEN NOT shardcast.preloaded()
               THEN 'not running: shardcast is not in shared_preload_libraries'
           WHEN NOT EXISTS (SELECT 1 FROM shardcast._worker_processes() l
                            WHERE l.backend_type = 'shardcast launcher') THEN 'not running'
           -- (missing_ok: without the library loaded in this session the settings do not
           -- exist, and the planner folds these calls before the branches above are tried.)
           WHEN NOT pg_catalog.current_setting('shardcast.enabled', true)::boolean
               THEN 'paused (shardcast.enabled = off)'
           WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_database d
                            WHERE d.datname = pg_catalog.current_setting('shardcast.database', true))
               THEN 'waiting for database "' || pg_catalog.current_setting('shardcast.database', true) || '"'
           ELSE 'restarting'
       END AS state,
       w.started_at,
       w.last_sample_at,
       w.last_cycle_ms,
       w.shards_tracked,
       w.samples_written,
       w.resets_detected,
       w.last_error,
       w.last_error_at,
       w.last_refresh_at,
       w.last_refresh_ms,
       w.shards_scored
FROM shardcast.worker_state w
LEFT JOIN LATERAL (SELECT a.pid, a.datname FROM shardcast._worker_processes() a
                   WHERE a.backend_type = 'shardcast' ORDER BY a.backend_start LIMIT 1) a ON true;
COMMENT ON VIEW shardcast.worker_status IS
    'The background worker: where it runs, what it is doing, when it last sampled, its last error.';

-- Each live shard's class and weight: its own class, else the nearest partitioned ancestor's,
-- else 'normal'. class_source says which table the class was set on.
CREATE VIEW shardcast.effective_classes AS
WITH RECURSIVE ancestry AS (
    SELECT s.shard_id, s.relid AS rel, 0 AS depth
    FROM shardcast.shards s WHERE s.retired_at IS NULL
    UNION ALL
    SELECT a.shard_id, i.inhparent, a.depth + 1
    FROM ancestry a JOIN pg_catalog.pg_inherits i ON i.inhrelid = a.rel
), assigned AS (
    SELECT DISTINCT ON (a.shard_id) a.shard_id, ca.class, a.rel AS source
    FROM ancestry a
    JOIN pg_catalog.pg_class c ON c.oid = a.rel
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN shardcast.shard_class_assignments ca ON ca.schema_name = n.nspname AND ca.table_name = c.relname
    ORDER BY a.shard_id, a.depth
)
SELECT s.shard_id,
       s.relid::regclass AS shard,
       coalesce(a.class, 'normal') AS class,
       coalesce(k.weight, 1) AS weight,
       a.source::regclass AS class_source
FROM shardcast.shards s
LEFT JOIN assigned a USING (shard_id)
LEFT JOIN shardcast.shard_classes k ON k.class = coalesce(a.class, 'normal')
WHERE s.retired_at IS NULL;
COMMENT ON VIEW shardcast.effective_classes IS
    'Each live shard''s class and weight, inherited from its partitioned parent unless set.';

-- What replication should copy first: every live shard's Shard Priority Score.
-- score = predicted load over the horizon x class weight, lifted along foreign keys
-- (lift, lift_source), held by hysteresis; priority_weight maps it to 0-1000
-- (round(1000 * ln(1 + score) / ln(1 + max score))); tier 1 is the hottest; rank 1 is first.
-- The view never opens a relation (_sparkline takes an OID), so that it neither fails when a
-- shard was just dropped nor waits behind DDL that locks one; a shard whose relation is gone or
-- no longer its own (dropped, renamed) is left out until the next sample retires it.
CREATE VIEW shardcast.priority_scores AS
SELECT s.relid::regclass AS shard,
       sc.class,
       sc.weight,
       sc.predicted_load,
       f.lower AS predicted_load_lower,
       f.upper AS predicted_load_upper,
       f.model,
       sc.lift,
       CASE WHEN src.retired_at IS NULL THEN src.relid::regclass END AS lift_source,
       sc.score,
       sc.priority_weight,
       sc.tier,
       sc.rank,
       s.size_bytes,
       sc.computed_at,
       shardcast._sparkline(s.relid) AS sparkline
FROM shardcast.scores sc
JOIN shardcast.shards s ON s.shard_id = sc.shard_id AND s.retired_at IS NULL
JOIN pg_catalog.pg_class c ON c.oid = s.relid AND c.relname = s.table_name
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schema_name
LEFT JOIN shardcast.forecast_state f ON f.shard_id = sc.shard_id
LEFT JOIN shardcast.shards src ON src.shard_id = sc.lift_source;
COMMENT ON VIEW shardcast.priority_scores IS
    'Shard Priority Scores: forecast load x class weight, lifted along foreign keys; rank 1 first.';
-- Each live shard's latest forecast: total load over [window_start, window_end) (the window
-- starts when the forecast's history was read), its point (the one figure nearest the outcome)
-- and interval, its expected load (what scores use), the models combined and their weights, the
-- combination's backtest MASE (NULL without a backtest: cold start), the history it used
-- (observed_hours measured by the worker, imported_hours known only from record_access; hours
-- nobody observed are not read as zero) and why it changed since the last refresh.
CREATE VIEW shardcast.forecasts AS
SELECT s.relid::regclass AS shard,
       f.shard_id,
       f.computed_at,
       f.window_start,
       f.window_end,
       f.horizon,
       f.model,
       f.point,
       f.lower,
       f.upper,
       f.expected,
       (SELECT string_agg(format('%s %s', m, round(w::numeric, 2)), ', ' ORDER BY w DESC, m)
        FROM unnest(f.selected_members, f.selected_weights) AS u(m, w)) AS models,
       f.backtest_mase,
       f.history_points,
       f.observed_hours,
       f.imported_hours,
       f.change_reason
FROM shardcast.forecast_state f
JOIN shardcast.shards s ON s.shard_id = f.shard_id AND s.retired_at IS NULL;
COMMENT ON VIEW shardcast.forecasts IS
    'Latest forecast per live shard: load over [window_start, window_end), point, interval and expected load, models and weights, backtest MASE, history used, why it changed.';

-- The replication queue in dispatch order under the server's shardcast.ordering ('wspt' by
-- default: score per byte to copy; 'score'; 'fifo'): the express lane first, then that order,
-- no task overtaking one enqueued more than shardcast.overtake_window before it. Claims follow
-- the order stored by the last replan.
CREATE VIEW shardcast.prioritized_queue AS
SELECT q.position, q.task_id, q.relid::regclass AS shard, q.size_bytes, q.score, q.priority_weight,
       q.density, q.tier, q.prefetch, q.node
FROM shardcast._prioritized_queue() q;
COMMENT ON VIEW shardcast.prioritized_queue IS
    'Queued replication tasks in dispatch order (position 1 = next).';

-- Columns of the views a DBA reads most, for \d+.
COMMENT ON COLUMN shardcast.priority_scores.predicted_load IS
    'The expected load over the horizon (shardcast.horizon) from the refresh (forecasts.expected): reads counted as shardcast.load_measure counts them.';
COMMENT ON COLUMN shardcast.priority_scores.predicted_load_lower IS
    'Lower bound of the forecast''s interval of outcomes (shardcast.interval_level, calibrated on the backtest''s errors; around forecasts.point).';
COMMENT ON COLUMN shardcast.priority_scores.predicted_load_upper IS
    'Upper bound of the forecast''s interval.';
COMMENT ON COLUMN shardcast.priority_scores.lift IS
    'What the published score holds beyond the shard''s own: inherited from a hot table that references it (lift_source).';
COMMENT ON COLUMN shardcast.priority_scores.score IS
    'The published Shard Priority Score: predicted load x class weight, lifted, held by hysteresis (shardcast.score_hysteresis).';
COMMENT ON COLUMN shardcast.priority_scores.priority_weight IS
    '0-1000: round(1000 x ln(1 + score) / ln(1 + max score)); what manifests and claims carry.';
COMMENT ON COLUMN shardcast.priority_scores.tier IS
    '1 = hottest; k-means on ln(1 + score) into shardcast.tiers tiers.';
COMMENT ON COLUMN shardcast.priority_scores.rank IS
    '1 = first; among equal scores the higher own score, then the lower shard id.';
COMMENT ON COLUMN shardcast.priority_scores.sparkline IS
    'The last 24 hours of load, then the forecast per hour after the bar.';
COMMENT ON COLUMN shardcast.forecasts.window_start IS
    'The forecast covers [window_start, window_end): it starts when its history was read, at any minute of the hour.';
COMMENT ON COLUMN shardcast.forecasts.point IS
    'The total load forecast over the window: the one figure nearest the outcome (least absolute error; below the expected load where load comes in bursts or sittings).';
COMMENT ON COLUMN shardcast.forecasts.lower IS
    'Lower bound of the interval: shardcast.interval_level of outcomes fall in [lower, upper] (split-conformal, from the backtest''s errors).';
COMMENT ON COLUMN shardcast.forecasts.expected IS
    'The expected (mean) total load over the window: what scores, the queue and Citus balancing use (priority_scores.predicted_load).';
COMMENT ON COLUMN shardcast.forecasts.models IS
    'The models combined and their weights (inverse squared backtest error), heaviest first.';
COMMENT ON COLUMN shardcast.forecasts.backtest_mase IS
    'The combination''s backtest error, scaled by seasonal naive''s (below 1: better than repeating yesterday); NULL at a cold start.';
COMMENT ON COLUMN shardcast.forecasts.observed_hours IS
    'Hours of history the worker measured; hours nobody observed are not read as zero.';
COMMENT ON COLUMN shardcast.forecasts.imported_hours IS
    'Hours of history known only from record_access imports.';
COMMENT ON COLUMN shardcast.forecasts.change_reason IS
    'Why the forecast changed since the last refresh (a refit, a burst''s onset, a level shift, more history, ...).';
COMMENT ON COLUMN shardcast.prioritized_queue.position IS
    '1 = the next task claimed (the express lane first, then shardcast.ordering within the overtake window).';
COMMENT ON COLUMN shardcast.prioritized_queue.density IS
    'Score per byte to copy: the key of the default order (wspt).';
COMMENT ON COLUMN shardcast.prioritized_queue.prefetch IS
    'In the express lane: even at the lower bounds of the forecasts its score rests on, the task''s density (its score under ordering score or fifo) is above shardcast.prefetch_quantile of the queued tasks''.';
COMMENT ON COLUMN shardcast.prioritized_queue.node IS
    'The node the task copies to: the one asked for at enqueue, or node assignment''s choice; NULL without an enabled node.';

-- Why each queued task has its place: the decision the order made (express lane, the task it
-- follows and by what key, or the overtake window holding it back), and what keeps its node
-- from claiming it now (disabled, or at its concurrency limit).
CREATE VIEW shardcast.queue_explained AS
SELECT q.position, q.task_id, q.relid::regclass AS shard, q.size_bytes, q.score, q.density, q.tier,
       q.prefetch, q.node,
       q.reason || CASE
           WHEN q.node IS NULL AND EXISTS (SELECT FROM shardcast.nodes)
               THEN '; no enabled node to copy to: not claimed until one is enabled'
           WHEN q.node IS NULL THEN ''
           WHEN n.node IS NULL THEN pg_catalog.format('; node %s does not exist', q.node)
           WHEN NOT n.enabled THEN pg_catalog.format('; node %s is disabled: not claimed until it is enabled', q.node)
           WHEN c.copying >= n.max_concurrent
               THEN pg_catalog.format('; node %s at its concurrency limit (%s of %s copying)', q.node, c.copying, n.max_concurrent)
           ELSE ''
       END AS reason
FROM shardcast._queue_explained() q
LEFT JOIN shardcast.nodes n ON n.node = q.node
LEFT JOIN LATERAL (SELECT count(*) AS copying FROM shardcast.replication_tasks t
                   WHERE t.state = 'claimed' AND t.node = q.node) c ON true;
COMMENT ON VIEW shardcast.queue_explained IS
    'Queued replication tasks in dispatch order, each with the reason for its place and what holds its node back.';

-- What is on each node: one row per shard copied to a node (shardcast.replicas), live shards
-- only. Enqueueing does not copy these again; shardcast.forget_replica(shard, node) forgets one.
CREATE VIEW shardcast.node_replicas AS
SELECT s.relid::regclass AS shard,
       r.node,
       r.task_id,
       r.copied_at,
       t.size_bytes,
       t.copied AS data_copied
FROM shardcast.replicas r
JOIN shardcast.shards s ON s.shard_id = r.shard_id AND s.retired_at IS NULL
LEFT JOIN shardcast.replication_tasks t ON t.task_id = r.task_id;
COMMENT ON VIEW shardcast.node_replicas IS
    'Shards copied to each node, with the task that did it and when; enqueueing does not copy them there again.';

-- One row per open task: what a replication script copies, where, in which order.
CREATE VIEW shardcast.replication_manifest AS
SELECT t.task_id,
       format('%I.%I', s.schema_name, s.table_name) AS shard,
       (SELECT system_identifier FROM pg_catalog.pg_control_system()) AS source_system_identifier,
       current_database() AS source_database,
       t.node,
       t.size_bytes,
       t.priority_weight,
       -- Renumbered over what is still queued, so that position 1 is the next task claimed
       -- even after earlier tasks were claimed.
       CASE WHEN t.state = 'queued'
            THEN (row_number() OVER (PARTITION BY t.state, t.kind ORDER BY t.dispatch_rank, t.task_id))::integer
       END AS position,
       t.tier,
       t.prefetch,
       t.state,
       -- Citus moves (kind citus_move) are numbered apart from table copies, since each kind has
       -- its own claim; a move has no node (no replication node): it goes from source
       -- to target (Citus nodes, host:port).
       t.kind,
       t.citus_source AS source,
       t.citus_target AS target
FROM shardcast.replication_tasks t
JOIN shardcast.shards s USING (shard_id)
LEFT JOIN pg_catalog.pg_class c ON c.oid = s.relid
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE t.state = 'claimed'
   -- A queued task whose shard is gone (dropped, renamed or moved, retired) is never claimed:
   -- the next claim or replan cancels it. It is left out, as the queue leaves it out, so that
   -- position 1 is the next task claimed and no tool is sent for a table that is not there.
   OR t.state = 'queued' AND s.retired_at IS NULL
      AND (t.kind = 'citus_move' OR c.relname = s.table_name AND n.nspname = s.schema_name);
COMMENT ON VIEW shardcast.replication_manifest IS
    'Open replication tasks: shard, source identity, node, size, priority weight, position (per kind), kind, and a Citus move''s source and target node.';

-- What prioritization was worth on the tasks done so far: access-weighted availability (the
-- share of the accesses during the run that hit shards already copied) of the realised order,
-- of FIFO (catalog order) and of perfect foresight (Smith's rule on the true load), both replayed
-- on the run's own workers with each copy's own duration; capture = (realised - fifo) / (oracle - fifo).
CREATE VIEW shardcast.prioritization_report AS
SELECT * FROM shardcast.prioritization_report_since(NULL);
COMMENT ON VIEW shardcast.prioritization_report IS
    'Access-weighted availability of the realised replication order against FIFO and perfect foresight.';
