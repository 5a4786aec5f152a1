//! 0.1.0's catalog, which a library newer than it runs on between its installation and `ALTER
//! EXTENSION shardcast UPDATE`: whether the catalog is 0.2.0's, and the statements adapted to
//! 0.1.0's (`replication_tasks.destination` for `requested_node`, no `shardcast.replicas`).
//! Meanwhile the library enqueues, replans, claims and completes as 0.1.0 did.

use pgrx::prelude::*;

/// Whether the catalog remembers replicas (`shardcast.replicas`, 0.2.0): false on 0.1.0's
/// catalog. 0.2.0's task kinds and `copied` column came with it.
pub fn remembers_replicas() -> Result<bool, pgrx::spi::Error> {
    Ok(
        Spi::get_one::<bool>("SELECT pg_catalog.to_regclass('shardcast.replicas') IS NOT NULL")?
            == Some(true),
    )
}

/// `statement` for this catalog: 0.1.0's names the node asked for at enqueue
/// `replication_tasks.destination`, 0.2.0's `requested_node`. Statements that 0.1.0's functions
/// (enqueue, enqueue_all, enqueue_publication) and the worker's replan run through this library
/// before `ALTER EXTENSION shardcast UPDATE` are written with `requested_node` and go through
/// here; `requested_node` appears in them as that column only.
pub fn for_catalog(statement: &str) -> Result<String, pgrx::spi::Error> {
    let old = Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                        WHERE attrelid = 'shardcast.replication_tasks'::pg_catalog.regclass
                          AND attname = 'destination' AND NOT attisdropped)",
    )? == Some(true);
    Ok(if old {
        statement.replace("requested_node", "destination")
    } else {
        statement.to_string()
    })
}

/// `shardcast.replicas`, or an empty relation of its shape on 0.1.0's catalog.
pub fn replicas_relation() -> Result<&'static str, pgrx::spi::Error> {
    Ok(if remembers_replicas()? {
        "shardcast.replicas"
    } else {
        "(SELECT NULL::integer AS shard_id, NULL::text AS node, NULL::bigint AS task_id,
                 NULL::timestamptz AS copied_at WHERE false)"
    })
}
