//! A task's life after it was queued, as an operator steers it: cancel, retry (with what a
//! retry must check first) and forgetting a copy so that enqueueing copies the shard again.

use pgrx::prelude::*;

use super::gone::GONE_DETAIL;

/// Cancels a queued task (the caller checked its state under its lock).
pub fn cancel(task_id: i64) -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.replication_tasks
         SET state = 'cancelled', finished_at = now(), dispatch_rank = NULL,
             detail = 'cancelled by ' || session_user
         WHERE task_id = $1 AND state = 'queued'",
        &[task_id.into()],
    )
}

/// What a retry must know of a task: its shard's name, its requested node, why its shard can no
/// longer be copied (None while it can), and another open task that copies the shard there.
pub struct RetryCheck {
    pub shard: String,
    pub requested_node: Option<String>,
    pub gone: Option<String>,
    pub open_task: Option<i64>,
    /// The node the shard is already copied to, for a task with a requested node (or, without
    /// one, any node), as enqueue would skip it.
    pub copied_to: Option<String>,
}

/// Reads what [`RetryCheck`] says of a task; None when there is no such task.
pub fn retry_check(task_id: i64) -> Result<Option<RetryCheck>, pgrx::spi::Error> {
    let sql = format!(
        "SELECT format('%I.%I', s.schema_name, s.table_name), t.requested_node, {GONE_DETAIL},
                (SELECT o.task_id FROM shardcast.replication_tasks o
                 WHERE o.shard_id = t.shard_id AND o.task_id <> t.task_id
                   AND o.state IN ('queued', 'claimed')
                   AND (o.requested_node IS NOT DISTINCT FROM t.requested_node
                        OR (t.requested_node IS NOT NULL AND o.node = t.requested_node))
                 ORDER BY o.task_id LIMIT 1),
                (SELECT r.node FROM shardcast.replicas r
                 WHERE r.shard_id = t.shard_id AND (t.requested_node IS NULL OR r.node = t.requested_node)
                 ORDER BY r.node LIMIT 1)
         FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
         WHERE t.task_id = $1"
    );
    Spi::connect(|client| {
        let mut rows = client.select(&sql, None, &[task_id.into()])?;
        match rows.next() {
            Some(row) => Ok(Some(RetryCheck {
                shard: row.get::<String>(1)?.unwrap_or_default(),
                requested_node: row.get::<String>(2)?,
                gone: row.get::<String>(3)?,
                open_task: row.get::<i64>(4)?,
                copied_to: row.get::<String>(5)?,
            })),
            None => Ok(None),
        }
    })
}

/// Puts a failed or cancelled task back in the queue as if just enqueued: attempts reset, its
/// node its requested node again (none: node assignment chooses).
pub fn requeue(task_id: i64) -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.replication_tasks
         SET state = 'queued', attempts = 0, node = requested_node, dispatch_rank = NULL,
             claimed_by = NULL, claimed_at = NULL, lease_expires_at = NULL, finished_at = NULL,
             enqueued_at = now(), copied = NULL, priority_weight_at_claim = NULL,
             priority_weight_at_completion = NULL,
             detail = 'retried by ' || session_user
         WHERE task_id = $1 AND state IN ('failed', 'cancelled')",
        &[task_id.into()],
    )
}

/// Forgets the copy of the live shard of relation `relid` on `node`; whether there was one.
pub fn forget_replica(relid: pg_sys::Oid, node: &str) -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one_with_args::<bool>(
        "WITH forgotten AS (
             DELETE FROM shardcast.replicas r USING shardcast.shards s
             WHERE s.shard_id = r.shard_id AND s.relid = $1 AND s.retired_at IS NULL
               AND s.citus_shard_id IS NULL AND r.node = $2
             RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM forgotten)",
        &[relid.into(), node.into()],
    )? == Some(true))
}
