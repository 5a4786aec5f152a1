//! `shardcast.replication_tasks` outside claims: enqueueing, the queue as read for dispatch,
//! the stored dispatch order, cancelling tasks of shards that are gone, and what reports and
//! manifests read back.

use pgrx::prelude::*;
use shardcast_core::report::Copied;
use shardcast_core::schedule::Task;

/// SQL: why the shard `s` of a task can no longer be copied, or NULL while it can: the relation
/// with its OID must still exist under its name, and the shard must not be retired. A table
/// dropped and created again under its name has another OID, so its predecessor's tasks never
/// copy it. Written out in [`CANCEL_GONE`] and in the claim statements
/// ([`super::claims::CLAIM_NEXT`]); a test checks that they all say it this way.
#[cfg_attr(not(test), allow(dead_code))] // the tests check the statements against it
pub const GONE_DETAIL: &str = "
    (SELECT CASE WHEN c.oid IS NULL THEN 'the shard was dropped'
                 WHEN c.relname <> s.table_name OR n.nspname <> s.schema_name
                      THEN 'the shard was renamed or moved: it is a new shard now'
                 WHEN s.retired_at IS NOT NULL THEN 'the shard was retired'
            END
     FROM (SELECT) AS one
     LEFT JOIN pg_catalog.pg_class c ON c.oid = s.relid
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace)";

/// Cancels the queued tasks whose shard is gone ([`GONE_DETAIL`] says why, in the detail).
pub const CANCEL_GONE: &str = "
    UPDATE shardcast.replication_tasks t
    SET state = 'cancelled', finished_at = now(), detail = gone.detail
    FROM shardcast.shards s,
         LATERAL (SELECT
                      (SELECT CASE WHEN c.oid IS NULL THEN 'the shard was dropped'
                                   WHEN c.relname <> s.table_name OR n.nspname <> s.schema_name
                                        THEN 'the shard was renamed or moved: it is a new shard now'
                                   WHEN s.retired_at IS NOT NULL THEN 'the shard was retired'
                              END
                       FROM (SELECT) AS one
                       LEFT JOIN pg_catalog.pg_class c ON c.oid = s.relid
                       LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace) AS detail) gone
    WHERE s.shard_id = t.shard_id AND t.state = 'queued' AND gone.detail IS NOT NULL";

/// Runs [`CANCEL_GONE`].
pub fn cancel_gone() -> Result<(), pgrx::spi::Error> {
    Spi::run(CANCEL_GONE)
}

/// Serialises enqueues and replans until the end of the transaction.
pub fn lock_queue() -> Result<(), pgrx::spi::Error> {
    Spi::run("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('shardcast.replan'))")
}

/// Enqueues the live shards `shard_ids` for `destination` (NULL: node assignment chooses),
/// keeping the open task that already does it (see `api::enqueue`); returns the tasks' ids in
/// shard order. Takes [`lock_queue`] first.
pub fn enqueue(shard_ids: &[i32], destination: Option<&str>) -> Result<Vec<i64>, pgrx::spi::Error> {
    // Enqueues and replans run one at a time (the replan's lock), so that two enqueues of one
    // shard, for a node and for any node, see each other's task instead of adding two.
    lock_queue()?;
    Spi::connect_mut(|client| {
        client
            .update(
            "WITH wanted AS (
                 SELECT s.shard_id,
                        coalesce(s.size_bytes, pg_catalog.pg_total_relation_size(s.relid), 0) AS size_bytes
                 FROM shardcast.shards s
                 WHERE s.shard_id = ANY($1) AND s.retired_at IS NULL
             ), open AS (
                 -- The task that already does it: for a node, one given that node, else the
                 -- shard's task without a destination if it is still queued (it is placed
                 -- there now) or copies to that node; for any node, any.
                 SELECT DISTINCT ON (t.shard_id) t.shard_id, t.task_id,
                        $2::text IS NOT NULL AND t.destination IS NULL AND t.state = 'queued' AS to_place
                 FROM shardcast.replication_tasks t
                 JOIN wanted w USING (shard_id)
                 WHERE t.state IN ('queued', 'claimed')
                   AND ($2::text IS NULL OR t.destination = $2
                        OR (t.destination IS NULL AND (t.state = 'queued' OR t.node = $2)))
                 ORDER BY t.shard_id, t.destination IS NOT DISTINCT FROM $2 DESC, t.task_id
             ), placed AS (
                 UPDATE shardcast.replication_tasks t SET destination = $2, node = $2
                 FROM open o WHERE t.task_id = o.task_id AND o.to_place
             ), added AS (
                 INSERT INTO shardcast.replication_tasks (shard_id, destination, node, size_bytes)
                 SELECT w.shard_id, $2, $2, w.size_bytes FROM wanted w
                 WHERE NOT EXISTS (SELECT 1 FROM open o WHERE o.shard_id = w.shard_id)
                 ORDER BY w.shard_id
                 ON CONFLICT DO NOTHING
                 RETURNING task_id, shard_id)
             SELECT coalesce(o.task_id, a.task_id)
             FROM wanted w
             LEFT JOIN open o USING (shard_id)
             LEFT JOIN added a USING (shard_id)
             ORDER BY w.shard_id",
                None,
                &[shard_ids.to_vec().into(), destination.into()],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                row.get::<i64>(1).map(|v| v.unwrap_or_default())
            })
            .collect::<Result<Vec<_>, _>>()
    })
}

