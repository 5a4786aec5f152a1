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

/// An ERROR unless `name` (of a `what`: "node", "worker") is text a DBA can read back and type:
/// not blank, at most `max_bytes` bytes, without control characters, and without whitespace at
/// either end (`'n1 '` beside `'n1'` would be two nodes that look alike). Names are stored, shown
/// in views and repeated in messages, so their length is bounded.
fn check_name(what: &str, name: &str, max_bytes: usize, example: &str) -> Result<(), ErrorReport> {
    let hint = format!("Name the {what} with printable text, e.g. '{example}'.");
    // ASCII whitespace, as btrim() in claim_citus_move's check: both refuse the same names.
    let trimmed = name.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.is_empty() {
        return Err(invalid(format!("a {what} needs a name"), &hint));
    }
    if name.len() > max_bytes {
        return Err(invalid(
            format!(
                "a {what} name must be at most {max_bytes} bytes, not {}",
                name.len()
            ),
            &format!("Choose a shorter name, e.g. '{example}'."),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            format!("a {what} name must not hold control characters"),
            &hint,
        ));
    }
    if trimmed != name {
        return Err(invalid(
            format!("a {what} name must not begin or end with whitespace"),
            &hint,
        ));
    }
    Ok(())
}
