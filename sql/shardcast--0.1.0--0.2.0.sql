-- shardcast 0.1.0 -> 0.2.0. Run by ALTER EXTENSION shardcast UPDATE; never edit once released.
\echo Use "ALTER EXTENSION shardcast UPDATE TO '0.2.0'" to load this file. \quit

-- Forecasts cover [now, now + horizon) and say which history and models made them. The stored
-- forecasts are derived data: they are dropped and made again by the next refresh.
TRUNCATE shardcast.forecast_state;
ALTER TABLE shardcast.forecast_state
    DROP COLUMN selected_model,
    ADD COLUMN window_start     timestamptz NOT NULL,
    ADD COLUMN window_end       timestamptz NOT NULL,
    ADD COLUMN observed_hours   integer NOT NULL,
    ADD COLUMN imported_hours   integer NOT NULL,
    ADD COLUMN change_reason    text NOT NULL,
    ADD COLUMN selected_members text[] NOT NULL,
    ADD COLUMN selected_weights double precision[] NOT NULL,
    ADD COLUMN selected_mase    double precision,
    ADD COLUMN error_offset     double precision NOT NULL;
COMMENT ON TABLE shardcast.forecast_state IS
    'Latest forecast per shard: total load over [window_start, window_end), its interval, the models combined, the history used, and why it changed.';
-- The forecasts view shows the window, the models combined and the history used: new columns
-- amid the old ones, so the view is dropped and created.
DROP VIEW shardcast.forecasts;
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
    'Latest forecast per live shard: load over [window_start, window_end), interval, models and weights, backtest MASE, history used, why it changed.';
GRANT SELECT ON shardcast.forecasts TO PUBLIC;

-- Hours nobody observed are unknown, not idle. 0.1.0 read every hour since a shard was first
-- seen as observed: its history is kept so, as one period from the oldest history to now.
CREATE TABLE shardcast.sampling_periods (
    started_at timestamptz NOT NULL,
    ended_at   timestamptz NOT NULL CHECK (ended_at >= started_at),
    PRIMARY KEY (started_at)
);
COMMENT ON TABLE shardcast.sampling_periods IS
    'Periods during which the worker sampled continuously; hours outside them are unknown, not idle.';
INSERT INTO shardcast.sampling_periods (started_at, ended_at)
SELECT least(min(first_seen), now()), now() FROM shardcast.shards HAVING count(*) > 0;

-- The worker is a launcher connected to no database that keeps a sampler running (restarted
-- after termination, waiting quietly while its database is missing or it is paused);
-- worker_status says where the worker runs, and why it does not.
CREATE FUNCTION shardcast."preloaded"() RETURNS bool
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'preloaded_wrapper';
-- Dropped and created, not replaced: state takes the collation of pg_stat_activity.datname now.
DROP VIEW shardcast.worker_status;
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
           WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity l
                            WHERE l.backend_type = 'shardcast launcher') THEN 'not running'
           WHEN NOT pg_catalog.current_setting('shardcast.enabled')::boolean
               THEN 'paused (shardcast.enabled = off)'
           WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_database d
                            WHERE d.datname = pg_catalog.current_setting('shardcast.database'))
               THEN 'waiting for database "' || pg_catalog.current_setting('shardcast.database') || '"'
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
LEFT JOIN LATERAL (SELECT a.pid, a.datname FROM pg_catalog.pg_stat_activity a
                   WHERE a.backend_type = 'shardcast' ORDER BY a.backend_start LIMIT 1) a ON true;
COMMENT ON VIEW shardcast.worker_status IS
    'The background worker: where it runs, what it is doing, when it last sampled, its last error.';
GRANT SELECT ON shardcast.worker_status TO PUBLIC;

-- Read-only views never open a shard's relation: priority_scores draws its sparklines with
-- _sparkline(oid) and leaves out shards whose table is gone; sparkline() takes its regclass as an
-- OID (an OID that names nothing is 42P01, not XX000).
CREATE FUNCTION shardcast."_sparkline"(
	"relid" oid,
	"span" interval DEFAULT '24 hours'
) RETURNS TEXT
STABLE SECURITY DEFINER PARALLEL SAFE COST 1000
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'sparkline_of_oid_wrapper';
ALTER FUNCTION shardcast.sparkline(regclass, interval) CALLED ON NULL INPUT;
COMMENT ON FUNCTION shardcast.sparkline(regclass, interval) IS
    'A one-line chart of a shard''s hourly load over span (1 hour to 28 days), then its forecast per hour.';
