//! Every `shardcast.*` setting: defined once here, read through typed accessors.

use std::ffi::CString;
use std::time::Duration;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::{pg_sys, PostgresGucEnum};
use shardcast_core::schedule::Order;

/// `shardcast.load_measure`: what a shard's load counts.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum LoadMeasure {
    /// Sequential plus index scans: how often the table is accessed.
    #[name = c"scans"]
    Scans,
    /// Tuples returned by scans plus tuples fetched by index scans: how much is read.
    #[name = c"tuples"]
    Tuples,
    /// Blocks hit plus blocks read: I/O volume.
    #[name = c"blocks"]
    Blocks,
}

/// `shardcast.ordering`: how the replication queue is ordered.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum QueueOrdering {
    #[name = c"wspt"]
    Wspt,
    #[name = c"score"]
    Score,
    #[name = c"fifo"]
    Fifo,
}

static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
static SAMPLE_INTERVAL_SECS: GucSetting<i32> = GucSetting::<i32>::new(60);
static HISTORY_RETENTION_MINS: GucSetting<i32> = GucSetting::<i32>::new(28 * 24 * 60);
static EXCLUDED_SCHEMAS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static HORIZON_MINS: GucSetting<i32> = GucSetting::<i32>::new(60);
static INTERVAL_LEVEL: GucSetting<f64> = GucSetting::<f64>::new(0.8);
static REFRESH_INTERVAL_SECS: GucSetting<i32> = GucSetting::<i32>::new(5 * 60);
static REFIT_INTERVAL_SECS: GucSetting<i32> = GucSetting::<i32>::new(60 * 60);
static WRITE_WEIGHT: GucSetting<f64> = GucSetting::<f64>::new(0.0);
static LOAD_MEASURE: GucSetting<LoadMeasure> = GucSetting::<LoadMeasure>::new(LoadMeasure::Scans);
static INHERITANCE_FACTOR: GucSetting<f64> = GucSetting::<f64>::new(1.0);
static SCORE_HYSTERESIS: GucSetting<f64> = GucSetting::<f64>::new(0.2);
static TIERS: GucSetting<i32> = GucSetting::<i32>::new(3);
static ORDERING: GucSetting<QueueOrdering> = GucSetting::<QueueOrdering>::new(QueueOrdering::Wspt);
static OVERTAKE_WINDOW_SECS: GucSetting<i32> = GucSetting::<i32>::new(60 * 60);
static PREFETCH_QUANTILE: GucSetting<f64> = GucSetting::<f64>::new(0.99);
static PREFETCH_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(1);
static PLAN_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(4);
static PLAN_BANDWIDTH: GucSetting<f64> = GucSetting::<f64>::new(100.0 * 1024.0 * 1024.0);
static CLAIM_LEASE_SECS: GucSetting<i32> = GucSetting::<i32>::new(5 * 60);
static MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(3);

