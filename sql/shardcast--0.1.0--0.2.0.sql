-- shardcast 0.1.0 -> 0.2.0. Run by ALTER EXTENSION shardcast UPDATE; never edit once released.
\echo Use "ALTER EXTENSION shardcast UPDATE TO '0.2.0'" to load this file. \quit

-- shardcast reads names (of tables, nodes, publications) as UTF-8 text: in a database of another
-- encoding a name beyond ASCII would fail every call that reads it with an internal error, so the
-- extension is refused there at once, with what to do; so is this update (0.1.0 failed alike).
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

-- Grants kept across DROP + CREATE. A function whose signature or input parameter names change
-- is dropped and created again, which loses the EXECUTE a DBA granted on it (to the driver's
-- role, say). Before each DROP, _update_save_grants keeps the old function's ACL and initial
-- privileges (pg_init_privs); at the end of this script _update_restore_grants makes the new
-- function's ACL the old one (GRANT and REVOKE, grantee by grantee, grant options included) and
-- puts the old initial privileges back: a GRANT run by an extension script is recorded as an
-- initial privilege, which pg_dump would leave out, and the DBA's grants must stay the DBA's.
-- Both helpers and their table are dropped at the end of the script.
CREATE TABLE shardcast._update_grants (
    signature text PRIMARY KEY,   -- the new function, as regprocedure text
    owner     oid NOT NULL,       -- the old function's owner
    acl       aclitem[],          -- the old function's ACL (NULL: the default)
    initprivs aclitem[]           -- its initial privileges (NULL: none recorded)
);
CREATE FUNCTION shardcast._update_save_grants(old regprocedure, new text) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO shardcast._update_grants (signature, owner, acl, initprivs)
    SELECT $2, p.proowner, p.proacl, i.initprivs
    FROM pg_catalog.pg_proc p
    LEFT JOIN pg_catalog.pg_init_privs i
           ON i.objoid = p.oid AND i.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND i.objsubid = 0
    WHERE p.oid = $1
$$;
CREATE FUNCTION shardcast._update_restore_grants() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k record;
    e record;
    fn regprocedure;
    new_owner oid;
    grantee text;
    progress boolean;
    updater name := current_user;
BEGIN
    FOR k IN SELECT * FROM shardcast._update_grants ORDER BY signature LOOP
        fn := k.signature::regprocedure;
        SELECT p.proowner INTO new_owner FROM pg_catalog.pg_proc p WHERE p.oid = fn;
        -- What the new function allows and the old did not (PUBLIC's default EXECUTE): revoked.
        FOR e IN
            SELECT a.grantee FROM pg_catalog.aclexplode(coalesce(
                       (SELECT p.proacl FROM pg_catalog.pg_proc p WHERE p.oid = fn),
                       pg_catalog.acldefault('f', new_owner))) a
            WHERE a.grantee NOT IN (new_owner, k.owner)
              AND NOT EXISTS (SELECT FROM pg_catalog.aclexplode(coalesce(k.acl, pg_catalog.acldefault('f', k.owner))) o
                              WHERE o.grantee = a.grantee AND o.privilege_type = a.privilege_type)
        LOOP
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %s CASCADE', fn,
                           CASE WHEN e.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(e.grantee)) END);
        END LOOP;
        -- What the old function allowed: granted again, each grant by its grantor (the owner's
        -- as the owner; one made by a role holding the grant option as that role), in passes
        -- until a pass grants nothing more, so that a chain of grants (A gave B the grant
        -- option, B granted C) comes back whatever the order of the roles.
        LOOP
            progress := false;
            FOR e IN
                SELECT o.grantor, o.grantee, o.is_grantable
                FROM pg_catalog.aclexplode(coalesce(k.acl, pg_catalog.acldefault('f', k.owner))) o
                WHERE o.grantee NOT IN (new_owner, k.owner) AND o.privilege_type = 'EXECUTE'
                  AND NOT EXISTS (
                      SELECT FROM pg_catalog.aclexplode((SELECT p.proacl FROM pg_catalog.pg_proc p WHERE p.oid = fn)) n
                      WHERE n.grantee = o.grantee AND n.privilege_type = 'EXECUTE'
                        AND n.is_grantable >= o.is_grantable
                        AND n.grantor = CASE WHEN o.grantor IN (new_owner, k.owner) THEN new_owner ELSE o.grantor END)
                ORDER BY o.grantor NOT IN (new_owner, k.owner), o.grantee
            LOOP
                grantee := CASE WHEN e.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(e.grantee)) END;
                BEGIN
                    IF e.grantor NOT IN (new_owner, k.owner) THEN
                        EXECUTE format('SET LOCAL ROLE %I', pg_catalog.pg_get_userbyid(e.grantor));
                    END IF;
                    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s%s', fn, grantee,
                                   CASE WHEN e.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
                    -- Back to the role running the update (RESET ROLE would go to the session's).
                    EXECUTE format('SET LOCAL ROLE %I', updater);
                    progress := progress OR EXISTS (
                        SELECT FROM pg_catalog.aclexplode((SELECT p.proacl FROM pg_catalog.pg_proc p WHERE p.oid = fn)) n
                        WHERE n.grantee = e.grantee AND n.privilege_type = 'EXECUTE'
                          AND n.grantor = CASE WHEN e.grantor IN (new_owner, k.owner) THEN new_owner ELSE e.grantor END);
                EXCEPTION WHEN OTHERS THEN
                    NULL;  -- tried again in the next pass, reported after the last
                END;
            END LOOP;
            EXIT WHEN NOT progress;
        END LOOP;
        FOR e IN
            SELECT o.grantor, o.grantee
            FROM pg_catalog.aclexplode(coalesce(k.acl, pg_catalog.acldefault('f', k.owner))) o
            WHERE o.grantee NOT IN (new_owner, k.owner) AND o.privilege_type = 'EXECUTE'
              AND NOT EXISTS (
                  SELECT FROM pg_catalog.aclexplode((SELECT p.proacl FROM pg_catalog.pg_proc p WHERE p.oid = fn)) n
                  WHERE n.grantee = o.grantee AND n.privilege_type = 'EXECUTE')
        LOOP
            grantee := CASE WHEN e.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(e.grantee)) END;
            RAISE WARNING 'shardcast: EXECUTE on % could not be granted again to % (granted by %)',
                          fn, grantee, pg_catalog.pg_get_userbyid(e.grantor)
                USING HINT = format('After the update, run: GRANT EXECUTE ON FUNCTION %s TO %s;', fn, grantee);
        END LOOP;
        -- The initial privileges are the old function's: the grants above stay the DBA's.
        DELETE FROM pg_catalog.pg_init_privs
        WHERE objoid = fn AND classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND objsubid = 0;
        IF k.initprivs IS NOT NULL THEN
            INSERT INTO pg_catalog.pg_init_privs (objoid, classoid, objsubid, privtype, initprivs)
            VALUES (fn, 'pg_catalog.pg_proc'::pg_catalog.regclass, 0, 'e', k.initprivs);
        END IF;
    END LOOP;
END
$$;

-- Enqueues and replans wait for the update (they take this lock first): none of them checks the
-- catalog's column names and then finds them renamed under it.
SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('shardcast.replan'));

-- One word per thing: a replication node is a node. The node asked for at enqueue (NULL: any
-- node) was replication_tasks.destination; it is requested_node now, beside node, the node the
-- task copies to (the requested one, or the one node assignment chose).
ALTER TABLE shardcast.replication_tasks RENAME COLUMN destination TO requested_node;
ALTER TABLE shardcast.replication_tasks
    RENAME CONSTRAINT replication_tasks_destination_fkey TO replication_tasks_requested_node_fkey;
COMMENT ON COLUMN shardcast.replication_tasks.requested_node IS
    'The node asked for at enqueue; NULL: any node (node assignment chooses).';
COMMENT ON COLUMN shardcast.replication_tasks.node IS
    'The node the task copies to: requested_node when one was asked for, else the one node assignment chose (NULL until then).';
