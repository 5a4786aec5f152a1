//! The prediction interval: learnt from the backtest's errors (split-conformal style) when the
//! models are selected ([`interval`]), put around each forecast's point ([`bounds`]).

use super::{sanitise, Selection};

/// Fewer backtest errors than this make no empirical interval.
pub(super) const MIN_INTERVAL_ERRORS: usize = 8;

/// The interval from backtest outcomes and forecasts: relative errors e / (forecast + offset),
/// where the offset (a tenth of the mean outcome) keeps quiet hours from blowing them up; the
/// bounds are their empirical quantiles at 1 − q and q, q = (1 − α/2)(m + 1)/m: the
/// split-conformal choice that covers at least the nominal level on m exchangeable errors, with m
/// the number of independent errors among them (see [`independent_errors`]).
pub(super) fn interval(
    actual: &[f64],
    predicted: &[f64],
    level: f64,
    independent: f64,
) -> (f64, f64, f64) {
    let n = actual.len();
    let offset = 0.1 * actual.iter().sum::<f64>() / n.max(1) as f64 + 1e-9;
    if n < MIN_INTERVAL_ERRORS {
        return (-0.5, 0.5, offset);
    }
    let relative = relative_errors(actual, predicted, offset);
    let alpha = 1.0 - level.clamp(0.5, 0.999);
    // The split-conformal quantile for `independent` errors, read off all n of them.
    let m = independent.clamp(1.0, n as f64);
    let upper = ((1.0 - alpha / 2.0) * (m + 1.0) / m).min(1.0);
    let high_rank = (upper * n as f64).ceil() as usize;
    let low_rank = ((1.0 - upper) * n as f64).ceil() as usize;
    let low = relative[low_rank.clamp(1, n) - 1].min(0.0);
    let high = relative[high_rank.clamp(1, n) - 1].max(0.0);
    (low, high, offset)
}

/// The relative errors (a - f) / (f + offset) of forecasts `predicted` of outcomes `actual`,
/// in ascending order: what the interval's quantiles and the point's median are read from.
pub(super) fn relative_errors(actual: &[f64], predicted: &[f64], offset: f64) -> Vec<f64> {
    let mut relative: Vec<f64> = actual
        .iter()
        .zip(predicted)
        .map(|(a, f)| (a - f) / (f + offset))
        .collect();
    relative.sort_by(f64::total_cmp);
    relative
}

/// How many independent errors `origins` backtest origins `stride` hours apart are worth at a
/// horizon of `horizon` hours: outcome windows that overlap share their hours (and their
/// surprises), so a day-long horizon backtested every 7 hours has about 7 independent errors,
/// not 24. Fewer independent errors make the conformal quantile reach further out.
pub(super) fn independent_errors(origins: usize, stride: usize, horizon: usize) -> f64 {
    origins as f64 * (stride as f64 / horizon.max(1) as f64).min(1.0)
}

/// The interval around a forecast's `point`: as `selection` learnt it from its backtest (see
/// [`interval`]), or, without a backtest, a wide band around the level.
pub(super) fn bounds(point: f64, selection: &Selection) -> (f64, f64) {
    if selection.mase.is_some() {
        let base = point + selection.error_offset;
        (
            sanitise(point + selection.error_low * base).min(point),
            sanitise(point + selection.error_high * base).max(point),
        )
    } else {
        // No backtest errors to learn from: a wide band around the level.
        let spread = 0.5 * point + 1.28 * point.sqrt();
        (
            sanitise(point - spread).min(point),
            sanitise(point + spread).max(point),
        )
    }
}
