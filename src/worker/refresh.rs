//! The refresh stage: read every live shard's hourly history, select models where due
//! (core::refit, core::forecast::select), forecast, score (core::score), and publish to
//! `shardcast.forecast_state` and `shardcast.scores`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use pgrx::prelude::*;
use shardcast_core::forecast::{self, Forecast, History, Profiles, Selection, Settings};
use shardcast_core::history::Histories;
use shardcast_core::refit;
use shardcast_core::score::{self, ScoreInput, ScoreSettings};

use crate::catalog::forecasts::{self, Made};
use crate::catalog::history::{self, Clock};
use crate::catalog::scores;
use crate::gucs::{self, LoadMeasure};

/// At most this much history feeds a forecast: the retention's default, four weeks (Theta's
/// window; the weekly level's profile takes three, before the earliest backtest origin).
const HISTORY_HOURS: usize = 28 * 24;

/// What one refresh did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RefreshReport {
    pub scored: usize,
    pub selected: usize,
    /// When the history of the published forecasts was read; None when nothing was published
    /// (see [`RefreshReport::superseded`]).
    pub published: Option<TimestampWithTimeZone>,
}

impl RefreshReport {
    /// Published nothing: another refresh had published forecasts from later history.
    pub fn superseded(&self) -> bool {
        self.published.is_none()
    }
}

/// Who publishes a refresh.
#[derive(Clone, Copy, Debug)]
pub enum Publisher {
    /// A `refresh_forecasts()` call: it always publishes.
    Session,
    /// The worker, whose last publication read its history at `last`.
    Worker { last: Option<TimestampWithTimeZone> },
}

