//! Citus shards, on the coordinator: the registry rows of Citus shards (`shardcast.shards` with
//! `citus_shard_id` set), where each lives (`shardcast.citus_shard_locations`), the spans when
//! one was not read (`shardcast.shard_gaps`), and one reading of every node's shard counters
//! through Citus's own connections (`run_command_on_all_nodes`).
//!
//! Every statement that names a Citus object runs only after [`is_coordinator`] said Citus is
//! there: the extension installs and samples without Citus.

use std::collections::{HashMap, HashSet};

use pgrx::prelude::*;
use shardcast_core::access::Counters;

/// SQL: the shards that Citus can move (not reference tables, not Citus local tables), with their
/// table, schema, own name, colocation group and move group, as `shardcast._citus_move_groups()`
/// (sql/citus.sql) defines them for the rebalance planning too: the sampler and the planner never
/// disagree on what moves together.
const MOVABLE_SHARDS: &str = "
    SELECT g.shardid, ds.logicalrelid, n.nspname AS schema_name,
           (SELECT i[pg_catalog.array_upper(i, 1)]
            FROM pg_catalog.parse_ident(pg_catalog.shard_name(ds.logicalrelid, ds.shardid)) AS i)
               AS shard_name,
           g.colocationid, g.move_group
    FROM shardcast._citus_move_groups() g
    JOIN pg_catalog.pg_dist_shard ds ON ds.shardid = g.shardid
    JOIN pg_catalog.pg_class c ON c.oid = ds.logicalrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace";

/// Run on every node by `run_command_on_all_nodes`: the counters of the node's own placements
/// of movable shards, as a JSON array. Internal connections see shard tables (Citus hides them
/// from others); statistics functions and `to_regclass` take no lock, so a shard that DDL or a
/// move locks never holds up the sample.
const NODE_COUNTERS: &str = "
    SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_object(
               'shardid', ds.shardid,
               'scans', coalesce(t.seq_scan, 0) + coalesce(t.idx_scan, 0),
               'tuples_read', coalesce(t.seq_tup_read, 0) + coalesce(t.idx_tup_fetch, 0),
               'tuples_written', t.n_tup_ins + t.n_tup_upd + t.n_tup_del,
               'blocks_hit', coalesce(io.heap_blks_hit, 0) + coalesce(io.idx_blks_hit, 0)
                   + coalesce(io.toast_blks_hit, 0) + coalesce(io.tidx_blks_hit, 0),
               'blocks_read', coalesce(io.heap_blks_read, 0) + coalesce(io.idx_blks_read, 0)
                   + coalesce(io.toast_blks_read, 0) + coalesce(io.tidx_blks_read, 0)))::text, '[]')
    FROM pg_catalog.pg_dist_placement pl
    JOIN pg_catalog.pg_dist_shard ds ON ds.shardid = pl.shardid
    JOIN pg_catalog.pg_dist_partition p ON p.logicalrelid = ds.logicalrelid
    JOIN pg_catalog.pg_stat_user_tables t
      ON t.relid = pg_catalog.to_regclass(pg_catalog.shard_name(ds.logicalrelid, ds.shardid))
    JOIN pg_catalog.pg_statio_user_tables io ON io.relid = t.relid
    WHERE pl.groupid = (SELECT groupid FROM pg_catalog.pg_dist_local_group)
      AND p.repmodel <> 't' AND NOT (p.partmethod = 'n' AND p.colocationid = 0)";

/// Whether this database is a Citus coordinator (Citus installed, local group 0) whose shards
/// the worker samples. False without Citus, on a Citus worker, and with a Citus too old to have
/// `run_command_on_all_nodes`.
pub fn is_coordinator() -> Result<bool, pgrx::spi::Error> {
    let ready = Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus')
                AND pg_catalog.to_regclass('pg_catalog.pg_dist_local_group') IS NOT NULL
                AND pg_catalog.to_regprocedure(
                        'pg_catalog.run_command_on_all_nodes(text, boolean, boolean)') IS NOT NULL",
    )?;
    if ready != Some(true) {
        return Ok(false);
    }
    Ok(
        Spi::get_one::<bool>("SELECT bool_or(groupid = 0) FROM pg_catalog.pg_dist_local_group")?
            == Some(true),
    )
}

