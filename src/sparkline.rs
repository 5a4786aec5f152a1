//! Sparklines: a shard's hourly load and forecast as one line of text. They never open the
//! relation they draw, so that a view that shows them (`shardcast.priority_scores`) neither
//! fails when a shard has just been dropped nor waits behind DDL that locks one.

use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::error::{null_argument, spi_error, sql_error, SqlResult};
use crate::forecaster::load_expression;
use crate::{gucs, registry};

/// The longest span a sparkline draws: the history the forecasts read (28 days).
pub const MAX_SPAN_HOURS: i32 = 28 * 24;

/// The line for the live shard of `relid` over the last `hours` hours, then `│` and its forecast
/// per hour. Reads history and forecasts only: an OID that is no shard (any more) draws a flat
/// line without a forecast.
fn draw(relid: pg_sys::Oid, hours: i32) -> SqlResult<String> {
    let history: Vec<f64> = Spi::connect(|client| {
        client
            .select(
                &format!(
                    "SELECT coalesce(sum({}), 0)::float8
                     FROM generate_series(date_trunc('hour', now()) - make_interval(hours => $2),
                                          date_trunc('hour', now()), interval '1 hour') AS g(hour)
                     LEFT JOIN shardcast.access_history h
                            ON h.shard_id = (SELECT s.shard_id FROM shardcast.shards s
                                             WHERE s.relid = $1 AND s.retired_at IS NULL)
                           AND date_trunc('hour', h.bucket_start) = g.hour
                     GROUP BY g.hour ORDER BY g.hour",
                    load_expression(gucs::load_measure(), "h", "$3")
                ),
                None,
                &[relid.into(), hours.into(), gucs::write_weight().into()],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                row.get::<f64>(1).map(|v| v.unwrap_or_default())
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(spi_error)?;
    let forecast = Spi::get_one_with_args::<f64>(
        "SELECT (SELECT f.point / greatest(extract(epoch FROM f.horizon) / 3600, 1)
                 FROM shardcast.forecast_state f JOIN shardcast.shards s USING (shard_id)
                 WHERE s.relid = $1 AND s.retired_at IS NULL)",
        &[relid.into()],
    )
    .map_err(spi_error)?;
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
#[pg_extern(
    name = "_sparkline",
    stable,
    parallel_safe,
    cost = 1000,
    security_definer
)]
#[search_path(pg_catalog, pg_temp)]
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
#[pg_extern(
    name = "sparkline",
    sql = "
CREATE FUNCTION shardcast.sparkline(shard regclass, span interval DEFAULT '24 hours') RETURNS text
LANGUAGE c STABLE PARALLEL SAFE COST 1000 SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'sparkline_wrapper';
COMMENT ON FUNCTION shardcast.sparkline(regclass, interval) IS
    'A one-line chart of a shard''s hourly load over span (1 hour to 28 days), then its forecast per hour.';
"
)]
fn sparkline(shard: Option<pg_sys::Oid>, span: Option<Interval>) -> SqlResult<String> {
    let hint = "Pass a table and a span, e.g. sparkline('public.orders', '12 hours').";
    let relid = registry::existing_relation(shard.ok_or_else(|| null_argument("shard", hint))?)?;
    let hours = span_hours(span.ok_or_else(|| null_argument("span", hint))?)?;
    draw(relid, hours)
}
