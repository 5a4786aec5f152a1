//! The sampler process (`shardcast`, a dynamic worker): its main loop, and the cycle that runs
//! the worker's stages in the order of the data flow: sample (`sample.rs`: counters → history),
//! then, when due and a slice at a time, refresh (`refresh.rs`: history → forecasts → scores),
//! then replan the replication queue (`crate::queue`).

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;

use super::refresh::{Publisher, Refresh, RefreshReport};
use super::sample::{SampleReport, Sampler};
use super::stopping;
use super::transaction::{in_transaction, report_activity, run_in_transaction};
use crate::catalog::worker_state::{self, LIBRARY_VERSION};
use crate::catalog::{claims, forecasts, history, shards, tasks};
use crate::{gucs, queue};

/// A written shard's size is measured again after this many sample intervals.
const SIZE_REFRESH_INTERVALS: u32 = 5;
/// Statements of the worker's refresh and registration wait at most this long for a lock: what
/// DDL (or a client's open transaction) holds fails them, and they are retried, instead of
/// delaying samples.
const REFRESH_LOCK_TIMEOUT: &str = "500ms";
/// The most 5-minute buckets one compaction transaction moves into day rows (whole hours, and at
/// least the oldest): about half a second on this project's 2-core test machine, and an hour of
/// 20,000 shards. With nothing to compact, a cycle's probe costs about a millisecond (10,000
/// shards, 700,000 recent buckets).
const COMPACT_BATCH: i64 = 250_000;
/// Compaction failing in this many cycles in a row is reported (see `Worker::compact_stage`):
/// once or twice is a lock a client held for a moment.
const COMPACT_FAILURES_REPORTED: u32 = 3;

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

/// The sampler's session-level advisory lock (two int4 keys), held in its database while it runs.
pub const SAMPLER_LOCK: (i64, i64) = (1936221793, 1935893859);

/// Takes the sampler's session-level advisory lock: one sampler at a time, even if a launcher
/// died without stopping its sampler and its successor started another.
fn sole_sampler() -> bool {
    run_in_transaction(true, || {
        Spi::get_one_with_args::<bool>(
            "SELECT pg_catalog.pg_try_advisory_lock($1::int4, $2::int4)",
            &[SAMPLER_LOCK.0.into(), SAMPLER_LOCK.1.into()],
        )
    })
    .is_ok_and(|locked| locked == Some(true))
}

/// Whether a sampler runs in this database now: it holds [`SAMPLER_LOCK`] here.
pub fn sampled_here() -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                          AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                                            WHERE d.datname = pg_catalog.current_database())
                          AND l.classid = $1::oid AND l.objid = $2::oid)",
        &[SAMPLER_LOCK.0.into(), SAMPLER_LOCK.1.into()],
    )?
    .unwrap_or(false))
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
    /// When the history of this worker's last published refresh was read.
    published: Option<TimestampWithTimeZone>,
    /// Shards measured whose queued tasks could not take their size yet (retried each cycle).
    unresized: Vec<i32>,
    /// Cycles in a row whose history purge or compaction failed.
    compact_failures: u32,
}

/// What a cycle found.
enum Outcome {
    NoExtension,
    /// The extension's catalog is of another version than this library (the library was
    /// replaced and the server restarted, ALTER EXTENSION UPDATE has not run yet).
    OtherVersion(String),
    Sampled(SampleReport),
}

/// What registration did: registered and retired tables of the extension's catalog, which is
/// sampled next, or found no catalog of this version to sample.
enum Registration {
    Done { registered: i64, retired: i64 },
    Waiting(Outcome),
}

