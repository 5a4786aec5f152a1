//! The shard registry (`shardcast.shards`): which relations are shards, with stable ids, their
//! sizes, and their cumulative statistics. What counts as a shard is decided by the
//! `shardcast.shard_candidates` view alone; this module keeps `shardcast.shards` in step with it.
//! Citus shards (`citus_shard_id` set) are registered and retired by `catalog::citus` alone:
//! every statement here leaves them be.

use std::collections::HashMap;
use std::time::Duration;

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use shardcast_core::access::Counters;

use crate::error::{spi_error, sql_error, SqlResult};

/// Brings the registry in line with the catalog: shards whose relation went away (dropped,
/// renamed, moved to an excluded schema) are retired, relations that come back as they were
/// revive their shard, new relations are registered, and partitions follow ATTACH/DETACH.
/// Returns (registered, retired).
pub fn sync() -> Result<(i64, i64), pgrx::spi::Error> {
    let citus = has_citus_column()?;
    let retired = Spi::get_one::<i64>(&local_sql(
        citus,
        "WITH gone AS (
             UPDATE shardcast.shards s SET retired_at = now()
             WHERE s.retired_at IS NULL AND s.citus_shard_id IS NULL
               AND NOT EXISTS (SELECT 1 FROM shardcast.shard_candidates c
                               WHERE c.relid = s.relid
                                 AND c.schema_name = s.schema_name
                                 AND c.table_name = s.table_name)
             RETURNING 1)
         SELECT count(*) FROM gone",
    ))?
    .unwrap_or(0);
    // A retired shard's copies are forgotten (`shardcast.replicas`, absent from 0.1.0's catalog
    // until the update): enqueueing its successor copies it again.
    if retired > 0 && super::compat_0_1::remembers_replicas()? {
        Spi::run(
            "DELETE FROM shardcast.replicas r USING shardcast.shards s
             WHERE s.shard_id = r.shard_id AND s.retired_at IS NOT NULL",
        )?;
    }
    // A relation that comes back as it was (renamed and renamed back, or excluded for a while)
    // is the shard it was: its history continues instead of starting over.
    Spi::run(&local_sql(
        citus,
        "UPDATE shardcast.shards s SET retired_at = NULL
         FROM shardcast.shard_candidates c
         WHERE s.relid = c.relid AND s.schema_name = c.schema_name AND s.table_name = c.table_name
           AND s.retired_at IS NOT NULL AND s.citus_shard_id IS NULL
           AND s.shard_id = (SELECT max(r.shard_id) FROM shardcast.shards r
                             WHERE r.relid = c.relid AND r.schema_name = c.schema_name
                               AND r.table_name = c.table_name AND r.citus_shard_id IS NULL)
           AND NOT EXISTS (SELECT 1 FROM shardcast.shards l
                           WHERE l.relid = c.relid AND l.retired_at IS NULL
                             AND l.citus_shard_id IS NULL)",
    ))?;
    let registered = Spi::get_one::<i64>(&local_sql(
        citus,
        "WITH added AS (
             INSERT INTO shardcast.shards (relid, schema_name, table_name, parent_relid)
             SELECT c.relid, c.schema_name, c.table_name, c.parent_relid
             FROM shardcast.shard_candidates c
             WHERE NOT EXISTS (SELECT 1 FROM shardcast.shards s
                               WHERE s.relid = c.relid AND s.retired_at IS NULL
                                 AND s.citus_shard_id IS NULL)
             ORDER BY c.relid
             ON CONFLICT (relid) WHERE retired_at IS NULL AND citus_shard_id IS NULL DO NOTHING
             RETURNING 1)
         SELECT count(*) FROM added",
    ))?
    .unwrap_or(0);
    Spi::run(&local_sql(
        citus,
        "UPDATE shardcast.shards s SET parent_relid = c.parent_relid
         FROM shardcast.shard_candidates c
         WHERE s.retired_at IS NULL AND c.relid = s.relid AND s.citus_shard_id IS NULL
           AND s.parent_relid IS DISTINCT FROM c.parent_relid",
    ))?;
    Ok((registered, retired))
}

/// Whether `shardcast.shards` has `citus_shard_id` (0.2.0). Between a library update and `ALTER
/// EXTENSION shardcast UPDATE`, SQL functions that register shards (`record_access`,
/// `set_shard_class`) meet the 0.1.0 catalog, which has no Citus rows to leave be.
fn has_citus_column() -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                        WHERE attrelid = 'shardcast.shards'::regclass
                          AND attname = 'citus_shard_id' AND NOT attisdropped)",
    )? == Some(true))
}

