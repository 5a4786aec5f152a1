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

-- The rebalance strategy's shard cost: the shard's predicted load over the forecast horizon
-- (shardcast.forecasts.point), at least 1, because Citus needs positive costs (a shard never
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
    SELECT f.point INTO load
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
       f.point AS predicted_load,
       sum(f.point) OVER (PARTITION BY l.move_group) AS move_group_load,
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
       sum(f.point) AS predicted_load,
       sum(greatest(coalesce(f.point, 0), 1)) AS strategy_cost
FROM shardcast.citus_shard_locations l
JOIN shardcast.shards s ON s.shard_id = l.shard_id AND s.retired_at IS NULL
LEFT JOIN shardcast.forecast_state f ON f.shard_id = l.shard_id
GROUP BY l.node;
COMMENT ON VIEW shardcast.citus_node_load IS
    'Per Citus node: shards, bytes, predicted load and the ''shardcast'' strategy''s cost (what a rebalance evens out).';

GRANT SELECT ON shardcast.citus_shards, shardcast.citus_node_load TO PUBLIC;
REVOKE EXECUTE ON FUNCTION shardcast.citus_register_strategy(real) FROM PUBLIC;
