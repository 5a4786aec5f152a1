-- shardcast's functions, in the order a reader learns them. Those written in Rust are declared
-- here by hand (their #[pg_extern] says `sql = false`) so that the whole SQL surface reads in one
-- place; each declaration must match its Rust signature (argument types and order, strictness,
-- result columns), which the regression suite (pg_test/regress) exercises function by function.
-- Functions that change state run as their owner (SECURITY DEFINER) with a pinned search_path;
-- privileges.sql says who may call them.

-- History: what each shard was read and written, sampled by the worker or imported.

CREATE FUNCTION shardcast.record_access(
    shard regclass, sampled_at timestamptz, reads double precision, writes double precision DEFAULT 0
) RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'record_access_wrapper';
COMMENT ON FUNCTION shardcast.record_access(regclass, timestamptz, double precision, double precision) IS
    'Adds externally observed reads and writes of a shard at a time (which may be in the past) to its history.';

CREATE FUNCTION shardcast.record_access(
    shards regclass[], sampled_at timestamptz[], reads double precision[],
    writes double precision[] DEFAULT NULL
) RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'record_access_bulk_wrapper';
COMMENT ON FUNCTION shardcast.record_access(regclass[], timestamptz[], double precision[], double precision[]) IS
    'Imports many access samples at once: element i of each array is one sample; writes NULL means no writes.';

CREATE FUNCTION shardcast._hour_slots(
    hours integer[],
    "values" double precision[]
) RETURNS real[]
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'hour_slots_wrapper';
COMMENT ON FUNCTION shardcast._hour_slots(integer[], double precision[]) IS
    'Internal: spreads hourly values into a day row''s 24 slots (history compaction).';

CREATE FUNCTION shardcast._add_slots(
    a real[],
    b real[]
) RETURNS real[]
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'add_slots_wrapper';
COMMENT ON FUNCTION shardcast._add_slots(real[], real[]) IS
    'Internal: adds two day rows'' 24 hourly slots (history compaction).';

-- Classes: how much a class of shards matters.

CREATE FUNCTION shardcast.set_shard_class(shard regclass, class text) RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'set_shard_class_wrapper';
COMMENT ON FUNCTION shardcast.set_shard_class(regclass, text) IS
    'Sets the class of a table, leaf partition or partitioned table (its partitions inherit it).';

-- The worker and forecasts.

CREATE FUNCTION shardcast.preloaded() RETURNS boolean
LANGUAGE c STABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'preloaded_wrapper';
COMMENT ON FUNCTION shardcast.preloaded() IS
    'Whether the shardcast library was loaded through shared_preload_libraries (the worker runs only then).';

-- A comma-separated list of names read as search_path reads it: unquoted names with their ASCII
-- letters folded to lower case (as PostgreSQL folds identifiers: Über stays Über), double-quoted
-- ones kept as written ("" is a quote), blanks around each ignored; an item that is neither (an
-- unterminated quote, text after a closing one) is left out, not read as another name. What
-- shard_candidates reads shardcast.excluded_schemas with: the setting was matched as raw text, so
-- 'Staging' excluded nothing (the schema is staging) and '"Mixed"' looked for the quotes.
CREATE FUNCTION shardcast._name_list(list text) RETURNS name[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(CASE WHEN r.m[1] LIKE '"%'
                                   THEN replace(substr(r.m[1], 2, length(r.m[1]) - 2), '""', '"')
                                   ELSE translate(r.m[1], 'ABCDEFGHIJKLMNOPQRSTUVWXYZ',
                                                  'abcdefghijklmnopqrstuvwxyz')
                              END ORDER BY r.i)::name[], '{}')
    FROM regexp_matches(list, '(?:^|,)\s*("(?:[^"]|"")*"|[^,"\s](?:[^,"]*[^,"\s])?)\s*(?=,|$)', 'g')
         WITH ORDINALITY AS r(m, i)
$$;
COMMENT ON FUNCTION shardcast._name_list(text) IS
    'Internal: a comma-separated list of names as search_path reads one (unquoted: ASCII letters folded to lower case; quoted kept), for shardcast.excluded_schemas.';

-- The worker's processes as pg_stat_activity lists them, for every role: to a role without
-- pg_read_all_stats, pg_stat_activity shows other users' processes without their backend_type,
-- and worker_status said "not running" while the worker ran. Only shardcast's own processes, and
-- only what says where they run: pid and database (which pg_stat_activity shows everyone), kind
-- and start (which it hides); no query, client or user.
CREATE FUNCTION shardcast._worker_processes()
RETURNS TABLE (pid integer, datname name, backend_type text, backend_start timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT a.pid, a.datname, a.backend_type, a.backend_start
    FROM pg_catalog.pg_stat_activity a
    WHERE a.backend_type IN ('shardcast', 'shardcast launcher')
$$;
COMMENT ON FUNCTION shardcast._worker_processes() IS
    'Internal: shardcast''s launcher and sampler as pg_stat_activity lists them, for worker_status (readable by every role).';

CREATE FUNCTION shardcast.refresh_forecasts() RETURNS bigint
LANGUAGE c VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'refresh_forecasts_wrapper';
COMMENT ON FUNCTION shardcast.refresh_forecasts() IS
    'Forecasts every live shard now and republishes scores and the queue order; returns the number of shards scored. Cancellable.';

-- Sparklines: a shard's load and forecast in one line.

CREATE FUNCTION shardcast.sparkline(shard regclass, span interval DEFAULT '24 hours') RETURNS text
LANGUAGE c STABLE PARALLEL SAFE COST 1000 SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'sparkline_wrapper';
COMMENT ON FUNCTION shardcast.sparkline(regclass, interval) IS
    'A one-line chart of a shard''s hourly load over span (1 hour to 28 days), then its forecast per hour.';

CREATE FUNCTION shardcast._sparkline(
    relid oid,
    span interval DEFAULT '24 hours'
) RETURNS text
LANGUAGE c STABLE PARALLEL SAFE COST 1000 SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'sparkline_of_oid_wrapper';
COMMENT ON FUNCTION shardcast._sparkline(oid, interval) IS
    'Internal: a shard''s sparkline by OID; call shardcast.sparkline.';

-- Nodes: where replication copies to.

CREATE FUNCTION shardcast.add_node(
    name text,
    capacity_bytes_per_sec double precision,
    max_concurrent integer DEFAULT 4,
    conninfo text DEFAULT NULL
) RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'add_node_wrapper';
COMMENT ON FUNCTION shardcast.add_node(text, double precision, integer, text) IS
    'Adds a replication node: name, copy throughput in bytes per second, tasks it may copy at once, and the conninfo the driver uses.';

CREATE FUNCTION shardcast.report_node_load(
    node text,
    load double precision
) RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'report_node_load_wrapper';
COMMENT ON FUNCTION shardcast.report_node_load(text, double precision) IS
    'Reports the share (0 to 1) of a node''s capacity in use; node assignment gives busy nodes less work.';

CREATE FUNCTION shardcast.alter_node(
    node text,
    capacity_bytes_per_sec double precision DEFAULT NULL,
    max_concurrent integer DEFAULT NULL,
    conninfo text DEFAULT NULL,
    enabled boolean DEFAULT NULL
) RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'alter_node_wrapper';
COMMENT ON FUNCTION shardcast.alter_node(text, double precision, integer, text, boolean) IS
    'Changes a node''s capacity, concurrency limit, conninfo ('''' clears it) or enabled flag; NULL leaves a setting as it is. A disabled node gets no new claims.';

CREATE FUNCTION shardcast.remove_node(node text) RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'remove_node_wrapper';
COMMENT ON FUNCTION shardcast.remove_node(text) IS
    'Removes a node with no task in flight: cancels the tasks queued for it, forgets its replicas; returns the number of tasks cancelled. completion_log keeps its history.';

-- Enqueueing: shards become replication tasks (one shard, one node, one open task).

CREATE FUNCTION shardcast.enqueue(shard regclass, node text DEFAULT NULL) RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'enqueue_wrapper';
COMMENT ON FUNCTION shardcast.enqueue(regclass, text) IS
    'Enqueues one shard for a node (NULL: node assignment chooses); returns the task id, the open one if there is one.';

CREATE FUNCTION shardcast.enqueue_publication(
    publication text,
    node text DEFAULT NULL
) RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'enqueue_publication_wrapper';
COMMENT ON FUNCTION shardcast.enqueue_publication(text, text) IS
    'Enqueues every table of a publication (to one node, or to the node assignment chooses); returns the number of tasks. Skips tables logical replication cannot carry.';

CREATE FUNCTION shardcast.enqueue_all(
    node text DEFAULT NULL
) RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'enqueue_all_wrapper';
COMMENT ON FUNCTION shardcast.enqueue_all(text) IS
    'Enqueues every live shard (to one node, or to the node assignment chooses); returns the number of tasks. Skips tables logical replication cannot carry.';

-- The queue and its plan.

CREATE FUNCTION shardcast._prioritized_queue() RETURNS TABLE (
    "position" bigint,
    task_id bigint,
    relid oid,
    size_bytes bigint,
    score double precision,
    priority_weight integer,
    density double precision,
    tier integer,
    prefetch boolean,
    node text
)
LANGUAGE c STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', '_prioritized_queue_wrapper';
COMMENT ON FUNCTION shardcast._prioritized_queue() IS
    'Internal: the queue in dispatch order; read it through shardcast.prioritized_queue.';

CREATE FUNCTION shardcast._queue_explained() RETURNS TABLE (
    "position" bigint,
    task_id bigint,
    relid oid,
    size_bytes bigint,
    score double precision,
    density double precision,
    tier integer,
    prefetch boolean,
    node text,
    reason text
)
LANGUAGE c STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', '_queue_explained_wrapper';
COMMENT ON FUNCTION shardcast._queue_explained() IS
    'Internal: the queue in dispatch order with the reason for each place; read it through shardcast.queue_explained.';

CREATE FUNCTION shardcast._allocation_plan(
    workers integer,
    bandwidth bigint
) RETURNS TABLE (
    "position" bigint,
    task_id bigint,
    relid oid,
    tier integer,
    prefetch boolean,
    worker integer,
    node text,
    bandwidth_share double precision,
    start_offset double precision,
    finish_offset double precision
)
LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', '_allocation_plan_wrapper';
COMMENT ON FUNCTION shardcast._allocation_plan(integer, bigint) IS
    'Internal: the allocation plan; call shardcast.allocation_plan.';

-- For every queued task: the worker slot, node, bandwidth share (bytes/s) and expected start and
-- finish if `workers` slots share `bandwidth` bytes/s (defaults: shardcast.plan_workers,
-- shardcast.plan_bandwidth). NULL: no start (the task's node takes no claims); 'infinity': not
-- within 30,000 years (1e12 s; a node at a few bytes a second), which no interval could hold.
CREATE FUNCTION shardcast.allocation_plan(workers integer DEFAULT NULL, bandwidth bigint DEFAULT NULL)
RETURNS TABLE ("position" bigint, task_id bigint, shard regclass, tier integer, prefetch boolean,
               worker integer, node text, bandwidth_share double precision,
               expected_start timestamptz, expected_finish timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT p.position, p.task_id, p.relid::regclass, p.tier, p.prefetch, p.worker, p.node, p.bandwidth_share,
           CASE WHEN p.start_offset >= 1e12 THEN 'infinity'::timestamptz
                ELSE now() + p.start_offset * interval '1 second' END,
           CASE WHEN p.finish_offset >= 1e12 THEN 'infinity'::timestamptz
                ELSE now() + p.finish_offset * interval '1 second' END
    FROM shardcast._allocation_plan($1, $2) p
$$;
COMMENT ON FUNCTION shardcast.allocation_plan(integer, bigint) IS
    'Assigns the queue to copy workers (bandwidth shared fairly) and predicts when each task starts and finishes.';

-- Claims: replication scripts take tasks under a lease, renew it, and finish or hand back.

CREATE FUNCTION shardcast.claim_task(worker text, node text DEFAULT NULL)
RETURNS TABLE (task_id bigint, shard regclass, qualified_name text, node text, size_bytes bigint,
               priority_weight integer, prefetch boolean, attempts integer, lease_expires_at timestamptz)
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
AS 'MODULE_PATHNAME', 'claim_task_wrapper';
COMMENT ON FUNCTION shardcast.claim_task(text, text) IS
    'Claims the next replication task under the plan, under a lease; no row when there is nothing to do.';

CREATE FUNCTION shardcast.heartbeat(
    task_id bigint,
    worker text DEFAULT NULL
) RETURNS timestamp with time zone
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
AS 'MODULE_PATHNAME', 'heartbeat_wrapper';
COMMENT ON FUNCTION shardcast.heartbeat(bigint, text) IS
    'Extends a claimed task''s lease by shardcast.claim_lease; returns the new expiry.';

CREATE FUNCTION shardcast.release_task(
    task_id bigint,
    worker text DEFAULT NULL
) RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
AS 'MODULE_PATHNAME', 'release_task_wrapper';
COMMENT ON FUNCTION shardcast.release_task(bigint, text) IS
    'Hands a claimed task back to the queue without counting an attempt.';

CREATE FUNCTION shardcast.complete_task(
    task_id bigint,
    succeeded boolean DEFAULT true,
    detail text DEFAULT NULL,
    worker text DEFAULT NULL,
    copied boolean DEFAULT true
) RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
AS 'MODULE_PATHNAME', 'complete_task_copied_wrapper';
COMMENT ON FUNCTION shardcast.complete_task(bigint, boolean, text, text, boolean) IS
    'Finishes a claimed task: done (copied => false: the table was already in sync, nothing copied), or failed (queued again until shardcast.max_attempts); logs it and sends a NOTIFY.';

-- Task lifecycle: what an operator undoes.

CREATE FUNCTION shardcast.cancel_task(task_id bigint) RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'cancel_task_wrapper';
COMMENT ON FUNCTION shardcast.cancel_task(bigint) IS
    'Cancels a queued task (a claimed one must be released or finish first).';

CREATE FUNCTION shardcast.retry_task(task_id bigint) RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'retry_task_wrapper';
COMMENT ON FUNCTION shardcast.retry_task(bigint) IS
    'Queues a failed or cancelled task again, its attempts reset; refused while another open task copies the shard to that node.';

CREATE FUNCTION shardcast.forget_replica(shard regclass, node text) RETURNS boolean
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'forget_replica_wrapper';
COMMENT ON FUNCTION shardcast.forget_replica(regclass, text) IS
    'Forgets that a shard was copied to a node, so that enqueueing copies it there again; returns whether there was such a copy.';

-- The manifest and the report.

CREATE FUNCTION shardcast.manifest_json(
    node text DEFAULT NULL
) RETURNS jsonb
LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'manifest_json_wrapper';
COMMENT ON FUNCTION shardcast.manifest_json(text) IS
    'The open replication tasks as one JSON document (optionally for one node), for replication tooling.';

CREATE FUNCTION shardcast.prioritization_report_since(
    since timestamp with time zone
) RETURNS TABLE (
    tasks bigint,
    window_start timestamp with time zone,
    window_end timestamp with time zone,
    bytes_copied bigint,
    bandwidth double precision,
    awa_realised double precision,
    awa_fifo double precision,
    awa_oracle double precision,
    capture double precision
)
LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prioritization_report_since_wrapper';
COMMENT ON FUNCTION shardcast.prioritization_report_since(timestamp with time zone) IS
    'What prioritization was worth on the copies claimed at or after a time (and finished): access-weighted availability of the realised order against FIFO and perfect foresight.';

CREATE FUNCTION shardcast.prioritization_report_since(
    since timestamp with time zone,
    "until" timestamp with time zone
) RETURNS TABLE (
    tasks bigint,
    window_start timestamp with time zone,
    window_end timestamp with time zone,
    bytes_copied bigint,
    bandwidth double precision,
    awa_realised double precision,
    awa_fifo double precision,
    awa_oracle double precision,
    capture double precision
)
LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prioritization_report_between_wrapper';
COMMENT ON FUNCTION shardcast.prioritization_report_since(timestamp with time zone, timestamp with time zone) IS
    'What prioritization was worth on the copies claimed and finished in [since, until): access-weighted availability of the realised order against FIFO and perfect foresight.';

CREATE FUNCTION shardcast.prioritization_report_for(
    worker text
) RETURNS TABLE (
    tasks bigint,
    window_start timestamp with time zone,
    window_end timestamp with time zone,
    bytes_copied bigint,
    bandwidth double precision,
    awa_realised double precision,
    awa_fifo double precision,
    awa_oracle double precision,
    capture double precision
)
LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prioritization_report_for_wrapper';
COMMENT ON FUNCTION shardcast.prioritization_report_for(text) IS
    'What prioritization was worth on the copies one worker (one driver run) made: access-weighted availability of its order against FIFO and perfect foresight.';

-- Setup mistakes are not silent: CREATE EXTENSION says when the worker cannot run, or samples
-- another database (WARNING: extension scripts run with client_min_messages = warning).
DO $$
BEGIN
    IF NOT shardcast.preloaded() THEN
        RAISE WARNING 'shardcast is not in shared_preload_libraries: its worker does not run, so nothing is sampled'
            USING HINT = 'Add shardcast to shared_preload_libraries in postgresql.conf and restart the server.';
    ELSIF pg_catalog.current_setting('shardcast.database') <> pg_catalog.current_database() THEN
        RAISE WARNING 'the shardcast worker samples database "%" (shardcast.database), not "%"',
                pg_catalog.current_setting('shardcast.database'), pg_catalog.current_database()
            USING HINT = pg_catalog.format('Create the extension in database "%s", or set shardcast.database = ''%s'' in postgresql.conf and restart the server.',
                pg_catalog.current_setting('shardcast.database'), pg_catalog.current_database());
    END IF;
END
$$;