-- The manifest's column (and manifest_json's key) destination is node.
ALTER VIEW shardcast.replication_manifest RENAME COLUMN destination TO node;
-- Parameters destination are node. PostgreSQL does not rename an input parameter in CREATE OR
-- REPLACE FUNCTION: the functions are dropped and created, their grants kept (see above).
SELECT shardcast._update_save_grants('shardcast.enqueue(regclass, text)', 'shardcast.enqueue(regclass,text)');
DROP FUNCTION shardcast.enqueue(regclass, text);
CREATE FUNCTION shardcast.enqueue(shard regclass, node text DEFAULT NULL) RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'enqueue_wrapper';
REVOKE EXECUTE ON FUNCTION shardcast.enqueue(regclass, text) FROM PUBLIC;
COMMENT ON FUNCTION shardcast.enqueue(regclass, text) IS
    'Enqueues one shard for a node (NULL: node assignment chooses); returns the task id, the open one if there is one.';

SELECT shardcast._update_save_grants('shardcast.enqueue_publication(text, text)', 'shardcast.enqueue_publication(text,text)');
DROP FUNCTION shardcast.enqueue_publication(text, text);
CREATE FUNCTION shardcast.enqueue_publication(
    publication text,
    node text DEFAULT NULL
) RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'enqueue_publication_wrapper';
REVOKE EXECUTE ON FUNCTION shardcast.enqueue_publication(text, text) FROM PUBLIC;

SELECT shardcast._update_save_grants('shardcast.enqueue_all(text)', 'shardcast.enqueue_all(text)');
DROP FUNCTION shardcast.enqueue_all(text);
CREATE FUNCTION shardcast.enqueue_all(
    node text DEFAULT NULL
) RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'enqueue_all_wrapper';
REVOKE EXECUTE ON FUNCTION shardcast.enqueue_all(text) FROM PUBLIC;

SELECT shardcast._update_save_grants('shardcast.claim_task(text, text)', 'shardcast.claim_task(text,text)');
DROP FUNCTION shardcast.claim_task(text, text);
CREATE FUNCTION shardcast.claim_task(worker text, node text DEFAULT NULL)
RETURNS TABLE (task_id bigint, shard regclass, qualified_name text, node text, size_bytes bigint,
               priority_weight integer, prefetch boolean, attempts integer, lease_expires_at timestamptz)
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan
AS 'MODULE_PATHNAME', 'claim_task_wrapper';
REVOKE EXECUTE ON FUNCTION shardcast.claim_task(text, text) FROM PUBLIC;
COMMENT ON FUNCTION shardcast.claim_task(text, text) IS
    'Claims the next replication task under the plan, under a lease; no row when there is nothing to do.';

SELECT shardcast._update_save_grants('shardcast.manifest_json(text)', 'shardcast.manifest_json(text)');
DROP FUNCTION shardcast.manifest_json(text);
CREATE FUNCTION shardcast.manifest_json(
    node text DEFAULT NULL
) RETURNS jsonb
LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'manifest_json_wrapper';

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
    ADD COLUMN error_offset     double precision NOT NULL,
    ADD COLUMN expected         double precision NOT NULL CHECK (expected >= 0),
    ADD COLUMN last_weight      double precision NOT NULL CHECK (last_weight BETWEEN 0 AND 1),
    ADD COLUMN error_median     double precision NOT NULL;
COMMENT ON TABLE shardcast.forecast_state IS
    'Latest forecast per shard: total load over [window_start, window_end), its point, interval and expected value, the models combined, the history used, and why it changed.';
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

