//! shardcast: forecasts how heavily each shard will be read and turns it into replication
//! priorities. This file only wires the pieces to PostgreSQL: settings, the background worker
//! and the SQL catalog. Policy lives in the pgrx-free `shardcast-core` crate (`core/`).
//!
//! Where each concept lives:
//!
//! - `api/`: the SQL functions, one file per concept, thin (argument checks, then catalog, queue
//!   or core, errors mapped to SQLSTATEs): `classes` (set_shard_class), `history`
//!   (record_access), `forecasts` (refresh_forecasts), `sparkline`, `nodes` (add_node,
//!   report_node_load), `enqueue`, `queue` (the prioritized queue, the allocation plan),
//!   `claims` (claim_task, heartbeat, release_task, complete_task), `manifest`, `report`
//!   (prioritization_report_since), `citus` (citus_rebalance_report; the rest of the Citus
//!   surface is PL/pgSQL in sql/citus.sql).
//! - `catalog/`: the SQL statements, one file per table or group: `shards` (the registry,
//!   sizes, statistics), `classes`, `history`, `forecasts`, `scores`, `nodes`, `tasks`, `claims`,
//!   `copy_credits` (granted by claims, spent by the sampler), `worker_state`, and `kept` (the
//!   session's kept plans of the claim statements).
//! - `queue.rs`: the replication queue in dispatch order, and the replan that stores it.
//! - `worker/`: the launcher, the sampler's cycle, and its stages in the order of the data flow:
//!   `sample` (counters → history), `refresh` (history → forecasts → scores).
//! - `gucs.rs` (every setting), `error.rs` (SQL errors).
//! - `pg_tests/`: the #[pg_test]s, one file per concept as in `api/` (plus `shards`,
//!   `arguments`, `privileges`, `worker`), shared helpers in `helpers`.
//! - `core/`: deltas and buckets (`access`), history series (`history`, `series`),
//!   forecasting (`forecast/`), the refit budget (`refit`), scores (`score`), scheduling
//!   (`schedule`), the queue's per-task decisions (`queue`), copy credits (`copy_credits`), the
//!   report's evaluation (`report`), the Citus rebalance replay (`rebalance`), sparklines.

// SQL functions return pgrx's ErrorReport so that every error keeps its SQLSTATE and hint; it is
// large, and it is only built on the error path.
#![allow(clippy::result_large_err)]

use pgrx::prelude::*;

mod api;
mod catalog;
mod error;
mod gucs;
mod queue;
mod worker;

::pgrx::pg_module_magic!(name, version);

// The SQL surface, in files named for what they hold: tables first, then every function (those
// written in Rust are declared there by hand: `#[pg_extern(sql = false)]`), the views over both,
// and last who may use what.
extension_sql_file!("../sql/tables.sql", name = "tables", bootstrap);
extension_sql_file!(
    "../sql/functions.sql",
    name = "functions",
    requires = ["tables"]
);
extension_sql_file!("../sql/views.sql", name = "views", requires = ["functions"]);
// shardcast on Citus: its tables, functions and views, which reach Citus only at run time.
extension_sql_file!("../sql/citus.sql", name = "citus", requires = ["functions"]);
extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    gucs::init(preloading);
    worker::init(preloading);
}

// The #[pg_test]s, one file per concept, in one `#[pg_schema] mod tests` (see its doc comment).
#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

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
