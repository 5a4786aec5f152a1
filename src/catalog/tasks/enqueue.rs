//! Enqueueing: the statement that adds (or keeps) one task per shard, the queue lock that
//! enqueues and replans share, and what the enqueue functions read to pick their shards (live
//! shards, a publication's, and which are not permanent tables).

use std::collections::HashMap;

use pgrx::prelude::*;

use crate::catalog::compat_0_1::{for_catalog, replicas_relation};

/// The advisory lock key that enqueues, replans and resizes take.
const QUEUE_LOCK: &str = "pg_catalog.hashtext('shardcast.replan')";

/// Serialises enqueues and replans until the end of the transaction.
pub fn lock_queue() -> Result<(), pgrx::spi::Error> {
    Spi::run(&format!(
        "SELECT pg_catalog.pg_advisory_xact_lock({QUEUE_LOCK})"
    ))
}

/// A queued task's size follows its table's once the table has grown or shrunk by at least
/// this share since the task was sized: the queue is reordered for a change that can move a
/// task, not for every page a busy table adds.
const RESIZE_SHARE: f64 = 0.1;

/// Takes the queue lock (see [`lock_queue`]) if no one holds it; false when someone does.
pub fn try_lock_queue() -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one::<bool>(&format!(
        "SELECT pg_catalog.pg_try_advisory_xact_lock({QUEUE_LOCK})"
    ))? == Some(true))
}

/// Which of `shard_ids` have a queued table copy.
pub fn queued_among(shard_ids: &[i32]) -> Result<Vec<i32>, pgrx::spi::Error> {
    Ok(Spi::get_one_with_args::<Vec<i32>>(
        "SELECT coalesce(array_agg(DISTINCT shard_id), '{}') FROM shardcast.replication_tasks
         WHERE shard_id = ANY($1) AND state = 'queued' AND kind = 'copy'",
        &[shard_ids.to_vec().into()],
    )?
    .unwrap_or_default())
}

/// Gives the queued table copies of the shards in `sizes` (shard → its size measured now) that
/// size, where it differs from theirs by [`RESIZE_SHARE`] or more: `enqueue` sizes a task once,
/// and a table loaded after it was queued would keep its place as the small table it was. The
/// caller holds the queue lock. A task row locked by a claim under way is skipped (it is
/// leaving the queue). Returns the number of tasks resized.
pub fn resize_queued(sizes: &HashMap<i32, i64>) -> Result<usize, pgrx::spi::Error> {
    if sizes.is_empty() {
        return Ok(0);
    }
    let (shard_ids, bytes): (Vec<i32>, Vec<i64>) = sizes.iter().map(|(k, v)| (*k, *v)).unzip();
    Spi::connect_mut(|client| {
        Ok(client
            .update(
                "WITH due AS (
                     SELECT t.task_id, m.size_bytes
                     FROM shardcast.replication_tasks t
                     JOIN unnest($1::int4[], $2::int8[]) AS m(shard_id, size_bytes) USING (shard_id)
                     WHERE t.state = 'queued' AND t.kind = 'copy'
                       AND abs(m.size_bytes - t.size_bytes) >= $3 * greatest(t.size_bytes, 1)
                     FOR UPDATE OF t SKIP LOCKED)
                 UPDATE shardcast.replication_tasks t SET size_bytes = due.size_bytes
                 FROM due WHERE t.task_id = due.task_id",
                None,
                &[shard_ids.into(), bytes.into(), RESIZE_SHARE.into()],
            )?
            .len())
    })
}

/// What enqueueing did for one shard.
pub struct Enqueued {
    /// The open task that does it, new or kept; or, when the shard is already on the node
    /// (`skipped`), the task that copied it there.
    pub task_id: i64,
    /// Set when nothing was queued because the shard is already copied where it was to go:
    /// `(shard's qualified name, node, copied at)`.
    pub skipped: Option<(String, String, String)>,
}

