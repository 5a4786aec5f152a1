//! The history the models see: a raw hourly series made usable ([`prepare`]: gaps, bad values)
//! and cleaned of one-off outliers ([`clean_outliers`]).

use super::models::{self, DAY};
use super::{sanitise, History, MAX_LOAD};

/// Gaps up to this long (hours nobody observed between observed ones) are interpolated; a
/// longer gap ends the history that models see, so that a sparse old import never stands for
/// the days around it.
pub const MAX_GAP_HOURS: usize = 24;

/// Makes a raw hourly series usable. NaN is an hour nobody observed: leading ones are dropped,
/// a run of more than [`MAX_GAP_HOURS`] between known hours ends the history (only what follows
/// it is kept), shorter gaps are interpolated linearly, and unknown hours at the end are held at
/// the last known value. Infinities and negatives become finite, non-negative
/// loads.
pub fn prepare(raw: &[f64]) -> History {
    let mut start = raw.len();
    let mut gap = 0;
    // Unknown hours at the end (the worker was stopped until just now) do not end the history:
    // the history before them is still the shard's; they are held at its last value.
    let last_known = raw.iter().rposition(|v| !v.is_nan()).map_or(0, |i| i + 1);
    for (i, v) in raw[..last_known].iter().enumerate().rev() {
        if v.is_nan() {
            gap += 1;
            if gap > MAX_GAP_HOURS {
                break;
            }
        } else {
            gap = 0;
            start = i;
        }
    }
    let raw = &raw[start..];
    let known: Vec<(usize, f64)> = raw
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(i, v)| {
            (
                i,
                if *v == f64::INFINITY {
                    MAX_LOAD
                } else {
                    sanitise(*v)
                },
            )
        })
        .collect();
    let mut y = vec![0.0; raw.len()];
    let mut next = 0;
    for (i, slot) in y.iter_mut().enumerate() {
        while next < known.len() && known[next].0 < i {
            next += 1;
        }
        *slot = match (next.checked_sub(1).map(|p| known[p]), known.get(next)) {
            (_, Some(&(j, v))) if j == i => v,
            (Some((a, va)), Some(&(b, vb))) => va + (vb - va) * (i - a) as f64 / (b - a) as f64,
            (Some((_, va)), None) => va,
            (None, Some(&(_, vb))) => vb,
            (None, None) => 0.0,
        };
    }
    History {
        y,
        known: raw.iter().map(|v| !v.is_nan()).collect(),
        recent_excess: None,
    }
}

/// The freshest hours are never cleaned: a surge that is happening now is the news.
pub(super) const FRESH_HOURS: usize = 6;
/// The days, counted back from now, whose hours are kept when they are like the same hour on
/// the last three days (see [`clean_outliers`]): after a shift up to four days ago, the hours
/// whose daily neighbours (three days either side) are mostly on the far side of it.
const NOW_DAYS: usize = 4;
/// A point this many robust standard deviations away from its neighbours is an outlier.
const OUTLIER_SIGMAS: f64 = 5.0;

/// The history the models fit: isolated outliers (a spike or a dip that neither the same hour
/// on the neighbouring days nor the same hour on the neighbouring weeks shares) are replaced by
/// the median of those neighbours, so that no model repeats a one-off at full height. What
/// recurs daily or weekly stays, and so do the last [`FRESH_HOURS`] hours, and hours of the last
/// [`NOW_DAYS`] days like the same hour on the last three: after a level shift the new level is
/// the shard as it is now, where the neighbours on the far side of the shift would put the old
/// level back for days (a flat series that fell from 8.9 to 2.6 million an hour was "cleaned"
/// back to 6-9 million for the three days after).
pub fn clean_outliers(y: &[f64]) -> Vec<f64> {
    let n = y.len();
    if n < 3 * DAY {
        return y.to_vec();
    }
    let neighbours = |t: usize, lag: usize| -> Vec<f64> {
        (1..=3)
            .flat_map(|k| [t.checked_sub(k * lag), t.checked_add(k * lag)])
            .flatten()
            .filter(|&i| i < n)
            .map(|i| y[i])
            .collect()
    };
    let expected: Vec<f64> = (0..n).map(|t| models::median(neighbours(t, DAY))).collect();
    let residuals: Vec<f64> = y
        .iter()
        .zip(&expected)
        .map(|(v, e)| (v - e).abs())
        .collect();
    let spread = 1.4826 * models::median(residuals.clone());
    if spread <= 0.0 {
        return y.to_vec();
    }
    // The same hour of the day on the last three days, the hour itself left out.
    let now_at = |t: usize| -> f64 {
        let slot = (t + DAY - n % DAY) % DAY;
        models::median(
            (0..4)
                .filter_map(|d| (n - DAY + slot).checked_sub(d * DAY))
                .filter(|&i| i != t)
                .take(3)
                .map(|i| y[i])
                .collect(),
        )
    };
    let mut out = y.to_vec();
    for t in 0..n.saturating_sub(FRESH_HOURS) {
        if residuals[t] <= OUTLIER_SIGMAS * spread {
            continue;
        }
        // Recurring weekly (the same hour a week before or after looks alike): keep it.
        let weekly = neighbours(t, models::WEEK);
        let recurs = weekly
            .iter()
            .any(|w| (w - y[t]).abs() <= OUTLIER_SIGMAS * spread / 2.0);
        // In the last days and like the same hour on them: the shard as it is now, not an
        // outlier. Only there: further back, the last days may be of another kind (a dip on a
        // weekday weeks ago is like the weekend just past, and the weekly models would repeat
        // it), and its daily neighbours are on its own side of a shift anyway.
        let current =
            t + NOW_DAYS * DAY >= n && (now_at(t) - y[t]).abs() <= OUTLIER_SIGMAS * spread / 2.0;
        if !recurs && !current {
            out[t] = expected[t];
        }
    }
    out
}

