//! The claim statement: the next table copy in dispatch order, for any node or for one, claimed
//! under a lease with a copy credit, or cancelled when its shard is gone. Run through its kept
//! plans ([`crate::catalog::kept`]): it runs once per task copied, or more.

use std::sync::LazyLock;

use pgrx::prelude::*;

use crate::catalog::compat_0_1::remembers_replicas;
use crate::catalog::kept::{leak, run_kept};
use crate::catalog::tasks::gone::GONE_DETAIL;

/// The claim statement for any node; [`CLAIM_NEXT_FOR_NODE`] is the same for the tasks of one
/// node. Each filter has its own statement so that each kept plan is generic (planned once per
/// session) and walks its own index in dispatch order: `replication_tasks_dispatch` for any
/// node, `replication_tasks_node_dispatch` for one. Tasks for a disabled node, or for a node at
/// its `max_concurrent`, are passed over, and so are tasks without a node where nodes exist
/// (every one disabled): they wait for node assignment to place them on one that is enabled
/// again, or their copies would go nowhere the queue remembers. Without any node (scripts
/// that copy elsewhere) every task is for whoever claims it. The task it takes is claimed if
/// its shard is still its own relation, and cancelled otherwise (the `gone` column: `{gone}` stands for
/// [`GONE_DETAIL`]; the last column says which), so that a dropped
/// table is never copied, nor another table that took its name. A claim grants its task a copy
/// credit (`credited`): see [`crate::catalog::copy_credits`]. Table copies only (`kind =
/// 'copy'`): Citus moves have their own claim (`shardcast.claim_citus_move`, sql/citus.sql).
const CLAIM_TEMPLATE: &str = "
    WITH next AS (
             SELECT t.task_id, t.shard_id
             FROM shardcast.replication_tasks t
             WHERE t.state = 'queued'
               AND t.kind = 'copy'
               AND $2::text IS NULL
               AND CASE WHEN t.node IS NULL
                        THEN NOT EXISTS (SELECT FROM shardcast.nodes)
                        ELSE (SELECT count(*) FROM shardcast.replication_tasks c
                              WHERE c.state = 'claimed' AND c.node = t.node)
                             < (SELECT max_concurrent FROM shardcast.nodes n
                                WHERE n.node = t.node AND n.enabled)
                   END
             ORDER BY t.dispatch_rank, t.task_id
             LIMIT 1
             FOR UPDATE SKIP LOCKED),
         checked AS (
             SELECT next.task_id,
                    {gone} AS gone
             FROM next JOIN shardcast.shards s ON s.shard_id = next.shard_id),
         cancelled AS (
             UPDATE shardcast.replication_tasks t
             SET state = 'cancelled', finished_at = now(), detail = checked.gone
             FROM checked
             WHERE t.task_id = checked.task_id AND checked.gone IS NOT NULL
             RETURNING t.task_id),
         claimed AS (
             UPDATE shardcast.replication_tasks t
             SET state = 'claimed', claimed_by = $1, claimed_at = now(),
                 lease_expires_at = clock_timestamp() + $3::interval,
                 priority_weight_at_claim = coalesce(
                     (SELECT priority_weight FROM shardcast.scores sc WHERE sc.shard_id = t.shard_id),
                     t.priority_weight)
             FROM checked, shardcast.shards s
             WHERE t.task_id = checked.task_id AND checked.gone IS NULL AND s.shard_id = t.shard_id
             RETURNING t.task_id, s.relid, format('%I.%I', s.schema_name, s.table_name) AS qualified_name,
                       t.node, t.size_bytes, t.priority_weight_at_claim, t.prefetch, t.attempts,
                       t.lease_expires_at, t.shard_id),
         credited AS (
             INSERT INTO shardcast.copy_credits AS cc (task_id, shard_id, scans, tuples_read, blocks, valid_until)
             SELECT c.task_id, c.shard_id, 1,
                    greatest(r.reltuples, pg_catalog.pg_stat_get_live_tuples(r.oid), 0),
                    greatest(r.relpages, 0), c.lease_expires_at + $4::interval
             FROM claimed c JOIN pg_catalog.pg_class r ON r.oid = c.relid
             -- A task claimed again (its lease expired, or it failed) resumes the same
             -- copy more often than it starts another: one credit per task.
             ON CONFLICT (task_id) DO UPDATE SET
                 valid_until = greatest(cc.valid_until, excluded.valid_until))
    SELECT task_id, relid, qualified_name, node, size_bytes, priority_weight_at_claim, prefetch, attempts,
           lease_expires_at, false AS cancelled
    FROM claimed
    UNION ALL
    SELECT task_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, true FROM cancelled";

/// The claim statement for any node (see [`CLAIM_TEMPLATE`]), with
/// [`crate::catalog::tasks::gone::GONE_DETAIL`] in it.
pub static CLAIM_NEXT: LazyLock<&'static str> =
    LazyLock::new(|| leak(CLAIM_TEMPLATE.replace("{gone}", GONE_DETAIL)));