/// `sql` as written, or, on a catalog without Citus rows, without its conditions on
/// `citus_shard_id` (each written ` AND <alias>.citus_shard_id IS NULL`).
fn local_sql(citus: bool, sql: &str) -> String {
    if citus {
        return sql.to_owned();
    }
    ["s.", "r.", "l.", ""]
        .iter()
        .fold(sql.to_owned(), |sql, alias| {
            sql.replace(&format!(" AND {alias}citus_shard_id IS NULL"), "")
        })
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

/// `relid` if a relation has it, else an `undefined_table` error: for functions that take a
/// regclass as an OID, so that they never open (and lock) the relation, and a regclass made from
/// an OID that names nothing (`99999::oid::regclass`) is a clean error, not an internal one.
pub fn existing_relation(relid: pg_sys::Oid) -> SqlResult<pg_sys::Oid> {
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE oid = $1)",
        &[relid.into()],
    )
    .map_err(spi_error)?;
    if exists == Some(true) {
        Ok(relid)
    } else {
        Err(no_such_relation(relid))
    }
}

/// The error for an OID that names no relation (`42P01`): never one, or dropped meanwhile.
pub fn no_such_relation(relid: pg_sys::Oid) -> pgrx::pg_sys::panic::ErrorReport {
    sql_error(
        PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
        format!("relation with OID {} does not exist", relid.to_u32()),
        "It may have been dropped; name the table instead, e.g. 'public.orders'.",
    )
}

/// `relid` if it names a table that can hold shards: an ordinary table (or, with
/// `partitioned`, a partitioned one) that is not temporary and lies outside the system schemas
/// and shardcast's own, as `shardcast.shard_candidates` decides (the schemas of
/// `shardcast.excluded_schemas` may be included again later, and are not refused). Else the
/// error that says why: for the functions that name any table (classes, sparklines, replicas),
/// so that they refuse what `enqueue` and `record_access` refuse instead of writing or drawing
/// nothing.
pub fn table(relid: pg_sys::Oid, partitioned: bool) -> SqlResult<pg_sys::Oid> {
    let (name, kind) = Spi::get_two_with_args::<String, String>(
        "SELECT c.oid::regclass::text,
                CASE WHEN c.relpersistence = 't' THEN 'temporary'
                     WHEN n.nspname IN ('pg_catalog', 'information_schema', 'shardcast')
                          OR n.nspname ~ '^pg_(toast|temp_|toast_temp_)' THEN 'system'
                     ELSE c.relkind::text END
         FROM (SELECT $1::oid AS relid) r
         LEFT JOIN pg_catalog.pg_class c ON c.oid = r.relid
         LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
        &[relid.into()],
    )
    .map_err(spi_error)?;
    let Some(name) = name else {
        return Err(no_such_relation(relid));
    };
    match kind.as_deref() {
        Some("r") => Ok(relid),
        Some("p") if partitioned => Ok(relid),
        Some("p") => Err(partitioned_parent(&name)),
        Some("system") => Err(sql_error(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{name}\" is not tracked by shardcast"),
            "System schemas and shardcast's own schema hold no shards; name one of your tables.",
        )),
        Some("temporary") => Err(sql_error(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{name}\" is a temporary table"),
            "Temporary tables hold no shards: they live as long as their session.",
        )),
        _ => Err(not_a_table(&name)),
    }
}

/// The error for a partitioned parent where a shard is needed.
fn partitioned_parent(name: &str) -> pgrx::pg_sys::panic::ErrorReport {
    sql_error(
        PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
        format!("\"{name}\" is a partitioned table, not a shard"),
        "Name its leaf partitions instead: each is a shard of its own.",
    )
}

/// The error for a relation that is no table at all (a view, sequence or index).
fn not_a_table(name: &str) -> pgrx::pg_sys::panic::ErrorReport {
    sql_error(
        PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
        format!("\"{name}\" is not a table"),
        "Shards are ordinary tables and leaf partitions.",
    )
}

