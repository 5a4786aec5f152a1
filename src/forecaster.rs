//! The forecasting and scoring stage: read every live shard's hourly history, select models
//! where due (core::forecast::select), forecast, score (core::score), and publish to
//! `shardcast.forecast_state` and `shardcast.scores`.

use std::collections::HashMap;

use pgrx::prelude::*;
use shardcast_core::forecast::{self, models::DAY, ModelKind, Profiles, Selection, Settings};
use shardcast_core::score::{self, ScoreInput, ScoreSettings};

use crate::error::{spi_error, SqlResult};
use crate::gucs;

/// At most this much history feeds a forecast: two weekly cycles for MSTL, four for the profile.
const HISTORY_HOURS: i64 = 28 * 24;

/// What one refresh did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RefreshReport {
    pub scored: usize,
    pub selected: usize,
}

struct ShardHistory {
    shard_id: i32,
    /// Hourly load, oldest first, ending with the last complete hour.
    load: Vec<f64>,
    /// UTC hour of day of the hour after the last point.
    next_hour: usize,
    previous: Option<Selection>,
    selected_at_age_secs: Option<f64>,
    published_score: Option<f64>,
    class: String,
    weight: f64,
}

/// Refreshes forecasts and scores of every live shard. Returns how many were scored.
pub fn refresh() -> Result<RefreshReport, pgrx::spi::Error> {
    let settings = Settings {
        horizon: gucs::horizon_hours(),
        level: gucs::interval_level(),
        ..Settings::default()
    };
    let started = std::time::Instant::now();
    let mut shards = load_histories(gucs::write_weight(), settings.horizon)?;
    let loaded = started.elapsed();
    let profiles = Profiles::fit(shards.iter().map(|s| (s.load.as_slice(), s.next_hour)));

    // Model selection is costly: redo it for shards never selected or young, and for the
    // stalest of the rest, so that every shard is reselected about once per refit interval.
    let refit = gucs::refit_interval().as_secs_f64();
    let budget =
        ((shards.len() as f64) * gucs::refresh_interval().as_secs_f64() / refit).ceil() as usize;
    let mut stale: Vec<(f64, usize)> = shards
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match (s.previous, s.selected_at_age_secs) {
            (Some(_), Some(age)) if s.load.len() >= DAY && age >= refit => Some((age, i)),
            _ => None,
        })
        .collect();
    stale.sort_by(|a, b| b.0.total_cmp(&a.0));
    let reselect: std::collections::HashSet<usize> = stale
        .into_iter()
        .take(budget.max(1))
        .map(|(_, i)| i)
        .collect();

    let mut report = RefreshReport::default();
    let mut forecasts = Vec::with_capacity(shards.len());
    for (i, shard) in shards.iter_mut().enumerate() {
        let (selection, fresh) = match shard.previous {
            Some(previous) if shard.load.len() >= DAY && !reselect.contains(&i) => {
                (previous, false)
            }
            _ => (forecast::select(&shard.load, &settings), true),
        };
        if fresh {
            report.selected += 1;
        }
        let f = forecast::forecast_with(
            &shard.load,
            &selection,
            &settings,
            &profiles,
            shard.next_hour,
        );
        forecasts.push((shard.shard_id, f, selection, fresh));
    }

    let forecasted = started.elapsed();
    let inputs: Vec<ScoreInput> = shards
        .iter()
        .zip(&forecasts)
        .map(|(s, (_, f, _, _))| ScoreInput {
            shard_id: s.shard_id,
            predicted_load: f.point,
            class_weight: s.weight,
            published: s.published_score,
        })
        .collect();
    let scores = score::score_all(
        &inputs,
        &foreign_keys()?,
        &ScoreSettings {
            inheritance_factor: gucs::inheritance_factor(),
            hysteresis: gucs::score_hysteresis(),
            tiers: gucs::tiers(),
        },
    );
    write_forecasts(&forecasts, settings.horizon)?;
    let classes: HashMap<i32, (&str, f64, f64)> = shards
        .iter()
        .zip(&forecasts)
        .map(|(s, (_, f, _, _))| (s.shard_id, (s.class.as_str(), s.weight, f.point)))
        .collect();
    write_scores(&scores, &classes)?;
    report.scored = scores.len();
    debug1!(
        "shardcast: refreshed {} shards ({} models selected): history {:?}, forecasts {:?}, scores and writes {:?}",
        report.scored,
        report.selected,
        loaded,
        forecasted - loaded,
        started.elapsed() - forecasted
    );
    Ok(report)
}