impl Worker {
    fn cycle(&mut self, started: Instant) {
        report_activity("sampling");
        // New tables are registered in a transaction of their own, committed before sampling:
        // a client registering the same table (`record_access`, `enqueue`) waits for this short
        // transaction, never for a sampling one that goes on to write history, which would
        // deadlock if the client held a lock that writing needs. Registration waits for no
        // client either (a lock timeout): when it fails, the tables registered before are
        // sampled all the same, and new ones wait for the next cycle.
        let result = match in_transaction(AssertUnwindSafe(|| self.register_stage())) {
            Ok(Registration::Waiting(outcome)) => Ok(outcome),
            Ok(Registration::Done {
                registered,
                retired,
            }) => in_transaction(AssertUnwindSafe(|| {
                self.sample_stage(started, registered, retired)
            })),
            Err(message) => {
                debug1!("shardcast worker: registration of new tables skipped: {message}");
                in_transaction(AssertUnwindSafe(|| self.sample_stage(started, 0, 0)))
            }
        };
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
                let compacted = self.compact_stage(started + gucs::sample_interval() / 4);
                debug1!(
                    "shardcast worker: sampled {} shards ({} new, {} retired, {} resets), wrote {} buckets, compacted {}",
                    report.shards, report.registered, report.retired, report.resets,
                    report.buckets_written, compacted
                );
                // Sizes are secondary: a failure here is retried next cycle, not an error.
                match in_transaction(AssertUnwindSafe(|| {
                    self.sampler
                        .refresh_sizes(gucs::sample_interval() * SIZE_REFRESH_INTERVALS)
                })) {
                    Ok(measured) => self.resize_stage(&measured),
                    Err(message) => debug1!("shardcast worker: size refresh skipped: {message}"),
                }
                if let Err(message) = in_transaction(AssertUnwindSafe(|| {
                    self.sampler
                        .refresh_citus_sizes(gucs::sample_interval() * SIZE_REFRESH_INTERVALS)
                })) {
                    debug1!("shardcast worker: Citus shard size refresh skipped: {message}");
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
                record_error(&message);
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
            Ok(Some(report)) if report.superseded() => debug1!(
                "shardcast worker: forecast refresh dropped: a refresh_forecasts() call published \
                 forecasts from later history while it ran"
            ),
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
                record_error(&message);
            }
        }
    }

    /// One slice of the refresh; the report once it is published.
    fn refresh_slice(&mut self, deadline: Instant) -> Result<Option<RefreshReport>, String> {
        let began = Instant::now();
        let mut refresh = match self.refresh.take() {
            Some(refresh) => refresh,
            None => {
                // A refresh that fails to start is tried again an interval later.
                self.last_refresh = Some(began);
                report_activity("forecasting: reading history");
                let started = in_transaction(|| {
                    set_lock_timeout()?;
                    // A refresh_forecasts() call is a refresh too: the next one comes an
                    // interval after it, so that a session's forecasts (at its own horizon,
                    // say) are not replaced moments after it made them.
                    if let Some(age) = forecasts::published_age_unless(self.published)? {
                        if age < gucs::refresh_interval() {
                            return Ok(Err(age));
                        }
                    }
                    Refresh::start().map(Ok)
                })?;
                match started {
                    Ok(refresh) => {
                        self.refresh_work = Duration::ZERO;
                        refresh
                    }
                    Err(age) => {
                        self.last_refresh = Some(began.checked_sub(age).unwrap_or(began));
                        return Ok(None);
                    }
                }
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
        let publisher = Publisher::Worker {
            last: self.published,
        };
        let report = in_transaction(move || {
            set_lock_timeout()?;
            let report = refresh.0.finish(publisher)?;
            if report.superseded() {
                return Ok(report);
            }
            // New scores reorder the replication queue; expired leases rejoin it. The queue lock
            // first, before the expired tasks' rows, in the order every writer takes them.
            tasks::lock_queue()?;
            claims::expire_leases(gucs::max_attempts())?;
            queue::replan()?;
            worker_state::record_refresh(report.scored, work + began.elapsed())?;
            Ok::<_, pgrx::spi::Error>(report)
        })?;
        self.refresh_work += began.elapsed();
        if report.published.is_some() {
            self.published = report.published;
        }
        Ok(Some(report))
    }

    /// Queued table copies of the tables just measured take their size, and the queue is
    /// replanned when one changed: in a transaction after the sizes' own, measuring again under
    /// the queue lock, so that the size an enqueue took in between is never replaced by an
    /// older one. The queue lock is only tried: while a client holds it (an enqueue in a long
    /// transaction), the tables wait for the next cycle, and nothing else does.
    fn resize_stage(&mut self, measured: &[i32]) {
        self.unresized.extend_from_slice(measured);
        self.unresized.sort_unstable();
        self.unresized.dedup();
        if self.unresized.is_empty() {
            return;
        }
        let tables = &self.unresized;
        let outcome = in_transaction(|| {
            set_lock_timeout()?;
            let queued = tasks::queued_among(tables)?;
            if queued.is_empty() {
                return Ok(Some((0, Vec::new())));
            }
            if !tasks::try_lock_queue()? {
                return Ok(None);
            }
            let sizes = shards::sizes_now(&queued)?;
            let resized = tasks::resize_queued(&sizes)?;
            if resized > 0 {
                queue::replan()?;
            }
            // A table whose lock was not free at once (DDL) was not measured: it waits too.
            let locked: Vec<i32> = queued
                .into_iter()
                .filter(|id| !sizes.contains_key(id))
                .collect();
            Ok::<_, pgrx::spi::Error>(Some((resized, locked)))
        });
        match outcome {
            Ok(Some((resized, locked))) => {
                self.unresized = locked;
                if resized > 0 {
                    debug1!("shardcast worker: {resized} queued tasks resized, queue replanned");
                }
            }
            Ok(None) => {
                debug1!("shardcast worker: the queue is locked; queued tasks resized next cycle")
            }
            Err(message) => debug1!("shardcast worker: queued tasks not resized: {message}"),
        }
    }

    /// Finds the extension and registers new tables (and retires dropped ones) in it.
    fn register_stage(&mut self) -> Result<Registration, pgrx::spi::Error> {
        let Some(extension) = worker_state::extension()? else {
            self.extension = None;
            return Ok(Registration::Waiting(Outcome::NoExtension));
        };
        // Another version's catalog is neither read nor written (but for the worker's state,
        // which every version has): the update is then met like a new extension.
        let version = worker_state::extension_version(extension)?;
        if version != LIBRARY_VERSION {
            self.extension = None;
            if self.told_version.as_deref() != Some(version.as_str()) {
                worker_state::set_state(&format!(
                    "waiting for ALTER EXTENSION shardcast UPDATE \
                     (the library is {LIBRARY_VERSION}, the extension {version})"
                ))?;
            }
            return Ok(Registration::Waiting(Outcome::OtherVersion(version)));
        }
        if self.extension != Some(extension) {
            if self.told_waiting || self.told_version.is_some() || self.extension.is_some() {
                log!("shardcast worker: extension \"shardcast\" found; sampling");
            }
            self.sampler.forget();
            self.last_refresh = None;
            self.refresh = None;
            self.published = None;
            self.unresized.clear();
            self.compact_failures = 0;
            self.extension = Some(extension);
            self.told_waiting = false;
            self.told_version = None;
            worker_state::set_started()?;
        }
        set_lock_timeout()?;
        let (registered, retired) = shards::sync()?;
        Ok(Registration::Done {
            registered,
            retired,
        })
    }

    /// Purges history past the retention, then moves 5-minute buckets older than the fine span
    /// into day rows, [`COMPACT_BATCH`] buckets to a transaction, until none is left: one batch
    /// a cycle at least, and no further one once `deadline` (a quarter of the sample interval
    /// into the cycle) has passed; the rest waits for the next cycle. Runs after the sample
    /// committed, under the refresh's lock timeout, so that a large import (weeks of 5-minute
    /// history for thousands of shards) or a client's transaction holding imported buckets
    /// never rolls a sample back, and holds the next one up by a batch at most. A failure is
    /// retried next cycle; failures in [`COMPACT_FAILURES_REPORTED`] cycles in a row are a
    /// WARNING and `worker_status`'s `last_error`, since buckets that are never compacted pile
    /// up to the retention. Returns the buckets moved.
    fn compact_stage(&mut self, deadline: Instant) -> i64 {
        report_activity("compacting history");
        let retention = gucs::history_retention();
        let mut failure = in_transaction(|| {
            set_lock_timeout()?;
            history::purge(retention)
        })
        .err()
        .map(|message| format!("history purge failed: {message}"));
        let mut moved = 0;
        loop {
            match in_transaction(|| {
                set_lock_timeout()?;
                // A batch is planned once and runs once: compiling it costs more than it saves.
                Spi::run("SET LOCAL jit = off")?;
                history::compact(COMPACT_BATCH)
            }) {
                Ok(0) => break,
                Ok(n) => moved += n,
                Err(message) => {
                    let compaction = format!("history compaction failed: {message}");
                    failure = Some(match failure {
                        Some(purge) => format!("{purge}; {compaction}"),
                        None => compaction,
                    });
                    break;
                }
            }
            if stopping() || Instant::now() >= deadline {
                break;
            }
        }
        match failure {
            None => self.compact_failures = 0,
            Some(message) => {
                self.compact_failures += 1;
                if self.compact_failures < COMPACT_FAILURES_REPORTED {
                    debug1!("shardcast worker: {message}; retried next cycle");
                } else {
                    warning!(
                        "shardcast worker: {message} ({} cycles in a row)",
                        self.compact_failures
                    );
                    record_error(&message);
                }
            }
        }
        moved
    }

    /// Takes one sample, right after [`Self::register_stage`] registered `registered` tables
    /// and retired `retired`.
    fn sample_stage(
        &mut self,
        started: Instant,
        registered: i64,
        retired: i64,
    ) -> Result<Outcome, pgrx::spi::Error> {
        let report = self.sampler.sample(registered, retired)?;
        worker_state::record_sample(
            report.shards,
            report.buckets_written,
            report.resets,
            started.elapsed(),
        )?;
        Ok(Outcome::Sampled(report))
    }
}

/// Records a failure in `worker_status.last_error`, in a transaction of its own (the failed one
/// was rolled back); a failure to record it is only logged at DEBUG1.
fn record_error(message: &str) {
    if let Err(again) = in_transaction(|| worker_state::record_error(message)) {
        debug1!("shardcast worker: could not record the error: {again}");
    }
}

fn set_lock_timeout() -> Result<(), pgrx::spi::Error> {
    Spi::run(&format!(
        "SET LOCAL lock_timeout = '{REFRESH_LOCK_TIMEOUT}'"
    ))
}