/// The history a forecast at hour `t` is made from: the cleaned history with its last
/// [`FRESH_HOURS`] as measured (see [`clean_outliers`]).
pub(super) fn served_history(cleaned: &[f64], raw: &[f64], t: usize) -> Vec<f64> {
    let fresh = t.saturating_sub(FRESH_HOURS);
    let mut history = cleaned[..fresh].to_vec();
    history.extend_from_slice(&raw[fresh..t]);
    history
}

/// A level shift is read once the new level has lasted this long: a day, so that the hours
/// after it hold every hour of the day and their median is a level, not a part of the daily
/// shape. Within the day the freshest hours, never cleaned, lead the persistence models.
const SHIFT_MIN_HOURS: usize = DAY;
/// Shifts whose first whole day is up to two weeks old are looked for (so up to fifteen days
/// old). Older ones have two weeks of the new level before now: the cleaning's neighbours, the
/// daily profiles and the weekly level's profile (the median of three weeks) are on its side
/// already. Looked for up to eight days back only, a load that fell 1000-fold eight to fourteen
/// days ago was forecast two days ahead at up to 200 times its new level: two of the three weeks
/// behind the weekly profile of the hours ahead were at the old level.
const SHIFT_MAX_HOURS: usize = 2 * models::WEEK;
/// The last observed hours must all be at the new level: a load that came back an hour ago
/// (an outage over, a two-day burst ended) is no shift, whatever the day before says. (The
/// newest hour may be unobserved: an import that ends an hour ago, a worker just restarted.)
const SHIFT_NOW_HOURS: usize = 3;
/// The level before a shift is that of the week before it (or what there is of it).
const SHIFT_BEFORE_HOURS: usize = models::WEEK;
/// A shift changes the level by at least this factor, up or down.
const SHIFT_MIN_RATIO: f64 = 1.5;
/// At least this share of the hours on each side of a shift are on their own side of the
/// midpoint between the two levels: the two levels are apart, not two readings of one
/// seasonal or noisy series (a weekend, a busy afternoon, a few events an hour).
const SHIFT_SEPARATION: f64 = 0.9;

/// A level shift: from hour `at` of the series on, the load has run at `factor` times its
/// level of the week before, up to now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shift {
    pub at: usize,
    pub factor: f64,
}

/// Whether two levels are at least [`SHIFT_MIN_RATIO`] apart.
fn apart(a: f64, b: f64) -> bool {
    a.max(b) > 0.0 && a.max(b) >= SHIFT_MIN_RATIO * a.min(b)
}

/// Whether `v` is on the side of `mid` that `level` is on.
fn beside(v: f64, level: f64, mid: f64) -> bool {
    if level > mid {
        v > mid
    } else {
        v < mid
    }
}

/// The share of `values` on the side of `mid` that `level` is on.
fn share_beside(values: &[f64], level: f64, mid: f64) -> f64 {
    let count = values.iter().filter(|&&v| beside(v, level, mid)).count();
    count as f64 / values.len().max(1) as f64
}

