//! Sparklines: a shard's hourly load and forecast as one line of text. They never open the
//! relation they draw, so that a view that shows them (`shardcast.priority_scores`) neither
//! fails when a shard has just been dropped nor waits behind DDL that locks one.

use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::catalog::{forecasts, history, shards};
use crate::error::{null_argument, spi_error, sql_error, SqlResult};
use crate::gucs;

/// The longest span a sparkline draws: the history the forecasts read (28 days).
pub const MAX_SPAN_HOURS: i32 = 28 * 24;

/// The line for the live shard of `relid` over the last `hours` hours, then `│` and its forecast
/// per hour. Reads history and forecasts only: an OID that is no shard (any more) draws a flat
/// line without a forecast.
fn draw(relid: pg_sys::Oid, hours: i32) -> SqlResult<String> {
    let history = history::hourly_load(relid, hours, gucs::load_measure(), gucs::write_weight())
        .map_err(spi_error)?;
    let forecast = forecasts::hourly_forecast(relid).map_err(spi_error)?;
    Ok(shardcast_core::sparkline::sparkline(&history, forecast))
}

/// Whole hours in `span`, 1 to [`MAX_SPAN_HOURS`]; anything else is refused.
fn span_hours(span: Interval) -> SqlResult<i32> {
    let micros = span.as_micros();
    let hours = micros / 3_600_000_000;
    if micros < 3_600_000_000 || hours > MAX_SPAN_HOURS as i128 {
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("a sparkline spans 1 hour to {MAX_SPAN_HOURS} hours (28 days), not {span}"),
            "History older than 28 days is not forecast from; pass e.g. '24 hours' or '7 days'.",
        ));
    }
    Ok(hours as i32)
}

/// Internal: the sparkline of the shard with OID `relid`, behind `shardcast.priority_scores`.
/// Takes an OID, not a regclass, so that the relation is never opened or locked.
#[pg_extern(sql = false)]
fn sparkline_of_oid(
    relid: Option<pg_sys::Oid>,
    span: default!(Option<Interval>, "'24 hours'"),
) -> SqlResult<Option<String>> {
    let (Some(relid), Some(span)) = (relid, span) else {
        return Ok(None);
    };
    draw(relid, span_hours(span)?).map(Some)
}

/// A one-line chart of a shard's load over `span` (hourly), then `│` and its forecast per hour.
/// Declared by hand so that the shard is a regclass read as an OID: the relation is never opened
/// (a table locked by DDL does not block it), and an OID that names nothing is `42P01`.
#[pg_extern(sql = false)]
fn sparkline(shard: Option<pg_sys::Oid>, span: Option<Interval>) -> SqlResult<String> {
    let hint = "Pass a table and a span, e.g. sparkline('public.orders', '12 hours').";
    let relid = shards::table(shard.ok_or_else(|| null_argument("shard", hint))?, false)?;
    let hours = span_hours(span.ok_or_else(|| null_argument("span", hint))?)?;
    draw(relid, hours)
}
