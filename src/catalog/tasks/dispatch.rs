//! The queue as the replan reads it for dispatch (queued tasks with their scores, tiers and the
//! nodes to avoid), and the dispatch order it stores for claims to follow.

use pgrx::prelude::*;
use shardcast_core::schedule::Task;

use crate::catalog::compat_0_1::{for_catalog, replicas_relation};

/// A queued task as read for dispatch, before it is ordered and placed.
pub struct QueuedRow {
    /// The task; `prefetch` is left false (the caller decides it, see `crate::queue`).
    pub task: Task,
    pub relid: pg_sys::Oid,
    pub priority_weight: i32,
    /// Its shard (the express lane looks its certainty up by it).
    pub shard_id: i32,
    /// The node asked for at enqueue (None: node assignment chooses).
    pub requested_node: Option<String>,
    /// Nodes that other open tasks of the same shard copy to, or that already have it
    /// (`shardcast.replicas`): node assignment avoids them, so that a shard is never copied to
    /// one node twice.
    pub taken: Vec<String>,
}

/// The queued tasks of live shards whose relation is still theirs, with the stored scores and
/// tiers (a shard not scored yet takes the coldest stored tier).
pub fn queued() -> Result<Vec<QueuedRow>, pgrx::spi::Error> {
    let sql = for_catalog(QUEUED)?.replace("shardcast.replicas", replicas_relation()?);
    Spi::connect(|client| {
        client
            .select(&sql, None, &[])?
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
                    shard_id: row.get::<i32>(7)?.unwrap_or_default(),
                    requested_node: row.get::<String>(8)?,
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

/// The queued tasks statement (see [`queued`]).
const QUEUED: &str = "SELECT t.task_id, s.relid, t.size_bytes::float8, coalesce(sc.score, 0),
                    coalesce(sc.priority_weight, 0),
                    coalesce(sc.tier, (SELECT max(tier) FROM shardcast.scores), 1), t.shard_id,
                    t.requested_node, extract(epoch FROM t.enqueued_at)::float8,
                    CASE WHEN t.requested_node IS NULL THEN
                        ARRAY(SELECT o.node FROM shardcast.replication_tasks o
                              WHERE o.shard_id = t.shard_id AND o.task_id <> t.task_id
                                AND o.state IN ('queued', 'claimed') AND o.node IS NOT NULL
                              UNION
                              SELECT r.node FROM shardcast.replicas r WHERE r.shard_id = t.shard_id)
                    END
             FROM shardcast.replication_tasks t
             JOIN shardcast.shards s ON s.shard_id = t.shard_id AND s.retired_at IS NULL
             JOIN pg_catalog.pg_class c ON c.oid = s.relid AND c.relname = s.table_name
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schema_name
             LEFT JOIN shardcast.scores sc ON sc.shard_id = t.shard_id
             WHERE t.state = 'queued'
               -- Table copies only: Citus moves are ranked by enqueue_citus_rebalance (to_jsonb:
               -- 0.1.0's catalog has no kind, and every task there is a copy).
               AND coalesce(to_jsonb(t) ->> 'kind', 'copy') = 'copy'";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::compat_0_1::destination_for_requested_node;

    #[test]
    fn the_queue_names_requested_node_only_as_the_column() {
        // 0.1.0's catalog: every use is renamed (none is part of a longer name).
        let old = destination_for_requested_node(QUEUED);
        assert!(!old.contains("requested_node"));
        assert_eq!(old, QUEUED.replace("requested_node", "destination"));
        assert_eq!(old.matches("destination").count(), 2);
    }
}
