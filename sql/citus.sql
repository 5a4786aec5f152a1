-- shardcast on Citus: every Citus shard's history, forecast and score, sampled by the worker of
-- the coordinator through Citus's own connections (run_command_on_all_nodes), and a rebalance
-- strategy that balances predicted load (see README, "Citus"). A Citus shard is a row of
-- shardcast.shards with citus_shard_id set (its shardid), relid its distributed table (so that
-- the table's class applies) and table_name the shard's own name.
--
-- Nothing here names a Citus object at CREATE EXTENSION time: the extension installs without
-- Citus. The functions below reach Citus's catalog at run time (PL/pgSQL plans its statements
-- when they first run) and refuse cleanly where Citus is missing or too old.

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
