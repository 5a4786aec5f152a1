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