/// Brings the Citus rows of the registry in line with Citus's metadata: shards that went away
/// (table dropped or undistributed, shard split) are retired, new ones registered, renamed ones
/// renamed (their history follows the shardid), and every live one's location recorded.
/// Returns (registered, retired).
pub fn sync() -> Result<(i64, i64), pgrx::spi::Error> {
    let (registered, retired) = Spi::get_two::<i64, i64>(&format!(
        "WITH citus AS ({MOVABLE_SHARDS}),
         gone AS (
             UPDATE shardcast.shards s SET retired_at = now()
             WHERE s.citus_shard_id IS NOT NULL AND s.retired_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM citus c
                               WHERE c.shardid = s.citus_shard_id AND c.logicalrelid = s.relid)
             RETURNING s.shard_id),
         forgot AS (
             DELETE FROM shardcast.citus_shard_locations l USING gone WHERE l.shard_id = gone.shard_id),
         added AS (
             INSERT INTO shardcast.shards (relid, schema_name, table_name, citus_shard_id)
             SELECT c.logicalrelid, c.schema_name, c.shard_name, c.shardid
             FROM citus c
             WHERE c.shard_name IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM shardcast.shards s
                               WHERE s.citus_shard_id = c.shardid AND s.retired_at IS NULL)
             ORDER BY c.shardid
             ON CONFLICT (citus_shard_id) WHERE retired_at IS NULL AND citus_shard_id IS NOT NULL
                 DO NOTHING
             RETURNING 1)
         SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM gone)"
    ))?;
    Spi::run(&format!(
        "WITH citus AS ({MOVABLE_SHARDS}),
         renamed AS (
             UPDATE shardcast.shards s SET schema_name = c.schema_name, table_name = c.shard_name
             FROM citus c
             WHERE s.citus_shard_id = c.shardid AND s.retired_at IS NULL
               AND (s.schema_name, s.table_name) IS DISTINCT FROM (c.schema_name, c.shard_name))
         INSERT INTO shardcast.citus_shard_locations AS l
                (shard_id, citus_shard_id, colocation_id, move_group, node)
         SELECT s.shard_id, c.shardid, c.colocationid, c.move_group,
                (SELECT pg_catalog.string_agg(n.nodename || ':' || n.nodeport, ','
                                              ORDER BY n.nodename, n.nodeport)
                 FROM pg_catalog.pg_dist_placement p
                 JOIN pg_catalog.pg_dist_node n ON n.groupid = p.groupid AND n.noderole = 'primary'
                 WHERE p.shardid = c.shardid)
         FROM citus c
         JOIN shardcast.shards s ON s.citus_shard_id = c.shardid AND s.retired_at IS NULL
         ORDER BY s.shard_id
         ON CONFLICT (shard_id) DO UPDATE SET
                colocation_id = excluded.colocation_id, move_group = excluded.move_group,
                node = excluded.node, updated_at = now()
         WHERE (l.colocation_id, l.move_group, l.node)
               IS DISTINCT FROM (excluded.colocation_id, excluded.move_group, excluded.node)"
    ))?;
    Ok((registered.unwrap_or(0), retired.unwrap_or(0)))
}

/// One reading of every node.
#[derive(Default)]
pub struct Readings {
    /// (shard id, group of the node read, counters), one per placement read.
    pub readings: Vec<(i32, i32, Counters)>,
    /// The groups of the nodes that did not answer.
    pub failed_groups: HashSet<i32>,
    /// Every live Citus shard with the groups of its placements, as the coordinator's metadata
    /// says now.
    pub placements: HashMap<i32, Vec<i32>>,
}