/// Defines the settings. `shardcast.database` is fixed at server start; PostgreSQL refuses a
/// postmaster-level setting defined after start, so when the library is loaded later (it is not
/// in `shared_preload_libraries`, and no worker runs) the setting is defined at reload level,
/// only so that `SHOW shardcast.database` and the setup warnings can read it.
pub fn init(preloading: bool) {
    GucRegistry::define_string_guc(
        c"shardcast.database",
        c"Database whose shards the shardcast worker samples.",
        c"The background worker connects to this database; a change applies at server restart.",
        &DATABASE,
        if preloading {
            GucContext::Postmaster
        } else {
            GucContext::Sighup
        },
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"shardcast.enabled",
        c"Whether the shardcast worker samples access statistics.",
        c"Turning it off pauses the worker without restarting the server.",
        &ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"shardcast.sample_interval",
        c"Time between two samples of the access statistics.",
        c"Each sample records every shard's access deltas since the previous one.",
        &SAMPLE_INTERVAL_SECS,
        1,
        24 * 60 * 60,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"shardcast.history_retention",
        c"How long access history is kept.",
        c"Older history is purged by the worker; compacted history is purged by whole UTC days.",
        &HISTORY_RETENTION_MINS,
        60,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_MIN,
    );
    GucRegistry::define_string_guc(
        c"shardcast.excluded_schemas",
        c"Comma-separated schemas whose tables are not shards.",
        c"System schemas and shardcast's own schema are always excluded.",
        &EXCLUDED_SCHEMAS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"shardcast.horizon",
        c"How far ahead load is forecast: the expected replication window.",
        c"Forecasts are totals over [now, now + horizon); a horizon that is not whole hours takes the matching part of its last hour.",
        &HORIZON_MINS,
        60,
        7 * 24 * 60,
        GucContext::Userset,
        GucFlags::UNIT_MIN,
    );
    GucRegistry::define_float_guc(
        c"shardcast.interval_level",
        c"Coverage of forecast prediction intervals.",
        c"0.8 gives 80% intervals: split-conformal bounds from the backtest's errors (wider than their 10th to 90th percentiles).",
        &INTERVAL_LEVEL,
        0.5,
        0.99,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"shardcast.refresh_interval",
        c"Time between two refreshes of forecasts and scores by the worker.",
        c"shardcast.refresh_forecasts() refreshes on demand; the worker's next refresh comes an interval after it.",
        &REFRESH_INTERVAL_SECS,
        1,
        24 * 60 * 60,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"shardcast.refit_interval",
        c"How often each shard's forecasting model is selected again by backtest.",
        c"Selection is costly; it is spread over refreshes, and forecasts are updated cheaply between.",
        &REFIT_INTERVAL_SECS,
        1,
        7 * 24 * 60 * 60,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_enum_guc(
        c"shardcast.load_measure",
        c"What a shard's load counts: scans, tuples or blocks.",
        c"scans (the default) counts accesses: a query that reads the table once counts once, whether it fetches one row or a million.",
        &LOAD_MEASURE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"shardcast.write_weight",
        c"Weight of tuples written in a shard's load, against what shardcast.load_measure counts.",
        c"Load = measure + write_weight x tuples written.",
        &WRITE_WEIGHT,
        0.0,
        1000.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"shardcast.inheritance_factor",
        c"How far a table is lifted toward the score of the hot tables that reference it.",
        c"0 turns priority inheritance off; 1 lifts referenced tables to the referencing score.",
        &INHERITANCE_FACTOR,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"shardcast.score_hysteresis",
        c"Relative change below which a published score is kept.",
        c"0.2 keeps a score until the new one differs by more than 20%, so queues do not thrash.",
        &SCORE_HYSTERESIS,
        0.0,
        10.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"shardcast.tiers",
        c"Number of priority tiers shards are grouped into.",
        c"Tiers come from one-dimensional clustering of log scores; tier 1 is the hottest.",
        &TIERS,
        1,
        20,
        GucContext::Userset,
        GucFlags::default(),
    );
    // The queue's order is a server setting: the stored dispatch order that every claimer
    // follows must not depend on the settings of the session that last replanned it.
    GucRegistry::define_enum_guc(
        c"shardcast.ordering",
        c"Order of the replication queue: wspt, score or fifo.",
        c"wspt (Smith's rule: score per byte) minimises access-weighted completion time; score is a plain sort; fifo is catalog order.",
        &ORDERING,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"shardcast.overtake_window",
        c"A queued replication task is never overtaken by a task enqueued more than this after it.",
        c"Bounds the wait of cold tasks while hot ones keep arriving; a queue enqueued within one window is in shardcast.ordering alone, 0 is first come, first served.",
        &OVERTAKE_WINDOW_SECS,
        0,
        7 * 24 * 60 * 60,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    // Like the order: the express lane is part of the stored dispatch order that every claimer
    // follows, so it is a server setting.
    GucRegistry::define_float_guc(
        c"shardcast.prefetch_quantile",
        c"Quantile of the queued tasks' densities that a task's density at its forecasts' lower bounds must exceed for pre-replication.",
        c"Such tasks go to the express lane, dispatched before everything else. Under shardcast.ordering score or fifo, scores are compared instead.",
        &PREFETCH_QUANTILE,
        0.0,
        1.0,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"shardcast.prefetch_workers",
        c"Worker slots reserved for the express lane in the allocation plan.",
        c"",
        &PREFETCH_WORKERS,
        0,
        1024,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"shardcast.plan_workers",
        c"Default number of worker slots in shardcast.allocation_plan().",
        c"",
        &PLAN_WORKERS,
        1,
        1024,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"shardcast.plan_bandwidth",
        c"Default total bandwidth, in bytes per second, in shardcast.allocation_plan().",
        c"",
        &PLAN_BANDWIDTH,
        1.0,
        1e15,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"shardcast.claim_lease",
        c"How long a claimed replication task stays claimed without a heartbeat.",
        c"An expired lease returns the task to the queue.",
        &CLAIM_LEASE_SECS,
        1,
        7 * 24 * 60 * 60,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"shardcast.max_attempts",
        c"Attempts after which a replication task is marked failed.",
        c"",
        &MAX_ATTEMPTS,
        1,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    unsafe { pg_sys::MarkGUCPrefixReserved(c"shardcast".as_ptr()) };
}

pub fn database() -> String {
    DATABASE
        .get()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "postgres".to_owned())
}

pub fn enabled() -> bool {
    ENABLED.get()
}

pub fn sample_interval() -> Duration {
    Duration::from_secs(SAMPLE_INTERVAL_SECS.get().max(1) as u64)
}

pub fn history_retention() -> Duration {
    Duration::from_secs(HISTORY_RETENTION_MINS.get().max(1) as u64 * 60)
}

/// Forecast horizon in minutes.
pub fn horizon_minutes() -> usize {
    HORIZON_MINS.get().max(60) as usize
}

/// Forecast horizon in whole hours, rounded up: the hours the models forecast.
pub fn horizon_hours() -> usize {
    (HORIZON_MINS.get().max(60) as usize).div_ceil(60)
}

pub fn interval_level() -> f64 {
    INTERVAL_LEVEL.get()
}

pub fn refresh_interval() -> Duration {
    Duration::from_secs(REFRESH_INTERVAL_SECS.get().max(1) as u64)
}

pub fn refit_interval() -> Duration {
    Duration::from_secs(REFIT_INTERVAL_SECS.get().max(1) as u64)
}

pub fn write_weight() -> f64 {
    WRITE_WEIGHT.get()
}

pub fn load_measure() -> LoadMeasure {
    LOAD_MEASURE.get()
}

pub fn inheritance_factor() -> f64 {
    INHERITANCE_FACTOR.get()
}

pub fn score_hysteresis() -> f64 {
    SCORE_HYSTERESIS.get()
}

pub fn tiers() -> usize {
    TIERS.get().max(1) as usize
}

pub fn ordering() -> Order {
    match ORDERING.get() {
        QueueOrdering::Wspt => Order::Wspt,
        QueueOrdering::Score => Order::Score,
        QueueOrdering::Fifo => Order::Fifo,
    }
}

/// `shardcast.overtake_window`: how much later a task may be enqueued and still go first.
pub fn overtake_window() -> Duration {
    Duration::from_secs(OVERTAKE_WINDOW_SECS.get().max(0) as u64)
}

pub fn prefetch_quantile() -> f64 {
    PREFETCH_QUANTILE.get()
}

pub fn prefetch_workers() -> usize {
    PREFETCH_WORKERS.get().max(0) as usize
}

pub fn plan_workers() -> i32 {
    PLAN_WORKERS.get()
}

pub fn plan_bandwidth() -> f64 {
    PLAN_BANDWIDTH.get()
}

pub fn claim_lease() -> Duration {
    Duration::from_secs(CLAIM_LEASE_SECS.get().max(1) as u64)
}

pub fn max_attempts() -> i32 {
    MAX_ATTEMPTS.get()
}