-- One row per live shard: what a DBA looks at first. Its reads are what the session's
-- shardcast.load_measure counts (scans by default, as the worker's forecasts count them), so that
-- the hottest shards here are not merely those read by sequential scans of many rows. (Lower-case:
-- a session without the library keeps a SET value as typed.)
CREATE OR REPLACE VIEW shardcast.shard_activity AS
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

-- The worker is a launcher connected to no database that keeps a sampler running (restarted
-- after termination, waiting quietly while its database is missing or it is paused);
-- worker_status says where the worker runs, and why it does not.
CREATE FUNCTION shardcast."preloaded"() RETURNS bool
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'preloaded_wrapper';
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

-- shardcast.excluded_schemas is read as search_path is (see _name_list).
CREATE OR REPLACE VIEW shardcast.shard_candidates AS
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
GRANT SELECT ON shardcast.worker_status TO PUBLIC;
-- What a shard is (the tables' names, as pg_class shows them): readable like every other view.
GRANT SELECT ON shardcast.shard_candidates TO PUBLIC;

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
                 ORDER BY state = 'claimed' DESC, requested_node IS NOT NULL DESC, task_id)
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
-- An hour the worker observed in part and whose other part was imported is not scaled up once
-- compacted: day rows say which hours held imports (0.1.0's did not: none).
ALTER TABLE shardcast.daily_access ADD COLUMN hours_imported integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN shardcast.daily_access.hours_imported IS
    'Bit h set when hour h (UTC) held imported history in time the worker did not observe.';

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
       t.node,
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
    'Replication nodes: copy throughput, concurrency limit and reported load. Add with shardcast.add_node; conninfo is readable only where granted.';
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
    'Adds a replication node: name, copy throughput in bytes per second, tasks it may copy at once, and the conninfo the driver uses.';
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
    'The open replication tasks as one JSON document (optionally for one node), for replication tooling.';
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

-- A queue with memory: what each node holds (shardcast.replicas), kept by complete_task, read
-- by enqueue. 0.1.0's done tasks copied their shard to their node: they are remembered.
ALTER TABLE shardcast.replication_tasks ADD COLUMN copied boolean;
COMMENT ON COLUMN shardcast.replication_tasks.copied IS
    'For a done task: whether its completion copied data (false: the table was already in sync on the node).';
UPDATE shardcast.replication_tasks SET copied = true WHERE state = 'done';
ALTER TABLE shardcast.completion_log ADD COLUMN copied boolean;
-- Without a replica identity, the UPDATE below fails in a database with a publication FOR ALL
-- TABLES (which includes shardcast's own tables): the log has no key.
ALTER TABLE shardcast.completion_log REPLICA IDENTITY FULL;
COMMENT ON COLUMN shardcast.completion_log.copied IS
    'For a success: whether data was copied (false: the table was already in sync on the node); NULL for a failure.';
UPDATE shardcast.completion_log SET copied = true WHERE succeeded;
CREATE TABLE shardcast.replicas (
    shard_id  integer NOT NULL REFERENCES shardcast.shards ON DELETE CASCADE,
    node      text NOT NULL REFERENCES shardcast.nodes ON UPDATE CASCADE ON DELETE CASCADE,
    task_id   bigint NOT NULL,
    copied_at timestamptz NOT NULL,
    PRIMARY KEY (shard_id, node)
);
COMMENT ON TABLE shardcast.replicas IS
    'Shards copied to each node (the task that did it, and when): enqueueing does not copy them there again. Read it through shardcast.node_replicas; forget one with shardcast.forget_replica.';
INSERT INTO shardcast.replicas (shard_id, node, task_id, copied_at)
SELECT DISTINCT ON (t.shard_id, t.node) t.shard_id, t.node, t.task_id, coalesce(t.finished_at, now())
FROM shardcast.replication_tasks t
JOIN shardcast.shards s ON s.shard_id = t.shard_id AND s.retired_at IS NULL
WHERE t.state = 'done' AND t.node IS NOT NULL
ORDER BY t.shard_id, t.node, t.finished_at DESC, t.task_id DESC;
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
GRANT SELECT ON shardcast.node_replicas TO PUBLIC;

-- complete_task can say that nothing was copied (copied => false: the table was already in
-- sync). A new argument is a new signature: the function is dropped and created, its grants
-- kept (_update_save_grants, at the top of this script).
SELECT shardcast._update_save_grants('shardcast.complete_task(bigint, boolean, text, text)',
                                     'shardcast.complete_task(bigint,boolean,text,text,boolean)');
DROP FUNCTION shardcast.complete_task(bigint, boolean, text, text);
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
REVOKE EXECUTE ON FUNCTION shardcast.complete_task(bigint, boolean, text, text, boolean) FROM PUBLIC;
COMMENT ON FUNCTION shardcast.complete_task(bigint, boolean, text, text, boolean) IS
    'Finishes a claimed task: done (copied => false: the table was already in sync, nothing copied), or failed (queued again until shardcast.max_attempts); logs it and sends a NOTIFY.';

-- Lifecycle: nodes are altered and removed, tasks cancelled and retried, copies forgotten.
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

REVOKE EXECUTE ON FUNCTION
    shardcast.alter_node(text, double precision, integer, text, boolean),
    shardcast.remove_node(text),
    shardcast.cancel_task(bigint),
    shardcast.retry_task(bigint),
    shardcast.forget_replica(regclass, text)
FROM PUBLIC;

-- The allocation plan's times: a task that would not finish within 30,000 years (a node at a few
-- bytes a second) is 'infinity', where 0.1.0 failed the whole plan with "interval out of range".
CREATE OR REPLACE FUNCTION shardcast.allocation_plan(workers integer DEFAULT NULL, bandwidth bigint DEFAULT NULL)
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

-- Reports per run: over [since, until), or over one worker's copies; completions that copied
-- nothing are left out.
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

-- shardcast on Citus (citus.sql): on a Citus coordinator the worker samples every Citus shard
-- through Citus's connections; a Citus shard is a row of shards with citus_shard_id set, whose
-- relid is its distributed table's (so one relid may now have many live rows: the unique index
-- covers local shards only).
ALTER TABLE shardcast.shards ADD COLUMN citus_shard_id bigint;
COMMENT ON COLUMN shardcast.shards.citus_shard_id IS
    'For a Citus shard sampled on the coordinator: its shardid (relid is its distributed table, table_name the shard''s).';
DROP INDEX shardcast.shards_live_relid;
CREATE UNIQUE INDEX shards_live_relid ON shardcast.shards (relid)
    WHERE retired_at IS NULL AND citus_shard_id IS NULL;
CREATE UNIQUE INDEX shards_live_citus_shard ON shardcast.shards (citus_shard_id)
    WHERE retired_at IS NULL AND citus_shard_id IS NOT NULL;

-- Where each Citus shard lives, as of the last sample: its colocation group, its move group
-- (the shards colocated with it, which Citus moves together: named by their smallest shardid),
-- its node(s) and its size (summed over placements).
CREATE TABLE shardcast.citus_shard_locations (
    shard_id       integer PRIMARY KEY REFERENCES shardcast.shards ON DELETE CASCADE,
    citus_shard_id bigint  NOT NULL,
    colocation_id  integer NOT NULL,
    move_group     bigint  NOT NULL,
    node           text,
    size_bytes     bigint,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE shardcast.citus_shard_locations IS
    'Each Citus shard''s colocation group, move group (colocated shards move together), node (host:port) and size, as of the last sample of the coordinator''s worker.';

-- Spans when one shard was not read though the worker sampled: its Citus node did not answer,
-- or it moved between two samples (the reading after a move is a baseline). A refresh reads
-- these hours as unknown, not idle.
CREATE TABLE shardcast.shard_gaps (
    shard_id   integer     NOT NULL REFERENCES shardcast.shards ON DELETE CASCADE,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz NOT NULL CHECK (ended_at >= started_at),
    PRIMARY KEY (shard_id, started_at)
);
COMMENT ON TABLE shardcast.shard_gaps IS
    'Spans during which one shard was not read though the worker sampled (its Citus node did not answer, or it moved): unknown history, not idle.';

-- Citus must be installed in this database, version 13 or later. Returns its version.
CREATE FUNCTION shardcast._citus_require() RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    version text;
BEGIN
    SELECT e.extversion INTO version FROM pg_catalog.pg_extension e WHERE e.extname = 'citus';
    IF version IS NULL THEN
        RAISE EXCEPTION 'Citus is not installed in database "%"', pg_catalog.current_database()
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'shardcast''s Citus functions run on a Citus coordinator: add citus to shared_preload_libraries and CREATE EXTENSION citus.';
    END IF;
    IF pg_catalog.split_part(version, '.', 1) !~ '^[0-9]+$'
       OR pg_catalog.split_part(version, '.', 1)::integer < 13 THEN
        RAISE EXCEPTION 'Citus % is too old for shardcast', version
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'shardcast needs Citus 13 or later: install it, then ALTER EXTENSION citus UPDATE.';
    END IF;
    RETURN version;
END
$$;
COMMENT ON FUNCTION shardcast._citus_require() IS
    'Internal: the installed Citus version; an error (0A000) when Citus is missing or older than 13.';

-- The rebalance strategy's shard cost: the shard's expected load over the forecast horizon
-- (shardcast.forecasts.expected), at least 1, because Citus needs positive costs (a shard never
-- sampled or idle costs 1). Citus adds the costs of colocated shards itself: a move group costs
-- the sum of its shards'.
CREATE FUNCTION shardcast.citus_shard_cost(shardid bigint) RETURNS real
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    kind text;
    relation text;
    load double precision;
BEGIN
    PERFORM shardcast._citus_require();
    IF shardid IS NULL THEN
        RAISE EXCEPTION 'shardid must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass a shardid of citus_shards.';
    END IF;
    SELECT CASE WHEN p.repmodel = 't' THEN 'a reference table'
                WHEN p.partmethod = 'n' AND p.colocationid = 0 THEN 'a Citus local table'
           END,
           p.logicalrelid::regclass::text
      INTO kind, relation
      FROM pg_catalog.pg_dist_shard s
      JOIN pg_catalog.pg_dist_partition p ON p.logicalrelid = s.logicalrelid
     WHERE s.shardid = shardid;
    IF relation IS NULL THEN
        RAISE EXCEPTION 'Citus shard % does not exist', shardid
            USING ERRCODE = 'undefined_object',
                  HINT = 'Look the shard up in citus_shards (column shardid); it may have been dropped or split.';
    END IF;
    IF kind IS NOT NULL THEN
        RAISE EXCEPTION 'shard % belongs to "%", %: it has no movable shards', shardid, relation, kind
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Only shards of distributed tables are rebalanced: a reference table is on every node, a Citus local table on the coordinator.';
    END IF;
    SELECT f.expected INTO load
      FROM shardcast.shards sh
      JOIN shardcast.forecast_state f ON f.shard_id = sh.shard_id
     WHERE sh.citus_shard_id = shardid AND sh.retired_at IS NULL;
    RETURN greatest(coalesce(load, 0), 1)::real;
END
$$;
COMMENT ON FUNCTION shardcast.citus_shard_cost(bigint) IS
    'The rebalance strategy''s cost of a Citus shard: its predicted load over the forecast horizon, at least 1 (Citus needs positive costs).';

-- Registers (or updates) the rebalance strategy 'shardcast': cost = citus_shard_cost, every node
-- of capacity 1, every shard allowed on every node. threshold: how far (a share of the average)
-- a node's predicted load may be from the average before shards move. Returns the strategy's
-- name, for citus_rebalance_start(rebalance_strategy := ...).
CREATE FUNCTION shardcast.citus_register_strategy(threshold real DEFAULT 0.1) RETURNS name
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    PERFORM shardcast._citus_require();
    IF threshold IS NULL OR NOT (threshold >= 0 AND threshold < 1) THEN
        RAISE EXCEPTION 'threshold must be at least 0 and below 1, not %', coalesce(threshold::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It is a share of the average load per node: 0.1 lets a node be 10% above the average.';
    END IF;
    UPDATE pg_catalog.pg_dist_rebalance_strategy r
       SET shard_cost_function = 'shardcast.citus_shard_cost'::regproc,
           node_capacity_function = 'pg_catalog.citus_node_capacity_1'::regproc,
           shard_allowed_on_node_function = 'pg_catalog.citus_shard_allowed_on_node_true'::regproc,
           default_threshold = threshold,
           minimum_threshold = least(threshold, 0.01::real),
           improvement_threshold = 0.5
     WHERE r.name = 'shardcast';
    IF NOT FOUND THEN
        PERFORM pg_catalog.citus_add_rebalance_strategy(
            'shardcast', 'shardcast.citus_shard_cost'::regproc,
            'pg_catalog.citus_node_capacity_1'::regproc,
            'pg_catalog.citus_shard_allowed_on_node_true'::regproc,
            threshold, least(threshold, 0.01::real), 0.5::real);
    END IF;
    RETURN 'shardcast'::name;
END
$$;
COMMENT ON FUNCTION shardcast.citus_register_strategy(real) IS
    'Registers (or updates) the Citus rebalance strategy ''shardcast'', which balances predicted load across nodes; returns its name.';

-- One row per live Citus shard: where it is, its predicted load and score, and its move
-- group's (the shards colocated with it, which a rebalance moves together).
CREATE VIEW shardcast.citus_shards AS
SELECT l.citus_shard_id AS shardid,
       s.relid::regclass AS table_name,
       s.table_name AS shard_name,
       l.colocation_id,
       l.move_group,
       l.node,
       l.size_bytes,
       f.expected AS predicted_load,
       sum(f.expected) OVER (PARTITION BY l.move_group) AS move_group_load,
       sc.score,
       sum(sc.score) OVER (PARTITION BY l.move_group) AS move_group_score,
       sc.rank,
       l.updated_at
FROM shardcast.citus_shard_locations l
JOIN shardcast.shards s ON s.shard_id = l.shard_id AND s.retired_at IS NULL
LEFT JOIN shardcast.forecast_state f ON f.shard_id = l.shard_id
LEFT JOIN shardcast.scores sc ON sc.shard_id = l.shard_id;
COMMENT ON VIEW shardcast.citus_shards IS
    'Each live Citus shard: table, colocation and move group, node, size, predicted load and score, its move group''s load and score.';

-- Predicted load per Citus node: what the 'shardcast' rebalance strategy evens out.
CREATE VIEW shardcast.citus_node_load AS
SELECT l.node,
       count(*) AS shards,
       sum(l.size_bytes)::bigint AS size_bytes,
       sum(f.expected) AS predicted_load,
       sum(greatest(coalesce(f.expected, 0), 1)) AS strategy_cost
FROM shardcast.citus_shard_locations l
JOIN shardcast.shards s ON s.shard_id = l.shard_id AND s.retired_at IS NULL
LEFT JOIN shardcast.forecast_state f ON f.shard_id = l.shard_id
GROUP BY l.node;
COMMENT ON VIEW shardcast.citus_node_load IS
    'Per Citus node: shards, bytes, predicted load and the ''shardcast'' strategy''s cost (what a rebalance evens out).';

GRANT SELECT ON shardcast.citus_shards, shardcast.citus_node_load TO PUBLIC;
REVOKE EXECUTE ON FUNCTION shardcast.citus_register_strategy(real) FROM PUBLIC;

-- Why each queued task has its place.
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
GRANT SELECT ON shardcast.queue_explained TO PUBLIC;

-- Hot-first Citus moves (citus.sql): a replication task is a table copy or a Citus move group's
-- move (kind); 0.1.0's tasks are all copies. The manifest numbers each kind apart and names a
-- move's source; enqueue_citus_rebalance queues Citus's plan, claim_citus_move claims from it.
ALTER TABLE shardcast.replication_tasks
    ADD COLUMN kind text NOT NULL DEFAULT 'copy' CHECK (kind IN ('copy', 'citus_move')),
    ADD COLUMN citus_shard_id bigint,
    ADD COLUMN citus_colocation_id integer,
    ADD COLUMN citus_source text,
    ADD COLUMN citus_target text,
    ADD CONSTRAINT replication_tasks_citus_move CHECK (CASE kind
        WHEN 'copy' THEN citus_shard_id IS NULL AND citus_colocation_id IS NULL
                         AND citus_source IS NULL AND citus_target IS NULL
        ELSE citus_shard_id IS NOT NULL AND citus_colocation_id IS NOT NULL
             AND citus_source IS NOT NULL AND citus_target IS NOT NULL
             AND citus_source <> citus_target AND node IS NULL AND requested_node IS NULL END);
COMMENT ON TABLE shardcast.replication_tasks IS
    'Replication tasks: one shard to copy to one node (kind copy: enqueue with shardcast.enqueue*, claim with shardcast.claim_task) or one Citus move group to move between Citus nodes (kind citus_move: enqueue_citus_rebalance, claim_citus_move); queued, claimed (leased), done, failed or cancelled.';
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
CREATE OR REPLACE VIEW shardcast.replication_manifest AS
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

-- Hot-first shard moves. Citus's rebalancer plans which move groups go where
-- (get_rebalance_table_shards_plan); shardcast queues those moves as replication tasks of kind
-- 'citus_move' (replication_tasks.kind), the most imbalance relieved per byte moved first, and the
-- driver (shardcast-driver citus-rebalance) runs them with citus_move_shard_placement. Claims
-- (claim_citus_move) keep to the nodes' limits; heartbeat, complete_task, release_task,
-- cancel_task and retry_task, the completion NOTIFY and the manifest are the table tasks'.

-- Checks a Citus node named 'host:port' and returns it as (host, port): 22023 when the text is
-- not of that shape, 42704 when pg_dist_node has no such node.
CREATE FUNCTION shardcast._citus_node(node text, OUT host text, OUT port integer)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    PERFORM shardcast._citus_require();
    IF node IS NULL OR node !~ '^.+:[0-9]{1,5}$' THEN
        RAISE EXCEPTION 'a Citus node is named host:port, not %', coalesce(pg_catalog.quote_literal(node), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'As in shardcast.citus_shards.node, e.g. ''10.0.0.5:5432''.';
    END IF;
    host := pg_catalog.substring(node, '^(.+):[0-9]+$');
    port := pg_catalog.substring(node, ':([0-9]+)$')::integer;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_node n
                   WHERE n.nodename = host AND n.nodeport = port AND n.noderole = 'primary') THEN
        RAISE EXCEPTION 'node % is not in pg_dist_node', node
            USING ERRCODE = 'undefined_object',
                  HINT = 'The nodes are: SELECT nodename || '':'' || nodeport FROM pg_dist_node WHERE noderole = ''primary''.';
    END IF;
END
$$;
COMMENT ON FUNCTION shardcast._citus_node(text) IS
    'Internal: a Citus node named host:port as host and port; an error when it is not in pg_dist_node.';

-- The shards of pg_dist_shard that Citus can move (not reference tables, not Citus local
-- tables), each with its colocation group and its move group: the shards colocated with it
-- (same colocation group, same hash range), which Citus moves together, named by their smallest
-- shardid. A shard of colocation group 0 (an append or range table's) is colocated with
-- nothing: its own move group. PL/pgSQL, as every function here that reads pg_dist_*: a view or
-- an SQL function over them could not be created without Citus.
CREATE FUNCTION shardcast._citus_move_groups()
RETURNS TABLE (shardid bigint, colocationid integer, move_group bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT ds.shardid, dp.colocationid,
           CASE WHEN dp.colocationid = 0 THEN ds.shardid
                ELSE min(ds.shardid) OVER (PARTITION BY dp.colocationid, ds.shardminvalue) END
    FROM pg_catalog.pg_dist_shard ds
    JOIN pg_catalog.pg_dist_partition dp ON dp.logicalrelid = ds.logicalrelid
    WHERE dp.repmodel <> 't' AND NOT (dp.partmethod = 'n' AND dp.colocationid = 0);
END
$$;
COMMENT ON FUNCTION shardcast._citus_move_groups() IS
    'Internal: the Citus shards that can move, each with its colocation group and its move group (the shards colocated with it, which Citus moves together, named by their smallest shardid).';

-- Citus's rebalance plan (get_rebalance_table_shards_plan's arguments) as one row per move group:
-- its colocation group, the node it leaves and the node it ends on, and the plan's first step
-- that moves it (Citus's own order). A group the plan moves along a chain, A to B then B to C,
-- moves once, A to C; one that ends where it started does not move. A group whose moves do not
-- chain (a replicated group, shard_replication_factor > 1, whose placements A and B go to C and
-- D) is refused (0A000): one task per move group cannot carry two moves. A shard of colocation
-- group 0 (an append or range table's) is colocated with nothing: its own move group. idle: the
-- plan is made under shardcast's cost (citus_shard_cost), it drains no node, and every shard of
-- the group has a forecast, none above the cost's floor of 1 or all together under a twentieth
-- of the mean move group's load. Citus moves the cheapest groups to fill the last gap between two
-- nodes, and idle ones would copy their bytes and balance no load: the callers leave them out.
CREATE FUNCTION shardcast._citus_plan(
    strategy name, threshold real, max_shard_moves integer, excluded_shard_list bigint[], drain_only boolean
) RETURNS TABLE (move_group bigint, colocation_id integer, source text, target text, step bigint, idle boolean)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    g record;
    by_load boolean;
BEGIN
    by_load := NOT $5 AND EXISTS (
        SELECT 1 FROM pg_catalog.pg_dist_rebalance_strategy r
        WHERE (r.name = $1 OR ($1 IS NULL AND r.default_strategy))
          AND r.shard_cost_function = 'shardcast.citus_shard_cost'::regproc);
    FOR g IN
        WITH groups AS MATERIALIZED (
            SELECT * FROM shardcast._citus_move_groups()
        ), loads AS (
            SELECT m.move_group, coalesce(sum(f.expected), 0) AS load, max(f.expected) AS top,
                   count(f.expected) = count(*) AS known
            FROM groups m
            LEFT JOIN shardcast.shards sh ON sh.citus_shard_id = m.shardid AND sh.retired_at IS NULL
            LEFT JOIN shardcast.forecast_state f ON f.shard_id = sh.shard_id
            GROUP BY m.move_group
        ), idle AS (
            SELECT l.move_group FROM loads l
            WHERE l.known AND (l.top <= 1 OR l.load < 0.05 * (SELECT avg(a.load) FROM loads a))
        ), plan AS (
            SELECT p.step, p.shardid,
                   p.sourcename || ':' || p.sourceport AS source, p.targetname || ':' || p.targetport AS target
            FROM pg_catalog.get_rebalance_table_shards_plan(NULL, $2, $3, $4, $5, $1, NULL)
                 WITH ORDINALITY AS p(table_name, shardid, shard_size, sourcename, sourceport,
                                      targetname, targetport, step)
        ), steps AS (
            SELECT m.move_group, m.colocationid, p.source, p.target, p.step,
                   pg_catalog.lag(p.source) OVER (PARTITION BY m.move_group ORDER BY p.step) AS previous_source,
                   pg_catalog.lag(p.target) OVER (PARTITION BY m.move_group ORDER BY p.step) AS previous_target
            FROM plan p JOIN groups m ON m.shardid = p.shardid
        )
        SELECT s.move_group, min(s.colocationid) AS colocationid,
               (array_agg(s.source ORDER BY s.step))[1] AS source,
               (array_agg(s.target ORDER BY s.step DESC))[1] AS target,
               min(s.step) AS first_step,
               -- Each step follows the one before: it continues the chain, or it is the same move
               -- (Citus lists a move once per colocated shard).
               bool_and(s.previous_target IS NULL OR s.previous_target = s.source
                        OR (s.previous_source = s.source AND s.previous_target = s.target)) AS chained,
               string_agg(s.source || ' -> ' || s.target, ', ' ORDER BY s.step)
                   FILTER (WHERE s.previous_target IS NULL OR s.previous_source <> s.source
                           OR s.previous_target <> s.target) AS moves,
               s.move_group IN (SELECT i.move_group FROM idle i) AS idle
        FROM steps s
        GROUP BY s.move_group
        ORDER BY first_step
    LOOP
        IF NOT g.chained THEN
            RAISE EXCEPTION 'Citus''s plan moves shard group % from more than one placement (%)', g.move_group, g.moves
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'shardcast queues one move per move group, following a chain of moves (A to B, then B to C); a group with more than one placement (shard_replication_factor > 1) is rebalanced by Citus: SELECT citus_rebalance_start().';
        END IF;
        CONTINUE WHEN g.source = g.target;
        move_group := g.move_group;
        colocation_id := g.colocationid;
        source := g.source;
        target := g.target;
        step := g.first_step;
        idle := by_load AND g.idle;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION shardcast._citus_plan(name, real, integer, bigint[], boolean) IS
    'Internal: Citus''s rebalance plan as one move per move group, in Citus''s order; idle marks the moves of groups forecast idle under shardcast''s cost, which the callers leave out.';

-- What enqueue_citus_rebalance planned, kept for shardcast.citus_rebalance_report: every move
-- group as it was (node, bytes, predicted load), and the moves of the enqueued plan and of
-- Citus's by_shard_count and by_disk_size plans (and the shardcast strategy's, when registered)
-- made at the same moment from the same placement, each in Citus's order. The last 10
-- plannings are kept.
CREATE TABLE shardcast.citus_plan_groups (
    planned_at    timestamptz NOT NULL,
    move_group    bigint      NOT NULL,
    colocation_id integer     NOT NULL,
    node          text,
    size_bytes    bigint      NOT NULL,
    load          double precision NOT NULL,
    PRIMARY KEY (planned_at, move_group)
);
COMMENT ON TABLE shardcast.citus_plan_groups IS
    'Every Citus move group when enqueue_citus_rebalance planned: node, bytes, predicted load (the rebalance report''s starting point).';
CREATE TABLE shardcast.citus_plan_moves (
    planned_at timestamptz NOT NULL,
    strategy   name        NOT NULL,
    enqueued   boolean     NOT NULL,
    step       bigint      NOT NULL,
    move_group bigint      NOT NULL,
    source     text        NOT NULL,
    target     text        NOT NULL,
    PRIMARY KEY (planned_at, strategy, step)
);
COMMENT ON TABLE shardcast.citus_plan_moves IS
    'The moves of the plan enqueue_citus_rebalance queued (enqueued) and of the by_shard_count, by_disk_size and shardcast plans made beside it, in Citus''s order.';

-- Keeps this planning for the report (see citus_plan_groups): pg_temp.shardcast_groups and
-- pg_temp.shardcast_planned are enqueue_citus_rebalance's. The other plans are a comparison
-- only: one that fails is left out with a NOTICE, never fails the enqueue.
CREATE FUNCTION shardcast._citus_keep_plans(
    strategy name, threshold real, max_shard_moves integer, excluded_shard_list bigint[], drain_only boolean
) RETURNS void
-- The comparison plans are for the report: Citus's NOTICEs about them ("Ignoring move ...",
-- under another strategy's threshold) are not about the plan the caller asked for.
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp SET client_min_messages = warning
AS $$
DECLARE
    enqueued name;
    other name;
BEGIN
    PERFORM shardcast._citus_require();
    enqueued := coalesce($1, (SELECT r.name FROM pg_catalog.pg_dist_rebalance_strategy r
                              WHERE r.default_strategy LIMIT 1));
    DELETE FROM shardcast.citus_plan_groups g
    WHERE g.planned_at < (SELECT min(k.planned_at) FROM (SELECT DISTINCT planned_at FROM shardcast.citus_plan_groups
                                                   ORDER BY planned_at DESC LIMIT 9) k);
    DELETE FROM shardcast.citus_plan_moves m
    WHERE NOT EXISTS (SELECT 1 FROM shardcast.citus_plan_groups g WHERE g.planned_at = m.planned_at);
    DELETE FROM shardcast.citus_plan_groups g WHERE g.planned_at = now();
    DELETE FROM shardcast.citus_plan_moves m WHERE m.planned_at = now();
    INSERT INTO shardcast.citus_plan_groups (planned_at, move_group, colocation_id, node, size_bytes, load)
    SELECT now(), g.move_group, g.colocationid, g.node, g.size_bytes, g.load
    FROM pg_temp.shardcast_groups g;
    INSERT INTO shardcast.citus_plan_moves (planned_at, strategy, enqueued, step, move_group, source, target)
    SELECT now(), enqueued, true, p.first_step, p.move_group, p.source, p.target
    FROM pg_temp.shardcast_planned p;
    FOREACH other IN ARRAY ARRAY['by_shard_count', 'by_disk_size', 'shardcast']::name[] LOOP
        CONTINUE WHEN other = enqueued
            OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_rebalance_strategy r WHERE r.name = other);
        BEGIN
            INSERT INTO shardcast.citus_plan_moves (planned_at, strategy, enqueued, step, move_group, source, target)
            SELECT now(), other, false, p.step, p.move_group, p.source, p.target
            FROM shardcast._citus_plan(other, NULL, $3, $4, $5) p
            WHERE NOT p.idle;
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'Citus''s % plan is left out of the rebalance report: %', other, SQLERRM;
        END;
    END LOOP;
END
$$;
COMMENT ON FUNCTION shardcast._citus_keep_plans(name, real, integer, bigint[], boolean) IS
    'Internal: keeps a planning of enqueue_citus_rebalance (and the by_shard_count, by_disk_size and shardcast plans beside it) for the rebalance report.';

-- The order enqueue_citus_rebalance ranks its moves in: each next move is the one that most
-- lowers the sum of the nodes' squared predicted loads per byte it moves, on the node loads the
-- moves before it leave. A hot group moved from a hot node to a cool one ranks first; one moved
-- onto a node it would make the hottest (as load-blind plans do) ranks late, after the moves that
-- make room. Arguments: the moves (task ids, source and target 'host:port', predicted load,
-- bytes) in Citus's order, which breaks ties, and every node's predicted load now. Written in
-- Rust (shardcast_core::rebalance::order).
CREATE FUNCTION shardcast._citus_move_order(
    ids bigint[], sources text[], targets text[], loads double precision[], bytes double precision[],
    nodes text[], node_loads double precision[]
) RETURNS TABLE (id bigint, rank integer)
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'citus_move_order_wrapper';
COMMENT ON FUNCTION shardcast._citus_move_order(bigint[], text[], text[], double precision[], double precision[], text[], double precision[]) IS
    'Internal: the rank of each planned Citus move, the most imbalance relieved per byte first.';

-- Turns Citus's rebalance plan into move tasks, one per move group (colocated shards move
-- together), each from its source node to its target node, ranked so that the load a rebalance
-- relieves is relieved early: the move that most lowers the nodes' imbalance per byte first
-- (shardcast._citus_move_order). The arguments are
-- get_rebalance_table_shards_plan's: strategy (NULL: Citus's default strategy), threshold and
-- max_shard_moves (NULL: the strategy's), excluded_shard_list; drain_node ('host:port') marks
-- that node shouldhaveshards = false and plans only the moves that empty it, as
-- citus_drain_node does. Safe to run again: one open task per move group (a claimed one is
-- left to finish; a queued one takes the new plan's source and target), queued moves that are
-- no longer in the plan are cancelled, and every queued move is ranked again. Returns the
-- number of move tasks open for the plan (new or kept).
CREATE FUNCTION shardcast.enqueue_citus_rebalance(
    strategy text DEFAULT 'shardcast',
    drain_node text DEFAULT NULL,
    threshold real DEFAULT NULL,
    max_shard_moves integer DEFAULT 1000000,
    excluded_shard_list bigint[] DEFAULT '{}'
) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    drain record;
    missing bigint;
    planned bigint;
    open_tasks bigint;
    moved_bytes numeric;
    idle_moves bigint;
BEGIN
    PERFORM shardcast._citus_require();
    -- A worker has Citus's metadata tables, empty of what a plan needs: say where to run it.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_local_group g WHERE g.groupid = 0) THEN
        RAISE EXCEPTION 'database "%" is on a Citus worker node, not on the coordinator', pg_catalog.current_database()
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Run it on the coordinator, where Citus plans the moves and shardcast queues them.';
    END IF;
    IF $1 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_rebalance_strategy r
                                      WHERE r.name = $1::name) THEN
        RAISE EXCEPTION 'rebalance strategy "%" does not exist', $1
            USING ERRCODE = 'undefined_object',
                  HINT = CASE WHEN $1 = 'shardcast'
                              THEN 'Register it first: SELECT shardcast.citus_register_strategy().'
                              ELSE 'The strategies are in pg_dist_rebalance_strategy (by_shard_count, by_disk_size, ...); NULL is Citus''s default.' END;
    END IF;
    IF $4 IS NULL THEN
        RAISE EXCEPTION 'max_shard_moves must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'It caps the moves of the plan, as in get_rebalance_table_shards_plan (default 1000000).';
    END IF;
    IF $4 < 1 THEN
        RAISE EXCEPTION 'max_shard_moves must be 1 or more, not %', $4
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It caps the moves of the plan, as in get_rebalance_table_shards_plan.';
    END IF;
    -- A NaN or infinite threshold is no distance from the average: Citus would plan on it anyway.
    -- (NaN is above every number in PostgreSQL.)
    IF $3 IS NOT NULL AND NOT ($3 >= 0 AND $3 < 'Infinity'::real) THEN
        RAISE EXCEPTION 'threshold must be a finite number, 0 or more, not %', $3
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It is how far from the average a node may be before shards move (0.1: 10%), as in get_rebalance_table_shards_plan; NULL is the strategy''s own.';
    END IF;
    IF $5 IS NULL THEN
        RAISE EXCEPTION 'excluded_shard_list must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass ''{}'' to exclude no shard.';
    END IF;
    -- Enqueues and replans run one at a time (as shardcast.enqueue does); taken before Citus's
    -- node metadata is locked below, in the order every replan takes them.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('shardcast.replan'));
    IF $2 IS NOT NULL THEN
        SELECT * INTO drain FROM shardcast._citus_node($2);
        -- As citus_drain_node: a node that should have no shards is what drain_only empties.
        -- In this transaction: an error below leaves the node as it was.
        PERFORM pg_catalog.citus_set_node_property(drain.host, drain.port, 'shouldhaveshards', false);
    END IF;

    -- Every move group as it is now: where, how big (measured on the nodes: the plan's
    -- shard_size is Citus's cached length, often 0), how hot (its shards' forecasts).
    CREATE TEMPORARY TABLE pg_temp.shardcast_groups ON COMMIT DROP AS
    WITH sizes AS (
        SELECT zs.shard_id, max(zs.size) AS size FROM pg_catalog.citus_shard_sizes() zs GROUP BY zs.shard_id
    )
    SELECT m.move_group, min(m.colocationid) AS colocationid,
           (SELECT min(n.nodename || ':' || n.nodeport)
            FROM pg_catalog.pg_dist_placement pl
            JOIN pg_catalog.pg_dist_node n ON n.groupid = pl.groupid AND n.noderole = 'primary'
            WHERE pl.shardid = m.move_group) AS node,
           coalesce(sum(z.size), 0)::bigint AS size_bytes,
           coalesce(sum(f.expected), 0) AS load, coalesce(max(sc.priority_weight), 0) AS weight
    FROM shardcast._citus_move_groups() m
    LEFT JOIN sizes z ON z.shard_id = m.shardid
    LEFT JOIN shardcast.shards sh ON sh.citus_shard_id = m.shardid AND sh.retired_at IS NULL
    LEFT JOIN shardcast.forecast_state f ON f.shard_id = sh.shard_id
    LEFT JOIN shardcast.scores sc ON sc.shard_id = sh.shard_id
    GROUP BY m.move_group;

    CREATE TEMPORARY TABLE pg_temp.shardcast_planned ON COMMIT DROP AS
    SELECT p.move_group, g.colocationid, p.source, p.target, p.step AS first_step,
           coalesce(g.size_bytes, 0) AS size_bytes, coalesce(g.load, 0) AS load,
           coalesce(g.weight, 0) AS weight, sh.shard_id, p.idle
    FROM shardcast._citus_plan($1::name, $3, $4, $5, $2 IS NOT NULL) p
    LEFT JOIN pg_temp.shardcast_groups g USING (move_group)
    LEFT JOIN shardcast.shards sh ON sh.citus_shard_id = p.move_group AND sh.retired_at IS NULL;
    -- Idle groups Citus would move to fill the last gap (see _citus_plan): left out, said below.
    DELETE FROM pg_temp.shardcast_planned p WHERE p.idle;
    GET DIAGNOSTICS idle_moves = ROW_COUNT;

    SELECT count(*) FILTER (WHERE shard_id IS NULL), count(*) INTO missing, planned
    FROM pg_temp.shardcast_planned;
    IF missing > 0 THEN
        RAISE EXCEPTION 'Citus''s plan moves % shard group(s) that shardcast has not registered yet', missing
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'The coordinator''s worker registers new Citus shards at its next sample (shardcast.sample_interval); see shardcast.worker_status, then try again.';
    END IF;

    -- Queued moves the plan no longer has (moved meanwhile, or planned by another strategy).
    UPDATE shardcast.replication_tasks t
    SET state = 'cancelled', finished_at = now(), dispatch_rank = NULL,
        detail = 'not in the rebalance plan any more (shardcast.enqueue_citus_rebalance by ' || session_user || ')'
    WHERE t.kind = 'citus_move' AND t.state = 'queued'
      AND NOT EXISTS (SELECT 1 FROM pg_temp.shardcast_planned p
                      WHERE p.shard_id = t.shard_id);
    -- A queued move of a planned group takes the plan's nodes; a claimed one is left to finish.
    UPDATE shardcast.replication_tasks t
    SET citus_source = p.source, citus_target = p.target, citus_colocation_id = p.colocationid,
        size_bytes = p.size_bytes, score = p.load, priority_weight = p.weight
    FROM pg_temp.shardcast_planned p
    WHERE t.kind = 'citus_move' AND t.state = 'queued' AND t.shard_id = p.shard_id;
    INSERT INTO shardcast.replication_tasks
           (shard_id, kind, citus_shard_id, citus_colocation_id, citus_source, citus_target,
            size_bytes, score, priority_weight)
    SELECT p.shard_id, 'citus_move', p.move_group, p.colocationid, p.source, p.target,
           p.size_bytes, p.load, p.weight
    FROM pg_temp.shardcast_planned p
    WHERE NOT EXISTS (SELECT 1 FROM shardcast.replication_tasks t
                      WHERE t.shard_id = p.shard_id AND t.state IN ('queued', 'claimed'))
    ORDER BY p.first_step
    -- One open task per move group: the shard's open-task index says so (requested_node is NULL).
    ON CONFLICT DO NOTHING;

    -- The order: each next move the one that most lowers the nodes' imbalance (the sum of their
    -- squared predicted loads) per byte, on the node loads the moves before it leave; Citus's own
    -- order breaks ties (shardcast._citus_move_order).
    WITH queued AS (
        SELECT pg_catalog.array_agg(q.task_id ORDER BY p.first_step NULLS LAST, q.task_id) AS ids,
               pg_catalog.array_agg(q.citus_source ORDER BY p.first_step NULLS LAST, q.task_id) AS sources,
               pg_catalog.array_agg(q.citus_target ORDER BY p.first_step NULLS LAST, q.task_id) AS targets,
               pg_catalog.array_agg(q.score ORDER BY p.first_step NULLS LAST, q.task_id) AS loads,
               pg_catalog.array_agg(q.size_bytes::float8 ORDER BY p.first_step NULLS LAST, q.task_id) AS bytes
        FROM shardcast.replication_tasks q
        LEFT JOIN pg_temp.shardcast_planned p ON p.shard_id = q.shard_id
        WHERE q.kind = 'citus_move' AND q.state = 'queued'
    ), nodes AS (
        -- Each node's load, a move under way counted on its target.
        SELECT pg_catalog.array_agg(n.node) AS names, pg_catalog.array_agg(n.load) AS loads
        FROM (SELECT coalesce(c.citus_target, g.node) AS node, sum(g.load)::float8 AS load
              FROM pg_temp.shardcast_groups g
              LEFT JOIN shardcast.replication_tasks c
                ON c.kind = 'citus_move' AND c.state = 'claimed' AND c.citus_shard_id = g.move_group
              WHERE coalesce(c.citus_target, g.node) IS NOT NULL
              GROUP BY 1) n
    )
    UPDATE shardcast.replication_tasks t
    SET dispatch_rank = o.rank
    FROM queued, nodes,
         shardcast._citus_move_order(queued.ids, queued.sources, queued.targets, queued.loads,
                                     queued.bytes, coalesce(nodes.names, '{}'), coalesce(nodes.loads, '{}')) o
    WHERE t.task_id = o.id;

    SELECT count(*), sum(t.size_bytes) INTO open_tasks, moved_bytes
    FROM shardcast.replication_tasks t
    JOIN pg_temp.shardcast_planned p ON p.shard_id = t.shard_id
    WHERE t.kind = 'citus_move' AND t.state IN ('queued', 'claimed');
    PERFORM shardcast._citus_keep_plans($1::name, $3, $4, $5, $2 IS NOT NULL);
    DROP TABLE pg_temp.shardcast_planned, pg_temp.shardcast_groups;
    IF idle_moves > 0 THEN
        RAISE NOTICE 'left out % move(s) of Citus''s plan: their shard groups are forecast idle, and moving them would balance no load', idle_moves
            USING HINT = 'Under shardcast''s cost a group is idle when none of its shards is forecast above 1, or all together under a twentieth of the mean group''s load; Citus moves such cheap groups to fill the last gap between nodes. A drain (drain_node) moves them.';
    END IF;
    IF planned = 0 AND idle_moves = 0 THEN
        RAISE NOTICE 'Citus''s plan has no moves: the cluster is balanced under strategy %',
            coalesce(pg_catalog.quote_literal($1), 'Citus''s default');
    ELSIF planned > 0 THEN
        RAISE NOTICE '% move(s) of % open, the most load relieved per byte first: see shardcast.citus_moves',
            open_tasks, pg_catalog.pg_size_pretty(coalesce(moved_bytes, 0));
    END IF;
    RETURN open_tasks;
END
$$;
COMMENT ON FUNCTION shardcast.enqueue_citus_rebalance(text, text, real, integer, bigint[]) IS
    'Queues Citus''s rebalance plan (or the moves that drain a node) as move tasks, one per move group, the most imbalance relieved per byte first; returns the number of move tasks open for the plan.';

-- Claims the next move under the plan for the driver, under a lease (shardcast.claim_lease),
-- within the nodes' limits: at most max_moves_per_node moves in flight per node (a move counts
-- on its source and on its target, as Citus's background rebalancer counts its tasks), and one
-- move at a time per colocation group. Moves whose lease expired go back to the queue first
-- (failed after shardcast.max_attempts). A move whose group is now on neither its source nor
-- its target fails at once, its detail saying to enqueue the rebalance again. No row when
-- nothing can be claimed now.
CREATE FUNCTION shardcast.claim_citus_move(worker text, max_moves_per_node integer DEFAULT 1)
RETURNS TABLE (task_id bigint, shardid bigint, table_name regclass, colocation_id integer,
               source_node text, source_host text, source_port integer,
               target_node text, target_host text, target_port integer,
               size_bytes bigint, priority_weight integer, attempts integer,
               lease_expires_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    picked shardcast.replication_tasks;
    nodes text;
    max_attempts integer := pg_catalog.current_setting('shardcast.max_attempts')::integer;
BEGIN
    PERFORM shardcast._citus_require();
    IF $1 IS NULL THEN
        RAISE EXCEPTION 'worker must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Name the claimer, e.g. the driver''s host and pid: it is in claimed_by and completion_log.';
    END IF;
    -- As claim_task: printable, 1 to 255 bytes, no whitespace at either end.
    IF pg_catalog.btrim($1) = '' OR pg_catalog.octet_length($1) > 255 OR $1 ~ '[[:cntrl:]]'
       OR $1 <> pg_catalog.btrim($1) THEN
        RAISE EXCEPTION 'a worker name must be 1 to 255 bytes of printable text without whitespace at either end'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the worker with printable text, e.g. ''driver-db1-4242''.';
    END IF;
    IF $2 IS NULL THEN
        RAISE EXCEPTION 'max_moves_per_node must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'It is how many moves may run at once on one node (as source or target; default 1).';
    END IF;
    IF $2 < 1 THEN
        RAISE EXCEPTION 'max_moves_per_node must be 1 or more, not %', $2
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'It is how many moves may run at once on one node (as source or target).';
    END IF;
    -- Claims of moves one at a time, so that two drivers never both take a node's last slot.
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('shardcast.claim_citus_move'));
    UPDATE shardcast.replication_tasks t
    SET attempts = t.attempts + 1,
        state = CASE WHEN t.attempts + 1 >= max_attempts THEN 'failed' ELSE 'queued' END,
        finished_at = CASE WHEN t.attempts + 1 >= max_attempts THEN now() END,
        detail = 'lease expired (claimed by ' || coalesce(t.claimed_by, '?') || ')',
        claimed_by = NULL, lease_expires_at = NULL
    WHERE t.kind = 'citus_move' AND t.state = 'claimed' AND t.lease_expires_at < pg_catalog.clock_timestamp();
    LOOP
        SELECT q.* INTO picked
        FROM shardcast.replication_tasks q
        WHERE q.kind = 'citus_move' AND q.state = 'queued'
          AND NOT EXISTS (SELECT 1 FROM shardcast.replication_tasks c
                          WHERE c.kind = 'citus_move' AND c.state = 'claimed'
                            AND c.citus_colocation_id = q.citus_colocation_id)
          AND (SELECT count(*) FROM shardcast.replication_tasks c
               WHERE c.kind = 'citus_move' AND c.state = 'claimed'
                 AND q.citus_source IN (c.citus_source, c.citus_target)) < $2
          AND (SELECT count(*) FROM shardcast.replication_tasks c
               WHERE c.kind = 'citus_move' AND c.state = 'claimed'
                 AND q.citus_target IN (c.citus_source, c.citus_target)) < $2
        ORDER BY q.dispatch_rank NULLS LAST, q.task_id
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        -- A move group whose table was dropped, or whose shard was split, has nothing to move.
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_shard ds WHERE ds.shardid = picked.citus_shard_id) THEN
            UPDATE shardcast.replication_tasks t
            SET state = 'cancelled', finished_at = now(), dispatch_rank = NULL,
                detail = 'the Citus shard was dropped or split'
            WHERE t.task_id = picked.task_id;
            CONTINUE;
        END IF;
        -- A group moved elsewhere since it was planned (on neither its source nor its target,
        -- one of them a Citus node) has nothing to move under this plan: it fails at once,
        -- without attempts. (A task between nodes that are not Citus's is left to Citus's error.)
        SELECT pg_catalog.string_agg(n.nodename || ':' || n.nodeport, ', ' ORDER BY n.nodename, n.nodeport)
          INTO nodes
          FROM pg_catalog.pg_dist_placement pl
          JOIN pg_catalog.pg_dist_node n ON n.groupid = pl.groupid AND n.noderole = 'primary'
         WHERE pl.shardid = picked.citus_shard_id;
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_placement pl
                       JOIN pg_catalog.pg_dist_node n ON n.groupid = pl.groupid AND n.noderole = 'primary'
                       WHERE pl.shardid = picked.citus_shard_id
                         AND n.nodename || ':' || n.nodeport IN (picked.citus_source, picked.citus_target))
           AND EXISTS (SELECT 1 FROM pg_catalog.pg_dist_node n
                       WHERE n.noderole = 'primary'
                         AND n.nodename || ':' || n.nodeport IN (picked.citus_source, picked.citus_target)) THEN
            UPDATE shardcast.replication_tasks t
            SET state = 'failed', finished_at = now(), dispatch_rank = NULL,
                detail = pg_catalog.format('shard group %s is on %s, on neither %s nor %s: enqueue the rebalance '
                                           'again (shardcast.enqueue_citus_rebalance) to plan from where it is',
                                           picked.citus_shard_id, coalesce(nodes, 'no node'),
                                           picked.citus_source, picked.citus_target)
            WHERE t.task_id = picked.task_id;
            CONTINUE;
        END IF;
        UPDATE shardcast.replication_tasks t
        SET state = 'claimed', claimed_by = $1, claimed_at = now(),
            lease_expires_at = pg_catalog.clock_timestamp()
                               + pg_catalog.current_setting('shardcast.claim_lease')::interval,
            priority_weight_at_claim = t.priority_weight
        WHERE t.task_id = picked.task_id
        RETURNING t.lease_expires_at INTO picked.lease_expires_at;
        RETURN QUERY
        SELECT picked.task_id, picked.citus_shard_id,
               (SELECT ds.logicalrelid::regclass FROM pg_catalog.pg_dist_shard ds
                WHERE ds.shardid = picked.citus_shard_id),
               picked.citus_colocation_id,
               picked.citus_source, pg_catalog.substring(picked.citus_source, '^(.+):[0-9]+$'),
               pg_catalog.substring(picked.citus_source, ':([0-9]+)$')::integer,
               picked.citus_target, pg_catalog.substring(picked.citus_target, '^(.+):[0-9]+$'),
               pg_catalog.substring(picked.citus_target, ':([0-9]+)$')::integer,
               picked.size_bytes, picked.priority_weight, picked.attempts, picked.lease_expires_at;
        RETURN;
    END LOOP;
