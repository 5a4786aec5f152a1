//! `refresh_forecasts()`: the worker's refresh stage on demand.

use pgrx::prelude::*;

use crate::error::{spi_error, SqlResult};
use crate::{queue, worker};

/// Refreshes forecasts and Shard Priority Scores now; returns the number of shards scored.
#[pg_extern(sql = false)]
fn refresh_forecasts() -> SqlResult<i64> {
    worker::warn_about_setup();
    let report = worker::refresh::refresh().map_err(spi_error)?;
    // Claims follow the stored dispatch order: it must follow the new scores, as after the
    // worker's refreshes.
    queue::replan().map_err(spi_error)?;
    Ok(report.scored as i64)
}
