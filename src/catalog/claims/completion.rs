//! Completions: the outcome of a claimed task recorded (the task, `shardcast.replicas`, its copy
//! credit, `completion_log`) and announced (NOTIFY shardcast_completion), through its kept plan
//! ([`crate::catalog::kept`]).

use pgrx::prelude::*;

use crate::catalog::compat_0_1::remembers_replicas;
use crate::catalog::kept::run_kept;

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
    let statement = if remembers_replicas()? {
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

    /// `text` with `from` (found exactly once) replaced by `to`.
    fn once(text: &str, from: &str, to: &str) -> String {
        assert_eq!(text.matches(from).count(), 1, "{from}");
        text.replacen(from, to, 1)
    }

    #[test]
    fn the_0_1_0_completion_differs_only_in_what_0_1_0_lacks() {
        let mut old = words(COMPLETE);
        // No shardcast.replicas.
        let replicated = old.find("), replicated AS (").unwrap();
        let credit = old.find("), credit AS (").unwrap();
        old.replace_range(replicated..credit, "");
        // No replication_tasks.copied nor completion_log.copied.
        old = once(&old, ", copied = CASE WHEN $2 THEN $9 END", "");
        old = once(&old, ", detail, copied)", ", detail)");
        old = once(&old, ", $3, d.copied FROM", ", $3 FROM");
        old = once(
            &old,
            "'attempts', attempts, 'copied', copied,",
            "'attempts', attempts,",
        );
        // No Citus moves.
        old = once(
            &old,
            "-- A Citus move is logged (and announced) at its target node. ",
            "",
        );
        old = once(&old, "coalesce(d.node, d.citus_target)", "d.node");
        assert_eq!(old, words(COMPLETE_0_1));
    }
}