/// Explains why a relation is not a shard.
fn not_a_shard(relid: pg_sys::Oid) -> SqlResult<pgrx::pg_sys::panic::ErrorReport> {
    let (name, kind) = Spi::get_two_with_args::<String, String>(
        "SELECT c.oid::regclass::text, c.relkind::text
         FROM (SELECT $1::oid AS relid) r LEFT JOIN pg_catalog.pg_class c ON c.oid = r.relid",
        &[relid.into()],
    )
    .map_err(spi_error)?;
    let Some(name) = name else {
        return Ok(no_such_relation(relid));
    };
    Ok(match kind.as_deref() {
        Some("p") => partitioned_parent(&name),
        Some("r") => sql_error(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{name}\" is not tracked by shardcast"),
            "Temporary tables, system schemas, shardcast's own schema and the schemas in \
             shardcast.excluded_schemas hold no shards.",
        ),
        _ => not_a_table(&name),
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

/// Measures again (`pg_total_relation_size`) at most `batch` live shards: those never measured,
/// measured over an hour ago, or in `written` and measured over `written_gap` ago, least
/// recently measured first. Returns their ids. Under a short lock timeout, so that a table
/// locked by DDL fails the statement instead of waiting.
pub fn refresh_sizes(
    written: Vec<i32>,
    batch: i64,
    written_gap: Duration,
) -> Result<Vec<i32>, pgrx::spi::Error> {
    let written_gap = pgrx::datum::Interval::from_micros(written_gap.as_micros() as i64);
    Spi::run("SET LOCAL lock_timeout = '500ms'")?;
    Spi::connect_mut(|client| {
        client
            .update(
                "UPDATE shardcast.shards s
                 SET size_bytes = pg_catalog.pg_total_relation_size(s.relid),
                     size_updated_at = now()
                 WHERE s.shard_id IN (
                     SELECT shard_id FROM shardcast.shards
                     WHERE retired_at IS NULL AND citus_shard_id IS NULL
                       AND (size_updated_at IS NULL
                            OR size_updated_at < now() - interval '1 hour'
                            OR (shard_id = ANY($1) AND size_updated_at < now() - $3::interval))
                     ORDER BY size_updated_at NULLS FIRST
                     LIMIT $2)
                 RETURNING s.shard_id",
                None,
                &[written.into(), batch.into(), written_gap.into()],
            )?
            .map(|row| row.get::<i32>(1).map(|id| id.unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()
    })
}

/// The size now (`pg_total_relation_size`) of each of `shard_ids` that is a live local table
/// whose lock can be had at once: a table under DDL (an ACCESS EXCLUSIVE lock) is left out, for
/// the caller to fall back on the size the worker measured, so that nothing waits behind DDL.
/// The lock is released as soon as the table is measured.
pub fn sizes_now(shard_ids: &[i32]) -> Result<HashMap<i32, i64>, pgrx::spi::Error> {
    let tables: Vec<(i32, pg_sys::Oid)> = Spi::connect(|client| {
        client
            .select(
                "SELECT s.shard_id, s.relid FROM shardcast.shards s
                 WHERE s.shard_id = ANY($1) AND s.retired_at IS NULL
                   AND to_jsonb(s) ->> 'citus_shard_id' IS NULL",
                None,
                &[shard_ids.to_vec().into()],
            )?
            .map(|row| {
                Ok((
                    row.get::<i32>(1)?.unwrap_or_default(),
                    row.get::<pg_sys::Oid>(2)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    let mut sizes = HashMap::with_capacity(tables.len());
    for (shard_id, relid) in tables {
        pg_sys::check_for_interrupts!();
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        // SAFETY: a relation lock by OID; an OID that names nothing any more locks nothing
        // that matters, and pg_total_relation_size then returns NULL.
        if !unsafe { pg_sys::ConditionalLockRelationOid(relid, lock) } {
            continue;
        }
        let size = Spi::get_one_with_args::<i64>(
            "SELECT pg_catalog.pg_total_relation_size($1)",
            &[relid.into()],
        );
        unsafe { pg_sys::UnlockRelationOid(relid, lock) };
        if let Some(size) = size? {
            sizes.insert(shard_id, size);
        }
    }
    Ok(sizes)
}

/// Every live shard's cumulative counters, from the statistics views.
pub fn counters() -> Result<Vec<(i32, Counters)>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT s.shard_id,
                        coalesce(t.seq_scan, 0) + coalesce(t.idx_scan, 0),
                        coalesce(t.seq_tup_read, 0) + coalesce(t.idx_tup_fetch, 0),
                        t.n_tup_ins + t.n_tup_upd + t.n_tup_del,
                        coalesce(io.heap_blks_hit, 0) + coalesce(io.idx_blks_hit, 0)
                          + coalesce(io.toast_blks_hit, 0) + coalesce(io.tidx_blks_hit, 0),
                        coalesce(io.heap_blks_read, 0) + coalesce(io.idx_blks_read, 0)
                          + coalesce(io.toast_blks_read, 0) + coalesce(io.tidx_blks_read, 0)
                 FROM shardcast.shards s
                 JOIN pg_catalog.pg_stat_user_tables t ON t.relid = s.relid
                 JOIN pg_catalog.pg_statio_user_tables io ON io.relid = s.relid
                 WHERE s.retired_at IS NULL AND s.citus_shard_id IS NULL",
                None,
                &[],
            )?
            .map(|row| {
                let count = |i| row.get::<i64>(i).map(|v| v.unwrap_or(0));
                Ok((
                    row.get::<i32>(1)?.unwrap_or_default(),
                    Counters {
                        scans: count(2)?,
                        tuples_read: count(3)?,
                        tuples_written: count(4)?,
                        blocks_hit: count(5)?,
                        blocks_read: count(6)?,
                    },
                ))
            })
            .collect()
    })
}
