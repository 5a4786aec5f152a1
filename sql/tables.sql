-- shardcast's tables: the state that survives restarts. Views are in views.sql, functions in
-- functions.sql, who may use what in privileges.sql.
--
-- History is kept in two tiers so that it stays bounded (see README, "History storage"):
--   recent_access : 5-minute buckets of the last hours, one narrow row per shard and bucket with
--                   activity; the sampler adds to the current bucket.
--   daily_access  : older history, one row per shard and UTC day with 24 hourly slots per counter.
-- The worker moves whole hours from the first to the second ("compaction") and purges what is
-- older than shardcast.history_retention.

-- shardcast reads names (of tables, nodes, publications) as UTF-8 text: in a database of another
-- encoding a name beyond ASCII would fail every call that reads it with an internal error, so the
-- extension is refused there at once, with what to do.
DO $$
BEGIN
    IF pg_catalog.getdatabaseencoding() <> 'UTF8' THEN
        RAISE EXCEPTION 'shardcast needs a UTF8 database, and database "%" is %',
            pg_catalog.current_database(), pg_catalog.getdatabaseencoding()
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create the extension in a UTF8 database (CREATE DATABASE ... ENCODING ''UTF8'' '
                      'LOCALE ''C'' TEMPLATE template0, or a UTF-8 locale), and point shardcast.database at it.';
    END IF;
END
$$;

-- Every ordinary table and leaf partition seen in the watched database. A shard is identified by
-- (relid, schema_name, table_name): a dropped table is retired (retired_at set) and kept for its
-- history; a new table that reuses an OID is a new shard.
CREATE TABLE shardcast.shards (
    shard_id        integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relid           oid         NOT NULL,
    schema_name     name        NOT NULL,
    table_name      name        NOT NULL,
    parent_relid    oid,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    retired_at      timestamptz,
    size_bytes      bigint,
    size_updated_at timestamptz,
    -- A Citus shard (see citus.sql): its shardid; relid is then its distributed table's.
    citus_shard_id  bigint
);
CREATE UNIQUE INDEX shards_live_relid ON shardcast.shards (relid)
    WHERE retired_at IS NULL AND citus_shard_id IS NULL;
CREATE UNIQUE INDEX shards_live_citus_shard ON shardcast.shards (citus_shard_id)
    WHERE retired_at IS NULL AND citus_shard_id IS NOT NULL;
COMMENT ON TABLE shardcast.shards IS
    'Every table and leaf partition shardcast has seen; retired_at is set when it went away.';
COMMENT ON COLUMN shardcast.shards.citus_shard_id IS
    'For a Citus shard sampled on the coordinator: its shardid (relid is its distributed table, table_name the shard''s).';

CREATE TABLE shardcast.recent_access (
    shard_id       integer     NOT NULL REFERENCES shardcast.shards ON DELETE CASCADE,
    bucket_start   timestamptz NOT NULL,
    scans          double precision NOT NULL DEFAULT 0,
    tuples_read    double precision NOT NULL DEFAULT 0,
    tuples_written double precision NOT NULL DEFAULT 0,
    blocks_hit     double precision NOT NULL DEFAULT 0,
    blocks_read    double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (shard_id, bucket_start)
) WITH (fillfactor = 70);
-- Compaction and purging walk the oldest buckets.
CREATE INDEX recent_access_bucket_start ON shardcast.recent_access (bucket_start);
COMMENT ON TABLE shardcast.recent_access IS
    'Access deltas per shard in 5-minute buckets, for the most recent hours.';

CREATE TABLE shardcast.daily_access (
    shard_id       integer NOT NULL REFERENCES shardcast.shards ON DELETE CASCADE,
    day            date    NOT NULL,
    scans          real[]  NOT NULL,
    tuples_read    real[]  NOT NULL,
    tuples_written real[]  NOT NULL,
    blocks_hit     real[]  NOT NULL,
    blocks_read    real[]  NOT NULL,
    -- Which hours of the day held any history (bit h = hour h UTC), zero buckets included: an
    -- imported zero is knowledge, an hour without a bucket outside the sampling periods is not.
    hours_present  integer NOT NULL,
    -- Which hours held imported buckets in time the worker did not observe: the worker's
    -- measure in such an hour is not scaled up to the whole hour (the import covers the rest).
    hours_imported integer NOT NULL DEFAULT 0,
    PRIMARY KEY (shard_id, day)
);
COMMENT ON TABLE shardcast.daily_access IS
    'Compacted access history: per shard and UTC day, 24 hourly sums per counter (index 1 = 00:00 UTC).';
COMMENT ON COLUMN shardcast.daily_access.hours_present IS
    'Bit h set when hour h (UTC) held any history, zeros included.';
COMMENT ON COLUMN shardcast.daily_access.hours_imported IS
    'Bit h set when hour h (UTC) held imported history in time the worker did not observe.';

-- The worker's own health, one row, written by the worker.
CREATE TABLE shardcast.worker_state (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pid              integer,
    database         name,
    state            text,
    started_at       timestamptz,
    last_sample_at   timestamptz,
    last_cycle_ms    double precision,
    shards_tracked   integer NOT NULL DEFAULT 0,
    samples_written  bigint  NOT NULL DEFAULT 0,
    resets_detected  bigint  NOT NULL DEFAULT 0,
    last_error       text,
    last_error_at    timestamptz,
    last_refresh_at  timestamptz,
    last_refresh_ms  double precision,
    shards_scored    integer NOT NULL DEFAULT 0
);
INSERT INTO shardcast.worker_state DEFAULT VALUES;
COMMENT ON TABLE shardcast.worker_state IS
    'The background worker''s health, one row written by the worker; read it through shardcast.worker_status.';

-- Application metadata: how much a class of shards matters. Editable; the defaults come with the
-- extension. pg_dump keeps the user's classes and the builtin ones whose weight or description
-- was edited (the condition below lists the defaults, so that a later release's new defaults
-- are not overwritten by a dump's unedited copies).
CREATE TABLE shardcast.shard_classes (
    class       text PRIMARY KEY CHECK (class ~ '^[a-z][a-z0-9_]*$'),
    weight      double precision NOT NULL CHECK (weight >= 0 AND weight < 'infinity'),
    description text,
    builtin     boolean NOT NULL DEFAULT false
);
INSERT INTO shardcast.shard_classes (class, weight, description, builtin) VALUES
    ('critical', 10, 'read by user-facing paths; replicate first', true),
    ('normal', 1, 'the default class', true),
    ('log', 0.1, 'append-mostly history, rarely read', true);
SELECT pg_catalog.pg_extension_config_dump('shardcast.shard_classes',
    'WHERE NOT builtin OR NOT EXISTS (SELECT FROM (VALUES '
    || '(''critical'', 10::float8, ''read by user-facing paths; replicate first''), '
    || '(''normal'', 1::float8, ''the default class''), '
    || '(''log'', 0.1::float8, ''append-mostly history, rarely read'')) AS d(c, w, t) '
    || 'WHERE (d.c, d.w, d.t) IS NOT DISTINCT FROM (class, weight, description))');
-- A restore runs CREATE EXTENSION, which inserts the builtin rows, before it copies the dumped
-- ones: a builtin row inserted when it exists already updates it (an edited weight comes back)
-- instead of failing on the primary key and losing every dumped class with it.
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
COMMENT ON TABLE shardcast.shard_classes IS
    'How much a class of shards matters: score = predicted load x weight. Editable; critical, normal and log come with the extension.';
COMMENT ON FUNCTION shardcast._restore_builtin_class() IS
    'Trigger: a restored builtin class updates the row CREATE EXTENSION made instead of failing on its key.';

-- A table's class, by qualified name so that it survives drop and re-create and dump and restore.
-- A partition without a class of its own takes its parent's.
CREATE TABLE shardcast.shard_class_assignments (
    schema_name name NOT NULL,
    table_name  name NOT NULL,
    class       text NOT NULL REFERENCES shardcast.shard_classes ON UPDATE CASCADE,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, table_name)
);
SELECT pg_catalog.pg_extension_config_dump('shardcast.shard_class_assignments', '');
COMMENT ON TABLE shardcast.shard_class_assignments IS
    'Each table''s class by qualified name (survives drop and re-create, dump and restore); a partition without one takes its parent''s. Set with shardcast.set_shard_class.';

-- Each live shard's latest forecast of its load over [window_start, window_end), and the model
-- selection it came from (kept between refits, so that forecasts can be updated cheaply).
CREATE TABLE shardcast.forecast_state (
    shard_id         integer PRIMARY KEY REFERENCES shardcast.shards ON DELETE CASCADE,
    computed_at      timestamptz NOT NULL,
    horizon          interval NOT NULL,
    model            text NOT NULL,
    point            double precision NOT NULL CHECK (point >= 0),
    lower            double precision NOT NULL CHECK (lower >= 0 AND lower <= point),
    upper            double precision NOT NULL CHECK (upper >= point),
    backtest_mase    double precision,
    history_points   integer NOT NULL,
    selected_at      timestamptz NOT NULL,
    error_low        double precision NOT NULL,
    error_high       double precision NOT NULL,
    window_start     timestamptz NOT NULL,
    window_end       timestamptz NOT NULL,
    observed_hours   integer NOT NULL,
    imported_hours   integer NOT NULL,
    change_reason    text NOT NULL,
    selected_members text[] NOT NULL,
    selected_weights double precision[] NOT NULL,
    selected_mase    double precision,
    error_offset     double precision NOT NULL,
    -- The expected load (what scores and the queue use) beside the point (the one figure
    -- nearest the outcome), and how the selection makes the point from it.
    expected         double precision NOT NULL CHECK (expected >= 0),
    last_weight      double precision NOT NULL CHECK (last_weight BETWEEN 0 AND 1),
    error_median     double precision NOT NULL
);
COMMENT ON TABLE shardcast.forecast_state IS
    'Latest forecast per shard: total load over [window_start, window_end), its point, interval and expected value, the models combined, the history used, and why it changed.';

-- When the worker sampled: history inside these periods was observed (an idle shard's hour is
-- then a measured zero); hours outside them are unknown unless imported with record_access.
CREATE TABLE shardcast.sampling_periods (
    started_at timestamptz NOT NULL,
    ended_at   timestamptz NOT NULL CHECK (ended_at >= started_at),
    PRIMARY KEY (started_at)
);
COMMENT ON TABLE shardcast.sampling_periods IS
    'Periods during which the worker sampled continuously; hours outside them are unknown, not idle.';

-- Published Shard Priority Scores.
CREATE TABLE shardcast.scores (
    shard_id        integer PRIMARY KEY REFERENCES shardcast.shards ON DELETE CASCADE,
    computed_at     timestamptz NOT NULL,
    predicted_load  double precision NOT NULL,
    class           text NOT NULL,
    weight          double precision NOT NULL,
    base_score      double precision NOT NULL,
    lift            double precision NOT NULL,
    lift_source     integer REFERENCES shardcast.shards ON DELETE SET NULL,
    score           double precision NOT NULL,
    priority_weight integer NOT NULL CHECK (priority_weight BETWEEN 0 AND 1000),
    tier            integer NOT NULL,
    rank            integer NOT NULL
);
COMMENT ON TABLE shardcast.scores IS
    'The published Shard Priority Scores, one row per live shard; read them through shardcast.priority_scores.';

-- Replication nodes.
CREATE TABLE shardcast.nodes (
    node                   text PRIMARY KEY CHECK (node <> ''),
    conninfo               text,
    capacity_bytes_per_sec double precision NOT NULL CHECK (capacity_bytes_per_sec > 0 AND capacity_bytes_per_sec < 'infinity'),
    max_concurrent         integer NOT NULL DEFAULT 4 CHECK (max_concurrent > 0),
    current_load           double precision NOT NULL DEFAULT 0 CHECK (current_load BETWEEN 0 AND 1),
    load_reported_at       timestamptz,
    enabled                boolean NOT NULL DEFAULT true,
    added_at               timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('shardcast.nodes', '');
COMMENT ON TABLE shardcast.nodes IS
    'Replication nodes: copy throughput, concurrency limit and reported load. Add with shardcast.add_node; conninfo is readable only where granted.';

-- One shard to copy to one node. requested_node is the node asked for at enqueue (NULL: any
-- node); node is the node the task copies to: the requested one, or the one node assignment
-- chose; dispatch_rank is the task's place in the plan (1 = next).
CREATE TABLE shardcast.replication_tasks (
    task_id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shard_id                     integer NOT NULL REFERENCES shardcast.shards,
    requested_node               text REFERENCES shardcast.nodes ON UPDATE CASCADE,
    node                         text REFERENCES shardcast.nodes ON UPDATE CASCADE,
    state                        text NOT NULL DEFAULT 'queued'
                                 CHECK (state IN ('queued', 'claimed', 'done', 'failed', 'cancelled')),
    size_bytes                   bigint NOT NULL,
    score                        double precision NOT NULL DEFAULT 0,
    priority_weight              integer NOT NULL DEFAULT 0,
    tier                         integer NOT NULL DEFAULT 1,
    prefetch                     boolean NOT NULL DEFAULT false,
    dispatch_rank                integer,
    claimed_by                   text,
    lease_expires_at             timestamptz,
    attempts                     integer NOT NULL DEFAULT 0,
    enqueued_at                  timestamptz NOT NULL DEFAULT now(),
    claimed_at                   timestamptz,
    finished_at                  timestamptz,
    priority_weight_at_claim     integer,
    priority_weight_at_completion integer,
    detail                       text,
    -- Done tasks: whether the completion copied data (false: the table was already in sync on
    -- the node). The prioritization report counts only copies.
    copied                       boolean,
    -- What the task does: 'copy' (the shard to `node`, by the driver's logical replication) or
    -- 'citus_move' (a Citus move group from citus_source to citus_target, by
    -- citus_move_shard_placement; see citus.sql). Each kind has its own claim function, so
    -- that a table sync never takes a move and a move never a table copy.
    kind                         text NOT NULL DEFAULT 'copy' CHECK (kind IN ('copy', 'citus_move')),
    citus_shard_id               bigint,
    citus_colocation_id          integer,
    citus_source                 text,
    citus_target                 text,
    CONSTRAINT replication_tasks_citus_move CHECK (CASE kind
        WHEN 'copy' THEN citus_shard_id IS NULL AND citus_colocation_id IS NULL
                         AND citus_source IS NULL AND citus_target IS NULL
        ELSE citus_shard_id IS NOT NULL AND citus_colocation_id IS NOT NULL
             AND citus_source IS NOT NULL AND citus_target IS NOT NULL
             AND citus_source <> citus_target AND node IS NULL AND requested_node IS NULL END)
);
COMMENT ON TABLE shardcast.replication_tasks IS
    'Replication tasks: one shard to copy to one node (kind copy: enqueue with shardcast.enqueue*, claim with shardcast.claim_task) or one Citus move group to move between Citus nodes (kind citus_move: enqueue_citus_rebalance, claim_citus_move); queued, claimed (leased), done, failed or cancelled.';
COMMENT ON COLUMN shardcast.replication_tasks.requested_node IS
    'The node asked for at enqueue; NULL: any node (node assignment chooses).';
COMMENT ON COLUMN shardcast.replication_tasks.node IS
    'The node the task copies to: requested_node when one was asked for, else the one node assignment chose (NULL until then).';
COMMENT ON COLUMN shardcast.replication_tasks.copied IS
    'For a done task: whether its completion copied data (false: the table was already in sync on the node).';
COMMENT ON COLUMN shardcast.replication_tasks.kind IS
    'copy: the shard to node, by the driver''s logical replication (claim_task); citus_move: a Citus move group from citus_source to citus_target (claim_citus_move).';
COMMENT ON COLUMN shardcast.replication_tasks.citus_shard_id IS
    'For a Citus move: the shardid citus_move_shard_placement is given (its colocated shards move with it).';
COMMENT ON COLUMN shardcast.replication_tasks.citus_colocation_id IS
    'For a Citus move: the colocation group, of which one move runs at a time.';
COMMENT ON COLUMN shardcast.replication_tasks.citus_source IS
    'For a Citus move: the node (host:port) the move group leaves.';
COMMENT ON COLUMN shardcast.replication_tasks.citus_target IS
    'For a Citus move: the node (host:port) the move group goes to.';
CREATE UNIQUE INDEX replication_tasks_open ON shardcast.replication_tasks (shard_id, coalesce(requested_node, ''))
    WHERE state IN ('queued', 'claimed');
-- One shard, one node, one open task, whether the node was given or assigned: a shard is never
-- copied to one node twice at once.
CREATE UNIQUE INDEX replication_tasks_open_node ON shardcast.replication_tasks (shard_id, node)
    WHERE state IN ('queued', 'claimed');
CREATE INDEX replication_tasks_dispatch ON shardcast.replication_tasks (dispatch_rank, task_id)
    WHERE state = 'queued';
-- Claims for one node walk its queued tasks in dispatch order.
CREATE INDEX replication_tasks_node_dispatch ON shardcast.replication_tasks (node, dispatch_rank, task_id)
    WHERE state = 'queued';
CREATE INDEX replication_tasks_leases ON shardcast.replication_tasks (lease_expires_at)
    WHERE state = 'claimed';
-- A node's tasks in flight, for its concurrency limit.
CREATE INDEX replication_tasks_in_flight ON shardcast.replication_tasks (node)
    WHERE state = 'claimed';

-- Reads that replication itself makes of the shards it copies (one whole-table scan per claim),
-- taken out of the sampled deltas by the sampler: a copy is not the application's load. Kept
-- until a while after the copy ends, because a scan's statistics arrive when it finishes. One
-- row per task, so that claims of one shard for several nodes never wait on each other.
CREATE TABLE shardcast.copy_credits (
    task_id      bigint PRIMARY KEY,
    shard_id     integer NOT NULL REFERENCES shardcast.shards ON DELETE CASCADE,
    scans        double precision NOT NULL CHECK (scans >= 0),
    tuples_read  double precision NOT NULL CHECK (tuples_read >= 0),
    blocks       double precision NOT NULL CHECK (blocks >= 0),
    valid_until  timestamptz NOT NULL
);
COMMENT ON TABLE shardcast.copy_credits IS
    'Reads made by replication''s own copies, subtracted from the sampled load so that a copy never counts as application load.';

CREATE TABLE shardcast.completion_log (
    task_id         bigint NOT NULL,
    shard_id        integer NOT NULL,
    schema_name     name NOT NULL,
    table_name      name NOT NULL,
    node            text,
    worker          text,
    succeeded       boolean NOT NULL,
    attempts        integer NOT NULL,
    priority_weight integer,
    size_bytes      bigint,
    claimed_at      timestamptz,
    finished_at     timestamptz NOT NULL,
    duration        interval,
    detail          text,
    copied          boolean
);
CREATE INDEX completion_log_finished ON shardcast.completion_log (finished_at);
-- The log has no key (a task may finish more than once), and a publication FOR ALL TABLES,
-- which includes shardcast's own tables, refuses an UPDATE or DELETE of a table without a
-- replica identity: an upgrade script's, or a DBA's clean-up.
ALTER TABLE shardcast.completion_log REPLICA IDENTITY FULL;
COMMENT ON COLUMN shardcast.completion_log.copied IS
    'For a success: whether data was copied (false: the table was already in sync on the node); NULL for a failure.';
COMMENT ON TABLE shardcast.completion_log IS
    'Every finished replication attempt (done or failed): shard, node, worker, timing and detail; the prioritization report reads it.';

-- What is on each node: a shard copied there (a task done, whether it copied data or found the
-- table in sync). Enqueueing consults it, so that a shard is copied to a node once: again only
-- after shardcast.forget_replica, to another node only when that node is named. Forgotten with
-- the node (remove_node), with the shard (retired or purged), or by forget_replica.
CREATE TABLE shardcast.replicas (
    shard_id  integer NOT NULL REFERENCES shardcast.shards ON DELETE CASCADE,
    node      text NOT NULL REFERENCES shardcast.nodes ON UPDATE CASCADE ON DELETE CASCADE,
    task_id   bigint NOT NULL,
    copied_at timestamptz NOT NULL,
    PRIMARY KEY (shard_id, node)
);
COMMENT ON TABLE shardcast.replicas IS
    'Shards copied to each node (the task that did it, and when): enqueueing does not copy them there again. Read it through shardcast.node_replicas; forget one with shardcast.forget_replica.';
