//! `shardcast.worker_state`: the worker's health, as `shardcast.worker_status` shows it; and
//! which extension, of which version, the worker finds in its database.

use std::time::Duration;

use pgrx::prelude::*;

/// The extension version whose catalog this library reads and writes.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The OID of the extension in this database; None while it is not installed.
pub fn extension() -> Result<Option<pg_sys::Oid>, pgrx::spi::Error> {
    Spi::get_one::<pg_sys::Oid>(
        "SELECT (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'shardcast')",
    )
}

/// The version of the extension with that OID.
pub fn extension_version(extension: pg_sys::Oid) -> Result<String, pgrx::spi::Error> {
    Ok(Spi::get_one_with_args::<String>(
        // A scalar subquery: one row (NULL) when the extension was dropped meanwhile.
        "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE oid = $1)",
        &[extension.into()],
    )?
    .unwrap_or_default())
}

/// Records the worker's state, and that this process is the worker.
pub fn set_state(state: &str) -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.worker_state SET pid = $1, state = $2",
        &[unsafe { pg_sys::MyProcPid }.into(), state.into()],
    )
}

/// Records that this process starts sampling this database.
pub fn set_started() -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.worker_state
         SET pid = $1, database = current_database(), state = 'starting', started_at = now()",
        &[unsafe { pg_sys::MyProcPid }.into()],
    )
}

/// Records a sample: `shards` tracked, `buckets` written, counter `resets` seen, in `elapsed`.
pub fn record_sample(
    shards: usize,
    buckets: usize,
    resets: usize,
    elapsed: Duration,
) -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.worker_state
         SET pid = $1, state = 'running', last_sample_at = now(), last_cycle_ms = $2,
             shards_tracked = $3, samples_written = samples_written + $4,
             resets_detected = resets_detected + $5",
        &[
            unsafe { pg_sys::MyProcPid }.into(),
            (elapsed.as_secs_f64() * 1000.0).into(),
            (shards as i32).into(),
            (buckets as i64).into(),
            (resets as i64).into(),
        ],
    )
}

/// Records a published refresh.
pub fn record_refresh(scored: usize, elapsed: Duration) -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.worker_state
         SET last_refresh_at = now(), last_refresh_ms = $1, shards_scored = $2",
        &[
            (elapsed.as_secs_f64() * 1000.0).into(),
            (scored as i32).into(),
        ],
    )
}

/// Records a failed cycle or refresh, unless the extension is gone (with its table).
pub fn record_error(message: &str) -> Result<(), pgrx::spi::Error> {
    let installed = Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'shardcast')",
    )?;
    if installed != Some(true) {
        return Ok(());
    }
    Spi::run_with_args(
        "UPDATE shardcast.worker_state
         SET pid = $1, state = 'error, retrying', last_error = $2, last_error_at = now()",
        &[unsafe { pg_sys::MyProcPid }.into(), message.into()],
    )
}
