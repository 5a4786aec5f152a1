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

use std::ffi::{CStr, CString};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::error::sql_error;
use crate::forecaster::{Refresh, RefreshReport};
use crate::gucs;
use crate::replication;
use crate::sampler::{SampleReport, Sampler};

/// Shown as `backend_type` in `pg_stat_activity`.
const WORKER_TYPE: &str = "shardcast";
const LAUNCHER_TYPE: &str = "shardcast launcher";

/// How long after it stopped the sampler is started again (and the launcher, by the
/// postmaster): PostgreSQL's usual `bgw_restart_time`.
const RESTART_DELAY: Duration = Duration::from_secs(5);
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

/// A written shard's size is measured again after this many sample intervals.
const SIZE_REFRESH_INTERVALS: u32 = 5;
/// Statements of the worker's refresh wait at most this long for a lock: what DDL holds fails
/// the refresh, which is retried, instead of delaying samples.
const REFRESH_LOCK_TIMEOUT: &str = "500ms";

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
#[pg_extern(stable, parallel_safe)]
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

// ---------------------------------------------------------------------------------------------
// The launcher

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
                if !self.told_missing {
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

// ---------------------------------------------------------------------------------------------
// The sampler

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn shardcast_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    if !sole_sampler() {
        debug1!("shardcast worker: another one samples database \"{database}\"; exiting");
        return;
    }
    log!("shardcast worker started, sampling database \"{database}\"");

    let mut worker = Worker::default();
    let mut wait = Duration::ZERO;
    while BackgroundWorker::wait_latch(Some(wait)) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if !gucs::enabled() {
            // Paused: release the database (so that it can be dropped or renamed); the launcher
            // starts a new sampler when shardcast.enabled is on again.
            log!(
                "shardcast worker paused (shardcast.enabled = off): disconnecting from database \"{database}\""
            );
            return;
        }
        let started = Instant::now();
        worker.cycle(started);
        wait = gucs::sample_interval().saturating_sub(started.elapsed());
    }
    log!("shardcast worker exiting");
}

/// Takes the sampler's session-level advisory lock: one sampler at a time, even if a launcher
/// died without stopping its sampler and its successor started another.
fn sole_sampler() -> bool {
    run_in_transaction(true, || {
        Spi::get_one::<bool>("SELECT pg_catalog.pg_try_advisory_lock(1936221793, 1935893859)")
    })
    .is_ok_and(|locked| locked == Some(true))
}

/// What the worker remembers between cycles.
#[derive(Default)]
struct Worker {
    sampler: Sampler,
    /// The OID of the extension the sampler's memory belongs to.
    extension: Option<pg_sys::Oid>,
    /// Whether "waiting for CREATE EXTENSION" was already logged.
    told_waiting: bool,
    /// The extension version that "waiting for ALTER EXTENSION shardcast UPDATE" was logged for.
    told_version: Option<String>,
    /// When the last refresh of forecasts and scores by this worker started.
    last_refresh: Option<Instant>,
    /// A refresh in progress: it goes on after the next samples.
    refresh: Option<Refresh>,
    /// The time the refresh in progress has worked so far (its slices, not the samples between).
    refresh_work: Duration,
}

/// What a cycle found.
enum Outcome {
    NoExtension,
    /// The extension's catalog is of another version than this library (the library was
    /// replaced and the server restarted, ALTER EXTENSION UPDATE has not run yet).
    OtherVersion(String),
    Sampled(SampleReport),
}

/// The extension version whose catalog this library reads and writes.
const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