/// [`CLAIM_NEXT`]'s filter: any node (`$2` is NULL).
const ANY_NODE: &str = "AND $2::text IS NULL";
/// [`CLAIM_NEXT_FOR_NODE`]'s filter: the tasks of node `$2`.
const ONE_NODE: &str = "AND t.node = $2";

/// The filter that keeps Citus moves out of table claims; 0.1.0's catalog has no `kind` (nor
/// moves).
const COPY_KIND: &str = "AND t.kind = 'copy'";

/// [`CLAIM_NEXT`] for the tasks of one node (`$2`): the same statement but for its filter.
pub static CLAIM_NEXT_FOR_NODE: LazyLock<&'static str> =
    LazyLock::new(|| leak(CLAIM_NEXT.replace(ANY_NODE, ONE_NODE)));

/// [`CLAIM_NEXT`] and [`CLAIM_NEXT_FOR_NODE`] for 0.1.0's catalog (without [`COPY_KIND`]), which
/// a library newer than the catalog claims from until `ALTER EXTENSION shardcast UPDATE`.
static CLAIM_NEXT_0_1: LazyLock<&'static str> =
    LazyLock::new(|| leak(CLAIM_NEXT.replace(COPY_KIND, "")));
static CLAIM_NEXT_FOR_NODE_0_1: LazyLock<&'static str> =
    LazyLock::new(|| leak(CLAIM_NEXT_FOR_NODE.replace(COPY_KIND, "")));

/// A claimed task, as `claim_task()` returns it.
pub type Claimed = (
    i64,
    pg_sys::Oid,
    String,
    Option<String>,
    i64,
    i32,
    bool,
    i32,
    TimestampWithTimeZone,
);

/// Runs the claim statement once (for `node`'s tasks, or any node's): at most one row,
/// `(true, _)` when the task it met was cancelled because its shard is gone.
pub fn claim_next(
    worker: &str,
    node: Option<&str>,
    lease: pgrx::datum::Interval,
    credit_margin: pgrx::datum::Interval,
) -> Result<Vec<(bool, Claimed)>, pgrx::spi::Error> {
    // 0.2.0's catalog (task kinds) came with shardcast.replicas.
    let kinds = remembers_replicas()?;
    run_kept(
        match (node.is_some(), kinds) {
            (true, true) => *CLAIM_NEXT_FOR_NODE,
            (false, true) => *CLAIM_NEXT,
            (true, false) => *CLAIM_NEXT_FOR_NODE_0_1,
            (false, false) => *CLAIM_NEXT_0_1,
        },
        &[
            PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
            PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
            PgOid::BuiltIn(PgBuiltInOids::INTERVALOID),
            PgOid::BuiltIn(PgBuiltInOids::INTERVALOID),
        ],
        &[
            worker.into(),
            node.into(),
            lease.into(),
            credit_margin.into(),
        ],
        |table| {
            table
                .map(|row| {
                    Ok((
                        row.get::<bool>(10)?.unwrap_or_default(),
                        (
                            row.get::<i64>(1)?.unwrap_or_default(),
                            row.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid),
                            row.get::<String>(3)?.unwrap_or_default(),
                            row.get::<String>(4)?,
                            row.get::<i64>(5)?.unwrap_or_default(),
                            row.get::<i32>(6)?.unwrap_or_default(),
                            row.get::<bool>(7)?.unwrap_or_default(),
                            row.get::<i32>(8)?.unwrap_or_default(),
                            row.get::<TimestampWithTimeZone>(9)?
                                .unwrap_or_else(TimestampWithTimeZone::positive_infinity),
                        ),
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::sql_words::words;

    #[test]
    fn the_claim_for_one_node_differs_only_in_its_filter() {
        assert_eq!(CLAIM_NEXT.matches(ANY_NODE).count(), 1);
        assert!(!CLAIM_NEXT.contains(ONE_NODE));
        assert_eq!(CLAIM_NEXT_FOR_NODE.matches(ONE_NODE).count(), 1);
        assert!(!CLAIM_NEXT_FOR_NODE.contains(ANY_NODE));
        assert_eq!(CLAIM_NEXT_FOR_NODE.replace(ONE_NODE, ANY_NODE), *CLAIM_NEXT);
    }

    #[test]
    fn table_claims_never_take_citus_moves_and_0_1_0_claims_differ_only_there() {
        for (claim, old) in [
            (*CLAIM_NEXT, *CLAIM_NEXT_0_1),
            (*CLAIM_NEXT_FOR_NODE, *CLAIM_NEXT_FOR_NODE_0_1),
        ] {
            assert_eq!(claim.matches(COPY_KIND).count(), 1);
            assert!(!old.contains("t.kind"));
            assert_eq!(words(&claim.replace(COPY_KIND, "")), words(old));
        }
    }

    #[test]
    fn a_claim_cancels_what_a_replan_cancels() {
        assert!(!CLAIM_TEMPLATE.contains("the shard was dropped"));
        for claim in [*CLAIM_NEXT, *CLAIM_NEXT_FOR_NODE] {
            assert!(!claim.contains("{gone}"));
            assert!(words(claim).contains(&words(GONE_DETAIL)));
        }
    }
}
