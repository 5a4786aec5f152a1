//! The background worker: every sample interval, take a sample of the watched database and
//! record the worker's health. It sleeps on its latch, reloads settings on SIGHUP, exits on
//! SIGTERM, and survives errors in a cycle (recorded in `shardcast.worker_status`), a missing
//! extension, and the extension being dropped and created again.

use std::ffi::CString;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::forecaster;
use crate::gucs;
use crate::replication;
use crate::sampler::{SampleReport, Sampler};

/// Shown as `backend_type` in `pg_stat_activity`.
const WORKER_TYPE: &str = "shardcast";

/// A written shard's size is measured again after this many sample intervals.
const SIZE_REFRESH_INTERVALS: u32 = 5;

/// Registers the worker; called from `_PG_init` while preloading.
pub fn register() {
    BackgroundWorkerBuilder::new("shardcast sampler")
        .set_type(WORKER_TYPE)
        .set_library("shardcast")
        .set_function("shardcast_worker_main")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn shardcast_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!("shardcast worker started, sampling database \"{database}\"");

    let mut worker = Worker::default();
    let mut wait = Duration::ZERO;
    while BackgroundWorker::wait_latch(Some(wait)) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let started = Instant::now();
        worker.cycle();
        wait = gucs::sample_interval().saturating_sub(started.elapsed());
    }
    log!("shardcast worker exiting");
}

/// What the worker remembers between cycles.
#[derive(Default)]
struct Worker {
    sampler: Sampler,
    /// The OID of the extension the sampler's memory belongs to.
    extension: Option<pg_sys::Oid>,
    /// Whether "waiting for CREATE EXTENSION" was already logged.
    told_waiting: bool,
    paused: bool,
    /// When forecasts and scores were last refreshed by this worker.
    last_refresh: Option<Instant>,
}

/// What a cycle found.
enum Outcome {
    NoExtension,
    Paused,
    Sampled(SampleReport),
}

impl Worker {
    fn cycle(&mut self) {
        let started = Instant::now();
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
            Ok(Outcome::Paused) => {}
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
                if self
                    .last_refresh
                    .is_none_or(|at| at.elapsed() >= gucs::refresh_interval())
                {
                    self.refresh_stage();
                }
            }
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

    /// Forecasts and scores every shard from the history sampled so far.
    fn refresh_stage(&mut self) {
        let started = Instant::now();
        self.last_refresh = Some(started);
        report_activity("forecasting");
        let result = in_transaction(|| {
            let report = forecaster::refresh()?;
            // New scores reorder the replication queue; expired leases rejoin it.
            replication::expire_leases()?;
            replication::replan()?;
            record_refresh(report.scored, started.elapsed())?;
            Ok::<_, pgrx::spi::Error>(report)
        });
        match result {
            Ok(report) => debug1!(
                "shardcast worker: scored {} shards ({} models selected) in {:?}",
                report.scored,
                report.selected,
                started.elapsed()
            ),
            Err(message) => {
                warning!("shardcast worker: forecast refresh failed: {message}");
                if let Err(again) = in_transaction(|| record_error(&message)) {
                    debug1!("shardcast worker: could not record the error: {again}");
                }
            }
        }
    }

    fn sample_stage(&mut self, started: Instant) -> Result<Outcome, pgrx::spi::Error> {
        let extension = Spi::get_one::<pg_sys::Oid>(
            "SELECT (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'shardcast')",
        )?;
        let Some(extension) = extension else {
            self.extension = None;
            return Ok(Outcome::NoExtension);
        };
        if self.extension != Some(extension) {
            if self.told_waiting || self.extension.is_some() {
                log!("shardcast worker: extension \"shardcast\" found; sampling");
            }
            self.sampler.forget();
            self.last_refresh = None;
            self.extension = Some(extension);
            self.told_waiting = false;
            set_started()?;
        }
        if !gucs::enabled() {
            if !self.paused {
                set_state("paused (shardcast.enabled = off)")?;
                self.sampler.forget();
                self.paused = true;
            }
            return Ok(Outcome::Paused);
        }
        self.paused = false;
        let report = self.sampler.sample(gucs::history_retention())?;
        record_sample(&report, started.elapsed())?;
        Ok(Outcome::Sampled(report))
    }
}

/// Runs `body` in a transaction of its own and commits it if `body` succeeds. An error returned
/// by `body`, a PostgreSQL ERROR or a panic inside it rolls the transaction back and comes back
/// as a message: nothing escapes to kill the worker.
fn in_transaction<R, E: std::fmt::Display>(
    body: impl FnOnce() -> Result<R, E> + std::panic::UnwindSafe,
) -> Result<R, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let outcome = PgTryBuilder::new(AssertUnwindSafe(|| match body() {
        Ok(value) => {
            unsafe {
                pg_sys::PopActiveSnapshot();
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
    .execute();
    // The worker's own writes must reach the statistics system (autovacuum of the history
    // tables depends on it) and never linger to be counted in a later, unrelated interval.
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

fn set_started() -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.worker_state
         SET pid = $1, database = current_database(), state = 'starting', started_at = now()",
        &[unsafe { pg_sys::MyProcPid }.into()],
    )
}

fn set_state(state: &str) -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.worker_state SET pid = $1, state = $2",
        &[unsafe { pg_sys::MyProcPid }.into(), state.into()],
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