/// Reads the counters of every node's shard placements in one `run_command_on_all_nodes`. A node
/// that does not answer (connection refused, timeout) is in `failed_groups`; its shards are not
/// read this time. Connection attempts give up after `connect_timeout_ms`.
pub fn read_nodes(connect_timeout_ms: u64) -> Result<Readings, pgrx::spi::Error> {
    let mut out = Readings::default();
    Spi::connect(|client| {
        for row in client.select(
            "SELECT s.shard_id, pg_catalog.array_agg(p.groupid ORDER BY p.groupid)
             FROM shardcast.shards s
             JOIN pg_catalog.pg_dist_placement p ON p.shardid = s.citus_shard_id
             WHERE s.citus_shard_id IS NOT NULL AND s.retired_at IS NULL
             GROUP BY s.shard_id",
            None,
            &[],
        )? {
            let shard_id = row.get::<i32>(1)?.unwrap_or_default();
            out.placements
                .insert(shard_id, row.get::<Vec<i32>>(2)?.unwrap_or_default());
        }
        Ok::<_, pgrx::spi::Error>(())
    })?;
    if out.placements.is_empty() {
        // No distributed table: no connection is opened.
        return Ok(out);
    }
    Spi::run_with_args(
        "SELECT pg_catalog.set_config('citus.node_connection_timeout', $1, true)",
        &[connect_timeout_ms.max(100).to_string().into()],
    )?;
    Spi::connect(|client| {
        for row in client.select(
            "SELECT n.groupid, r.success, s.shard_id, x.scans, x.tuples_read, x.tuples_written,
                    x.blocks_hit, x.blocks_read
             FROM pg_catalog.run_command_on_all_nodes($1) r
             JOIN pg_catalog.pg_dist_node n ON n.nodeid = r.nodeid
             LEFT JOIN LATERAL pg_catalog.json_to_recordset(CASE WHEN r.success THEN r.result::json END)
                  AS x(shardid bigint, scans bigint, tuples_read bigint, tuples_written bigint,
                       blocks_hit bigint, blocks_read bigint) ON true
             LEFT JOIN shardcast.shards s ON s.citus_shard_id = x.shardid AND s.retired_at IS NULL",
            None,
            &[NODE_COUNTERS.into()],
        )? {
            let group = row.get::<i32>(1)?.unwrap_or_default();
            if row.get::<bool>(2)? != Some(true) {
                out.failed_groups.insert(group);
                continue;
            }
            let Some(shard_id) = row.get::<i32>(3)? else {
                continue;
            };
            let count = |i| row.get::<i64>(i).map(|v| v.unwrap_or(0));
            out.readings.push((
                shard_id,
                group,
                Counters {
                    scans: count(4)?,
                    tuples_read: count(5)?,
                    tuples_written: count(6)?,
                    blocks_hit: count(7)?,
                    blocks_read: count(8)?,
                },
            ));
        }
        Ok(out)
    })
}

/// Records that the shards `(shard id, last read at)` were not read from their last reading up
/// to `now`: one gap per shard and outage, extended while it lasts.
pub fn record_gaps(
    gaps: &[(i32, pg_sys::TimestampTz)],
    now: pg_sys::TimestampTz,
) -> Result<(), pgrx::spi::Error> {
    if gaps.is_empty() {
        return Ok(());
    }
    let ids: Vec<i32> = gaps.iter().map(|g| g.0).collect();
    let since: Vec<TimestampWithTimeZone> = gaps.iter().map(|g| timestamp(g.1)).collect();
    Spi::run_with_args(
        "INSERT INTO shardcast.shard_gaps AS g (shard_id, started_at, ended_at)
         SELECT u.shard_id, u.since, $3 FROM unnest($1::int4[], $2::timestamptz[]) AS u(shard_id, since)
         WHERE EXISTS (SELECT 1 FROM shardcast.shards s WHERE s.shard_id = u.shard_id)
         ORDER BY 1, 2
         ON CONFLICT (shard_id, started_at) DO UPDATE SET ended_at = excluded.ended_at",
        &[ids.into(), since.into(), timestamp(now).into()],
    )
}

/// Measures the Citus shards again with `citus_shard_sizes()` (every node, one connection each),
/// under a statement timeout: sizes are secondary, a slow node only delays its own. Returns the
/// number of shards measured. Run by the worker (a superuser) only.
pub fn refresh_sizes() -> Result<i64, pgrx::spi::Error> {
    Spi::run("SET LOCAL statement_timeout = '10s'")?;
    // A node that does not answer makes citus_shard_sizes() warn at every pass (every few
    // minutes, for as long as it is down); the sample says so once when it stops answering.
    Spi::run("SET LOCAL log_min_messages = 'error'")?;
    let measured = Spi::get_one::<i64>(
        "WITH sizes AS (
             SELECT z.shard_id::bigint AS shardid, sum(z.size)::bigint AS size_bytes
             FROM pg_catalog.citus_shard_sizes() z GROUP BY 1
         ), located AS (
             UPDATE shardcast.citus_shard_locations l SET size_bytes = z.size_bytes
             FROM sizes z
             WHERE l.citus_shard_id = z.shardid AND l.size_bytes IS DISTINCT FROM z.size_bytes
         ), measured AS (
             UPDATE shardcast.shards s SET size_bytes = z.size_bytes, size_updated_at = now()
             FROM sizes z
             WHERE s.citus_shard_id = z.shardid AND s.retired_at IS NULL
             RETURNING 1)
         SELECT count(*) FROM measured",
    )?;
    Ok(measured.unwrap_or(0))
}