/// The level shift of the last two weeks that lasts until now, if there is one: the hour `at` from
/// which the load has run at a level at least [`SHIFT_MIN_RATIO`] apart from the week before
/// it, for at least [`SHIFT_MIN_HOURS`] observed hours and in each of the last
/// [`SHIFT_NOW_HOURS`] observed, with the hours on both sides apart ([`SHIFT_SEPARATION`]). A shard whose
/// queries changed (a release moved reads to another table, a cache took most of them) is at
/// its new level, and its older history, read as it is, speaks of a shard that no longer
/// exists: outlier cleaning puts the old level back on the hours after the shift (their
/// neighbours on the days before are at the old one) and the daily profiles mix the two levels.
/// `known` tells the observed hours from those held or interpolated across a gap ([`prepare`]):
/// hours held at the last value while the worker was stopped are no new level.
///
/// It runs at every forecast, so it looks first at whole days: only where the days since some
/// day of the last two weeks all run apart from the (up to seven) days before it is the hour looked
/// for, among the two days around that day's start.
pub fn level_shift(y: &[f64], known: &[bool]) -> Option<Shift> {
    let n = y.len();
    if n < SHIFT_MIN_HOURS + DAY || known.len() != n {
        return None;
    }
    let days: Vec<f64> = (0..(n / DAY).min((SHIFT_MAX_HOURS + SHIFT_BEFORE_HOURS) / DAY))
        .map(|d| models::median(y[n - (d + 1) * DAY..n - d * DAY].to_vec()))
        .collect();
    let extremes = |levels: &[f64]| {
        levels.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
    };
    let apart: Vec<bool> = (0..days.len().min(SHIFT_MAX_HOURS / DAY + 1))
        .map(|j| {
            let (after, before) = (
                extremes(&days[..j]),
                extremes(&days[j..(j + SHIFT_BEFORE_HOURS / DAY).min(days.len())]),
            );
            j > 0
                && ((after.0 > 0.0 && before.0 > 0.0 && after.0 >= SHIFT_MIN_RATIO * before.1)
                    || (before.0 > 0.0 && before.0 >= SHIFT_MIN_RATIO * after.1))
        })
        .collect();
    // The newest day of each run of days apart from the days before them is tried, newest run
    // first: at a few events an hour the last day alone can run apart from the days before (a
    // median of 0.5 against 1), and stopping there missed the shift a week before it. Only the
    // newest of a run: a load that grows or falls steadily puts every day in one run, and
    // trying each cost ten times the search.
    (1..apart.len())
        .filter(|&j| apart[j] && !apart[j - 1])
        .find_map(|since| shift_since(y, known, since))
}

/// The level shift whose first whole day is `since` days before now, if there is one: the hour
/// it began, among the two days around that day's start, found as [`level_shift`] says.
fn shift_since(y: &[f64], known: &[bool], since: usize) -> Option<Shift> {
    let n = y.len();
    let earliest = n.saturating_sub((since + 1) * DAY).max(DAY);
    let latest = (n + DAY)
        .saturating_sub(since * DAY)
        .min(n - SHIFT_MIN_HOURS);
    let mut best: Option<(f64, usize, f64)> = None;
    for at in earliest..=latest {
        let before = &y[at.saturating_sub(SHIFT_BEFORE_HOURS)..at];
        // The observed hours since: held or interpolated ones are no level.
        let after: Vec<f64> = (at..n).filter(|&t| known[t]).map(|t| y[t]).collect();
        if after.len() < SHIFT_MIN_HOURS {
            continue;
        }
        let (old, new) = (
            models::median(before.to_vec()),
            models::median(after.clone()),
        );
        if old <= 0.0 || !apart(old, new) {
            continue;
        }
        // Between the levels on a ratio scale; an arithmetic mean where the new level is zero.
        let mid = if new > 0.0 {
            (old * new).sqrt()
        } else {
            old / 2.0
        };
        let mut newest = (at..n).rev().filter(|&t| known[t]).take(SHIFT_NOW_HOURS);
        let now = newest.all(|t| beside(y[t], new, mid));
        let separation = share_beside(before, old, mid).min(share_beside(&after, new, mid));
        if now && separation >= SHIFT_SEPARATION && best.is_none_or(|(s, _, _)| separation > s) {
            best = Some((separation, at, new / old));
        }
    }
    let (_, at, levels) = best?;
    let factor = shift_factor(y, at, levels);
    // A factor beyond what loads can be (a level of 1e-300 before) is no shift to scale by.
    (factor.is_finite() && factor * y[..at].iter().copied().fold(0.0, f64::max) <= MAX_LOAD)
        .then_some(Shift { at, factor })
}

/// How many times its level before hour `at` the load has run since: per hour after it, the
/// ratio to the median of the same hour of the day over the week before (so that a new level
/// read over a day and a few hours is not the daily shape's), and their median; `levels`, the
/// ratio of the two sides' medians, where no hour after it has a usual load above zero.
fn shift_factor(y: &[f64], at: usize, levels: f64) -> f64 {
    let days = (at / DAY).min(SHIFT_BEFORE_HOURS / DAY);
    let ratios: Vec<f64> = (at..y.len())
        .filter_map(|t| {
            let first = (t - at) / DAY + 1;
            let usual = models::median(
                (first..first + days)
                    .filter_map(|k| t.checked_sub(k * DAY))
                    .map(|u| y[u])
                    .collect(),
            );
            (usual > 0.0).then(|| y[t] / usual)
        })
        .collect();
    if ratios.is_empty() {
        levels
    } else {
        models::median(ratios)
    }
}

/// The history as if the shard had always been at its current level: the hours before a
/// [`level_shift`] scaled by its factor, so that the models, the cleaning and the backtest see
/// the daily shape at today's level. The series as it is where there is no shift.
pub fn shift_adjusted(y: &[f64], known: &[bool]) -> (Vec<f64>, Option<Shift>) {
    let shift = level_shift(y, known);
    let mut out = y.to_vec();
    if let Some(Shift { at, factor }) = shift {
        out[..at].iter_mut().for_each(|v| *v *= factor);
    }
    (out, shift)
}
