//! The forecasting and scoring stage: read every live shard's hourly history, select models
//! where due (core::forecast::select), forecast, score (core::score), and publish to
//! `shardcast.forecast_state` and `shardcast.scores`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use pgrx::prelude::*;
use shardcast_core::access::FINE_BUCKET_SECS;
use shardcast_core::forecast::{
    self, models::DAY, History, ModelKind, Profiles, Selection, Settings,
};
use shardcast_core::score::{self, ScoreInput, ScoreSettings};
use shardcast_core::series::AlignedSeries;

use crate::error::{spi_error, SqlResult};
use crate::gucs::{self, LoadMeasure};

/// At most this much history feeds a forecast: two weekly cycles for MSTL, four for the profile.
const HISTORY_HOURS: usize = 28 * 24;

/// The columns of the history tables that make up a shard's load (load = the measure's
/// columns + write_weight × tuples written). Fixed strings, never user input.
fn measure_columns(measure: LoadMeasure) -> (&'static str, &'static str) {
    match measure {
        LoadMeasure::Scans => ("scans", "NULL"),
        LoadMeasure::Tuples => ("tuples_read", "NULL"),
        LoadMeasure::Blocks => ("blocks_hit", "blocks_read"),
    }
}

/// The SQL expression of a shard's load over the columns of `shardcast.recent_access` (or
/// `shardcast.access_history`), `$weight` being the parameter that holds write_weight.
pub fn load_expression(measure: LoadMeasure, table: &str, weight: &str) -> String {
    let (first, second) = measure_columns(measure);
    let second = if second == "NULL" {
        String::new()
    } else {
        format!(" + {table}.{second}")
    };
    format!("({table}.{first}{second} + {weight} * {table}.tuples_written)")
}

/// What one refresh did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RefreshReport {
    pub scored: usize,
    pub selected: usize,
}

/// What the last refresh published for a shard, to say why the new forecast differs.
struct Previous {
    selection: Option<Selection>,
    selected_at_age_secs: Option<f64>,
    imported_hours: Option<i32>,
    had_forecast: bool,
}

struct ShardHistory {
    shard_id: i32,
    history: History,
    observed_hours: usize,
    imported_hours: usize,
    previous: Previous,
    published_score: Option<f64>,
    class: String,
    weight: f64,
}

/// A forecast ready to be stored.
struct Made {
    shard_id: i32,
    forecast: forecast::Forecast,
    selection: Selection,
    fresh: bool,
    observed_hours: usize,
    imported_hours: usize,
    reason: String,
}

