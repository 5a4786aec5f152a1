//! Application metadata: the class of a shard (critical, normal, log, ...) and its weight.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::error::{null_argument, spi_error, sql_error, SqlResult};
use crate::registry;

/// Sets the class of a table, a leaf partition, or a partitioned table (whose partitions then
/// take it unless they have a class of their own). Declared by hand so that the table is a
/// regclass read as an OID: it is never opened, and an OID that names nothing is `42P01`.
#[pg_extern(
    name = "set_shard_class",
    sql = "
CREATE FUNCTION shardcast.set_shard_class(shard regclass, class text) RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'set_shard_class_wrapper';
COMMENT ON FUNCTION shardcast.set_shard_class(regclass, text) IS
    'Sets the class of a table, leaf partition or partitioned table (its partitions inherit it).';
"
)]
fn set_shard_class(shard: Option<pg_sys::Oid>, class: Option<&str>) -> SqlResult<()> {
    let null = |what: &str| {
        null_argument(
            what,
            "Pass a table and the name of a class in shardcast.shard_classes.",
        )
    };
    let shard = registry::existing_relation(shard.ok_or_else(|| null("shard"))?)?;
    let class = class.ok_or_else(|| null("class"))?;
    let (relkind, persistence) = Spi::get_two_with_args::<String, String>(
        "SELECT relkind::text, relpersistence::text FROM pg_catalog.pg_class WHERE oid = $1",
        &[shard.into()],
    )
    .map_err(spi_error)?;
    if !matches!(relkind.as_deref(), Some("r") | Some("p")) || persistence.as_deref() == Some("t") {
        let name = Spi::get_one_with_args::<String>("SELECT $1::regclass::text", &[shard.into()])
            .map_err(spi_error)?
            .unwrap_or_else(|| shard.to_u32().to_string());
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{name}\" is not a table"),
            "Classes apply to tables, leaf partitions and partitioned tables (not views, sequences or temporary tables).",
        ));
    }
    let known = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM shardcast.shard_classes WHERE class = $1)",
        &[class.into()],
    )
    .map_err(spi_error)?;
    if known != Some(true) {
        let classes = Spi::get_one::<String>(
            "SELECT string_agg(class, ', ' ORDER BY weight DESC) FROM shardcast.shard_classes",
        )
        .map_err(spi_error)?
        .unwrap_or_default();
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("unknown shard class \"{class}\""),
            format!("Known classes: {classes}. Add one with INSERT INTO shardcast.shard_classes (class, weight)."),
        ));
    }
    Spi::run_with_args(
        "INSERT INTO shardcast.shard_class_assignments (schema_name, table_name, class)
         SELECT n.nspname, c.relname, $2 FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1
         ON CONFLICT (schema_name, table_name) DO UPDATE SET class = excluded.class, assigned_at = now()",
        &[shard.into(), class.into()],
    )
    .map_err(spi_error)
}
