//! `shardcast.nodes`: the replication nodes tasks copy to.

use pgrx::prelude::*;
use shardcast_core::schedule::{Node, NodeCapacity};

/// Whether `node` names a node.
pub fn exists(node: &str) -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM shardcast.nodes WHERE node = $1)",
        &[node.into()],
    )? == Some(true))
}

/// Whether any node is registered, enabled or not: without one, tasks are for whoever claims
/// them; with one, a task is copied to a node.
pub fn any() -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one::<bool>("SELECT EXISTS (SELECT FROM shardcast.nodes)")? == Some(true))
}

/// Adds a node; false when one of that name exists (it is left as it is).
pub fn add(
    name: &str,
    capacity: f64,
    max_concurrent: i32,
    conninfo: Option<&str>,
) -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one_with_args::<bool>(
        "WITH added AS (
             INSERT INTO shardcast.nodes (node, capacity_bytes_per_sec, max_concurrent, conninfo)
             VALUES ($1, $2, $3, nullif(btrim($4), '')) ON CONFLICT (node) DO NOTHING RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM added)",
        &[
            name.into(),
            capacity.into(),
            max_concurrent.into(),
            conninfo.into(),
        ],
    )? == Some(true))
}

/// Records a node's current load (0-1).
pub fn set_load(node: &str, load: f64) -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.nodes SET current_load = $2, load_reported_at = now() WHERE node = $1",
        &[node.into(), load.into()],
    )
}

/// The enabled nodes, by name, with the bytes of the tasks claimed for each.
pub fn enabled() -> Result<Vec<Node>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT n.node, n.capacity_bytes_per_sec, n.current_load,
                        coalesce((SELECT sum(t.size_bytes) FROM shardcast.replication_tasks t
                                  WHERE t.node = n.node AND t.state = 'claimed'), 0)::float8
                 FROM shardcast.nodes n WHERE n.enabled ORDER BY n.node",
                None,
                &[],
            )?
            .map(|row| {
                Ok(Node {
                    name: row.get::<String>(1)?.unwrap_or_default(),
                    capacity: row.get::<f64>(2)?.unwrap_or(1.0),
                    load: row.get::<f64>(3)?.unwrap_or_default(),
                    assigned_bytes: row.get::<f64>(4)?.unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
}

/// Changes a node's settings (None: unchanged; a conninfo of '' clears it); false when there is
/// no such node.
pub fn alter(
    node: &str,
    capacity: Option<f64>,
    max_concurrent: Option<i32>,
    conninfo: Option<&str>,
    enabled: Option<bool>,
) -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one_with_args::<bool>(
        "WITH altered AS (
             UPDATE shardcast.nodes
             SET capacity_bytes_per_sec = coalesce($2, capacity_bytes_per_sec),
                 max_concurrent = coalesce($3, max_concurrent),
                 conninfo = CASE WHEN $4::text IS NULL THEN conninfo ELSE nullif(btrim($4), '') END,
                 enabled = coalesce($5, enabled)
             WHERE node = $1 RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM altered)",
        &[
            node.into(),
            capacity.into(),
            max_concurrent.into(),
            conninfo.into(),
            enabled.into(),
        ],
    )? == Some(true))
}

/// The name shardcast-driver gives the publication, subscription and slot that replicate to
/// node `$1`, as SQL: the node's name made a plain identifier (ASCII letters in lower case,
/// anything but `[a-z0-9_]` as `_`, at most 40 characters), followed by the first 8 hex digits
/// of the name's MD5 (of its UTF-8: the database's encoding) where that changed it. The
/// driver's `common.channel_name` is the other half; `pg_test/test_driver_cli.py` checks that
/// the two agree.
const DRIVER_CHANNEL: &str = "(SELECT 'shardcast_' || CASE WHEN plain = $1 THEN plain
                                                   ELSE plain || '_' || left(md5($1), 8) END
     FROM (SELECT left(regexp_replace(translate($1, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ',
                                                    'abcdefghijklmnopqrstuvwxyz'),
                                          '[^a-z0-9_]', '_', 'g'), 40) AS plain) p)";

