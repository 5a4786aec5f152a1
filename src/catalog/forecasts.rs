//! `shardcast.forecast_state`: what the last refresh published for each shard (read back by the
//! next to say why a forecast changed and to keep model selections), and its replacement.

use std::time::Duration;

use pgrx::prelude::*;
use shardcast_core::forecast::{self, ModelKind, Selection};

/// What the last refresh published for a live shard, with its class.
pub struct Published {
    pub shard_id: i32,
    /// When the shard was first seen (seconds since the Unix epoch).
    pub first_seen: Option<f64>,
    pub selection: Option<Selection>,
    pub selected_at_age_secs: Option<f64>,
    pub imported_hours: Option<i32>,
    pub had_forecast: bool,
    /// The horizon, in minutes, of the shard's last forecast when it was another one.
    pub other_horizon_minutes: Option<f64>,
    pub score: Option<f64>,
    pub class: String,
    pub weight: f64,
}

/// Every live shard, in shard order, with its forecast state at this horizon.
pub fn published(horizon_minutes: usize) -> Result<Vec<Published>, pgrx::spi::Error> {
    let horizon_text = format!("{horizon_minutes} minutes");
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT s.shard_id, extract(epoch FROM s.first_seen)::float8,
                    f.selected_members, f.selected_weights, f.error_low, f.error_high,
                    f.error_offset, f.selected_mase,
                    extract(epoch FROM now() - f.selected_at)::float8,
                    f.imported_hours, f.shard_id IS NOT NULL,
                    sc.score, c.class, c.weight,
                    extract(epoch FROM o.horizon)::float8 / 60, f.last_weight, f.error_median
             FROM shardcast.shards s
             JOIN shardcast.effective_classes c USING (shard_id)
             LEFT JOIN shardcast.forecast_state f ON f.shard_id = s.shard_id AND f.horizon = $1::interval
             LEFT JOIN shardcast.forecast_state o ON o.shard_id = s.shard_id AND o.horizon <> $1::interval
             LEFT JOIN shardcast.scores sc ON sc.shard_id = s.shard_id
             WHERE s.retired_at IS NULL
             ORDER BY s.shard_id",
            None,
            &[horizon_text.as_str().into()],
        )?;
        let mut shards = Vec::new();
        for row in rows {
            let members = row.get::<Vec<String>>(3)?.unwrap_or_default();
            let weights = row.get::<Vec<f64>>(4)?.unwrap_or_default();
            let members: Option<Vec<(ModelKind, f64)>> = members
                .iter()
                .zip(&weights)
                .map(|(name, w)| ModelKind::from_name(name).map(|m| (m, *w)))
                .collect();
            let selection = members.filter(|m| !m.is_empty()).map(|members| Selection {
                members,
                error_low: row.get::<f64>(5).ok().flatten().unwrap_or_default(),
                error_high: row.get::<f64>(6).ok().flatten().unwrap_or_default(),
                error_offset: row.get::<f64>(7).ok().flatten().unwrap_or_default(),
                mase: row.get::<f64>(8).ok().flatten(),
                last_weight: row.get::<f64>(16).ok().flatten().unwrap_or_default(),
                error_median: row.get::<f64>(17).ok().flatten().unwrap_or_default(),
            });
            shards.push(Published {
                shard_id: row.get::<i32>(1)?.unwrap_or_default(),
                first_seen: row.get::<f64>(2)?,
                selection,
                selected_at_age_secs: row.get::<f64>(9)?,
                imported_hours: row.get::<i32>(10)?,
                had_forecast: row.get::<bool>(11)?.unwrap_or(false),
                other_horizon_minutes: row.get::<f64>(15)?,
                score: row.get::<f64>(12)?,
                class: row.get::<String>(13)?.unwrap_or_else(|| "normal".into()),
                weight: row.get::<f64>(14)?.unwrap_or(1.0),
            });
        }
        Ok(shards)
    })
}

/// A forecast ready to be stored.
pub struct Made {
    pub shard_id: i32,
    pub forecast: forecast::Forecast,
    pub selection: Selection,
    /// Whether the models were selected in this refresh.
    pub fresh: bool,
    pub observed_hours: usize,
    pub imported_hours: usize,
    pub reason: String,
}

