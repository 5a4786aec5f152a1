//! `shardcast.shard_classes` and `shardcast.shard_class_assignments`: application metadata, the
//! class of a shard and its weight.

use pgrx::prelude::*;

/// Whether a class of that name exists.
pub fn exists(class: &str) -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM shardcast.shard_classes WHERE class = $1)",
        &[class.into()],
    )? == Some(true))
}

/// The classes, heaviest first, as a list for a message.
pub fn names() -> Result<String, pgrx::spi::Error> {
    Ok(Spi::get_one::<String>(
        "SELECT string_agg(class, ', ' ORDER BY weight DESC) FROM shardcast.shard_classes",
    )?
    .unwrap_or_default())
}

/// Assigns `class` to the relation by its qualified name; false when the relation is gone (dropped
/// since the caller found it), so that nothing was assigned.
pub fn assign(relid: pg_sys::Oid, class: &str) -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one_with_args::<bool>(
        "WITH assigned AS (
             INSERT INTO shardcast.shard_class_assignments (schema_name, table_name, class)
             SELECT n.nspname, c.relname, $2 FROM pg_catalog.pg_class c
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1
             ON CONFLICT (schema_name, table_name) DO UPDATE SET class = excluded.class, assigned_at = now()
             RETURNING 1)
         SELECT EXISTS (SELECT FROM assigned)",
        &[relid.into(), class.into()],
    )? == Some(true))
}