/// Every live shard's hourly load over the last [`HISTORY_HOURS`] (starting when it was first
/// seen or first has history, whichever is earlier), with its last model selection, published
/// score and class.
fn load_histories(
    write_weight: f64,
    horizon: usize,
) -> Result<Vec<ShardHistory>, pgrx::spi::Error> {
    let (hour_epoch, this_hour, elapsed) = Spi::get_three::<i64, i32, f64>(
        "SELECT extract(epoch FROM date_trunc('hour', now()))::int8,
                extract(hour FROM now() AT TIME ZONE 'UTC')::int4,
                extract(epoch FROM now() - date_trunc('hour', now()))::float8",
    )?;
    // Forecasts come from complete hours. A shard with nothing but the current, partial hour
    // uses that, scaled up to a full hour (from at least five minutes of it), so that a new
    // deployment has forecasts within its first hour.
    let partial_hour_scale = 3600.0 / elapsed.unwrap_or(3600.0).max(300.0);
    let start_epoch = hour_epoch.unwrap_or_default() - HISTORY_HOURS * 3600;
    let hours = HISTORY_HOURS as usize + 1;
    let horizon_text = format!("{horizon} hours");

    let mut index: HashMap<i32, usize> = HashMap::new();
    let mut shards: Vec<ShardHistory> = Vec::new();
    let mut full: Vec<Vec<f64>> = Vec::new();
    let mut first_index: Vec<usize> = Vec::new();
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT s.shard_id,
                    greatest(0, floor((extract(epoch FROM s.first_seen) - $1) / 3600))::int8,
                    f.selected_model, f.error_low, f.error_high, f.backtest_mase,
                    extract(epoch FROM now() - f.selected_at)::float8,
                    sc.score, c.class, c.weight
             FROM shardcast.shards s
             JOIN shardcast.effective_classes c USING (shard_id)
             LEFT JOIN shardcast.forecast_state f ON f.shard_id = s.shard_id AND f.horizon = $2::interval
             LEFT JOIN shardcast.scores sc ON sc.shard_id = s.shard_id
             WHERE s.retired_at IS NULL
             ORDER BY s.shard_id",
            None,
            &[start_epoch.into(), horizon_text.as_str().into()],
        )?;
        for row in rows {
            let shard_id = row.get::<i32>(1)?.unwrap_or_default();
            let seen = row
                .get::<i64>(2)?
                .unwrap_or_default()
                .clamp(0, HISTORY_HOURS) as usize;
            let previous = row
                .get::<String>(3)?
                .and_then(|name| ModelKind::from_name(&name))
                .map(|model| Selection {
                    model,
                    error_low: row.get::<f64>(4).ok().flatten().unwrap_or_default(),
                    error_high: row.get::<f64>(5).ok().flatten().unwrap_or_default(),
                    mase: row.get::<f64>(6).ok().flatten(),
                });
            index.insert(shard_id, shards.len());
            shards.push(ShardHistory {
                shard_id,
                load: Vec::new(),
                next_hour: 0,
                previous,
                selected_at_age_secs: row.get::<f64>(7)?,
                published_score: row.get::<f64>(8)?,
                class: row.get::<String>(9)?.unwrap_or_else(|| "normal".into()),
                weight: row.get::<f64>(10)?.unwrap_or(1.0),
            });
            full.push(vec![0.0; hours]);
            first_index.push(seen);
        }

        let mut add = |shard_id: i32, hour: i64, load: f64| {
            if let (Some(&i), Ok(h)) = (index.get(&shard_id), usize::try_from(hour)) {
                if h < hours {
                    full[i][h] += load;
                    if load > 0.0 {
                        first_index[i] = first_index[i].min(h);
                    }
                }
            }
        };
        let days = client.select(
            "SELECT d.shard_id,
                    ((extract(epoch FROM d.day::timestamp) - $1) / 3600)::int8,
                    d.scans, d.tuples_read, d.tuples_written
             FROM shardcast.daily_access d
             JOIN shardcast.shards s ON s.shard_id = d.shard_id AND s.retired_at IS NULL
             WHERE d.day >= (to_timestamp($1) AT TIME ZONE 'UTC')::date",
            None,
            &[start_epoch.into()],
        )?;
        for row in days {
            let shard_id = row.get::<i32>(1)?.unwrap_or_default();
            let first_hour = row.get::<i64>(2)?.unwrap_or_default();
            // Borrowed arrays: the day rows are the bulk of what a refresh reads.
            let scans = row.get::<pgrx::Array<f32>>(3)?;
            let read = row.get::<pgrx::Array<f32>>(4)?;
            let written = row.get::<pgrx::Array<f32>>(5)?;
            let slots = |a: &Option<pgrx::Array<f32>>| -> Vec<f32> {
                match a.as_ref().map(|a| a.as_slice()) {
                    Some(Ok(slice)) => slice.to_vec(),
                    _ => a
                        .as_ref()
                        .map(|a| a.iter().map(|v| v.unwrap_or(0.0)).collect())
                        .unwrap_or_default(),
                }
            };
            let (scans, read, written) = (slots(&scans), slots(&read), slots(&written));
            for h in 0..DAY {
                let at = |v: &Vec<f32>| v.get(h).copied().unwrap_or(0.0) as f64;
                add(
                    shard_id,
                    first_hour + h as i64,
                    at(&scans) + at(&read) + write_weight * at(&written),
                );
            }
        }
        let recent = client.select(
            "SELECT r.shard_id,
                    ((extract(epoch FROM date_trunc('hour', r.bucket_start)) - $1) / 3600)::int8,
                    sum(r.scans + r.tuples_read + $2 * r.tuples_written)
             FROM shardcast.recent_access r
             JOIN shardcast.shards s ON s.shard_id = r.shard_id AND s.retired_at IS NULL
             WHERE r.bucket_start >= to_timestamp($1)
             GROUP BY 1, 2",
            None,
            &[start_epoch.into(), write_weight.into()],
        )?;
        for row in recent {
            add(
                row.get::<i32>(1)?.unwrap_or_default(),
                row.get::<i64>(2)?.unwrap_or_default(),
                row.get::<f64>(3)?.unwrap_or_default(),
            );
        }
        Ok::<_, pgrx::spi::Error>(())
    })?;
    let this_hour = this_hour.unwrap_or_default().clamp(0, 23) as usize;
    for (i, shard) in shards.iter_mut().enumerate() {
        let first = first_index[i].min(hours - 1);
        if first == hours - 1 {
            full[i][hours - 1] *= partial_hour_scale;
            shard.load = forecast::prepare(&full[i][first..]);
            shard.next_hour = (this_hour + 1) % DAY;
        } else {
            shard.load = forecast::prepare(&full[i][first..hours - 1]);
            shard.next_hour = this_hour;
        }
    }
    Ok(shards)
}