fn timestamp(micros: i64) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(micros)
        .unwrap_or_else(|_| TimestampWithTimeZone::negative_infinity())
}

/// A planning of `enqueue_citus_rebalance`, as kept for the rebalance report
/// (`shardcast.citus_plan_groups`, `shardcast.citus_plan_moves`), with what the driver did since.
#[derive(Default)]
pub struct Planning {
    /// Every move group then: (move group, colocation group, node, bytes, predicted load).
    pub groups: Vec<(i64, i64, Option<String>, f64, f64)>,
    /// The plans' moves in Citus's order: (strategy, enqueued, move group, source, target).
    pub moves: Vec<(String, bool, i64, String, String)>,
    /// The moves since the planning, in the order the driver claimed them (then the queue's):
    /// (move group, seconds of the move that moved it, None unless it moved).
    pub realised: Vec<(i64, Option<f64>)>,
}

/// The planning at `planned_at` (None: the latest); None when there is none.
pub fn planning(
    planned_at: Option<TimestampWithTimeZone>,
) -> Result<Option<(TimestampWithTimeZone, Planning)>, pgrx::spi::Error> {
    let Some(at) = Spi::get_one_with_args::<TimestampWithTimeZone>(
        "SELECT max(planned_at) FROM shardcast.citus_plan_groups
         WHERE $1::timestamptz IS NULL OR planned_at = $1",
        &[planned_at.into()],
    )?
    else {
        return Ok(None);
    };
    let mut out = Planning::default();
    Spi::connect(|client| {
        for row in client.select(
            "SELECT move_group, colocation_id::int8, node, size_bytes::float8, load
             FROM shardcast.citus_plan_groups WHERE planned_at = $1 ORDER BY move_group",
            None,
            &[at.into()],
        )? {
            out.groups.push((
                row.get::<i64>(1)?.unwrap_or_default(),
                row.get::<i64>(2)?.unwrap_or_default(),
                row.get::<String>(3)?,
                row.get::<f64>(4)?.unwrap_or_default(),
                row.get::<f64>(5)?.unwrap_or_default(),
            ));
        }
        for row in client.select(
            "SELECT strategy::text, enqueued, move_group, source, target
             FROM shardcast.citus_plan_moves WHERE planned_at = $1 ORDER BY enqueued DESC, strategy, step",
            None,
            &[at.into()],
        )? {
            out.moves.push((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<bool>(2)?.unwrap_or_default(),
                row.get::<i64>(3)?.unwrap_or_default(),
                row.get::<String>(4)?.unwrap_or_default(),
                row.get::<String>(5)?.unwrap_or_default(),
            ));
        }
        // Each group's latest move task of the planning's run (claimed since the planning, or
        // still queued; kept from an earlier planning or new), in the driver's order: claims in
        // the order they were made, then the queue's.
        for row in client.select(
            "SELECT x.citus_shard_id, x.seconds
             FROM (SELECT DISTINCT ON (t.citus_shard_id) t.citus_shard_id, t.claimed_at,
                          t.dispatch_rank, t.task_id,
                          CASE WHEN t.state = 'done' AND t.copied
                               THEN extract(epoch FROM t.finished_at - t.claimed_at)::float8 END AS seconds
                   FROM shardcast.replication_tasks t
                   WHERE t.kind = 'citus_move' AND (t.claimed_at >= $1 OR t.state = 'queued')
                     AND t.citus_shard_id IN (SELECT m.move_group FROM shardcast.citus_plan_moves m
                                              WHERE m.planned_at = $1 AND m.enqueued)
                   ORDER BY t.citus_shard_id, t.task_id DESC) x
             ORDER BY x.claimed_at NULLS LAST, x.dispatch_rank NULLS LAST, x.task_id",
            None,
            &[at.into()],
        )? {
            out.realised.push((
                row.get::<i64>(1)?.unwrap_or_default(),
                row.get::<f64>(2)?,
            ));
        }
        Ok::<_, pgrx::spi::Error>(())
    })?;
    Ok(Some((at, out)))
}