/// The ids of every live shard.
pub fn live_shard_ids() -> Result<Vec<i32>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT shard_id FROM shardcast.shards WHERE retired_at IS NULL",
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

/// The live shards of a publication's tables, leaf partitions included.
pub fn publication_shard_ids(publication: &str) -> Result<Vec<i32>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
            "SELECT s.shard_id
             FROM pg_catalog.pg_publication_tables p
             JOIN pg_catalog.pg_namespace n ON n.nspname = p.schemaname
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
             CROSS JOIN LATERAL (SELECT c.oid AS relid UNION
                                 SELECT relid FROM pg_catalog.pg_partition_tree(c.oid) WHERE isleaf) leaf
             JOIN shardcast.shards s ON s.relid = leaf.relid AND s.retired_at IS NULL
             WHERE p.pubname = $1",
                None,
                &[publication.into()],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                row.get::<i32>(1).map(|v| v.unwrap_or_default())
            })
            .collect::<Result<Vec<_>, _>>()
    })
}

/// A relation's name and persistence (`pg_class.relpersistence`); NULLs when it is gone.
pub fn persistence(
    relid: pg_sys::Oid,
) -> Result<(Option<String>, Option<String>), pgrx::spi::Error> {
    Spi::get_two_with_args::<String, String>(
        "SELECT c.oid::regclass::text, c.relpersistence::text FROM pg_catalog.pg_class c WHERE c.oid = $1",
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

/// A queued task as read for dispatch, before it is ordered and placed.
pub struct QueuedRow {
    /// The task; `prefetch` is left false (the caller decides it from `lower`).
    pub task: Task,
    pub relid: pg_sys::Oid,
    pub priority_weight: i32,
    /// Its shard's forecast lower bound.
    pub lower: Option<f64>,
    pub destination: Option<String>,
    /// Nodes that other open tasks of the same shard copy to: node assignment avoids them, so
    /// that a shard is never copied to one node twice.
    pub taken: Vec<String>,
}

/// The queued tasks of live shards whose relation is still theirs, with the stored scores and
/// tiers (a shard not scored yet takes the coldest stored tier).
pub fn queued() -> Result<Vec<QueuedRow>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT t.task_id, s.relid, t.size_bytes::float8, coalesce(sc.score, 0),
                    coalesce(sc.priority_weight, 0),
                    coalesce(sc.tier, (SELECT max(tier) FROM shardcast.scores), 1), f.lower,
                    t.destination, extract(epoch FROM t.enqueued_at)::float8,
                    CASE WHEN t.destination IS NULL THEN
                        ARRAY(SELECT o.node FROM shardcast.replication_tasks o
                              WHERE o.shard_id = t.shard_id AND o.task_id <> t.task_id
                                AND o.state IN ('queued', 'claimed') AND o.node IS NOT NULL)
                    END
             FROM shardcast.replication_tasks t
             JOIN shardcast.shards s ON s.shard_id = t.shard_id AND s.retired_at IS NULL
             JOIN pg_catalog.pg_class c ON c.oid = s.relid AND c.relname = s.table_name
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schema_name
             LEFT JOIN shardcast.scores sc ON sc.shard_id = t.shard_id
             LEFT JOIN shardcast.forecast_state f ON f.shard_id = t.shard_id
             WHERE t.state = 'queued'",
                None,
                &[],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                Ok(QueuedRow {
                    task: Task {
                        task_id: row.get::<i64>(1)?.unwrap_or_default(),
                        bytes: row.get::<f64>(3)?.unwrap_or_default(),
                        score: row.get::<f64>(4)?.unwrap_or_default(),
                        tier: row.get::<i32>(6)?.unwrap_or(1).clamp(1, 255) as u8,
                        prefetch: false,
                        enqueued_at: row.get::<f64>(9)?.unwrap_or_default(),
                    },
                    relid: row.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid),
                    priority_weight: row.get::<i32>(5)?.unwrap_or_default(),
                    lower: row.get::<f64>(7)?,
                    destination: row.get::<String>(8)?,
                    taken: row
                        .get::<Vec<Option<String>>>(10)?
                        .unwrap_or_default()
                        .into_iter()
                        .flatten()
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
}

/// The dispatch order to store: per queued task, in order, its node, score, priority weight,
/// tier and express-lane flag.
#[derive(Default)]
pub struct DispatchOrder {
    pub ids: Vec<i64>,
    pub nodes: Vec<Option<String>>,
    pub scores: Vec<f64>,
    pub weights: Vec<i32>,
    pub tiers: Vec<i32>,
    pub prefetch: Vec<bool>,
}

/// Stores the dispatch order that claims follow (ranks 1, 2, ... in the order given).
pub fn store_dispatch_order(order: DispatchOrder) -> Result<(), pgrx::spi::Error> {
    let ranks: Vec<i32> = (1..=order.ids.len() as i32).collect();
    Spi::run_with_args(
        "UPDATE shardcast.replication_tasks t
         SET dispatch_rank = u.rank, node = u.node, score = u.score, priority_weight = u.weight,
             tier = u.tier, prefetch = u.prefetch
         FROM unnest($1::int8[], $2::int4[], $3::text[], $4::float8[], $5::int4[], $6::int4[], $7::bool[])
              AS u(id, rank, node, score, weight, tier, prefetch)
         WHERE t.task_id = u.id AND t.state = 'queued'",
        &[
            order.ids.into(),
            ranks.into(),
            order.nodes.into(),
            order.scores.into(),
            order.weights.into(),
            order.tiers.into(),
            order.prefetch.into(),
        ],
    )
}

/// Each shard's first successful copy among the tasks claimed at or after `since` (all when
/// NULL), in catalog (FIFO) order: `(shard_id, copy)`.
pub fn first_copies(
    since: Option<TimestampWithTimeZone>,
) -> Result<Vec<(i32, Copied)>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
            "WITH firsts AS (
                 SELECT DISTINCT ON (shard_id) shard_id, task_id, size_bytes, claimed_at, finished_at
                 FROM shardcast.replication_tasks
                 WHERE state = 'done' AND ($1::timestamptz IS NULL OR claimed_at >= $1)
                 ORDER BY shard_id, finished_at)
             SELECT shard_id, size_bytes::float8,
                    extract(epoch FROM claimed_at)::float8, extract(epoch FROM finished_at)::float8
             FROM firsts ORDER BY task_id",
                None,
                &[since.into()],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                Ok((
                    row.get::<i32>(1)?.unwrap_or_default(),
                    Copied {
                        bytes: row.get::<f64>(2)?.unwrap_or_default(),
                        claimed_at: row.get::<f64>(3)?.unwrap_or_default(),
                        finished_at: row.get::<f64>(4)?.unwrap_or_default(),
                    },
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
}

/// The manifest of the tasks (for `destination`, or all) as a versioned document.
pub fn manifest(destination: Option<&str>) -> Result<Option<pgrx::JsonB>, pgrx::spi::Error> {
    Spi::get_one_with_args::<pgrx::JsonB>(
        "SELECT jsonb_build_object(
             'version', 1,
             'generated_at', now(),
             'source', jsonb_build_object('system_identifier', (SELECT system_identifier::text FROM pg_catalog.pg_control_system()),
                                          'database', current_database()),
             'destination', $1::text,
             'tasks', coalesce((SELECT jsonb_agg(jsonb_build_object(
                          'task_id', m.task_id, 'shard', m.shard, 'destination', m.destination,
                          'size_bytes', m.size_bytes, 'priority_weight', m.priority_weight,
                          'position', m.position, 'tier', m.tier, 'prefetch', m.prefetch, 'state', m.state)
                          ORDER BY m.position NULLS LAST, m.task_id)
                        FROM shardcast.replication_manifest m
                        WHERE $1::text IS NULL OR m.destination = $1), '[]'::jsonb))",
        &[destination.into()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> String {
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn a_replan_cancels_what_gone_detail_says() {
        assert!(words(CANCEL_GONE).contains(&words(GONE_DETAIL)));
    }
}
