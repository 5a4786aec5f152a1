//! The statements of claims and leases: claiming the next task, expiring leases, locking a
//! claimed task, heartbeats, releases and completions. All but the release run through their
//! kept plans ([`super::kept`]): they run once per task copied, or more.

use std::sync::LazyLock;

use pgrx::prelude::*;

use super::kept::run_kept;

/// The claim statement for any node. Written out once per filter (see [`CLAIM_NEXT_FOR_NODE`])
/// so that each kept plan is generic (planned once per session) and walks its own index in
/// dispatch order: `replication_tasks_dispatch` for any node, `replication_tasks_node_dispatch`
/// for one. Tasks for a disabled node, or for a node at its `max_concurrent`, are passed over.
/// The task it takes is claimed if its shard is still its own relation, and cancelled otherwise
/// (the `gone` column, as in [`super::tasks::gone::CANCEL_GONE`]; the last column says which), so that
/// a dropped table is never copied, nor another table that took its name. A claim grants its
/// task a copy credit (`credited`): see [`super::copy_credits`]. Table copies only (`kind =
/// 'copy'`): Citus moves have their own claim (`shardcast.claim_citus_move`, sql/citus.sql).
pub const CLAIM_NEXT: &str = "
    WITH next AS (
             SELECT t.task_id, t.shard_id
             FROM shardcast.replication_tasks t
             WHERE t.state = 'queued'
               AND t.kind = 'copy'
               AND $2::text IS NULL
               AND (t.node IS NULL OR (SELECT count(*) FROM shardcast.replication_tasks c
                                        WHERE c.state = 'claimed' AND c.node = t.node)
                                      < (SELECT max_concurrent FROM shardcast.nodes n
                                         WHERE n.node = t.node AND n.enabled))
             ORDER BY t.dispatch_rank, t.task_id
             LIMIT 1
             FOR UPDATE SKIP LOCKED),
         checked AS (
             SELECT next.task_id,
                    (SELECT CASE WHEN to_jsonb(s) ->> 'citus_shard_id' IS NOT NULL
                                      THEN CASE WHEN s.retired_at IS NOT NULL THEN 'the Citus shard was dropped or split' END
                                 WHEN c.oid IS NULL THEN 'the shard was dropped'
                                 WHEN c.relname <> s.table_name OR n.nspname <> s.schema_name
                                      THEN 'the shard was renamed or moved: it is a new shard now'
                                 WHEN s.retired_at IS NOT NULL THEN 'the shard was retired'
                            END
                     FROM (SELECT) AS one
                     LEFT JOIN pg_catalog.pg_class c ON c.oid = s.relid
                     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace) AS gone
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

/// [`CLAIM_NEXT`] for the tasks of one node (`$2`): the same statement but for its filter.
pub const CLAIM_NEXT_FOR_NODE: &str = "
    WITH next AS (
             SELECT t.task_id, t.shard_id
             FROM shardcast.replication_tasks t
             WHERE t.state = 'queued'
               AND t.kind = 'copy'
               AND t.node = $2
               AND (t.node IS NULL OR (SELECT count(*) FROM shardcast.replication_tasks c
                                        WHERE c.state = 'claimed' AND c.node = t.node)
                                      < (SELECT max_concurrent FROM shardcast.nodes n
                                         WHERE n.node = t.node AND n.enabled))
             ORDER BY t.dispatch_rank, t.task_id
             LIMIT 1
             FOR UPDATE SKIP LOCKED),
         checked AS (
             SELECT next.task_id,
                    (SELECT CASE WHEN to_jsonb(s) ->> 'citus_shard_id' IS NOT NULL
                                      THEN CASE WHEN s.retired_at IS NOT NULL THEN 'the Citus shard was dropped or split' END
                                 WHEN c.oid IS NULL THEN 'the shard was dropped'
                                 WHEN c.relname <> s.table_name OR n.nspname <> s.schema_name
                                      THEN 'the shard was renamed or moved: it is a new shard now'
                                 WHEN s.retired_at IS NOT NULL THEN 'the shard was retired'
                            END
                     FROM (SELECT) AS one
                     LEFT JOIN pg_catalog.pg_class c ON c.oid = s.relid
                     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace) AS gone
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

/// The filter that keeps Citus moves out of table claims; 0.1.0's catalog has no `kind` (nor
/// moves).
const COPY_KIND: &str = "AND t.kind = 'copy'";

/// [`CLAIM_NEXT`] and [`CLAIM_NEXT_FOR_NODE`] for 0.1.0's catalog (without [`COPY_KIND`]), which
/// a library newer than the catalog claims from until `ALTER EXTENSION shardcast UPDATE`. Kept
/// plans are keyed by `&'static str`: each is made once per process.
static CLAIM_NEXT_0_1: LazyLock<&'static str> =
    LazyLock::new(|| Box::leak(CLAIM_NEXT.replace(COPY_KIND, "").into_boxed_str()));
static CLAIM_NEXT_FOR_NODE_0_1: LazyLock<&'static str> =
    LazyLock::new(|| Box::leak(CLAIM_NEXT_FOR_NODE.replace(COPY_KIND, "").into_boxed_str()));

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
    let kinds = super::compat_0_1::remembers_replicas()?;
    run_kept(
        match (node.is_some(), kinds) {
            (true, true) => CLAIM_NEXT_FOR_NODE,
            (false, true) => CLAIM_NEXT,
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

fn current_time() -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(unsafe { pg_sys::GetCurrentTimestamp() })
        .unwrap_or_else(|_| TimestampWithTimeZone::positive_infinity())
}

/// Returns tasks whose lease expired to the queue (or marks them failed after `max_attempts`).
/// Returns how many.
pub fn expire_leases(max_attempts: i32) -> Result<i64, pgrx::spi::Error> {
    run_kept(
        "WITH expired AS (
             UPDATE shardcast.replication_tasks
             SET attempts = attempts + 1,
                 state = CASE WHEN attempts + 1 >= $1 THEN 'failed' ELSE 'queued' END,
                 finished_at = CASE WHEN attempts + 1 >= $1 THEN now() END,
                 detail = 'lease expired (claimed by ' || coalesce(claimed_by, '?') || ')',
                 claimed_by = NULL, lease_expires_at = NULL
             WHERE state = 'claimed' AND lease_expires_at < $2
               -- Usually nothing has expired: the earliest lease, one index probe, says so
               -- before any claimed task is looked at.
               AND (SELECT min(c.lease_expires_at) FROM shardcast.replication_tasks c
                    WHERE c.state = 'claimed') < $2
             RETURNING 1)
         SELECT count(*) FROM expired",
        &[
            PgOid::BuiltIn(PgBuiltInOids::INT4OID),
            PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZOID),
        ],
        // A parameter, not clock_timestamp() (volatile), so that the lease index is searched
        // for the expired entries instead of read whole.
        &[max_attempts.into(), current_time().into()],
        |table| Ok(table.first().get_one::<i64>()?.unwrap_or_default()),
    )
}

/// A task locked for the rest of the transaction, as it was when locked.
pub struct Locked {
    pub state: String,
    pub claimed_by: Option<String>,
    /// Whether its lease has ended, by the clock after the lock was taken.
    pub lease_over: bool,
    pub lease_end: String,
}

/// Locks a task for the rest of the transaction; None when there is no such task. One row
/// read under the lock: FOR UPDATE returns the version it locked, so the state, the claimer and
/// the lease always belong together, even when a new claim committed while we waited. The lease
/// is compared with the clock now, after the wait.
pub fn lock_task(task_id: i64) -> Result<Option<Locked>, pgrx::spi::Error> {
    run_kept(
        "SELECT state, claimed_by, lease_expires_at < clock_timestamp(), lease_expires_at::text
         FROM shardcast.replication_tasks WHERE task_id = $1 FOR UPDATE",
        &[PgOid::BuiltIn(PgBuiltInOids::INT8OID)],
        &[task_id.into()],
        |mut table| match table.next() {
            Some(row) => Ok(Some(Locked {
                state: row.get::<String>(1)?.unwrap_or_default(),
                claimed_by: row.get::<String>(2)?,
                lease_over: row.get::<bool>(3)?.unwrap_or(false),
                lease_end: row.get::<String>(4)?.unwrap_or_default(),
            })),
            None => Ok(None),
        },
    )
}

/// Extends a claimed task's lease by `lease` from now, and its copy credit with it; returns
/// the new expiry (None: no such task).
pub fn renew_lease(
    task_id: i64,
    lease: pgrx::datum::Interval,
    credit_margin: pgrx::datum::Interval,
) -> Result<Option<TimestampWithTimeZone>, pgrx::spi::Error> {
    run_kept(
        "WITH renewed AS (
             UPDATE shardcast.replication_tasks SET lease_expires_at = clock_timestamp() + $2::interval
             WHERE task_id = $1 RETURNING task_id, lease_expires_at
         ), credit AS (
             UPDATE shardcast.copy_credits cc SET valid_until = greatest(cc.valid_until, r.lease_expires_at + $3)
             FROM renewed r WHERE cc.task_id = r.task_id)
         SELECT lease_expires_at FROM renewed",
        &[
            PgOid::BuiltIn(PgBuiltInOids::INT8OID),
            PgOid::BuiltIn(PgBuiltInOids::INTERVALOID),
            PgOid::BuiltIn(PgBuiltInOids::INTERVALOID),
        ],
        &[task_id.into(), lease.into(), credit_margin.into()],
        |table| table.first().get_one::<TimestampWithTimeZone>(),
    )
}

