//! A task whose shard is gone: why its shard can no longer be copied, and the replan's
//! cancelling of such queued tasks. Claims ([`crate::catalog::claims::claim_next`]) and retries
//! ([`super::retry_check`]) ask the same question.

use std::sync::LazyLock;

use pgrx::prelude::*;

/// SQL: why the shard `s` of a task can no longer be copied, or NULL while it can: the relation
/// with its OID must still exist under its name, and the shard must not be retired. A table
/// dropped and created again under its name has another OID, so its predecessor's tasks never
/// copy it. A Citus shard's relation is its distributed table (its own table lives on a worker):
/// it is gone when the registry retired it (`to_jsonb`: 0.1.0's catalog has no
/// `citus_shard_id`). [`CANCEL_GONE`], the claim statement
/// ([`crate::catalog::claims::claim_next`]) and a retry ([`super::retry_check`]) are made with it.
pub const GONE_DETAIL: &str = "
    (SELECT CASE WHEN to_jsonb(s) ->> 'citus_shard_id' IS NOT NULL
                      THEN CASE WHEN s.retired_at IS NOT NULL THEN 'the Citus shard was dropped or split' END
                 WHEN c.oid IS NULL THEN 'the shard was dropped'
                 WHEN c.relname <> s.table_name OR n.nspname <> s.schema_name
                      THEN 'the shard was renamed or moved: it is a new shard now'
                 WHEN s.retired_at IS NOT NULL THEN 'the shard was retired'
            END
     FROM (SELECT) AS one
     LEFT JOIN pg_catalog.pg_class c ON c.oid = s.relid
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace)";

/// Cancels the queued tasks whose shard is gone ([`GONE_DETAIL`] says why, in the detail).
pub static CANCEL_GONE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE shardcast.replication_tasks t
         SET state = 'cancelled', finished_at = now(), detail = gone.detail
         FROM shardcast.shards s, LATERAL (SELECT {GONE_DETAIL} AS detail) gone
         WHERE s.shard_id = t.shard_id AND t.state = 'queued' AND gone.detail IS NOT NULL"
    )
});

/// Runs [`CANCEL_GONE`].
pub fn cancel_gone() -> Result<(), pgrx::spi::Error> {
    Spi::run(&CANCEL_GONE)
}
