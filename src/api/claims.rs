//! Claims and leases: `claim_task` hands out the next task under the plan under a lease,
//! `heartbeat` extends it, `release_task` hands a task back, `complete_task` records the
//! outcome (and notifies). The statements are in `catalog::claims`.

// pgrx reads the returned columns from the written-out TableIterator type, so it cannot be aliased.
#![allow(clippy::type_complexity)]

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::nodes::{check_node, MAX_NODE_NAME_BYTES};
use super::{check_name, null_argument};
use crate::catalog::{claims, copy_credits, tasks};
use crate::error::{spi_error, sql_error, SqlResult};
use crate::{gucs, queue};

/// How much of a completion's detail its notification carries, in characters; the full detail
/// stays in `replication_tasks` and `completion_log`. With node names and shard names bounded,
/// this keeps every payload far below NOTIFY's 8000 bytes, whatever the characters.
pub const NOTIFY_DETAIL_CHARS: i32 = 500;

/// The longest worker name a claim takes, in bytes: a host name (up to 253) with a process id
/// fits. Names are stored in `claimed_by` and `completion_log` and repeated in messages.
pub const MAX_WORKER_NAME_BYTES: usize = 255;

/// Hands out the next task under the plan, atomically (FOR UPDATE SKIP LOCKED), under a lease;
/// no row when there is nothing to do. Declared by hand so that the shard comes back as a
/// regclass (an OID underneath) without a wrapper around every claim.
#[pg_extern(sql = false)]
fn claim_task(
    worker: Option<&str>,
    node: Option<&str>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(task_id, i64),
            name!(shard, pg_sys::Oid),
            name!(qualified_name, String),
            name!(node, Option<String>),
            name!(size_bytes, i64),
            name!(priority_weight, i32),
            name!(prefetch, bool),
            name!(attempts, i32),
            name!(lease_expires_at, TimestampWithTimeZone),
        ),
    >,
    ErrorReport,
> {
    let worker = worker.ok_or_else(|| null_argument("worker"))?;
    check_name("worker", worker, MAX_WORKER_NAME_BYTES, "driver-db1-4242")?;
    if let Some(node) = node {
        check_node(node)?;
    }
    claims::expire_leases(gucs::max_attempts()).map_err(spi_error)?;
    let lease = pgrx::datum::Interval::from_micros(gucs::claim_lease().as_micros() as i64);
    // Only the task table in the locking scan, walked in the dispatch index's order, so that a
    // claim reads a handful of rows however long the queue is. A task whose shard is gone is
    // cancelled where the claim meets it, and the claim goes on to the next: each such task is
    // met once.
    loop {
        pg_sys::check_for_interrupts!();
        let rows =
            claims::claim_next(worker, node, lease, copy_credits::margin()).map_err(spi_error)?;
        if rows.iter().any(|(cancelled, _)| *cancelled) {
            continue;
        }
        return Ok(TableIterator::new(rows.into_iter().map(|(_, row)| row)));
    }
}

fn unknown_task(task_id: i64) -> pgrx::pg_sys::panic::ErrorReport {
    sql_error(
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("unknown task {task_id}"),
        "See shardcast.replication_tasks for the tasks that exist.",
    )
}

/// Whether `lock_claimed` accepts a task whose lease has run out but that no claim has
/// returned to the queue yet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expired {
    Refuse,
    Accept,
}

/// Locks a claimed task for the rest of the transaction and returns its claimer; refuses a task
/// that is unknown, not claimed, (when `worker` is given) claimed by someone else, or (with
/// `Expired::Refuse`) whose lease ran out, whether or not a claim has noticed it yet.
fn lock_claimed(task_id: i64, worker: Option<&str>, expired: Expired) -> SqlResult<Option<String>> {
    let claims::Locked {
        state,
        claimed_by,
        lease_over,
        lease_end,
    } = claims::lock_task(task_id)
        .map_err(spi_error)?
        .ok_or_else(|| unknown_task(task_id))?;
    if state != "claimed" {
        return Err(not_claimed(task_id, &state));
    }
    if lease_over && expired == Expired::Refuse {
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("the lease of task {task_id} has expired"),
            "Heartbeat more often than shardcast.claim_lease; the task goes back to the queue \
             at the next claim, and whoever claims it then copies it.",
        )
        .set_detail(format!("The lease ended at {lease_end}.")));
    }
    if let (Some(worker), Some(owner)) = (worker, claimed_by.as_deref()) {
        if worker != owner {
            return Err(sql_error(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("task {task_id} is claimed by \"{owner}\", not \"{worker}\""),
                "Its lease may have expired and the task been claimed again: leave it to its new claimer.",
            ));
        }
    }
    Ok(claimed_by)
}