END
$$;
COMMENT ON FUNCTION shardcast.claim_citus_move(text, integer) IS
    'Claims the next Citus move under the plan, under a lease, with at most max_moves_per_node moves per node and one per colocation group in flight; no row when nothing can be claimed now.';

-- The Citus moves, open and finished: what the driver runs, in dispatch order (and all it reads
-- of them: shardid names the move group across plannings, lease_expires_at is a claim's lease).
CREATE VIEW shardcast.citus_moves AS
SELECT t.task_id,
       CASE WHEN t.state = 'queued'
            THEN (pg_catalog.row_number() OVER (PARTITION BY t.state ORDER BY t.dispatch_rank, t.task_id))::integer
       END AS position,
       t.citus_shard_id AS shardid,
       t.citus_colocation_id AS colocation_id,
       t.citus_source AS source_node,
       t.citus_target AS target_node,
       t.size_bytes,
       t.score AS predicted_load,
       t.score / greatest(t.size_bytes, 1) AS load_per_byte,
       t.priority_weight,
       t.state,
       t.claimed_by,
       t.attempts,
       t.enqueued_at,
       t.claimed_at,
       t.finished_at,
       t.finished_at - t.claimed_at AS duration,
       t.copied AS moved,
       t.detail,
       t.lease_expires_at
FROM shardcast.replication_tasks t
WHERE t.kind = 'citus_move';
COMMENT ON VIEW shardcast.citus_moves IS
    'Citus move tasks (one per move group, named by its smallest shardid): source and target node, bytes, predicted load, state, claimer and lease, and place in the queue (1 = next).';

-- What the order of a rebalance was worth: the hottest node's share of the predicted load (as
-- forecast when it was planned) over the rebalance and at its end, for the plan that
-- enqueue_citus_rebalance queued in the order the driver ran it (move_order 'shardcast') and in
-- Citus's own order ('citus'), and for the by_shard_count, by_disk_size and (when registered)
-- shardcast plans made beside it, each in Citus's order and in shardcast's (the most imbalance
-- relieved per byte first); each replayed with moves_per_node moves per node and one per colocation
-- group, on the measured move durations (a move not measured takes the measured moves' seconds
-- per byte, at least the quickest one's; 1 s when none was measured). Every row's mean is over
-- the same window, until the slowest replay ends. planned_at: a planning (NULL: the latest;
-- they are in shardcast.citus_plan_groups). Written in Rust (src/api/citus.rs).
CREATE FUNCTION shardcast.citus_rebalance_report(
    planned_at timestamp with time zone DEFAULT NULL,
    moves_per_node integer DEFAULT 1
) RETURNS TABLE (
    plan text,
    move_order text,
    moves integer,
    bytes bigint,
    measured_moves integer,
    seconds double precision,
    hottest_share_start double precision,
    hottest_share_mean double precision,
    hottest_share_end double precision,
    hottest_node_end text
)
LANGUAGE c STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'citus_rebalance_report_wrapper';
COMMENT ON FUNCTION shardcast.citus_rebalance_report(timestamp with time zone, integer) IS
    'The hottest node''s share of the predicted load over a rebalance and at its end: the queued plan in the driver''s order and in Citus''s, and the by_shard_count, by_disk_size and shardcast plans in Citus''s order and shardcast''s, replayed on the measured move durations.';

-- Citus moves (citus.sql): the move queue, the kept plannings and the rebalance report are for
-- everyone to read (shard ids, nodes and loads, as in citus_shards); queueing a rebalance (which
-- may mark a node for draining) and claiming moves are granted.
GRANT SELECT ON shardcast.citus_moves, shardcast.citus_plan_groups, shardcast.citus_plan_moves TO PUBLIC;
REVOKE EXECUTE ON FUNCTION shardcast.enqueue_citus_rebalance(text, text, real, integer, bigint[]),
    shardcast.claim_citus_move(text, integer),
    shardcast._citus_plan(name, real, integer, bigint[], boolean),
    shardcast._citus_keep_plans(name, real, integer, bigint[], boolean),
    shardcast._citus_move_groups(),
    shardcast._citus_move_order(bigint[], text[], text[], double precision[], double precision[], text[], double precision[]) FROM PUBLIC;

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

-- The grants of the functions dropped and created above, kept (see _update_save_grants).
SELECT shardcast._update_restore_grants();
DROP FUNCTION shardcast._update_restore_grants();
DROP FUNCTION shardcast._update_save_grants(regprocedure, text);
DROP TABLE shardcast._update_grants;