/// (referencing, referenced) shard pairs from foreign keys, leaf partitions included on both
/// sides, so that a hot table lifts the tables its joins need.
fn foreign_keys() -> Result<Vec<(i32, i32)>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT DISTINCT f.shard_id, t.shard_id
                 FROM pg_catalog.pg_constraint c
                 CROSS JOIN LATERAL (SELECT c.conrelid AS relid UNION
                                     SELECT relid FROM pg_catalog.pg_partition_tree(c.conrelid) WHERE isleaf) fp
                 CROSS JOIN LATERAL (SELECT c.confrelid AS relid UNION
                                     SELECT relid FROM pg_catalog.pg_partition_tree(c.confrelid) WHERE isleaf) tp
                 JOIN shardcast.shards f ON f.relid = fp.relid AND f.retired_at IS NULL
                 JOIN shardcast.shards t ON t.relid = tp.relid AND t.retired_at IS NULL
                 WHERE c.contype = 'f' AND c.conparentid = 0",
                None,
                &[],
            )?
            .map(|row| {
                Ok((
                    row.get::<i32>(1)?.unwrap_or_default(),
                    row.get::<i32>(2)?.unwrap_or_default(),
                ))
            })
            .collect()
    })
}

fn write_forecasts(
    forecasts: &[(i32, forecast::Forecast, Selection, bool)],
    horizon: usize,
) -> Result<(), pgrx::spi::Error> {
    let ids: Vec<i32> = forecasts.iter().map(|f| f.0).collect();
    let model: Vec<String> = forecasts
        .iter()
        .map(|f| f.1.model.name().to_owned())
        .collect();
    let point: Vec<f64> = forecasts.iter().map(|f| f.1.point).collect();
    let lower: Vec<f64> = forecasts.iter().map(|f| f.1.lower).collect();
    let upper: Vec<f64> = forecasts.iter().map(|f| f.1.upper).collect();
    let mase: Vec<Option<f64>> = forecasts.iter().map(|f| f.1.backtest_mase).collect();
    let points: Vec<i32> = forecasts
        .iter()
        .map(|f| f.1.history_points as i32)
        .collect();
    let selected: Vec<String> = forecasts
        .iter()
        .map(|f| f.2.model.name().to_owned())
        .collect();
    let error_low: Vec<f64> = forecasts.iter().map(|f| f.2.error_low).collect();
    let error_high: Vec<f64> = forecasts.iter().map(|f| f.2.error_high).collect();
    let fresh: Vec<bool> = forecasts.iter().map(|f| f.3).collect();
    Spi::run_with_args(
        "DELETE FROM shardcast.forecast_state f USING shardcast.shards s
         WHERE s.shard_id = f.shard_id AND s.retired_at IS NOT NULL",
        &[],
    )?;
    Spi::run_with_args(
        "INSERT INTO shardcast.forecast_state AS f (shard_id, computed_at, horizon, model, point, lower, upper,
                backtest_mase, history_points, selected_at, selected_model, error_low, error_high)
         SELECT u.id, now(), make_interval(hours => $12), u.model, u.point, u.lower, u.upper, u.mase,
                u.points,
                CASE WHEN u.fresh THEN now()
                     ELSE (SELECT selected_at FROM shardcast.forecast_state WHERE shard_id = u.id) END,
                u.selected, u.error_low, u.error_high
         FROM unnest($1::int4[], $2::text[], $3::float8[], $4::float8[], $5::float8[], $6::float8[],
                     $7::int4[], $8::text[], $9::float8[], $10::float8[], $11::bool[])
              AS u(id, model, point, lower, upper, mase, points, selected, error_low, error_high, fresh)
         ON CONFLICT (shard_id) DO UPDATE SET
                computed_at = excluded.computed_at, horizon = excluded.horizon, model = excluded.model,
                point = excluded.point, lower = excluded.lower, upper = excluded.upper,
                backtest_mase = excluded.backtest_mase, history_points = excluded.history_points,
                selected_at = excluded.selected_at,
                selected_model = excluded.selected_model, error_low = excluded.error_low,
                error_high = excluded.error_high",
        &[
            ids.into(),
            model.into(),
            point.into(),
            lower.into(),
            upper.into(),
            mase.into(),
            points.into(),
            selected.into(),
            error_low.into(),
            error_high.into(),
            fresh.into(),
            (horizon as i32).into(),
        ],
    )
}