fn not_claimed(task_id: i64, state: &str) -> pgrx::pg_sys::panic::ErrorReport {
    sql_error(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!("task {task_id} is {state}, not claimed"),
        "Only a claimed task can be heartbeaten, completed or released; a task whose lease \
         expired is back in the queue.",
    )
}

/// Extends a claimed task's lease; returns the new expiry.
#[pg_extern(sql = false)]
fn heartbeat(
    task_id: Option<i64>,
    worker: default!(Option<&str>, "NULL"),
) -> SqlResult<TimestampWithTimeZone> {
    let task_id = task_id.ok_or_else(|| null_argument("task_id"))?;
    lock_claimed(task_id, worker, Expired::Refuse)?;
    let lease = pgrx::datum::Interval::from_micros(gucs::claim_lease().as_micros() as i64);
    claims::renew_lease(task_id, lease, copy_credits::margin())
        .map_err(spi_error)?
        .ok_or_else(|| unknown_task(task_id))
}

/// Returns a claimed task to the queue without counting an attempt: for a replication script
/// that stops (Ctrl-C) before it could finish, so that the task need not wait for its lease.
#[pg_extern(sql = false)]
fn release_task(task_id: Option<i64>, worker: default!(Option<&str>, "NULL")) -> SqlResult<()> {
    let task_id = task_id.ok_or_else(|| null_argument("task_id"))?;
    // A task whose lease ran out may still be handed back by its claimer while nobody else has
    // claimed it: it goes back to the queue as the next claim would put it there.
    lock_claimed(task_id, worker, Expired::Accept)?;
    claims::release(task_id, worker).map_err(spi_error)
}

/// Records the outcome of a claimed task, logs it and sends NOTIFY shardcast_completion. A
/// failed task goes back to the queue until `shardcast.max_attempts`; a done one is remembered
/// as a replica of its shard on its node. `copied => false` says that the table was already in
/// sync there and nothing was copied: the prioritization report leaves such completions out.
/// Declared as `shardcast.complete_task(bigint, boolean, text, text, boolean)`.
#[pg_extern(sql = false)]
fn complete_task_copied(
    task_id: Option<i64>,
    succeeded: default!(Option<bool>, true),
    detail: default!(Option<&str>, "NULL"),
    worker: default!(Option<&str>, "NULL"),
    copied: default!(Option<bool>, true),
) -> SqlResult<()> {
    let copied = copied.ok_or_else(|| null_argument("copied"))?;
    complete(task_id, succeeded, detail, worker, copied)
}

/// 0.1.0's `shardcast.complete_task(bigint, boolean, text, text)`, which this library serves
/// between its installation and `ALTER EXTENSION shardcast UPDATE`: a completion that copied.
#[pg_extern(sql = false)]
fn complete_task(
    task_id: Option<i64>,
    succeeded: default!(Option<bool>, true),
    detail: default!(Option<&str>, "NULL"),
    worker: default!(Option<&str>, "NULL"),
) -> SqlResult<()> {
    complete(task_id, succeeded, detail, worker, true)
}

fn complete(
    task_id: Option<i64>,
    succeeded: Option<bool>,
    detail: Option<&str>,
    worker: Option<&str>,
    copied: bool,
) -> SqlResult<()> {
    let task_id = task_id.ok_or_else(|| null_argument("task_id"))?;
    let succeeded = succeeded.ok_or_else(|| null_argument("succeeded"))?;
    if !succeeded {
        // A failure replans, which takes the queue lock: take it before the task's row, in the
        // order cancel_task and retry_task take them, or the two deadlock.
        tasks::lock_queue().map_err(spi_error)?;
    }
    let claimed_by = lock_claimed(task_id, worker, Expired::Refuse)?;
    claims::complete(&claims::Completion {
        task_id,
        succeeded,
        copied,
        detail,
        max_attempts: gucs::max_attempts(),
        worker: claimed_by.as_deref().or(worker),
        credit_margin: copy_credits::margin(),
        notify_detail_chars: NOTIFY_DETAIL_CHARS,
        notify_node_bytes: MAX_NODE_NAME_BYTES as i32,
    })
    .map_err(spi_error)?;
    if !succeeded {
        queue::replan().map_err(spi_error)?;
    }
    Ok(())
}