impl Worker {
    fn cycle(&mut self, started: Instant) {
        report_activity("sampling");
        let result = in_transaction(AssertUnwindSafe(|| self.sample_stage(started)));
        match result {
            Ok(Outcome::NoExtension) => {
                if !self.told_waiting {
                    log!(
                        "shardcast worker: extension \"shardcast\" is not installed in this database; \
                         waiting for CREATE EXTENSION shardcast"
                    );
                    self.told_waiting = true;
                }
            }
            Ok(Outcome::OtherVersion(version)) => {
                if self.told_version.as_deref() != Some(version.as_str()) {
                    log!(
                        "shardcast worker: extension \"shardcast\" is version {version} in this database, \
                         the library {LIBRARY_VERSION}; waiting for ALTER EXTENSION shardcast UPDATE"
                    );
                    self.told_version = Some(version);
                }
            }
            Ok(Outcome::Sampled(report)) => {
                debug1!(
                    "shardcast worker: sampled {} shards ({} new, {} retired, {} resets), wrote {} buckets, compacted {}",
                    report.shards, report.registered, report.retired, report.resets,
                    report.buckets_written, report.compacted
                );
                // Sizes are secondary: a failure here is retried next cycle, not an error.
                if let Err(message) = in_transaction(AssertUnwindSafe(|| {
                    self.sampler
                        .refresh_sizes(gucs::sample_interval() * SIZE_REFRESH_INTERVALS)
                })) {
                    debug1!("shardcast worker: size refresh skipped: {message}");
                }
                if self.refresh.is_some()
                    || self
                        .last_refresh
                        .is_none_or(|at| at.elapsed() >= gucs::refresh_interval())
                {
                    // Until half the sample interval has passed since the cycle began: the next
                    // sample is on time whatever the number of shards to forecast.
                    self.refresh_stage(started + gucs::sample_interval() / 2);
                }
            }
            Err(_) if stopping() => {}
            Err(message) => {
                warning!("shardcast worker: sampling cycle failed: {message}");
                // The sample was rolled back; the next one starts from a fresh baseline, so
                // that the lost interval is never added as a burst.
                self.sampler.forget();
                if let Err(again) = in_transaction(|| record_error(&message)) {
                    debug1!("shardcast worker: could not record the error: {again}");
                }
            }
        }
        report_activity("idle");
    }

    /// Forecasts and scores every shard from the history sampled so far, a slice per cycle:
    /// the first slice reads the history, each forecasts shards until `deadline`, and the last
    /// publishes forecasts and scores and replans the replication queue. Only the first and
    /// the last run statements, under a short lock timeout: a table locked by DDL fails the
    /// refresh (retried after the refresh interval), it never holds up sampling.
    fn refresh_stage(&mut self, deadline: Instant) {
        let result = self.refresh_slice(deadline);
        match result {
            Ok(None) => {}
            Ok(Some(report)) => debug1!(
                "shardcast worker: scored {} shards ({} models selected) in {:?}",
                report.scored,
                report.selected,
                self.refresh_work
            ),
            Err(_) if stopping() => {
                self.refresh = None;
                log!("shardcast worker: forecast refresh interrupted: the worker is stopping");
            }
            Err(message) => {
                self.refresh = None;
                warning!("shardcast worker: forecast refresh failed: {message}");
                if let Err(again) = in_transaction(|| record_error(&message)) {
                    debug1!("shardcast worker: could not record the error: {again}");
                }
            }
        }
    }

    /// One slice of the refresh; the report once it is published.
    fn refresh_slice(&mut self, deadline: Instant) -> Result<Option<RefreshReport>, String> {
        let began = Instant::now();
        let mut refresh = match self.refresh.take() {
            Some(refresh) => refresh,
            None => {
                self.last_refresh = Some(began);
                self.refresh_work = Duration::ZERO;
                report_activity("forecasting: reading history");
                in_transaction(|| {
                    set_lock_timeout()?;
                    Refresh::start()
                })?
            }
        };
        // Computation only: a transaction without a snapshot, so that no old snapshot is held.
        let (done, total) = refresh.progress();
        report_activity(&format!("forecasting: {done} of {total} shards done"));
        let mut step = AssertUnwindSafe(&mut refresh);
        let finished =
            run_in_transaction(false, move || Ok::<_, String>(step.step(Some(deadline))));
        self.refresh_work += began.elapsed();
        if !finished? {
            self.refresh = Some(refresh);
            return Ok(None);
        }
        report_activity("forecasting: publishing");
        let began = Instant::now();
        let refresh = AssertUnwindSafe(refresh);
        let work = self.refresh_work;
        let report = in_transaction(move || {
            set_lock_timeout()?;
            let report = refresh.0.finish()?;
            // New scores reorder the replication queue; expired leases rejoin it.
            replication::expire_leases()?;
            replication::replan()?;
            record_refresh(report.scored, work + began.elapsed())?;
            Ok::<_, pgrx::spi::Error>(report)
        })?;
        self.refresh_work += began.elapsed();
        Ok(Some(report))
    }