fn write_scores(
    scores: &[score::ScoreRow],
    shards: &HashMap<i32, (&str, f64, f64)>,
) -> Result<(), pgrx::spi::Error> {
    let get = |id: &i32| shards.get(id).copied().unwrap_or(("normal", 1.0, 0.0));
    let ids: Vec<i32> = scores.iter().map(|s| s.shard_id).collect();
    let load: Vec<f64> = scores.iter().map(|s| get(&s.shard_id).2).collect();
    let class: Vec<String> = scores
        .iter()
        .map(|s| get(&s.shard_id).0.to_owned())
        .collect();
    let weight: Vec<f64> = scores.iter().map(|s| get(&s.shard_id).1).collect();
    let base: Vec<f64> = scores.iter().map(|s| s.base_score).collect();
    let lift: Vec<f64> = scores.iter().map(|s| s.lift).collect();
    let source: Vec<Option<i32>> = scores.iter().map(|s| s.lift_source).collect();
    let score: Vec<f64> = scores.iter().map(|s| s.score).collect();
    let priority: Vec<i32> = scores.iter().map(|s| s.priority_weight as i32).collect();
    let tier: Vec<i32> = scores.iter().map(|s| s.tier as i32).collect();
    let rank: Vec<i32> = scores.iter().map(|s| s.rank as i32).collect();
    Spi::run("DELETE FROM shardcast.scores")?;
    Spi::run_with_args(
        "INSERT INTO shardcast.scores (shard_id, computed_at, predicted_load, class, weight, base_score,
                lift, lift_source, score, priority_weight, tier, rank)
         SELECT u.id, now(), u.load, u.class, u.weight, u.base, u.lift, u.source, u.score, u.priority,
                u.tier, u.rank
         FROM unnest($1::int4[], $2::float8[], $3::text[], $4::float8[], $5::float8[], $6::float8[],
                     $7::int4[], $8::float8[], $9::int4[], $10::int4[], $11::int4[])
              AS u(id, load, class, weight, base, lift, source, score, priority, tier, rank)",
        &[
            ids.into(),
            load.into(),
            class.into(),
            weight.into(),
            base.into(),
            lift.into(),
            source.into(),
            score.into(),
            priority.into(),
            tier.into(),
            rank.into(),
        ],
    )
}

