//! Leases of claimed tasks: expiring them, locking a claimed task to check its lease, renewing
//! it (heartbeats) and releasing a task. All but the release run through their kept plans
//! ([`crate::catalog::kept`]): they run once per task copied, or more.

use pgrx::prelude::*;

use crate::catalog::kept::run_kept;

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
