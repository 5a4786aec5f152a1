//! `shardcast.shard_classes` and `shardcast.shard_class_assignments`: application metadata, the
//! class of a shard and its weight.

use pgrx::prelude::*;

/// A relation's kind and persistence (`pg_class.relkind`, `relpersistence`); NULLs when it is
/// gone.
pub fn relation_kind(
    relid: pg_sys::Oid,
) -> Result<(Option<String>, Option<String>), pgrx::spi::Error> {
    Spi::get_two_with_args::<String, String>(
        "SELECT relkind::text, relpersistence::text FROM pg_catalog.pg_class WHERE oid = $1",
        &[relid.into()],
    )
}

/// A relation's name as a regclass prints it.
pub fn relation_name(relid: pg_sys::Oid) -> Result<Option<String>, pgrx::spi::Error> {
    Spi::get_one_with_args::<String>("SELECT $1::regclass::text", &[relid.into()])
}

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

/// Assigns `class` to the relation by its qualified name.
pub fn assign(relid: pg_sys::Oid, class: &str) -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "INSERT INTO shardcast.shard_class_assignments (schema_name, table_name, class)
         SELECT n.nspname, c.relname, $2 FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1
         ON CONFLICT (schema_name, table_name) DO UPDATE SET class = excluded.class, assigned_at = now()",
        &[relid.into(), class.into()],
    )
}