/// Replaces the forecasts of the shards in `made`, made from history up to `read_at` (their
/// window starts there), and drops those of retired shards.
pub fn write_forecasts(
    made: &[Made],
    horizon_minutes: usize,
    read_at: TimestampWithTimeZone,
) -> Result<(), pgrx::spi::Error> {
    let ids: Vec<i32> = made.iter().map(|m| m.shard_id).collect();
    let model: Vec<String> = made
        .iter()
        .map(|m| m.forecast.model_name().to_owned())
        .collect();
    let point: Vec<f64> = made.iter().map(|m| m.forecast.point).collect();
    let lower: Vec<f64> = made.iter().map(|m| m.forecast.lower).collect();
    let upper: Vec<f64> = made.iter().map(|m| m.forecast.upper).collect();
    let mase: Vec<Option<f64>> = made.iter().map(|m| m.forecast.backtest_mase()).collect();
    let points: Vec<i32> = made
        .iter()
        .map(|m| m.forecast.history_points as i32)
        .collect();
    // Members as one text per shard ('{a,b}'): SQL arrays of arrays must be rectangular.
    let members: Vec<String> = made
        .iter()
        .map(|m| {
            let names: Vec<&str> = m.selection.members.iter().map(|(k, _)| k.name()).collect();
            format!("{{{}}}", names.join(","))
        })
        .collect();
    let weights: Vec<String> = made
        .iter()
        .map(|m| {
            let weights: Vec<String> = m
                .selection
                .members
                .iter()
                .map(|(_, w)| format!("{w:e}"))
                .collect();
            format!("{{{}}}", weights.join(","))
        })
        .collect();
    let error_low: Vec<f64> = made.iter().map(|m| m.selection.error_low).collect();
    let error_high: Vec<f64> = made.iter().map(|m| m.selection.error_high).collect();
    let error_offset: Vec<f64> = made.iter().map(|m| m.selection.error_offset).collect();
    let fresh: Vec<bool> = made.iter().map(|m| m.fresh).collect();
    let observed: Vec<i32> = made.iter().map(|m| m.observed_hours as i32).collect();
    let imported: Vec<i32> = made.iter().map(|m| m.imported_hours as i32).collect();
    let reason: Vec<String> = made.iter().map(|m| m.reason.clone()).collect();
    let selected_mase: Vec<Option<f64>> = made.iter().map(|m| m.selection.mase).collect();
    let expected: Vec<f64> = made.iter().map(|m| m.forecast.expected).collect();
    let last_weight: Vec<f64> = made.iter().map(|m| m.selection.last_weight).collect();
    let error_median: Vec<f64> = made.iter().map(|m| m.selection.error_median).collect();
    Spi::run_with_args(
        "DELETE FROM shardcast.forecast_state f USING shardcast.shards s
         WHERE s.shard_id = f.shard_id AND s.retired_at IS NOT NULL",
        &[],
    )?;
    Spi::run_with_args(
        "INSERT INTO shardcast.forecast_state AS f (shard_id, computed_at, horizon, window_start, window_end,
                model, point, lower, upper, backtest_mase, history_points, observed_hours, imported_hours,
                change_reason, selected_at, selected_members, selected_weights, selected_mase,
                error_low, error_high, error_offset, expected, last_weight, error_median)
         SELECT u.id, now(), make_interval(mins => $18), $19, $19 + make_interval(mins => $18),
                u.model, u.point, u.lower, u.upper, u.mase, u.points, u.observed, u.imported, u.reason,
                CASE WHEN u.fresh THEN now()
                     ELSE (SELECT selected_at FROM shardcast.forecast_state WHERE shard_id = u.id) END,
                u.members::text[], u.weights::float8[], u.selected_mase,
                u.error_low, u.error_high, u.error_offset, u.expected, u.last_weight, u.error_median
         FROM unnest($1::int4[], $2::text[], $3::float8[], $4::float8[], $5::float8[], $6::float8[],
                     $7::int4[], $8::text[], $9::text[], $10::float8[], $11::float8[], $12::float8[],
                     $13::bool[], $14::int4[], $15::int4[], $16::text[], $17::float8[], $20::float8[],
                     $21::float8[], $22::float8[])
              AS u(id, model, point, lower, upper, mase, points, members, weights, error_low, error_high,
                   error_offset, fresh, observed, imported, reason, selected_mase, expected, last_weight,
                   error_median)
         ON CONFLICT (shard_id) DO UPDATE SET
                computed_at = excluded.computed_at, horizon = excluded.horizon,
                window_start = excluded.window_start, window_end = excluded.window_end,
                model = excluded.model, point = excluded.point, lower = excluded.lower,
                upper = excluded.upper, backtest_mase = excluded.backtest_mase,
                history_points = excluded.history_points, observed_hours = excluded.observed_hours,
                imported_hours = excluded.imported_hours, change_reason = excluded.change_reason,
                selected_at = coalesce(excluded.selected_at, f.selected_at),
                selected_members = excluded.selected_members,
                selected_weights = excluded.selected_weights, selected_mase = excluded.selected_mase,
                error_low = excluded.error_low, error_high = excluded.error_high,
                error_offset = excluded.error_offset, expected = excluded.expected,
                last_weight = excluded.last_weight, error_median = excluded.error_median",
        &[
            ids.into(),
            model.into(),
            point.into(),
            lower.into(),
            upper.into(),
            mase.into(),
            points.into(),
            members.into(),
            weights.into(),
            error_low.into(),
            error_high.into(),
            error_offset.into(),
            fresh.into(),
            observed.into(),
            imported.into(),
            reason.into(),
            selected_mase.into(),
            (horizon_minutes as i32).into(),
            read_at.into(),
            expected.into(),
            last_weight.into(),
            error_median.into(),
        ],
    )
}

