//! One way to raise errors from SQL functions: an `ErrorReport` with its SQLSTATE and a hint.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

pub type SqlResult<T> = Result<T, ErrorReport>;

#[track_caller]
pub fn sql_error(
    code: PgSqlErrorCode,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> ErrorReport {
    ErrorReport::new(code, message.into(), "shardcast").set_hint(hint)
}

/// A NULL where a value is required (SQL functions are not STRICT, so that NULL is an error
/// rather than a silent NULL result).
#[track_caller]
pub fn null_argument(name: &str, hint: &str) -> ErrorReport {
    sql_error(
        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        format!("{name} must not be NULL"),
        hint,
    )
}

/// Any SPI failure inside a SQL function is an internal error: the input was already checked.
pub fn spi_error(err: pgrx::spi::Error) -> ErrorReport {
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("shardcast: catalog access failed: {err}"),
        "shardcast",
    )
    .set_hint("This is a bug in shardcast: please report it with the statement and the server log.")
}

/// A float as PostgreSQL spells it in messages (`Infinity`, `-Infinity`, `NaN`), not Rust.
pub fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        v.to_string()
    }
}