COMMENT ON FUNCTION shardcast.enqueue(regclass, text) IS
    'Enqueues one shard for a node (NULL: node assignment chooses); returns the task id, the open one if there is one.';
COMMENT ON FUNCTION shardcast.set_shard_class(regclass, text) IS
    'Sets the class of a table, leaf partition or partitioned table (its partitions inherit it).';
CREATE OR REPLACE VIEW shardcast.priority_scores AS
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

-- One shard, one node, one open task. 0.1.0 could queue a shard twice for one node (once for
-- any node, once for that node): one is kept (one in flight, else the one given that node, else
-- the oldest), the others are cancelled.
WITH ranked AS (
    SELECT task_id,
           first_value(task_id) OVER w AS kept,
           row_number() OVER w AS n
    FROM shardcast.replication_tasks
    WHERE state IN ('queued', 'claimed') AND node IS NOT NULL
    WINDOW w AS (PARTITION BY shard_id, node
                 ORDER BY state = 'claimed' DESC, destination IS NOT NULL DESC, task_id)
)
UPDATE shardcast.replication_tasks t
SET state = 'cancelled', finished_at = now(), claimed_by = NULL, lease_expires_at = NULL,
    detail = 'a duplicate of task ' || r.kept || ' for the same node'
FROM ranked r
WHERE t.task_id = r.task_id AND r.n > 1;
CREATE UNIQUE INDEX replication_tasks_open_node ON shardcast.replication_tasks (shard_id, node)
    WHERE state IN ('queued', 'claimed');

-- An imported zero is knowledge: day rows say which hours held history. 0.1.0's day rows came
-- from the worker's sampling or imports alike: every hour of them counts as present.
ALTER TABLE shardcast.daily_access ADD COLUMN hours_present integer NOT NULL DEFAULT 16777215;
ALTER TABLE shardcast.daily_access ALTER COLUMN hours_present DROP DEFAULT;
COMMENT ON COLUMN shardcast.daily_access.hours_present IS
    'Bit h set when hour h (UTC) held any history, zeros included.';

-- pg_dump keeps edited builtin classes too (0.1.0 dumped only the user's, so a restore brought
-- the default weights back), and a restore updates the builtin rows it finds instead of
-- failing on their primary key.
SELECT pg_catalog.pg_extension_config_dump('shardcast.shard_classes',
    'WHERE NOT builtin OR NOT EXISTS (SELECT FROM (VALUES '
    || '(''critical'', 10::float8, ''read by user-facing paths; replicate first''), '
    || '(''normal'', 1::float8, ''the default class''), '
    || '(''log'', 0.1::float8, ''append-mostly history, rarely read'')) AS d(c, w, t) '
    || 'WHERE (d.c, d.w, d.t) IS NOT DISTINCT FROM (class, weight, description))');
CREATE FUNCTION shardcast._restore_builtin_class() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE shardcast.shard_classes
    SET weight = NEW.weight, description = NEW.description
    WHERE class = NEW.class AND builtin;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER restore_builtin BEFORE INSERT ON shardcast.shard_classes
    FOR EACH ROW WHEN (NEW.builtin) EXECUTE FUNCTION shardcast._restore_builtin_class();

-- The manifest's positions count what is still queued (1 = next), not the plan's stored ranks.
CREATE OR REPLACE VIEW shardcast.replication_manifest AS
SELECT t.task_id,
       format('%I.%I', s.schema_name, s.table_name) AS shard,
       (SELECT system_identifier FROM pg_catalog.pg_control_system()) AS source_system_identifier,
       current_database() AS source_database,
       t.node AS destination,
       t.size_bytes,
       t.priority_weight,
       -- Renumbered over what is still queued, so that position 1 is the next task claimed
       -- even after earlier tasks were claimed.
       CASE WHEN t.state = 'queued'
            THEN (row_number() OVER (PARTITION BY t.state ORDER BY t.dispatch_rank, t.task_id))::integer
       END AS position,
       t.tier,
       t.prefetch,
       t.state
FROM shardcast.replication_tasks t
JOIN shardcast.shards s USING (shard_id)
WHERE t.state IN ('queued', 'claimed');

-- Every table and function explains itself in \d+ and \df+.
COMMENT ON TABLE shardcast.worker_state IS
    'The background worker''s health, one row written by the worker; read it through shardcast.worker_status.';
