//! Nodes: the replication nodes tasks copy to (`add_node`, `alter_node`, `remove_node`,
//! `report_node_load`).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::{check_name, invalid, null_argument};
use crate::catalog::{nodes, tasks};
use crate::error::{float_text, spi_error, sql_error, SqlResult};
use crate::queue;

/// The largest bandwidth (bytes per second) a plan or a node may have: `shardcast.plan_bandwidth`'s
/// range, 1 PB/s.
pub const MAX_BANDWIDTH: f64 = 1e15;
/// The longest node name, in bytes: an identifier's (NAMEDATALEN - 1).
pub const MAX_NODE_NAME_BYTES: usize = 63;
/// The most tasks a node may copy at once.
pub const MAX_NODE_CONCURRENCY: i32 = 1024;

/// The error for a node that does not exist.
fn unknown_node(node: &str) -> ErrorReport {
    sql_error(
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("unknown node \"{node}\""),
        "Add it with shardcast.add_node(name, capacity_bytes_per_sec); see shardcast.nodes.",
    )
}

/// An ERROR unless `node` names a node.
pub(super) fn check_node(node: &str) -> SqlResult<()> {
    if nodes::exists(node).map_err(spi_error)? {
        Ok(())
    } else {
        Err(unknown_node(node))
    }
}

/// The smallest capacity a node may have, in bytes per second: below one byte a second a node
/// copies nothing in any time a plan can show (5e-324 was accepted, and made every expected
/// finish of the allocation plan infinite).
pub const MIN_NODE_CAPACITY: f64 = 1.0;

/// An ERROR unless `capacity` is between [`MIN_NODE_CAPACITY`] and [`MAX_BANDWIDTH`] bytes per
/// second.
fn check_capacity(capacity: f64) -> SqlResult<()> {
    if !(capacity.is_finite() && (MIN_NODE_CAPACITY..=MAX_BANDWIDTH).contains(&capacity)) {
        return Err(invalid(
            format!(
                "capacity must be between 1 and 1e15 bytes per second, not {}",
                float_text(capacity)
            ),
            "Give the node's copy throughput, e.g. 100e6 for 100 MB/s.",
        ));
    }
    Ok(())
}

/// The longest conninfo a node may have, in bytes: far more than any libpq connection string
/// needs, and it is stored and handed to every driver run.
pub const MAX_CONNINFO_BYTES: usize = 8192;

/// An ERROR unless `conninfo` is at most [`MAX_CONNINFO_BYTES`]. It is not parsed here: the
/// driver connects with its own libpq, which may know options the server's does not
/// (`require_auth`, `load_balance_hosts`), and libpq's parse errors can quote a password; the
/// driver reports a bad one when it connects, without the password.
fn check_conninfo(conninfo: &str) -> SqlResult<()> {
    if conninfo.len() > MAX_CONNINFO_BYTES {
        return Err(invalid(
            format!(
                "a conninfo must be at most {MAX_CONNINFO_BYTES} bytes, not {}",
                conninfo.len()
            ),
            "Give a libpq connection string, e.g. 'host=replica-1 port=5432 dbname=app'.",
        ));
    }
    Ok(())
}

/// An ERROR unless `max_concurrent` is within 1..=[`MAX_NODE_CONCURRENCY`].
fn check_concurrency(max_concurrent: i32) -> SqlResult<()> {
    if !(1..=MAX_NODE_CONCURRENCY).contains(&max_concurrent) {
        return Err(invalid(
            format!(
                "max_concurrent must be between 1 and {MAX_NODE_CONCURRENCY}, not {max_concurrent}"
            ),
            "It is how many tasks may copy to the node at once.",
        ));
    }
    Ok(())
}

#[pg_extern(sql = false)]
fn add_node(
    name: Option<&str>,
    capacity_bytes_per_sec: Option<f64>,
    max_concurrent: default!(Option<i32>, 4),
    conninfo: default!(Option<&str>, "NULL"),
) -> SqlResult<()> {
    let name = name.ok_or_else(|| null_argument("name"))?;
    let capacity = capacity_bytes_per_sec.ok_or_else(|| null_argument("capacity_bytes_per_sec"))?;
    let max_concurrent = max_concurrent.ok_or_else(|| null_argument("max_concurrent"))?;
    check_name("node", name, MAX_NODE_NAME_BYTES, "replica-1")?;
    check_capacity(capacity)?;
    check_concurrency(max_concurrent)?;
    if let Some(conninfo) = conninfo {
        check_conninfo(conninfo)?;
    }
    // The queue lock before the node's row, as in alter_node.
    tasks::lock_queue().map_err(spi_error)?;
    let added = nodes::add(name, capacity, max_concurrent, conninfo).map_err(spi_error)?;
    if !added {
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            format!("node \"{name}\" already exists"),
            "Change it with shardcast.alter_node(name, ...), or choose another name.",
        ));
    }
    // Node assignment places on it the tasks queued without a node (those queued before the
    // first node was added are claimed for a node from now on).
    queue::replan().map_err(spi_error)?;
    Ok(())
}