/// Puts a claimed task back in the queue without counting an attempt.
pub fn release(task_id: i64, worker: Option<&str>) -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.replication_tasks
         SET state = 'queued', claimed_by = NULL, claimed_at = NULL, lease_expires_at = NULL,
             detail = 'released by ' || coalesce($2, claimed_by, '?')
         WHERE task_id = $1",
        &[task_id.into(), worker.into()],
    )
}

/// Records a completion (see [`complete`]).
pub const COMPLETE: &str = "WITH done AS (
             UPDATE shardcast.replication_tasks t
             SET attempts = CASE WHEN $2 THEN t.attempts ELSE t.attempts + 1 END,
                 state = CASE WHEN $2 THEN 'done'
                              WHEN t.attempts + 1 >= $4 THEN 'failed' ELSE 'queued' END,
                 finished_at = CASE WHEN $2 OR t.attempts + 1 >= $4 THEN now() END,
                 detail = $3,
                 priority_weight_at_completion = coalesce(
                     (SELECT priority_weight FROM shardcast.scores sc WHERE sc.shard_id = t.shard_id),
                     t.priority_weight),
                 lease_expires_at = NULL,
                 claimed_by = CASE WHEN $2 THEN t.claimed_by END,
                 copied = CASE WHEN $2 THEN $9 END
             WHERE t.task_id = $1
             RETURNING t.*
         ), replicated AS (
             -- What is on the node now: enqueueing does not copy it there again.
             INSERT INTO shardcast.replicas AS r (shard_id, node, task_id, copied_at)
             SELECT d.shard_id, d.node, d.task_id, now() FROM done d
             WHERE $2 AND d.node IS NOT NULL
             ON CONFLICT (shard_id, node) DO UPDATE SET task_id = excluded.task_id, copied_at = excluded.copied_at
         ), credit AS (
             UPDATE shardcast.copy_credits cc SET valid_until = greatest(cc.valid_until, now() + $6)
             FROM done d WHERE cc.task_id = d.task_id
         ), logged AS (
             INSERT INTO shardcast.completion_log (task_id, shard_id, schema_name, table_name, node, worker,
                     succeeded, attempts, priority_weight, size_bytes, claimed_at, finished_at, duration, detail,
                     copied)
             -- A Citus move is logged (and announced) at its target node.
             SELECT d.task_id, d.shard_id, s.schema_name, s.table_name, coalesce(d.node, d.citus_target), $5, $2,
                    d.attempts + CASE WHEN $2 THEN 1 ELSE 0 END,
                    d.priority_weight_at_completion, d.size_bytes, d.claimed_at, now(), now() - d.claimed_at, $3,
                    d.copied
             FROM done d JOIN shardcast.shards s USING (shard_id)
             RETURNING *
         )
         -- NOTIFY refuses payloads of 8000 bytes or more: the detail is cut to $7 characters
         -- (the full detail is in the tables) and the node name to $8, so that a completion
         -- is always recorded and announced.
         SELECT pg_catalog.pg_notify('shardcast_completion', json_build_object(
                    'task', task_id, 'shard', format('%I.%I', schema_name, table_name),
                    'node', left(node, $8), 'priority_weight', priority_weight, 'size', size_bytes,
                    'duration', extract(epoch FROM duration), 'succeeded', succeeded,
                    'attempts', attempts, 'copied', copied,
                    'detail', CASE WHEN length(detail) > $7 THEN left(detail, $7) || '…' ELSE detail END)::text)
         FROM logged";

