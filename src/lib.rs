//! shardcast: forecasts how heavily each shard will be read and turns it into replication
//! priorities. This file only wires the pieces to PostgreSQL: settings, the background worker
//! and the SQL catalog. The logic lives in the stage modules and in the pgrx-free
//! `shardcast-core` crate.

// SQL functions return pgrx's ErrorReport so that every error keeps its SQLSTATE and hint; it is
// large, and it is only built on the error path.
#![allow(clippy::result_large_err)]

use pgrx::prelude::*;

mod classes;
mod error;
mod forecaster;
mod gucs;
mod history;
mod registry;
mod replication;
mod sampler;
mod sparkline;
mod worker;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/views.sql", name = "views", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    gucs::init(preloading);
    worker::init(preloading);
}

// `#[pg_schema]` needs an inline module; the tests themselves live in their own file.
#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    include!("pg_tests.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'shardcast'",
            "shardcast.database = 'pgrx_tests'",
            "shardcast.sample_interval = '1s'",
        ]
    }
}