/// Refreshes forecasts and Shard Priority Scores now; returns the number of shards scored.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn refresh_forecasts() -> SqlResult<i64> {
    refresh().map(|r| r.scored as i64).map_err(spi_error)
}

/// A one-line chart of a shard's load over `span` (hourly), then `│` and its forecast per hour.
#[pg_extern(stable, parallel_safe, cost = 1000, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn sparkline(
    shard: pgrx::PgRelation,
    span: default!(pgrx::datum::Interval, "'24 hours'"),
) -> SqlResult<String> {
    let hours = (span.as_micros() / 3_600_000_000).clamp(1, HISTORY_HOURS as i128) as i32;
    let history: Vec<f64> =
        Spi::connect(|client| {
            client
            .select(
                "SELECT coalesce(sum(h.scans + h.tuples_read + $3 * h.tuples_written), 0)::float8
                 FROM generate_series(date_trunc('hour', now()) - make_interval(hours => $2),
                                      date_trunc('hour', now()), interval '1 hour') AS g(hour)
                 LEFT JOIN shardcast.access_history h
                        ON h.shard = $1::regclass AND date_trunc('hour', h.bucket_start) = g.hour
                 GROUP BY g.hour ORDER BY g.hour",
                None,
                &[shard.oid().into(), hours.into(), gucs::write_weight().into()],
            )?
            .map(|row| row.get::<f64>(1).map(|v| v.unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()
        })
        .map_err(spi_error)?;
    let forecast = Spi::get_one_with_args::<f64>(
        "SELECT (SELECT f.point / greatest(extract(epoch FROM f.horizon) / 3600, 1)
                 FROM shardcast.forecast_state f JOIN shardcast.shards s USING (shard_id)
                 WHERE s.relid = $1 AND s.retired_at IS NULL)",
        &[shard.oid().into()],
    )
    .map_err(spi_error)?;
    Ok(shardcast_core::sparkline::sparkline(&history, forecast))
}