/// [`COMPLETE`] on 0.1.0's catalog, which has no `shardcast.replicas` nor `copied` columns: the
/// statement a library newer than the catalog runs between its installation and `ALTER
/// EXTENSION shardcast UPDATE` (`copied`, `$9`, is not used).
pub const COMPLETE_0_1: &str = "WITH done AS (
             UPDATE shardcast.replication_tasks t
             SET attempts = CASE WHEN $2 THEN t.attempts ELSE t.attempts + 1 END,
                 state = CASE WHEN $2 THEN 'done'
                              WHEN t.attempts + 1 >= $4 THEN 'failed' ELSE 'queued' END,
                 finished_at = CASE WHEN $2 OR t.attempts + 1 >= $4 THEN now() END,
                 detail = $3,
                 priority_weight_at_completion = coalesce(
                     (SELECT priority_weight FROM shardcast.scores sc WHERE sc.shard_id = t.shard_id),
                     t.priority_weight),
                 lease_expires_at = NULL,
                 claimed_by = CASE WHEN $2 THEN t.claimed_by END
             WHERE t.task_id = $1
             RETURNING t.*
         ), credit AS (
             UPDATE shardcast.copy_credits cc SET valid_until = greatest(cc.valid_until, now() + $6)
             FROM done d WHERE cc.task_id = d.task_id
         ), logged AS (
             INSERT INTO shardcast.completion_log (task_id, shard_id, schema_name, table_name, node, worker,
                     succeeded, attempts, priority_weight, size_bytes, claimed_at, finished_at, duration, detail)
             SELECT d.task_id, d.shard_id, s.schema_name, s.table_name, d.node, $5, $2,
                    d.attempts + CASE WHEN $2 THEN 1 ELSE 0 END,
                    d.priority_weight_at_completion, d.size_bytes, d.claimed_at, now(), now() - d.claimed_at, $3
             FROM done d JOIN shardcast.shards s USING (shard_id)
             RETURNING *
         )
         -- NOTIFY refuses payloads of 8000 bytes or more: the detail is cut to $7 characters
         -- (the full detail is in the tables) and the node name to $8, so that a completion
         -- is always recorded and announced.
         SELECT pg_catalog.pg_notify('shardcast_completion', json_build_object(
                    'task', task_id, 'shard', format('%I.%I', schema_name, table_name),
                    'node', left(node, $8), 'priority_weight', priority_weight, 'size', size_bytes,
                    'duration', extract(epoch FROM duration), 'succeeded', succeeded,
                    'attempts', attempts,
                    'detail', CASE WHEN length(detail) > $7 THEN left(detail, $7) || '…' ELSE detail END)::text)
         FROM logged";