/// What `remove` did.
pub enum Removal {
    Unknown,
    /// Refused: these tasks are claimed for the node.
    InFlight(Vec<i64>),
    /// Refused: shardcast-driver's publication or slot for the node is on the source (which,
    /// and its name: `publication shardcast_r1`).
    Replicated(String),
    /// Removed; the number of queued tasks cancelled.
    Removed(i64),
}

/// Removes a node unless tasks are claimed for it (see `api::nodes::remove_node`). Takes the
/// queue's lock, and locks the node's queued tasks before it counts the claimed ones, so that
/// a claim that got one first is seen.
pub fn remove(node: &str) -> Result<Removal, pgrx::spi::Error> {
    super::tasks::lock_queue()?;
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM shardcast.nodes WHERE node = $1 FOR UPDATE)",
        &[node.into()],
    )? == Some(true);
    if !exists {
        return Ok(Removal::Unknown);
    }
    // Removed, the node would leave the driver's publication and its slot on the source (the
    // slot holding WAL for ever) and its subscription on the node, with nothing left that
    // names them for `finish`.
    // Scalar subqueries: always one row (NULL with neither), which get_one needs. The slot is
    // looked for too: finish drops the publication before the slot, and may fail to drop that.
    let left = Spi::get_one_with_args::<String>(
        &format!(
            "SELECT coalesce(
                 (SELECT 'publication ' || pubname FROM pg_catalog.pg_publication
                  WHERE pubname = {DRIVER_CHANNEL}),
                 (SELECT 'slot ' || slot_name FROM pg_catalog.pg_replication_slots
                  WHERE slot_name = {DRIVER_CHANNEL}))"
        ),
        &[node.into()],
    )?;
    if let Some(left) = left {
        return Ok(Removal::Replicated(left));
    }
    let cancelled = Spi::get_one_with_args::<i64>(
        "WITH cancelled AS (
             UPDATE shardcast.replication_tasks
             SET state = 'cancelled', finished_at = now(),
                 detail = format('node \"%s\" was removed', $1)
             WHERE state = 'queued' AND requested_node = $1
             RETURNING 1
         ), unplaced AS (
             UPDATE shardcast.replication_tasks SET node = NULL, dispatch_rank = NULL
             WHERE state = 'queued' AND requested_node IS NULL AND node = $1)
         SELECT count(*) FROM cancelled",
        &[node.into()],
    )?
    .unwrap_or(0);
    let in_flight = Spi::connect(|client| {
        client
            .select(
                "SELECT task_id FROM shardcast.replication_tasks
                 WHERE state = 'claimed' AND (node = $1 OR requested_node = $1) ORDER BY task_id",
                None,
                &[node.into()],
            )?
            .map(|row| row.get::<i64>(1).map(|v| v.unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()
    })?;
    if !in_flight.is_empty() {
        // The caller raises an ERROR: the cancellations above are rolled back with it.
        return Ok(Removal::InFlight(in_flight));
    }
    // Finished tasks stop naming it (the foreign keys); completion_log keeps their history.
    // Its replicas go with it (ON DELETE CASCADE).
    Spi::run_with_args(
        "UPDATE shardcast.replication_tasks
         SET node = CASE WHEN node = $1 THEN NULL ELSE node END,
             requested_node = CASE WHEN requested_node = $1 THEN NULL ELSE requested_node END
         WHERE (node = $1 OR requested_node = $1) AND state IN ('done', 'failed', 'cancelled')",
        &[node.into()],
    )?;
    Spi::run_with_args(
        "DELETE FROM shardcast.nodes WHERE node = $1",
        &[node.into()],
    )?;
    Ok(Removal::Removed(cancelled))
}

/// The enabled nodes, by name, with what the allocation plan needs: capacity, reported load and
/// concurrency limit.
pub fn plan_capacities() -> Result<Vec<(String, NodeCapacity)>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT node, capacity_bytes_per_sec, current_load, max_concurrent
                 FROM shardcast.nodes WHERE enabled ORDER BY node",
                None,
                &[],
            )?
            .map(|row| {
                Ok((
                    row.get::<String>(1)?.unwrap_or_default(),
                    NodeCapacity {
                        capacity: row.get::<f64>(2)?.unwrap_or(1.0),
                        load: row.get::<f64>(3)?.unwrap_or_default(),
                        max_concurrent: row.get::<i32>(4)?.unwrap_or(1).max(1) as usize,
                    },
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
}