/// Why a forecast differs from the last one, in a DBA's words.
fn change_reason(shard: &ShardHistory, selection: &Selection, fresh: bool) -> String {
    let previous = &shard.previous;
    if !previous.had_forecast {
        return "first forecast".into();
    }
    let unchanged = previous.selection.as_ref().is_some_and(|old| {
        old.members
            .iter()
            .map(|m| m.0)
            .eq(selection.members.iter().map(|m| m.0))
    });
    if fresh && !unchanged {
        let describe = |s: &Selection| -> String {
            s.members
                .iter()
                .map(|(m, w)| format!("{} {:.2}", m.name(), w))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return match &previous.selection {
            Some(old) => format!(
                "models selected again: {} (was {})",
                describe(selection),
                describe(old)
            ),
            None => format!("models selected: {}", describe(selection)),
        };
    }
    if previous.imported_hours != Some(shard.imported_hours as i32) {
        return "imported history changed".into();
    }
    // The same models over a history that moved on with the clock (and what was sampled).
    "refreshed with the latest history".into()
}

/// A refresh of every live shard's forecast and score, in three parts so that the worker can
/// spread a long one over its cycles and sample on time in between: [`Refresh::start`] reads
/// the history (in a transaction), [`Refresh::step`] forecasts shards, model selection
/// included, until a deadline (computation only: no transaction, no lock held), and
/// [`Refresh::finish`] scores and publishes (in a transaction). `refresh_forecasts()` does all
/// three at once.
pub struct Refresh {
    settings: Settings,
    minutes: usize,
    next_hour: usize,
    shards: Vec<ShardHistory>,
    profiles: Profiles,
    /// The stale shards whose models are selected again in this refresh.
    reselect: HashSet<usize>,
    /// One per shard forecast so far, in the order of `shards`.
    made: Vec<Made>,
    report: RefreshReport,
    started: Instant,
    loaded: Duration,
}

impl Refresh {
    /// Reads every live shard's history and decides which models are selected again.
    pub fn start() -> Result<Refresh, pgrx::spi::Error> {
        let settings = Settings {
            horizon: gucs::horizon_hours(),
            level: gucs::interval_level(),
            ..Settings::default()
        };
        let started = Instant::now();
        let minutes = gucs::horizon_minutes();
        let (shards, next_hour) =
            load_histories(gucs::load_measure(), gucs::write_weight(), minutes)?;
        let loaded = started.elapsed();
        let profiles = Profiles::fit(shards.iter().map(|s| (s.history.y.as_slice(), next_hour)));

        // Model selection is costly: redo it for shards never selected or young, and for the
        // stalest of the rest, so that every shard is reselected about once per refit interval.
        let refit = gucs::refit_interval().as_secs_f64();
        let budget = ((shards.len() as f64) * gucs::refresh_interval().as_secs_f64() / refit).ceil()
            as usize;
        let mut stale: Vec<(f64, usize)> = shards
            .iter()
            .enumerate()
            .filter_map(
                |(i, s)| match (&s.previous.selection, s.previous.selected_at_age_secs) {
                    (Some(_), Some(age)) if s.history.len() >= DAY && age >= refit => {
                        Some((age, i))
                    }
                    _ => None,
                },
            )
            .collect();
        stale.sort_by(|a, b| b.0.total_cmp(&a.0));
        let reselect = stale
            .into_iter()
            .take(budget.max(1))
            .map(|(_, i)| i)
            .collect();
        Ok(Refresh {
            settings,
            minutes,
            next_hour,
            made: Vec::with_capacity(shards.len()),
            shards,
            profiles,
            reselect,
            report: RefreshReport::default(),
            started,
            loaded,
        })
    }

    /// Forecasts the next shards until all are done (returns true) or `deadline` passes
    /// (returns false; at least one shard is done per step, so a refresh always progresses).
    pub fn step(&mut self, deadline: Option<Instant>) -> bool {
        let first = self.made.len();
        while self.made.len() < self.shards.len() {
            if self.made.len() > first && deadline.is_some_and(|at| Instant::now() >= at) {
                return false;
            }
            // Selection takes milliseconds per shard: a refresh of many shards must stay
            // interruptible (cancel and statement timeout; SIGTERM in the worker).
            crate::worker::check_for_interrupts();
            let i = self.made.len();
            let shard = &self.shards[i];
            let (selection, fresh) = match &shard.previous.selection {
                // A cold-start selection is not kept once the shard has a day of history.
                Some(previous)
                    if shard.history.len() >= DAY
                        && !self.reselect.contains(&i)
                        && !previous.members.iter().any(|(m, _)| m.is_cold_start()) =>
                {
                    (previous.clone(), false)
                }
                _ => (forecast::select(&shard.history, &self.settings), true),
            };
            if fresh {
                self.report.selected += 1;
            }
            let f = forecast::forecast_with(
                &shard.history,
                &selection,
                &self.settings,
                &self.profiles,
                self.next_hour,
            )
            .truncated(self.minutes as f64 / 60.0);
            let reason = change_reason(shard, &selection, fresh);
            self.made.push(Made {
                shard_id: shard.shard_id,
                forecast: f,
                selection,
                fresh,
                observed_hours: shard.observed_hours,
                imported_hours: shard.imported_hours,
                reason,
            });
        }
        true
    }

    /// Shards forecast so far, and in all.
    pub fn progress(&self) -> (usize, usize) {
        (self.made.len(), self.shards.len())
    }

    /// Scores every shard (forecasting what is left first) and publishes forecasts and scores.
    /// Shards retired since [`Refresh::start`] are left out.
    pub fn finish(mut self) -> Result<RefreshReport, pgrx::spi::Error> {
        self.step(None);
        // One publisher at a time: the worker and a refresh_forecasts() call both replace the
        // published scores.
        Spi::run(
            "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('shardcast.publish'))",
        )?;
        let forecasted = self.started.elapsed();
        let live: HashSet<i32> = Spi::connect(|client| {
            client
                .select(
                    "SELECT shard_id FROM shardcast.shards WHERE retired_at IS NULL",
                    None,
                    &[],
                )?
                .map(|row| row.get::<i32>(1).map(|id| id.unwrap_or_default()))
                .collect::<Result<HashSet<_>, _>>()
        })?;
        let (shards, made): (Vec<ShardHistory>, Vec<Made>) = self
            .shards
            .into_iter()
            .zip(self.made)
            .filter(|(s, _)| live.contains(&s.shard_id))
            .unzip();
        let inputs: Vec<ScoreInput> = shards
            .iter()
            .zip(&made)
            .map(|(s, m)| ScoreInput {
                shard_id: s.shard_id,
                predicted_load: m.forecast.point,
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
        write_forecasts(&made, self.minutes)?;
        let classes: HashMap<i32, (&str, f64, f64)> = shards
            .iter()
            .zip(&made)
            .map(|(s, m)| (s.shard_id, (s.class.as_str(), s.weight, m.forecast.point)))
            .collect();
        write_scores(&scores, &classes)?;
        let mut report = self.report;
        report.scored = scores.len();
        debug1!(
            "shardcast: refreshed {} shards ({} models selected): history {:?}, forecasts {:?}, scores and writes {:?}",
            report.scored,
            report.selected,
            self.loaded,
            forecasted - self.loaded,
            self.started.elapsed() - forecasted
        );
        Ok(report)
    }
}

/// Refreshes forecasts and scores of every live shard at once. Returns how many were scored.
pub fn refresh() -> Result<RefreshReport, pgrx::spi::Error> {
    Refresh::start()?.finish()
}

/// Every live shard's hourly load over the last [`HISTORY_HOURS`], in hours that end now (see
/// core::series): the freshest 5-minute buckets make the last hour, and hours nobody observed
/// are unknown. Returns the shards with their last selection, published score and class, and
/// the UTC hour of day of the hour ahead.
fn load_histories(
    measure: LoadMeasure,
    write_weight: f64,
    horizon_minutes: usize,
) -> Result<(Vec<ShardHistory>, usize), pgrx::spi::Error> {
    let (now, next_hour) = Spi::get_two::<f64, i32>(
        "SELECT extract(epoch FROM now())::float8,
                extract(hour FROM (now() + interval '30 minutes') AT TIME ZONE 'UTC')::int4",
    )?;
    let now = now.unwrap_or_default();
    let next_hour = next_hour.unwrap_or_default().clamp(0, 23) as usize;
    let start = now - HISTORY_HOURS as f64 * 3600.0;
    let horizon_text = format!("{horizon_minutes} minutes");

    let mut index: HashMap<i32, usize> = HashMap::new();
    let mut shards: Vec<ShardHistory> = Vec::new();
    let mut series: Vec<AlignedSeries> = Vec::new();
    let mut first_seen: Vec<f64> = Vec::new();
    let mut periods: Vec<(f64, f64)> = Vec::new();
    Spi::connect(|client| {
        for row in client.select(
            "SELECT extract(epoch FROM started_at)::float8, extract(epoch FROM ended_at)::float8
             FROM shardcast.sampling_periods WHERE ended_at >= to_timestamp($1)",
            None,
            &[start.into()],
        )? {
            if let (Some(from), Some(to)) = (row.get::<f64>(1)?, row.get::<f64>(2)?) {
                periods.push((from, to));
            }
        }
        let rows = client.select(
            "SELECT s.shard_id, extract(epoch FROM s.first_seen)::float8,
                    f.selected_members, f.selected_weights, f.error_low, f.error_high,
                    f.error_offset, f.selected_mase,
                    extract(epoch FROM now() - f.selected_at)::float8,
                    f.imported_hours, f.shard_id IS NOT NULL,
                    sc.score, c.class, c.weight
             FROM shardcast.shards s
             JOIN shardcast.effective_classes c USING (shard_id)
             LEFT JOIN shardcast.forecast_state f ON f.shard_id = s.shard_id AND f.horizon = $1::interval
             LEFT JOIN shardcast.scores sc ON sc.shard_id = s.shard_id
             WHERE s.retired_at IS NULL
             ORDER BY s.shard_id",
            None,
            &[horizon_text.as_str().into()],
        )?;
        for row in rows {
            let shard_id = row.get::<i32>(1)?.unwrap_or_default();
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
            });
            index.insert(shard_id, shards.len());
            first_seen.push(row.get::<f64>(2)?.unwrap_or(now));
            series.push(AlignedSeries::new(now, HISTORY_HOURS));
            shards.push(ShardHistory {
                shard_id,
                history: History::default(),
                observed_hours: 0,
                imported_hours: 0,
                previous: Previous {
                    selection,
                    selected_at_age_secs: row.get::<f64>(9)?,
                    imported_hours: row.get::<i32>(10)?,
                    had_forecast: row.get::<bool>(11)?.unwrap_or(false),
                },
                published_score: row.get::<f64>(12)?,
                class: row.get::<String>(13)?.unwrap_or_else(|| "normal".into()),
                weight: row.get::<f64>(14)?.unwrap_or(1.0),
            });
        }

        let (first, second) = measure_columns(measure);
        let days = client.select(
            &format!(
                "SELECT d.shard_id, extract(epoch FROM d.day::timestamp)::float8,
                        d.{first}, {second}::real[], d.tuples_written, d.hours_present
                 FROM shardcast.daily_access d
                 JOIN shardcast.shards s ON s.shard_id = d.shard_id AND s.retired_at IS NULL
                 WHERE d.day >= (to_timestamp($1) AT TIME ZONE 'UTC')::date"
            ),
            None,
            &[start.into()],
        )?;
        for row in days {
            let shard_id = row.get::<i32>(1)?.unwrap_or_default();
            let Some(&i) = index.get(&shard_id) else {
                continue;
            };
            let day_start = row.get::<f64>(2)?.unwrap_or_default();
            // Borrowed arrays: the day rows are the bulk of what a refresh reads.
            let first = row.get::<pgrx::Array<f32>>(3)?;
            let second = row.get::<pgrx::Array<f32>>(4)?;
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
            let (first, second, written) = (slots(&first), slots(&second), slots(&written));
            let present = row.get::<i32>(6)?.unwrap_or(0);
            for h in (0..DAY).filter(|h| present & (1 << h) != 0) {
                let at = |v: &Vec<f32>| v.get(h).copied().unwrap_or(0.0) as f64;
                let from = day_start + h as f64 * 3600.0;
                series[i].add(
                    from,
                    from + 3600.0,
                    at(&first) + at(&second) + write_weight * at(&written),
                );
            }
        }
        let recent = client.select(
            &format!(
                "SELECT r.shard_id, extract(epoch FROM r.bucket_start)::float8, {}
                 FROM shardcast.recent_access r
                 JOIN shardcast.shards s ON s.shard_id = r.shard_id AND s.retired_at IS NULL
                 WHERE r.bucket_start >= to_timestamp($1) - interval '5 minutes'",
                load_expression(measure, "r", "$2")
            ),
            None,
            &[start.into(), write_weight.into()],
        )?;
        for row in recent {
            let Some(&i) = index.get(&row.get::<i32>(1)?.unwrap_or_default()) else {
                continue;
            };
            let from = row.get::<f64>(2)?.unwrap_or_default();
            series[i].add(
                from,
                from + FINE_BUCKET_SECS as f64,
                row.get::<f64>(3)?.unwrap_or_default(),
            );
        }
        Ok::<_, pgrx::spi::Error>(())
    })?;
    for ((shard, aligned), since) in shards.iter_mut().zip(series).zip(first_seen) {
        let aligned = aligned.finish(&periods, since);
        shard.observed_hours = aligned.observed_hours;
        shard.imported_hours = aligned.imported_hours;
        shard.history = forecast::prepare(&aligned.hourly);
    }
    Ok((shards, next_hour))
}

/// (referencing, referenced) shard pairs from foreign keys, leaf partitions included on both
/// sides, so that a hot table lifts the tables its joins need. Partitions are read from
/// pg_inherits, which takes no lock: pg_partition_tree() locks every partition, and waited behind
/// any DDL lock on one of them.
fn foreign_keys() -> Result<Vec<(i32, i32)>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "WITH RECURSIVE fk AS (
                     SELECT c.conrelid, c.confrelid FROM pg_catalog.pg_constraint c
                     WHERE c.contype = 'f' AND c.conparentid = 0
                 ), tree AS (
                     SELECT e.relid AS root, e.relid
                     FROM (SELECT conrelid AS relid FROM fk UNION SELECT confrelid FROM fk) e
                     UNION
                     SELECT t.root, i.inhrelid
                     FROM tree t
                     JOIN pg_catalog.pg_inherits i ON i.inhparent = t.relid
                     JOIN pg_catalog.pg_class p ON p.oid = i.inhrelid AND p.relispartition
                 )
                 SELECT DISTINCT f.shard_id, t.shard_id
                 FROM fk
                 JOIN tree fp ON fp.root = fk.conrelid
                 JOIN tree tp ON tp.root = fk.confrelid
                 JOIN shardcast.shards f ON f.relid = fp.relid AND f.retired_at IS NULL
                 JOIN shardcast.shards t ON t.relid = tp.relid AND t.retired_at IS NULL",
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