/// What a completion records.
pub struct Completion<'a> {
    pub task_id: i64,
    pub succeeded: bool,
    /// For a success: whether data was copied (false: the table was already in sync).
    pub copied: bool,
    pub detail: Option<&'a str>,
    pub max_attempts: i32,
    /// Who is logged as having copied it.
    pub worker: Option<&'a str>,
    pub credit_margin: pgrx::datum::Interval,
    /// How much of the detail, in characters, and of the node name, in bytes, the notification
    /// carries.
    pub notify_detail_chars: i32,
    pub notify_node_bytes: i32,
}

/// Records the outcome of a claimed task (a failure goes back to the queue until
/// `max_attempts`; a success is remembered in `shardcast.replicas`), keeps its copy credit a margin longer, logs it in `completion_log` and
/// sends NOTIFY shardcast_completion.
pub fn complete(c: &Completion<'_>) -> Result<(), pgrx::spi::Error> {
    let statement = if super::compat_0_1::remembers_replicas()? {
        COMPLETE
    } else {
        COMPLETE_0_1
    };
    run_kept(
        statement,
        &[
            PgOid::BuiltIn(PgBuiltInOids::INT8OID),
            PgOid::BuiltIn(PgBuiltInOids::BOOLOID),
            PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
            PgOid::BuiltIn(PgBuiltInOids::INT4OID),
            PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
            PgOid::BuiltIn(PgBuiltInOids::INTERVALOID),
            PgOid::BuiltIn(PgBuiltInOids::INT4OID),
            PgOid::BuiltIn(PgBuiltInOids::INT4OID),
            PgOid::BuiltIn(PgBuiltInOids::BOOLOID),
        ],
        &[
            c.task_id.into(),
            c.succeeded.into(),
            c.detail.into(),
            c.max_attempts.into(),
            c.worker.into(),
            c.credit_margin.into(),
            c.notify_detail_chars.into(),
            c.notify_node_bytes.into(),
            c.copied.into(),
        ],
        |_| Ok(()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::sql_words::words;

    #[test]
    fn the_claim_statements_differ_only_in_their_filter() {
        assert_eq!(
            words(CLAIM_NEXT).replace("AND $2::text IS NULL AND", "AND t.node = $2 AND"),
            words(CLAIM_NEXT_FOR_NODE)
        );
    }

    #[test]
    fn table_claims_never_take_citus_moves_and_0_1_0_claims_differ_only_there() {
        for (claim, old) in [
            (CLAIM_NEXT, *CLAIM_NEXT_0_1),
            (CLAIM_NEXT_FOR_NODE, *CLAIM_NEXT_FOR_NODE_0_1),
        ] {
            assert_eq!(claim.matches(COPY_KIND).count(), 1);
            assert!(!old.contains("t.kind"));
            assert_eq!(words(&claim.replace(COPY_KIND, "")), words(old));
        }
    }

    #[test]
    fn a_claim_cancels_what_a_replan_cancels() {
        for claim in [CLAIM_NEXT, CLAIM_NEXT_FOR_NODE] {
            assert!(words(claim).contains(&words(crate::catalog::tasks::gone::GONE_DETAIL)));
        }
    }
}
