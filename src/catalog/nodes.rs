//! `shardcast.nodes`: the destinations tasks copy to.

use pgrx::prelude::*;
use shardcast_core::schedule::Node;

/// Whether `node` names a node.
pub fn exists(node: &str) -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM shardcast.nodes WHERE node = $1)",
        &[node.into()],
    )? == Some(true))
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
             VALUES ($1, $2, $3, $4) ON CONFLICT (node) DO NOTHING RETURNING 1)
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