#[pg_extern(sql = false)]
fn report_node_load(node: Option<&str>, load: Option<f64>) -> SqlResult<()> {
    let node = node.ok_or_else(|| null_argument("node"))?;
    let load = load.ok_or_else(|| null_argument("load"))?;
    if !(0.0..=1.0).contains(&load) {
        return Err(invalid(
            format!("load must be between 0 and 1, not {}", float_text(load)),
            "Report the share of the node's capacity in use.",
        ));
    }
    check_node(node)?;
    nodes::set_load(node, load).map_err(spi_error)
}

/// Changes a node's settings; NULL leaves one as it is, `conninfo => ''` clears the conninfo.
/// Validated like `add_node`. A disabled node gets no new claims (its claimed tasks finish);
/// the queue is replanned, so that node assignment follows the new capacities.
#[pg_extern(sql = false)]
fn alter_node(
    node: Option<&str>,
    capacity_bytes_per_sec: default!(Option<f64>, "NULL"),
    max_concurrent: default!(Option<i32>, "NULL"),
    conninfo: default!(Option<&str>, "NULL"),
    enabled: default!(Option<bool>, "NULL"),
) -> SqlResult<()> {
    let node = node.ok_or_else(|| null_argument("node"))?;
    if let Some(capacity) = capacity_bytes_per_sec {
        check_capacity(capacity)?;
    }
    if let Some(max_concurrent) = max_concurrent {
        check_concurrency(max_concurrent)?;
    }
    if let Some(conninfo) = conninfo {
        check_conninfo(conninfo)?;
    }
    // The queue lock before the node's row, in remove_node's order (the replan below takes it).
    tasks::lock_queue().map_err(spi_error)?;
    let altered = nodes::alter(
        node,
        capacity_bytes_per_sec,
        max_concurrent,
        conninfo,
        enabled,
    )
    .map_err(spi_error)?;
    if !altered {
        return Err(unknown_node(node));
    }
    queue::replan().map_err(spi_error)?;
    Ok(())
}

/// Removes a node: refused while tasks are claimed for it (in flight); otherwise its queued
/// tasks given that node are cancelled, those node assignment had placed on it go back to node
/// assignment, the shards copied there are forgotten, and finished tasks no longer name it
/// (`completion_log` keeps their history). Returns the number of tasks cancelled.
#[pg_extern(sql = false)]
fn remove_node(node: Option<&str>) -> SqlResult<i64> {
    let node = node.ok_or_else(|| null_argument("node"))?;
    match nodes::remove(node).map_err(spi_error)? {
        nodes::Removal::Unknown => Err(unknown_node(node)),
        nodes::Removal::InFlight(tasks) => Err(sql_error(
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            format!("node \"{node}\" has {} task(s) in flight", tasks.len()),
            format!(
                "Disable it first (SELECT shardcast.alter_node('{}', enabled => false)) so that it \
                 gets no new claims, let its claimed tasks finish or release them, then remove it.",
                node.replace('\'', "''")
            ),
        )
        .set_detail(format!(
            "Claimed task(s): {}.",
            tasks
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        nodes::Removal::Replicated(left) => Err(sql_error(
            PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            format!("node \"{node}\" is still replicated: {left} is on the source"),
            format!(
                "Take its replication down first, then remove it: shardcast-driver finish --source ... \
                 --node '{}' (with --force when the node cannot be reached) drops the publication, \
                 its slot and the node's subscription.",
                node.replace('\'', "'\\''")
            ),
        )
        .set_detail(
            "shardcast-driver set up logical replication to the node: its slot holds WAL on the \
             source until it is dropped.",
        )),
        nodes::Removal::Removed(cancelled) => {
            queue::replan().map_err(spi_error)?;
            Ok(cancelled)
        }
    }
}
