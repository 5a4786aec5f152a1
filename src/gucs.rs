//! Every `shardcast.*` setting: defined once here, read through typed accessors.

use std::ffi::CString;
use std::time::Duration;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;

static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
static SAMPLE_INTERVAL_SECS: GucSetting<i32> = GucSetting::<i32>::new(60);
static HISTORY_RETENTION_MINS: GucSetting<i32> = GucSetting::<i32>::new(28 * 24 * 60);
static EXCLUDED_SCHEMAS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Defines the settings. `shardcast.database` is fixed at server start, so it only exists when
/// the library is preloaded (PostgreSQL refuses a postmaster-level setting defined later).
pub fn init(preloading: bool) {
    if preloading {
        GucRegistry::define_string_guc(
            c"shardcast.database",
            c"Database whose shards the shardcast worker samples.",
            c"The background worker connects to this database at server start.",
            &DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
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
