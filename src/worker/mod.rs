//! The background workers. Two processes, so that the worker never holds a database it does not
//! need and comes back after whatever stopped it:
//!
//! - the **launcher** (`shardcast launcher`, registered at server start, restarted by the
//!   postmaster after `RESTART_DELAY` if it is terminated) connects to no database. It waits,
//!   quietly, while `shardcast.database` does not exist or `shardcast.enabled` is off, and
//!   otherwise keeps one sampler running: it starts it, and starts it again after
//!   `RESTART_DELAY` (longer after quick failures) when it stops for any reason
//!   (`pg_terminate_backend`, a crash, `DROP DATABASE ... WITH (FORCE)`).
//! - the **sampler** (`shardcast`, a dynamic worker) connects to `shardcast.database` and, every
//!   sample interval, takes a sample and records the worker's health; forecasts are refreshed
//!   between samples, a bounded slice at a time. It reloads settings on SIGHUP, stops promptly on
//!   SIGTERM (a refresh in progress included), disconnects when paused, and survives errors in a
//!   cycle (recorded in `shardcast.worker_status`), a missing extension, and the extension being
//!   dropped and created again.

//!
//! Files: `launcher.rs` (the launcher), `cycle.rs` (the sampler's loop: each cycle runs the
//! stages in the order of the data flow, `sample.rs` then `refresh.rs`), `transaction.rs` (how
//! a stage runs in a transaction of its own without an error escaping).

use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgrx::bgworkers::BackgroundWorkerBuilder;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::error::sql_error;
use crate::gucs;

mod cycle;
mod launcher;

pub use cycle::sampled_here;

pub mod refresh;
mod sample;
mod transaction;

/// Shown as `backend_type` in `pg_stat_activity`.
const WORKER_TYPE: &str = "shardcast";
const LAUNCHER_TYPE: &str = "shardcast launcher";

/// How long after it stopped the sampler is started again (and the launcher, by the
/// postmaster): PostgreSQL's usual `bgw_restart_time`.
pub(crate) const RESTART_DELAY: Duration = Duration::from_secs(5);
/// Set in `_PG_init` when the library is loaded through `shared_preload_libraries`, the only
/// way the worker runs.
static PRELOADED: AtomicBool = AtomicBool::new(false);
/// Whether this backend already warned that the library is not preloaded.
static WARNED_NOT_PRELOADED: AtomicBool = AtomicBool::new(false);

/// Called from `_PG_init`: registers the launcher while preloading, else warns that nothing will
/// be sampled.
pub fn init(preloading: bool) {
    if preloading {
        PRELOADED.store(true, Ordering::Relaxed);
        BackgroundWorkerBuilder::new("shardcast launcher")
            .set_type(LAUNCHER_TYPE)
            .set_library("shardcast")
            .set_function("shardcast_launcher_main")
            .enable_spi_access()
            .set_restart_time(Some(RESTART_DELAY))
            .load();
    } else if unsafe { !pg_sys::creating_extension && !pg_sys::IsBackgroundWorker } {
        // CREATE EXTENSION warns from its script (which also runs when the library is already
        // loaded); parallel workers load the library too, and must not repeat it.
        warn_not_preloaded();
    }
}

/// Whether the library was loaded through `shared_preload_libraries` (the worker runs only then).
#[pg_extern(sql = false)]
fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

/// Once per session: the worker does not run without preloading, and nothing says so otherwise.
fn warn_not_preloaded() {
    if WARNED_NOT_PRELOADED.swap(true, Ordering::Relaxed) {
        return;
    }
    sql_error(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        "shardcast is not in shared_preload_libraries: its worker does not run, so nothing is sampled",
        "Add shardcast to shared_preload_libraries in postgresql.conf and restart the server.",
    )
    .report(PgLogLevel::WARNING);
}

/// For SQL functions whose result depends on the worker (`refresh_forecasts()`): a WARNING when
/// the library is not preloaded, a NOTICE when this is not the database the worker samples.
pub fn warn_about_setup() {
    if !preloaded() {
        warn_not_preloaded();
        return;
    }
    let watched = gucs::database();
    let here = unsafe {
        let name = pg_sys::get_database_name(pg_sys::MyDatabaseId);
        if name.is_null() {
            return;
        }
        CStr::from_ptr(name).to_string_lossy().into_owned()
    };
    if here != watched {
        sql_error(
            PgSqlErrorCode::ERRCODE_WARNING,
            format!(
                "the shardcast worker samples database \"{watched}\" (shardcast.database), not \"{here}\": \
                 history here comes only from record_access()"
            ),
            format!(
                "Use shardcast in database \"{watched}\", or set shardcast.database = '{here}' in \
                 postgresql.conf and restart the server."
            ),
        )
        .report(PgLogLevel::NOTICE);
    }
}

/// Whether this process is a shardcast worker that was asked to stop (SIGTERM: shutdown,
/// `pg_terminate_backend`, `DROP DATABASE ... WITH (FORCE)`) or whose postmaster died. pgrx's
/// SIGTERM handler only records the signal (it sets `ShutdownRequestPending`, which nothing
/// clears; `BackgroundWorker::sigterm_received()` would clear its own flag and hide the signal
/// from the main loop), so long work must look for itself. An orphaned process (the postmaster
/// died) has another parent.
pub fn stopping() -> bool {
    unsafe {
        !pg_sys::MyBgworkerEntry.is_null()
            && ((&raw const pg_sys::ShutdownRequestPending).read_volatile() != 0
                || std::os::unix::process::parent_id() != pg_sys::PostmasterPid as u32)
    }
}

/// The interrupt check of long loops: PostgreSQL's own (query cancel, statement timeout,
/// termination of a client backend) and, in the worker, SIGTERM, which aborts the work with an
/// error that the worker reads as "stopping".
pub fn check_for_interrupts() {
    pg_sys::check_for_interrupts!();
    if stopping() {
        sql_error(
            PgSqlErrorCode::ERRCODE_ADMIN_SHUTDOWN,
            "shardcast worker: stopping",
            "The work is rolled back and done again when the worker is back.",
        )
        .report(PgLogLevel::ERROR);
    }
}
