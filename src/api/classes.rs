//! Application metadata: the class of a shard (critical, normal, log, ...) and its weight.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::catalog::{classes, shards};
use crate::error::{null_argument, spi_error, sql_error, SqlResult};

/// Sets the class of a table, a leaf partition, or a partitioned table (whose partitions then
/// take it unless they have a class of their own). Declared by hand so that the table is a
/// regclass read as an OID: it is never opened, and an OID that names nothing is `42P01`.
#[pg_extern(sql = false)]
fn set_shard_class(shard: Option<pg_sys::Oid>, class: Option<&str>) -> SqlResult<()> {
    let null = |what: &str| {
        null_argument(
            what,
            "Pass a table and the name of a class in shardcast.shard_classes.",
        )
    };
    // Classes apply to tables, leaf partitions and partitioned tables (whose partitions take
    // their class).
    let shard = shards::table(shard.ok_or_else(|| null("shard"))?, true)?;
    let class = class.ok_or_else(|| null("class"))?;
    if !classes::exists(class).map_err(spi_error)? {
        let classes = classes::names().map_err(spi_error)?;
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("unknown shard class \"{class}\""),
            format!("Known classes: {classes}. Add one with INSERT INTO shardcast.shard_classes (class, weight)."),
        ));
    }
    if !classes::assign(shard, class).map_err(spi_error)? {
        // Dropped since `shards::table` found it: said as for any OID that names nothing.
        return Err(shards::no_such_relation(shard));
    }
    Ok(())
}