/// When the history of the latest forecasts published by another than the caller was read
/// (`$1`: the read time of the caller's own last publication, whose rows do not count).
/// Forecasts ahead of the clock (stepped back) do not count either: the worker would otherwise
/// forecast everything each interval only to drop it, until the clock caught up.
const LATEST_OTHER: &str = "SELECT max(window_start) FILTER (WHERE window_start IS DISTINCT FROM $1
                                                             AND window_start <= clock_timestamp())
                            FROM shardcast.forecast_state";

/// Whether forecasts made from history read after `read_at` were published by another than
/// the caller, whose own last publication was read at `own` (see [`LATEST_OTHER`]).
pub fn published_after(
    read_at: TimestampWithTimeZone,
    own: Option<TimestampWithTimeZone>,
) -> Result<bool, pgrx::spi::Error> {
    Spi::get_one_with_args::<bool>(
        &format!("SELECT coalesce(({LATEST_OTHER}) > $2, false)"),
        &[own.into(), read_at.into()],
    )
    .map(|later| later.unwrap_or(false))
}

/// How long ago the history of the latest forecasts published by another than the caller was
/// read (see [`LATEST_OTHER`]); None when there are none.
pub fn published_age_unless(
    own: Option<TimestampWithTimeZone>,
) -> Result<Option<Duration>, pgrx::spi::Error> {
    // A scalar subquery over an aggregate: one row whatever the table holds.
    Spi::get_one_with_args::<f64>(
        &format!("SELECT extract(epoch FROM clock_timestamp() - ({LATEST_OTHER}))::float8"),
        &[own.into()],
    )
    .map(|age| age.and_then(|secs| Duration::try_from_secs_f64(secs).ok()))
}

/// A forecast's (`f`) expected load in SQL. (to_jsonb: 0.1.0's catalog, which the new library
/// may meet before `ALTER EXTENSION UPDATE`, has no `expected`, and its point was the expected
/// load.)
const EXPECTED_LOAD: &str = "coalesce((to_jsonb(f) ->> 'expected')::float8, f.point)";

/// The expected load per hour of the live shard of `relid`; None when it has none.
pub fn hourly_forecast(relid: pg_sys::Oid) -> Result<Option<f64>, pgrx::spi::Error> {
    Spi::get_one_with_args::<f64>(
        &format!(
            "SELECT (SELECT {EXPECTED_LOAD} / greatest(extract(epoch FROM f.horizon) / 3600, 1)
                     FROM shardcast.forecast_state f JOIN shardcast.shards s USING (shard_id)
                     WHERE s.relid = $1 AND s.retired_at IS NULL
                       AND to_jsonb(s) ->> 'citus_shard_id' IS NULL)"
        ),
        &[relid.into()],
    )
}
