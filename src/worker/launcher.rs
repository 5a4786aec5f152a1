//! The launcher (`shardcast launcher`): connects to no database and keeps one sampler running.

use std::ffi::CString;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::prelude::*;

use super::transaction::{report_activity, run_in_transaction};
use super::{RESTART_DELAY, WORKER_TYPE};
use crate::gucs;

/// A sampler that stops within this time of its start failed quickly: the next delay doubles,
/// up to `MAX_RESTART_DELAY`, so that a worker that cannot start does not fill the log.
const QUICK_FAILURE: Duration = Duration::from_secs(60);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(5 * 60);
/// While the watched database is missing the launcher looks again after 1 s, 2 s, 4 s ... and
/// then every this often: a look is one index probe of `pg_database`, and logs nothing.
const MAX_DATABASE_POLL: Duration = Duration::from_secs(10);
/// The launcher's sleep when nothing is due; the postmaster wakes it when the sampler stops,
/// and a reload wakes it too.
const LAUNCHER_IDLE: Duration = Duration::from_secs(60);

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn shardcast_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // Shared catalogs only: the launcher never keeps a database from being dropped.
    BackgroundWorker::connect_worker_to_spi(None, None);
    let mut launcher = Launcher::new(gucs::database());
    let mut wait = Duration::ZERO;
    while BackgroundWorker::wait_latch(Some(wait)) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        wait = launcher.step();
    }
    // Never leave a sampler behind: a launcher started again would start a second one.
    launcher.stop_sampler();
    // Exit code 1: after pg_terminate_backend the postmaster starts the launcher again after
    // RESTART_DELAY (exit code 0 would unregister it for good); at shutdown it does not.
    unsafe { pg_sys::proc_exit(1) };
}

struct Launcher {
    database: String,
    /// The running sampler, and when it was started.
    sampler: Option<(DynamicBackgroundWorker, Instant)>,
    /// The sampler is not started before this (it stopped recently).
    not_before: Option<Instant>,
    restart_delay: Duration,
    /// While the database is missing: whether that was logged, and the next pause.
    told_missing: bool,
    poll: Duration,
    told_no_slot: bool,
}

impl Launcher {
    fn new(database: String) -> Launcher {
        Launcher {
            database,
            sampler: None,
            not_before: None,
            restart_delay: RESTART_DELAY / 2,
            told_missing: false,
            poll: Duration::from_secs(1),
            told_no_slot: false,
        }
    }

    /// One look at the world; returns how long to sleep.
    fn step(&mut self) -> Duration {
        if let Some((handle, started)) = &self.sampler {
            match handle.pid() {
                Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted) => return LAUNCHER_IDLE,
                Err(BackgroundWorkerStatus::PostmasterDied) => return LAUNCHER_IDLE,
                Err(_) => {
                    // Stopped. A pause is the sampler's own choice: come back as soon as it is
                    // lifted. Anything else: after the restart delay.
                    if gucs::enabled() {
                        self.restart_delay = if started.elapsed() < QUICK_FAILURE {
                            (self.restart_delay * 2).clamp(RESTART_DELAY, MAX_RESTART_DELAY)
                        } else {
                            RESTART_DELAY
                        };
                        self.not_before = Some(Instant::now() + self.restart_delay);
                    }
                    self.sampler = None;
                }
            }
        }
        if !gucs::enabled() {
            report_activity("paused (shardcast.enabled = off)");
            return LAUNCHER_IDLE;
        }
        if let Some(at) = self.not_before {
            let now = Instant::now();
            if now < at {
                report_activity("restarting the sampler");
                return at - now;
            }
        }
        match database_exists(&self.database) {
            Ok(true) => {}
            Ok(false) => {
                if !self.told_missing && self.database.is_empty() {
                    // No database can be created with that name: say what to do, louder.
                    warning!(
                        "shardcast launcher: shardcast.database is empty, and no database has that \
                         name; set it to the database to watch (ALTER SYSTEM SET shardcast.database \
                         = 'app') and restart the server"
                    );
                    self.told_missing = true;
                    self.poll = MAX_DATABASE_POLL;
                } else if !self.told_missing {
                    log!(
                        "shardcast launcher: database \"{}\" (shardcast.database) does not exist; \
                         the worker starts when it is created",
                        self.database
                    );
                    self.told_missing = true;
                    self.poll = Duration::from_secs(1);
                } else {
                    self.poll = (self.poll * 2).min(MAX_DATABASE_POLL);
                }
                report_activity("waiting for the database");
                return self.poll;
            }
            Err(message) => {
                debug1!("shardcast launcher: could not look up the database: {message}");
                return MAX_DATABASE_POLL;
            }
        }
        if self.told_missing {
            log!(
                "shardcast launcher: database \"{}\" exists; starting the worker",
                self.database
            );
            self.told_missing = false;
        }
        match start_sampler() {
            Ok(handle) => {
                self.sampler = Some((handle, Instant::now()));
                self.not_before = None;
                self.told_no_slot = false;
                report_activity("idle");
                LAUNCHER_IDLE
            }
            Err(_) => {
                if !self.told_no_slot {
                    warning!(
                        "shardcast launcher: could not start the worker: no free background worker \
                         slot; raise max_worker_processes (restart needed)"
                    );
                    self.told_no_slot = true;
                }
                RESTART_DELAY
            }
        }
    }

    fn stop_sampler(&mut self) {
        if let Some((handle, _)) = self.sampler.take() {
            let _ = handle.terminate().wait_for_shutdown();
        }
    }
}

fn start_sampler(
) -> Result<DynamicBackgroundWorker, pgrx::bgworkers::DynamicBackgroundWorkerLoadError> {
    BackgroundWorkerBuilder::new("shardcast sampler")
        .set_type(WORKER_TYPE)
        .set_library("shardcast")
        .set_function("shardcast_worker_main")
        .enable_spi_access()
        // The postmaster tells the launcher (SIGUSR1, which sets its latch) when it stops.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
}

/// Whether a database of that name exists: `pg_database` is a shared catalog, readable without
/// being connected to any database. Its name index is used only once the shared relation cache
/// is built (as PostgreSQL's own `GetDatabaseTuple` does): before any backend connected to a
/// database, opening the index would fail (`get_database_oid()` always uses it).
fn database_exists(name: &str) -> Result<bool, String> {
    let name = CString::new(name).map_err(|e| e.to_string())?;
    run_in_transaction(
        true,
        AssertUnwindSafe(|| {
            let found = unsafe {
                let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
                let catalog = pg_sys::table_open(pg_sys::DatabaseRelationId, lock);
                let mut key: pg_sys::ScanKeyData = std::mem::zeroed();
                pg_sys::ScanKeyInit(
                    &mut key,
                    pg_sys::Anum_pg_database_datname as pg_sys::AttrNumber,
                    pg_sys::BTEqualStrategyNumber as pg_sys::StrategyNumber,
                    pg_sys::regproc::from(pg_sys::F_NAMEEQ),
                    pg_sys::Datum::from(name.as_ptr()),
                );
                let scan = pg_sys::systable_beginscan(
                    catalog,
                    pg_sys::Oid::from(pg_sys::DatabaseNameIndexId),
                    pg_sys::criticalSharedRelcachesBuilt,
                    std::ptr::null_mut(),
                    1,
                    &mut key,
                );
                let found = !pg_sys::systable_getnext(scan).is_null();
                pg_sys::systable_endscan(scan);
                pg_sys::table_close(catalog, lock);
                found
            };
            Ok::<_, String>(found)
        }),
    )
}