/// What the last refresh published for a shard, to say why the new forecast differs.
struct Previous {
    selection: Option<Selection>,
    selected_at_age_secs: Option<f64>,
    imported_hours: Option<i32>,
    had_forecast: bool,
    /// (this horizon, the last forecast's) in minutes, when the last forecast was over another.
    horizon_change: Option<(usize, usize)>,
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

/// Why a forecast differs from the last one, in a DBA's words, whether it follows a burst that
/// began in the last minutes or a quiet last hour, what bursts that come every day add to it,
/// and a level shift that its history was scaled to.
fn change_reason(
    shard: &ShardHistory,
    selection: &Selection,
    forecast: &Forecast,
    fresh: bool,
) -> String {
    let mut why = model_change(shard, selection, fresh);
    if forecast.onset > 0.0 {
        why.push_str(&format!(
            "; a burst began: the last 15 minutes ran {} an hour above the last hour, beyond noise",
            load_words(forecast.onset)
        ));
    }
    // A lean that rounds to nothing is not worth a clause either.
    if forecast.quiet < 0.995 {
        why.push_str(&format!(
            "; the last hour ran well below its usual load: the next hour is expected at {} of the forecast (bursts are less likely after a quiet hour)",
            factor_words(forecast.quiet)
        ));
    }
    // What rounds to nothing is not worth a clause.
    if forecast.bursts >= 0.005 {
        why.push_str(&format!(
            "; bursts that come every day add {} an hour to this window (outlier cleaning keeps them out of what the models fit)",
            load_words(forecast.bursts)
        ));
    }
    if let Some(shift) = forecast.shift {
        let hours = forecast.history_points.saturating_sub(shift.at);
        why.push_str(&if shift.factor > 0.0 {
            format!(
                "; the load shifted {hours} hours ago to {} times its level of the week before (the older history is scaled to it)",
                factor_words(shift.factor)
            )
        } else {
            format!("; the load stopped {hours} hours ago (the older history is read as idle)")
        });
    }
    why
}

/// A factor as a DBA reads it: two significant digits (0.29, 0.0033, 3.5), a whole number from
/// 10 on, and in scientific notation below a thousandth (1.2e-5).
fn factor_words(factor: f64) -> String {
    if factor > 0.0 && factor < 1e-3 {
        return format!("{factor:.1e}");
    }
    let decimals = if factor > 0.0 {
        (1 - factor.log10().floor() as i64).max(0) as usize
    } else {
        0
    };
    format!("{factor:.decimals$}")
}

/// A load per hour as a DBA reads it: a whole number, or two decimals below 10 (a few events
/// an hour).
fn load_words(load: f64) -> String {
    // 9.996 would print as "10.00".
    if load >= 9.995 {
        format!("{load:.0}")
    } else {
        format!("{load:.2}")
    }
}

/// A horizon as a DBA writes it: "4 h", "90 min".
fn horizon_words(minutes: usize) -> String {
    if minutes.is_multiple_of(60) {
        format!("{} h", minutes / 60)
    } else {
        format!("{minutes} min")
    }
}

/// Why the models or the history of a forecast changed since the last one.
fn model_change(shard: &ShardHistory, selection: &Selection, fresh: bool) -> String {
    let previous = &shard.previous;
    if !previous.had_forecast {
        return match previous.horizon_change {
            Some((now, before)) => format!(
                "first forecast over {} (the last was over {}): models selected for this horizon",
                horizon_words(now),
                horizon_words(before)
            ),
            None => "first forecast".into(),
        };
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
    /// When the history read ends (the forecasts' window starts there), and the hour ahead.
    clock: Clock,
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

/// Builds this process's rayon pool, on which the cold-start profiles' k-means (linfa) runs,
/// with every signal blocked in its threads, before anything else can start it. A signal sent
/// to the process goes to any thread that does not block it, and PostgreSQL's handlers (pgrx's
/// in the worker) may run on its main thread only: a SIGTERM taken by a pool thread at a fast
/// shutdown made pgrx's handler panic there, and the worker aborted (`terminated by signal 6`),
/// which PostgreSQL answers with crash recovery. The threads are spawned while this thread
/// blocks every signal, and inherit that mask from their first instruction on; signals that
/// come meanwhile wait, and are taken here once its own mask is back.
fn quiet_pool() {
    static POOL: std::sync::Once = std::sync::Once::new();
    POOL.call_once(|| {
        let _blocked = SignalsBlocked::new();
        // An error means the pool was built already, or its threads could not be spawned (a
        // process limit), in which case k-means fails as it did before.
        let _ = rayon::ThreadPoolBuilder::new().build_global();
    });
}

/// Every signal blocked in this thread while it lives; the mask before it back when dropped,
/// also on a panic (a main thread left deaf to cancels and shutdowns would be worse).
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> SignalsBlocked {
        // SAFETY: sigfillset initialises `all`; pthread_sigmask changes this thread's mask
        // and writes the old one into `before`.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut before: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
            SignalsBlocked(before)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: puts back the mask that `new` read.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
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
        let (shards, clock) = read_histories(gucs::load_measure(), gucs::write_weight(), minutes)?;
        let loaded = started.elapsed();
        crate::worker::check_for_interrupts();
        quiet_pool();
        // k-means over every shard's daily profile cannot be interrupted inside linfa: checked
        // on either side of it.
        let profiles = Profiles::fit(
            shards
                .iter()
                .map(|s| (s.history.y.as_slice(), clock.next_hour)),
        );
        crate::worker::check_for_interrupts();

        // Model selection is costly: redo it for shards never selected or young, and for the
        // stalest of the rest, so that every shard is reselected about once per refit interval.
        let kept: Vec<refit::Kept> = shards
            .iter()
            .map(|s| refit::Kept {
                selected_age_secs: s
                    .previous
                    .selection
                    .as_ref()
                    .and(s.previous.selected_at_age_secs),
                history_hours: s.history.len(),
            })
            .collect();
        let reselect = refit::due(
            &kept,
            gucs::refresh_interval().as_secs_f64(),
            gucs::refit_interval().as_secs_f64(),
        );
        Ok(Refresh {
            settings,
            minutes,
            clock,
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
            // A cold-start selection is not kept once the shard has a day of history, nor one
            // made before a backfill of its history.
            let due = self.reselect.contains(&i)
                || refit::backfilled(shard.previous.imported_hours, shard.imported_hours);
            // Cleaned once: the backtest and the forecast fit the same series.
            let cleaned = shard.history.cleaned();
            let (selection, fresh) = match &shard.previous.selection {
                Some(previous) if refit::keeps(previous, shard.history.len(), due) => {
                    (previous.clone(), false)
                }
                _ => (forecast::select(&cleaned, &self.settings), true),
            };
            if fresh {
                self.report.selected += 1;
            }
            let f = forecast::forecast_with(
                &cleaned,
                &selection,
                &self.settings,
                &self.profiles,
                self.clock.next_hour,
            )
            .truncated(self.minutes as f64 / 60.0);
            // A cold start picks its model when it forecasts (a cluster's profile, or the
            // recent mean when none fits): kept as the one it picked, so that `models` names
            // the model `model` does, and the next refresh compares like with like. Either is
            // a cold start to the next refresh.
            let selection = if selection.members.iter().any(|(m, _)| m.is_cold_start()) {
                f.selection.clone()
            } else {
                selection
            };
            let reason = change_reason(shard, &selection, &f, fresh);
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
    /// The worker's refresh, spread over its cycles, must not replace what a
    /// `refresh_forecasts()` call published meanwhile: as [`Publisher::Worker`], nothing is
    /// published when forecasts from history read after this refresh read its own are.
    pub fn finish(mut self, publisher: Publisher) -> Result<RefreshReport, pgrx::spi::Error> {
        self.step(None);
        // One publisher at a time: the worker and a refresh_forecasts() call both replace the
        // published scores.
        scores::lock_publication()?;
        let superseded = match publisher {
            Publisher::Session => false,
            Publisher::Worker { last } => forecasts::published_after(self.clock.at, last)?,
        };
        if superseded {
            return Ok(self.report);
        }
        let forecasted = self.started.elapsed();
        let live = scores::live_shards()?;
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
                predicted_load: m.forecast.expected,
                class_weight: s.weight,
                published: s.published_score,
            })
            .collect();
        let scored = score::score_all(
            &inputs,
            &scores::foreign_keys()?,
            &ScoreSettings {
                inheritance_factor: gucs::inheritance_factor(),
                hysteresis: gucs::score_hysteresis(),
                tiers: gucs::tiers(),
            },
        );
        forecasts::write_forecasts(&made, self.minutes, self.clock.at)?;
        let classes: HashMap<i32, (&str, f64, f64)> = shards
            .iter()
            .zip(&made)
            .map(|(s, m)| {
                (
                    s.shard_id,
                    (s.class.as_str(), s.weight, m.forecast.expected),
                )
            })
            .collect();
        scores::write_scores(&scored, &classes)?;
        let mut report = self.report;
        report.scored = scored.len();
        report.published = Some(self.clock.at);
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

/// The load of the hours of a shard's history that are known, as a refresh reads them (tests).
#[cfg(any(test, feature = "pg_test"))]
pub(crate) fn known_history(shard_id: i32) -> Vec<f64> {
    let (shards, _) = read_histories(gucs::load_measure(), gucs::write_weight(), 60).unwrap();
    shards
        .into_iter()
        .find(|s| s.shard_id == shard_id)
        .map(|s| {
            let h = s.history;
            h.y.iter()
                .zip(&h.known)
                .filter(|(_, k)| **k)
                .map(|(y, _)| *y)
                .collect()
        })
        .unwrap_or_default()
}

/// Refreshes forecasts and scores of every live shard at once. Returns how many were scored.
pub fn refresh() -> Result<RefreshReport, pgrx::spi::Error> {
    Refresh::start()?.finish(Publisher::Session)
}

/// Every live shard's hourly load over the last [`HISTORY_HOURS`], in hours that end now (see
/// core::series): the freshest 5-minute buckets make the last hour, and hours nobody observed
/// are unknown. Returns the shards with their last selection, published score and class, and
/// the moment the history ends.
fn read_histories(
    measure: LoadMeasure,
    write_weight: f64,
    horizon_minutes: usize,
) -> Result<(Vec<ShardHistory>, Clock), pgrx::spi::Error> {
    let clock = history::clock()?;
    let now = clock.epoch;
    let start = now - HISTORY_HOURS as f64 * 3600.0;
    let periods = history::sampling_periods(start)?;
    let mut histories = Histories::new(now, HISTORY_HOURS, write_weight, periods);
    let mut shards: Vec<ShardHistory> = Vec::new();
    for p in forecasts::published(horizon_minutes)? {
        histories.add_shard(p.shard_id, p.first_seen.unwrap_or(now));
        shards.push(ShardHistory {
            shard_id: p.shard_id,
            history: History::default(),
            observed_hours: 0,
            imported_hours: 0,
            previous: Previous {
                selection: p.selection,
                selected_at_age_secs: p.selected_at_age_secs,
                imported_hours: p.imported_hours,
                had_forecast: p.had_forecast,
                horizon_change: p
                    .other_horizon_minutes
                    .map(|before| (horizon_minutes, before.round() as usize)),
            },
            published_score: p.score,
            class: p.class,
            weight: p.weight,
        });
    }
    // Gaps first: each amount of history is split by what the worker observed of its time.
    for (shard_id, from, to) in history::shard_gaps(start)? {
        histories.add_gap(shard_id, from, to);
    }
    history::read_into(&mut histories, measure, write_weight, start)?;
    for (shard, aligned) in shards.iter_mut().zip(histories.finish()) {
        shard.observed_hours = aligned.observed_hours;
        shard.imported_hours = aligned.imported_hours;
        shard.history =
            forecast::prepare(&aligned.hourly).with_recent_excess(aligned.recent_excess);
    }
    Ok((shards, clock))
}