/// Enqueues the live shards `shard_ids` for `requested_node` (NULL: node assignment chooses),
/// keeping the open task that already does it (see `api::enqueue`), and skipping shards already
/// copied there (`shardcast.replicas`: to `requested_node`, or to any node without one); returns
/// one entry per shard, in shard order. Takes [`lock_queue`] first.
pub fn enqueue(
    shard_ids: &[i32],
    requested_node: Option<&str>,
) -> Result<Vec<Enqueued>, pgrx::spi::Error> {
    // Measured before the queue's lock is taken: measuring locks each table for a moment.
    let (measured, sizes): (Vec<i32>, Vec<i64>) = crate::catalog::shards::sizes_now(shard_ids)?
        .into_iter()
        .unzip();
    // Enqueues and replans run one at a time (the replan's lock), so that two enqueues of one
    // shard, for a node and for any node, see each other's task instead of adding two.
    lock_queue()?;
    let sql = for_catalog(ENQUEUE)?.replace("shardcast.replicas", replicas_relation()?);
    Spi::connect_mut(|client| {
        client
            .update(
                &sql,
                None,
                &[
                    shard_ids.to_vec().into(),
                    requested_node.into(),
                    measured.into(),
                    sizes.into(),
                ],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                let task_id = row.get::<i64>(1)?.unwrap_or_default();
                let skipped = if row.get::<bool>(2)?.unwrap_or(false) {
                    Some((
                        row.get::<String>(3)?.unwrap_or_default(),
                        row.get::<String>(4)?.unwrap_or_default(),
                        row.get::<String>(5)?.unwrap_or_default(),
                    ))
                } else {
                    None
                };
                Ok(Enqueued { task_id, skipped })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
}

/// The enqueue statement (see [`enqueue`]).
const ENQUEUE: &str = "WITH wanted AS (
                 SELECT s.shard_id, format('%I.%I', s.schema_name, s.table_name) AS name,
                        -- The table's size now ($3, $4: shards::sizes_now), as the worker
                        -- measures sizes only every few minutes and a table created, loaded and
                        -- enqueued at once would be queued empty; else (a table under DDL) the
                        -- size the worker measured.
                        coalesce(m.size_bytes, s.size_bytes, 0) AS size_bytes,
                        m.size_bytes AS measured_bytes
                 FROM shardcast.shards s
                 LEFT JOIN unnest($3::int4[], $4::int8[]) AS m(shard_id, size_bytes)
                        ON m.shard_id = s.shard_id
                 WHERE s.shard_id = ANY($1) AND s.retired_at IS NULL
             ), replicated AS (
                 -- Already copied there: to that node, or (for any node) to any node.
                 SELECT DISTINCT ON (r.shard_id) r.shard_id, r.task_id, r.node, r.copied_at
                 FROM shardcast.replicas r
                 JOIN wanted w USING (shard_id)
                 WHERE $2::text IS NULL OR r.node = $2
                 ORDER BY r.shard_id, r.copied_at DESC, r.node
             ), open AS (
                 -- The task that already does it: for a node, one given that node, else the
                 -- shard's task without a requested node if it is still queued (it is placed
                 -- there now, unless the shard is already there) or copies to that node; for
                 -- any node, any.
                 SELECT DISTINCT ON (t.shard_id) t.shard_id, t.task_id,
                        $2::text IS NOT NULL AND t.requested_node IS NULL AND t.state = 'queued' AS to_place
                 FROM shardcast.replication_tasks t
                 JOIN wanted w USING (shard_id)
                 WHERE t.state IN ('queued', 'claimed')
                   AND ($2::text IS NULL OR t.requested_node = $2
                        OR (t.requested_node IS NULL
                            AND (t.state = 'queued' OR t.node = $2)
                            AND (t.node = $2
                                 OR NOT EXISTS (SELECT 1 FROM replicated r WHERE r.shard_id = t.shard_id))))
                 ORDER BY t.shard_id, t.requested_node IS NOT DISTINCT FROM $2 DESC, t.task_id
             ), kept AS (
                 -- The open task is placed on the node when it had none; a queued one takes
                 -- the table's size now (the table may have grown since it was enqueued).
                 UPDATE shardcast.replication_tasks t
                 SET requested_node = CASE WHEN o.to_place THEN $2 ELSE t.requested_node END,
                     node = CASE WHEN o.to_place THEN $2 ELSE t.node END,
                     size_bytes = CASE WHEN t.state = 'queued'
                                       THEN coalesce(w.measured_bytes, t.size_bytes)
                                       ELSE t.size_bytes END
                 FROM open o JOIN wanted w USING (shard_id)
                 WHERE t.task_id = o.task_id
                   AND (o.to_place OR (t.state = 'queued' AND w.measured_bytes <> t.size_bytes))
             ), added AS (
                 INSERT INTO shardcast.replication_tasks (shard_id, requested_node, node, size_bytes)
                 SELECT w.shard_id, $2, $2, w.size_bytes FROM wanted w
                 WHERE NOT EXISTS (SELECT 1 FROM open o WHERE o.shard_id = w.shard_id)
                   AND NOT EXISTS (SELECT 1 FROM replicated r WHERE r.shard_id = w.shard_id)
                 ORDER BY w.shard_id
                 ON CONFLICT DO NOTHING
                 RETURNING task_id, shard_id)
             SELECT coalesce(o.task_id, a.task_id, r.task_id),
                    o.task_id IS NULL AND a.task_id IS NULL AND r.task_id IS NOT NULL,
                    w.name, r.node, r.copied_at::text
             FROM wanted w
             LEFT JOIN open o USING (shard_id)
             LEFT JOIN added a USING (shard_id)
             LEFT JOIN replicated r USING (shard_id)
             ORDER BY w.shard_id";

/// The ids of every live table shard (Citus shards move with Citus, not through this queue).
pub fn live_shard_ids() -> Result<Vec<i32>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT s.shard_id FROM shardcast.shards s
                 WHERE s.retired_at IS NULL AND to_jsonb(s) ->> 'citus_shard_id' IS NULL",
                None,
                &[],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                row.get::<i32>(1).map(|v| v.unwrap_or_default())
            })
            .collect::<Result<Vec<_>, _>>()
    })
}