    fn sample_stage(&mut self, started: Instant) -> Result<Outcome, pgrx::spi::Error> {
        let extension = Spi::get_one::<pg_sys::Oid>(
            "SELECT (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'shardcast')",
        )?;
        let Some(extension) = extension else {
            self.extension = None;
            return Ok(Outcome::NoExtension);
        };
        // Another version's catalog is neither read nor written (but for the worker's state,
        // which every version has): the update is then met like a new extension.
        let version = Spi::get_one_with_args::<String>(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE oid = $1",
            &[extension.into()],
        )?
        .unwrap_or_default();
        if version != LIBRARY_VERSION {
            self.extension = None;
            if self.told_version.as_deref() != Some(version.as_str()) {
                Spi::run_with_args(
                    "UPDATE shardcast.worker_state SET pid = $1, state = $2",
                    &[
                        unsafe { pg_sys::MyProcPid }.into(),
                        format!(
                            "waiting for ALTER EXTENSION shardcast UPDATE \
                             (the library is {LIBRARY_VERSION}, the extension {version})"
                        )
                        .into(),
                    ],
                )?;
            }
            return Ok(Outcome::OtherVersion(version));
        }
        if self.extension != Some(extension) {
            if self.told_waiting || self.told_version.is_some() || self.extension.is_some() {
                log!("shardcast worker: extension \"shardcast\" found; sampling");
            }
            self.sampler.forget();
            self.last_refresh = None;
            self.refresh = None;
            self.extension = Some(extension);
            self.told_waiting = false;
            self.told_version = None;
            set_started()?;
        }
        let report = self.sampler.sample(gucs::history_retention())?;
        record_sample(&report, started.elapsed())?;
        Ok(Outcome::Sampled(report))
    }
}

/// Runs `body` in a transaction of its own (with an active snapshot if `snapshot`) and commits
/// it if `body` succeeds. An error returned by `body`, a PostgreSQL ERROR or a panic inside it
/// rolls the transaction back and comes back as a message: nothing escapes to kill the worker.
fn run_in_transaction<R, E: std::fmt::Display>(
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
fn in_transaction<R, E: std::fmt::Display>(
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

fn report_activity(what: &str) {
    let text = CString::new(format!("shardcast: {what}")).unwrap_or_default();
    let state = if what == "idle" {
        pg_sys::BackendState::STATE_IDLE
    } else {
        pg_sys::BackendState::STATE_RUNNING
    };
    unsafe { pg_sys::pgstat_report_activity(state, text.as_ptr()) };
}

fn set_lock_timeout() -> Result<(), pgrx::spi::Error> {
    Spi::run(&format!(
        "SET LOCAL lock_timeout = '{REFRESH_LOCK_TIMEOUT}'"
    ))
}

fn set_started() -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.worker_state
         SET pid = $1, database = current_database(), state = 'starting', started_at = now()",
        &[unsafe { pg_sys::MyProcPid }.into()],
    )
}

fn record_sample(report: &SampleReport, elapsed: Duration) -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.worker_state
         SET pid = $1, state = 'running', last_sample_at = now(), last_cycle_ms = $2,
             shards_tracked = $3, samples_written = samples_written + $4,
             resets_detected = resets_detected + $5",
        &[
            unsafe { pg_sys::MyProcPid }.into(),
            (elapsed.as_secs_f64() * 1000.0).into(),
            (report.shards as i32).into(),
            (report.buckets_written as i64).into(),
            (report.resets as i64).into(),
        ],
    )
}

fn record_refresh(scored: usize, elapsed: Duration) -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.worker_state
         SET last_refresh_at = now(), last_refresh_ms = $1, shards_scored = $2",
        &[
            (elapsed.as_secs_f64() * 1000.0).into(),
            (scored as i32).into(),
        ],
    )
}

fn record_error(message: &str) -> Result<(), pgrx::spi::Error> {
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
