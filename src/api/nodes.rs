//! Nodes: the destinations tasks copy to (`add_node`, `report_node_load`).

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::{invalid, null_argument};
use crate::catalog::nodes;
use crate::error::{float_text, spi_error, sql_error, SqlResult};

/// The largest bandwidth (bytes per second) a plan or a node may have: `shardcast.plan_bandwidth`'s
/// range, 1 PB/s.
pub const MAX_BANDWIDTH: f64 = 1e15;
/// The longest node name, in bytes: an identifier's (NAMEDATALEN - 1).
pub const MAX_NODE_NAME_BYTES: usize = 63;
/// The most tasks a node may copy at once.
pub const MAX_NODE_CONCURRENCY: i32 = 1024;

/// An ERROR unless `node` names a node.
pub(super) fn check_node(node: &str) -> SqlResult<()> {
    if nodes::exists(node).map_err(spi_error)? {
        Ok(())
    } else {
        Err(sql_error(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("unknown node \"{node}\""),
            "Add it with shardcast.add_node(name, capacity_bytes_per_sec); see shardcast.nodes.",
        ))
    }
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
    if name.trim().is_empty() {
        return Err(invalid(
            "a node needs a name".into(),
            "Name the destination, e.g. 'replica-1'.",
        ));
    }
    if name.len() > MAX_NODE_NAME_BYTES {
        return Err(invalid(
            format!(
                "a node name must be at most {MAX_NODE_NAME_BYTES} bytes, not {}",
                name.len()
            ),
            "Node names are bounded like identifiers; choose a shorter one, e.g. 'replica-1'.",
        ));
    }
    if !(capacity.is_finite() && capacity > 0.0 && capacity <= MAX_BANDWIDTH) {
        return Err(invalid(
            format!(
                "capacity must be a positive number of bytes per second up to 1e15, not {}",
                float_text(capacity)
            ),
            "Give the destination's copy throughput, e.g. 100e6 for 100 MB/s.",
        ));
    }
    if !(1..=MAX_NODE_CONCURRENCY).contains(&max_concurrent) {
        return Err(invalid(
            format!(
                "max_concurrent must be between 1 and {MAX_NODE_CONCURRENCY}, not {max_concurrent}"
            ),
            "It is how many tasks may copy to the node at once.",
        ));
    }
    let added = nodes::add(name, capacity, max_concurrent, conninfo).map_err(spi_error)?;
    if !added {
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            format!("node \"{name}\" already exists"),
            "Change it with UPDATE shardcast.nodes, or choose another name.",
        ));
    }
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
