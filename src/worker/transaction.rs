//! How the worker runs its work: each stage in a transaction of its own, from which no error,
//! PostgreSQL ERROR or panic escapes to kill the worker; and what it shows in
//! `pg_stat_activity`.

use std::ffi::CString;
use std::panic::AssertUnwindSafe;

use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

/// Runs `body` in a transaction of its own (with an active snapshot if `snapshot`) and commits
/// it if `body` succeeds. An error returned by `body`, a PostgreSQL ERROR or a panic inside it
/// rolls the transaction back and comes back as a message: nothing escapes to kill the worker.
pub fn run_in_transaction<R, E: std::fmt::Display>(
    snapshot: bool,
    body: impl FnOnce() -> Result<R, E> + std::panic::UnwindSafe,
) -> Result<R, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        if snapshot {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        }
    }
    PgTryBuilder::new(AssertUnwindSafe(|| match body() {
        Ok(value) => {
            unsafe {
                if snapshot {
                    pg_sys::PopActiveSnapshot();
                }
                pg_sys::CommitTransactionCommand();
            }
            Ok(value)
        }
        Err(err) => {
            unsafe { pg_sys::AbortCurrentTransaction() };
            Err(err.to_string())
        }
    }))
    .catch_others(|caught| {
        unsafe { pg_sys::AbortCurrentTransaction() };
        Err(describe(&caught))
    })
    .execute()
}

/// [`run_in_transaction`] with a snapshot, for statements; then flushes the worker's statistics:
/// its writes must reach the statistics system (autovacuum of the history tables depends on
/// it) and never linger to be counted in a later, unrelated interval.
pub fn in_transaction<R, E: std::fmt::Display>(
    body: impl FnOnce() -> Result<R, E> + std::panic::UnwindSafe,
) -> Result<R, String> {
    let outcome = run_in_transaction(true, body);
    unsafe { pg_sys::pgstat_report_stat(true) };
    outcome
}

fn describe(caught: &CaughtError) -> String {
    match caught {
        CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) => {
            report.message().to_owned()
        }
        CaughtError::RustPanic { ereport, .. } => format!("internal error: {}", ereport.message()),
    }
}

pub fn report_activity(what: &str) {
    let text = CString::new(format!("shardcast: {what}")).unwrap_or_default();
    let state = if what == "idle" {
        pg_sys::BackendState::STATE_IDLE
    } else {
        pg_sys::BackendState::STATE_RUNNING
    };
    unsafe { pg_sys::pgstat_report_activity(state, text.as_ptr()) };
}