fn write_forecasts(made: &[Made], horizon_minutes: usize) -> Result<(), pgrx::spi::Error> {
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
    Spi::run_with_args(
        "DELETE FROM shardcast.forecast_state f USING shardcast.shards s
         WHERE s.shard_id = f.shard_id AND s.retired_at IS NOT NULL",
        &[],
    )?;
    Spi::run_with_args(
        "INSERT INTO shardcast.forecast_state AS f (shard_id, computed_at, horizon, window_start, window_end,
                model, point, lower, upper, backtest_mase, history_points, observed_hours, imported_hours,
                change_reason, selected_at, selected_members, selected_weights, selected_mase,
                error_low, error_high, error_offset)
         SELECT u.id, now(), make_interval(mins => $18), now(), now() + make_interval(mins => $18),
                u.model, u.point, u.lower, u.upper, u.mase, u.points, u.observed, u.imported, u.reason,
                CASE WHEN u.fresh THEN now()
                     ELSE (SELECT selected_at FROM shardcast.forecast_state WHERE shard_id = u.id) END,
                u.members::text[], u.weights::float8[], u.selected_mase,
                u.error_low, u.error_high, u.error_offset
         FROM unnest($1::int4[], $2::text[], $3::float8[], $4::float8[], $5::float8[], $6::float8[],
                     $7::int4[], $8::text[], $9::text[], $10::float8[], $11::float8[], $12::float8[],
                     $13::bool[], $14::int4[], $15::int4[], $16::text[], $17::float8[])
              AS u(id, model, point, lower, upper, mase, points, members, weights, error_low, error_high,
                   error_offset, fresh, observed, imported, reason, selected_mase)
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
                error_offset = excluded.error_offset",
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
    crate::worker::warn_about_setup();
    let report = refresh().map_err(spi_error)?;
    // Claims follow the stored dispatch order: it must follow the new scores, as after the
    // worker's refreshes.
    crate::replication::replan().map_err(spi_error)?;
    Ok(report.scored as i64)
}
