//! What an operator undoes: `cancel_task` (a queued task), `retry_task` (a failed or cancelled
//! one), `forget_replica` (a copy that enqueueing would otherwise not make again). Node
//! lifecycle (`alter_node`, `remove_node`) is in `api::nodes`.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::nodes::check_node;
use super::null_argument;
use crate::catalog::{claims, shards, tasks};
use crate::error::{spi_error, sql_error, SqlResult};
use crate::queue;

fn unknown_task(task_id: i64) -> ErrorReport {
    sql_error(
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("unknown task {task_id}"),
        "See shardcast.replication_tasks for the tasks that exist.",
    )
}

fn not_in_state(task_id: i64, message: String, hint: &str) -> ErrorReport {
    sql_error(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        message,
        hint,
    )
    .set_detail(format!(
        "See SELECT * FROM shardcast.replication_tasks WHERE task_id = {task_id}."
    ))
}

/// Cancels a queued task: it is never handed out. A claimed task is refused (release it or let
/// it finish first); a finished one (done, failed, cancelled) has nothing to cancel.
#[pg_extern(sql = false)]
fn cancel_task(task_id: Option<i64>) -> SqlResult<()> {
    let task_id = task_id.ok_or_else(|| null_argument("task_id"))?;
    tasks::lock_queue().map_err(spi_error)?;
    let locked = claims::lock_task(task_id)
        .map_err(spi_error)?
        .ok_or_else(|| unknown_task(task_id))?;
    match locked.state.as_str() {
        "queued" => {}
        "claimed" => {
            return Err(not_in_state(
                task_id,
                format!(
                    "task {task_id} is claimed by \"{}\": it cannot be cancelled while it copies",
                    locked.claimed_by.as_deref().unwrap_or("?")
                ),
                "Let it finish, or have its claimer hand it back with shardcast.release_task(task_id), \
                 then cancel it.",
            ))
        }
        state => {
            return Err(not_in_state(
                task_id,
                format!("task {task_id} is {state}: only a queued task can be cancelled"),
                "A done, failed or cancelled task is finished; shardcast.retry_task(task_id) \
                 queues a failed or cancelled one again.",
            ))
        }
    }
    tasks::cancel(task_id).map_err(spi_error)?;
    queue::replan().map_err(spi_error)?;
    Ok(())
}

/// Queues a failed or cancelled task again, its attempts reset, as if just enqueued (a task
/// without a requested node goes back to node assignment). Refused for a queued, claimed or done
/// task, a task whose shard is gone, and while another open task copies the shard to that node.
#[pg_extern(sql = false)]
fn retry_task(task_id: Option<i64>) -> SqlResult<()> {
    let task_id = task_id.ok_or_else(|| null_argument("task_id"))?;
    tasks::lock_queue().map_err(spi_error)?;
    let locked = claims::lock_task(task_id)
        .map_err(spi_error)?
        .ok_or_else(|| unknown_task(task_id))?;
    match locked.state.as_str() {
        "failed" | "cancelled" => {}
        "done" => return Err(not_in_state(
            task_id,
            format!("task {task_id} is done: its shard was copied"),
            "To copy it there again, forget the copy with shardcast.forget_replica(shard, node), \
                 then enqueue it.",
        )),
        state => {
            return Err(not_in_state(
                task_id,
                format!(
                    "task {task_id} is {state}: only a failed or cancelled task can be retried"
                ),
                "It is open already: it will be (or is being) copied.",
            ))
        }
    }
    let retry = tasks::retry_check(task_id)
        .map_err(spi_error)?
        .ok_or_else(|| unknown_task(task_id))?;
    if let Some(gone) = retry.gone {
        return Err(not_in_state(
            task_id,
            format!("task {task_id} cannot be retried: {gone}"),
            "Enqueue the table that holds the data now with shardcast.enqueue(shard, node).",
        ));
    }
    if let Some(open) = retry.open_task {
        return Err(not_in_state(
            task_id,
            format!(
                "task {open} already copies {} to {}",
                retry.shard,
                retry.requested_node.as_deref().map_or(
                    "a node of node assignment's choice".to_string(),
                    |d| format!("node \"{d}\"")
                )
            ),
            "One shard, one node, one open task: wait for that task, or cancel it first.",
        ));
    }
    if let Some(node) = retry.copied_to {
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            format!("{} is already copied to node \"{node}\"", retry.shard),
            "A retry would copy it again. To do that on purpose, forget the copy with \
             shardcast.forget_replica(shard, node) first.",
        ));
    }
    tasks::requeue(task_id).map_err(spi_error)?;
    queue::replan().map_err(spi_error)?;
    Ok(())
}

/// Forgets that `shard` was copied to `node`, so that the next enqueue copies it there again;
/// returns whether such a copy was remembered. Declared by hand: the shard is a regclass read
/// as an OID (an OID that names no relation is a clean error).
#[pg_extern(sql = false)]
fn forget_replica(shard: Option<pg_sys::Oid>, node: Option<&str>) -> SqlResult<bool> {
    let shard = shards::table(shard.ok_or_else(|| null_argument("shard"))?, false)?;
    let node = node.ok_or_else(|| null_argument("node"))?;
    check_node(node)?;
    tasks::forget_replica(shard, node).map_err(spi_error)
}
