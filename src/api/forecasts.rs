//! `refresh_forecasts()`: the worker's refresh stage on demand.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::catalog::{history, worker_state};
use crate::error::{spi_error, sql_error, SqlResult};
use crate::{gucs, queue, worker};

/// Refreshes forecasts and Shard Priority Scores now; returns the number of shards scored.
#[pg_extern(sql = false)]
fn refresh_forecasts() -> SqlResult<i64> {
    worker::warn_about_setup();
    require_current_catalog()?;
    // In a database the worker does not sample, or while it is paused, nothing else purges what
    // record_access imported: the refresh does (it does not compact, so that it forecasts from
    // the history as it was imported). Not where a sampler runs: it purges every cycle, and the
    // rows this transaction deleted would hold its purge (and so its compaction) up until the
    // refresh commits.
    if !worker::sampled_here().map_err(spi_error)? {
        history::purge(gucs::history_retention()).map_err(spi_error)?;
    }
    let report = worker::refresh::refresh().map_err(spi_error)?;
    // Claims follow the stored dispatch order: it must follow the new scores, as after the
    // worker's refreshes.
    queue::replan().map_err(spi_error)?;
    Ok(report.scored as i64)
}

/// An ERROR (55000) while the catalog is an older version's: between installing a new library
/// and `ALTER EXTENSION shardcast UPDATE`, a refresh would write forecasts in the new shape to
/// the old tables. (The worker waits for the update in the same case.)
fn require_current_catalog() -> SqlResult<()> {
    let library = worker_state::LIBRARY_VERSION;
    let version = match worker_state::extension().map_err(spi_error)? {
        Some(extension) => worker_state::extension_version(extension).map_err(spi_error)?,
        None => return Ok(()),
    };
    if version == library {
        return Ok(());
    }
    Err(sql_error(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "extension \"shardcast\" is version {version} in this database, the library {library}"
        ),
        "Run ALTER EXTENSION shardcast UPDATE; until then the worker waits and forecasts are not refreshed.",
    ))
}
