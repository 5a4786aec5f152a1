//! The shard registry: which relations are shards, with stable ids. What counts as a shard is
//! decided by the `shardcast.shard_candidates` view alone; this module keeps `shardcast.shards`
//! in step with it.

use std::collections::HashMap;

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::error::{spi_error, sql_error, SqlResult};

/// Brings the registry in line with the catalog: shards whose relation went away (dropped,
/// renamed, moved to an excluded schema) are retired, new relations are registered, and
/// partitions follow ATTACH/DETACH. Returns (registered, retired).
pub fn sync() -> Result<(i64, i64), pgrx::spi::Error> {
    let retired = Spi::get_one::<i64>(
        "WITH gone AS (
             UPDATE shardcast.shards s SET retired_at = now()
             WHERE s.retired_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM shardcast.shard_candidates c
                               WHERE c.relid = s.relid
                                 AND c.schema_name = s.schema_name
                                 AND c.table_name = s.table_name)
             RETURNING 1)
         SELECT count(*) FROM gone",
    )?
    .unwrap_or(0);
    let registered = Spi::get_one::<i64>(
        "WITH added AS (
             INSERT INTO shardcast.shards (relid, schema_name, table_name, parent_relid)
             SELECT c.relid, c.schema_name, c.table_name, c.parent_relid
             FROM shardcast.shard_candidates c
             WHERE NOT EXISTS (SELECT 1 FROM shardcast.shards s
                               WHERE s.relid = c.relid AND s.retired_at IS NULL)
             ORDER BY c.relid
             ON CONFLICT (relid) WHERE retired_at IS NULL DO NOTHING
             RETURNING 1)
         SELECT count(*) FROM added",
    )?
    .unwrap_or(0);
    Spi::run(
        "UPDATE shardcast.shards s SET parent_relid = c.parent_relid
         FROM shardcast.shard_candidates c
         WHERE s.retired_at IS NULL AND c.relid = s.relid
           AND s.parent_relid IS DISTINCT FROM c.parent_relid",
    )?;
    Ok((registered, retired))
}

/// The live shard id of a relation, registering it if it is a shard that the worker has not
/// seen yet. A relation that is not a shard is an error that says why.
pub fn shard_id_for(relid: pg_sys::Oid) -> SqlResult<i32> {
    let lookup = || {
        Spi::get_one_with_args::<i32>(
            "SELECT (SELECT s.shard_id FROM shardcast.shards s
                     JOIN shardcast.shard_candidates c ON c.relid = s.relid
                          AND c.schema_name = s.schema_name AND c.table_name = s.table_name
                     WHERE s.relid = $1 AND s.retired_at IS NULL)",
            &[relid.into()],
        )
        .map_err(spi_error)
    };
    if let Some(shard_id) = lookup()? {
        return Ok(shard_id);
    }
    sync().map_err(spi_error)?;
    match lookup()? {
        Some(shard_id) => Ok(shard_id),
        None => Err(not_a_shard(relid)?),
    }
}

/// Explains why a relation is not a shard.
fn not_a_shard(relid: pg_sys::Oid) -> SqlResult<pgrx::pg_sys::panic::ErrorReport> {
    let (name, kind) = Spi::get_two_with_args::<String, String>(
        "SELECT c.oid::regclass::text, c.relkind::text
         FROM (SELECT $1::oid AS relid) r LEFT JOIN pg_catalog.pg_class c ON c.oid = r.relid",
        &[relid.into()],
    )
    .map_err(spi_error)?;
    let name = name.unwrap_or_else(|| relid.to_u32().to_string());
    Ok(match kind.as_deref() {
        Some("p") => sql_error(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{name}\" is a partitioned table, not a shard"),
            "Record accesses against its leaf partitions: each is a shard of its own.",
        ),
        Some("r") => sql_error(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{name}\" is not tracked by shardcast"),
            "Temporary tables, system schemas, shardcast's own schema and the schemas in \
             shardcast.excluded_schemas hold no shards.",
        ),
        _ => sql_error(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{name}\" is not a table"),
            "Shards are ordinary tables and leaf partitions.",
        ),
    })
}

/// Looks each relation up once per call of a bulk function.
#[derive(Default)]
pub struct ShardIdCache {
    ids: HashMap<pg_sys::Oid, i32>,
}

impl ShardIdCache {
    pub fn get(&mut self, relid: pg_sys::Oid) -> SqlResult<i32> {
        if let Some(id) = self.ids.get(&relid) {
            return Ok(*id);
        }
        let id = shard_id_for(relid)?;
        self.ids.insert(relid, id);
        Ok(id)
    }
}
