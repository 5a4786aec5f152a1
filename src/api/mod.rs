//! The SQL functions, one file per concept. Each is thin: it checks its arguments, calls the
//! catalog (`crate::catalog`), the queue (`crate::queue`) or the core, and maps errors to
//! SQLSTATEs with hints (`crate::error`).

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

use crate::error::{self, sql_error};

mod citus;
mod claims;
mod classes;
mod enqueue;
mod forecasts;
mod history;
mod lifecycle;
mod manifest;
mod nodes;
mod queue;
mod report;
mod sparkline;

/// A NULL where a replication function needs a value.
fn null_argument(name: &str) -> ErrorReport {
    error::null_argument(name, "Pass a value for every required argument.")
}

fn invalid(message: String, hint: &str) -> ErrorReport {
    sql_error(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        hint,
    )
}