COMMENT ON TABLE shardcast.shard_classes IS
    'How much a class of shards matters: score = predicted load x weight. Editable; critical, normal and log come with the extension.';
COMMENT ON FUNCTION shardcast._restore_builtin_class() IS
    'Trigger: a restored builtin class updates the row CREATE EXTENSION made instead of failing on its key.';
COMMENT ON TABLE shardcast.shard_class_assignments IS
    'Each table''s class by qualified name (survives drop and re-create, dump and restore); a partition without one takes its parent''s. Set with shardcast.set_shard_class.';
COMMENT ON TABLE shardcast.scores IS
    'The published Shard Priority Scores, one row per live shard; read them through shardcast.priority_scores.';
COMMENT ON TABLE shardcast.nodes IS
    'Replication destinations: copy throughput, concurrency limit and reported load. Add with shardcast.add_node; conninfo is readable only where granted.';
COMMENT ON TABLE shardcast.replication_tasks IS
    'Replication tasks: one shard to copy to one node, queued, claimed (leased), done, failed or cancelled. Enqueue with shardcast.enqueue*, claim with shardcast.claim_task.';
COMMENT ON TABLE shardcast.copy_credits IS
    'Reads made by replication''s own copies, subtracted from the sampled load so that a copy never counts as application load.';
COMMENT ON TABLE shardcast.completion_log IS
    'Every finished replication attempt (done or failed): shard, node, worker, timing and detail; the prioritization report reads it.';
COMMENT ON FUNCTION shardcast.allocation_plan(integer, bigint) IS
    'Assigns the queue to copy workers (bandwidth shared fairly) and predicts when each task starts and finishes.';
COMMENT ON FUNCTION shardcast.preloaded() IS
    'Whether the shardcast library was loaded through shared_preload_libraries (the worker runs only then).';
COMMENT ON FUNCTION shardcast.refresh_forecasts() IS
    'Forecasts every live shard now and republishes scores and the queue order; returns the number of shards scored. Cancellable.';
COMMENT ON FUNCTION shardcast.add_node(text, double precision, integer, text) IS
    'Adds a replication destination: name, copy throughput in bytes per second, tasks it may copy at once, and the conninfo the driver uses.';
COMMENT ON FUNCTION shardcast.report_node_load(text, double precision) IS
    'Reports the share (0 to 1) of a node''s capacity in use; node assignment gives busy nodes less work.';
COMMENT ON FUNCTION shardcast.enqueue_publication(text, text) IS
    'Enqueues every table of a publication (to one node, or to the node assignment chooses); returns the number of tasks. Skips tables logical replication cannot carry.';
COMMENT ON FUNCTION shardcast.enqueue_all(text) IS
    'Enqueues every live shard (to one node, or to the node assignment chooses); returns the number of tasks. Skips tables logical replication cannot carry.';
COMMENT ON FUNCTION shardcast.heartbeat(bigint, text) IS
    'Extends a claimed task''s lease by shardcast.claim_lease; returns the new expiry.';
COMMENT ON FUNCTION shardcast.release_task(bigint, text) IS
    'Hands a claimed task back to the queue without counting an attempt.';
COMMENT ON FUNCTION shardcast.complete_task(bigint, boolean, text, text) IS
    'Finishes a claimed task: done, or failed (queued again until shardcast.max_attempts); logs it and sends a NOTIFY.';
COMMENT ON FUNCTION shardcast.manifest_json(text) IS
    'The open replication tasks as one JSON document (optionally for one destination), for replication tooling.';
COMMENT ON FUNCTION shardcast.prioritization_report_since(timestamp with time zone) IS
    'What prioritization was worth on tasks claimed since a time: access-weighted availability of the realised order against FIFO and perfect foresight.';
COMMENT ON FUNCTION shardcast._prioritized_queue() IS
    'Internal: the queue in dispatch order; read it through shardcast.prioritized_queue.';
COMMENT ON FUNCTION shardcast._allocation_plan(integer, bigint) IS
    'Internal: the allocation plan; call shardcast.allocation_plan.';
COMMENT ON FUNCTION shardcast._sparkline(oid, interval) IS
    'Internal: a shard''s sparkline by OID; call shardcast.sparkline.';
COMMENT ON FUNCTION shardcast._hour_slots(integer[], double precision[]) IS
    'Internal: spreads hourly values into a day row''s 24 slots (history compaction).';
COMMENT ON FUNCTION shardcast._add_slots(real[], real[]) IS
    'Internal: adds two day rows'' 24 hourly slots (history compaction).';