/// Whether a publication of that name exists.
pub fn publication_exists(publication: &str) -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)",
        &[publication.into()],
    )? == Some(true))
}

/// A publication's tables (leaf partitions for a partitioned one), split in two: the live
/// shards among them, and the names (in order) of those that are no live shard: in the schemas
/// that hold no shards, or Citus shards, which the Citus queue moves.
pub fn publication_shards(publication: &str) -> Result<(Vec<i32>, Vec<String>), pgrx::spi::Error> {
    let rows = Spi::connect(|client| {
        client
            .select(
                "SELECT DISTINCT s.shard_id, leaf.relid::regclass::text
                 FROM pg_catalog.pg_publication_tables p
                 JOIN pg_catalog.pg_namespace n ON n.nspname = p.schemaname
                 JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
                 CROSS JOIN LATERAL (SELECT c.oid AS relid UNION
                                     SELECT relid FROM pg_catalog.pg_partition_tree(c.oid) WHERE isleaf) leaf
                 JOIN pg_catalog.pg_class l ON l.oid = leaf.relid AND l.relkind = 'r'
                 LEFT JOIN shardcast.shards s ON s.relid = leaf.relid AND s.retired_at IS NULL
                                             AND to_jsonb(s) ->> 'citus_shard_id' IS NULL
                 WHERE p.pubname = $1
                 ORDER BY 2",
                None,
                &[publication.into()],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                Ok((row.get::<i32>(1)?, row.get::<String>(2)?.unwrap_or_default()))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    let (tracked, untracked): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(id, _)| id.is_some());
    Ok((
        tracked.into_iter().filter_map(|(id, _)| id).collect(),
        untracked.into_iter().map(|(_, name)| name).collect(),
    ))
}

/// A relation's name and persistence (`pg_class.relpersistence`); NULLs when it is gone.
pub fn persistence(
    relid: pg_sys::Oid,
) -> Result<(Option<String>, Option<String>), pgrx::spi::Error> {
    Spi::get_two_with_args::<String, String>(
        // One row whatever happens: a table dropped since the caller found it is NULLs here (and
        // `shard_id_for`'s 42P01), not an empty result, which SPI reports as an internal error.
        "SELECT c.oid::regclass::text, c.relpersistence::text
         FROM (SELECT $1::oid AS relid) r LEFT JOIN pg_catalog.pg_class c ON c.oid = r.relid",
        &[relid.into()],
    )
}

/// The shards among `shard_ids` that are not permanent tables: `(shard_id, name, persistence)`,
/// by name.
pub fn not_permanent(shard_ids: &[i32]) -> Result<Vec<(i32, String, String)>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT s.shard_id, c.oid::regclass::text, c.relpersistence::text
             FROM shardcast.shards s JOIN pg_catalog.pg_class c ON c.oid = s.relid
             WHERE s.shard_id = ANY($1) AND c.relpersistence <> 'p'
             ORDER BY 2",
                None,
                &[shard_ids.to_vec().into()],
            )?
            .map(|row| {
                Ok((
                    row.get::<i32>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                    row.get::<String>(3)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::compat_0_1::destination_for_requested_node;

    #[test]
    fn enqueue_names_requested_node_only_as_the_column() {
        // 0.1.0's catalog: every use is renamed (none is part of a longer name).
        let old = destination_for_requested_node(ENQUEUE);
        assert!(!old.contains("requested_node"));
        assert_eq!(old, ENQUEUE.replace("requested_node", "destination"));
        assert_eq!(old.matches("destination").count(), 7);
    }
}
