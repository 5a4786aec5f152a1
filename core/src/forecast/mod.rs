//! Forecasting a shard's load over the horizon from its hourly history.
//!
//! Model selection (a rolling-origin backtest over every candidate) is costly and is redone
//! rarely; [`forecast_with`] updates a forecast cheaply with the model selected last time.
//! Whatever the input, outputs are finite and non-negative.

pub mod coldstart;
pub mod models;

use std::collections::HashMap;

pub use coldstart::Profiles;
pub use models::ModelKind;
use models::{DAY, ENSEMBLE};

/// Loads above this (per hour) are clamped, so that sums over a horizon stay finite.
pub const MAX_LOAD: f64 = 1e15;

/// How forecasts are made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Hours ahead; the forecast is the total load over them.
    pub horizon: usize,
    /// Coverage of the prediction interval, e.g. 0.8.
    pub level: f64,
    /// Backtest origins and the hours between them.
    pub origins: usize,
    pub origin_stride: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            horizon: 1,
            level: 0.8,
            // Five origins spread over the last day: every hour of the daily cycle weighs in a
            // little, at the cost of five fits per candidate.
            origins: 5,
            origin_stride: 5,
        }
    }
}

/// The outcome of model selection, kept between refits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Selection {
    pub model: ModelKind,
    /// Backtest MASE of the model (scaled by seasonal naive); None without a backtest.
    pub mase: Option<f64>,
    /// Offsets from the point forecast to the interval bounds, from the backtest errors.
    pub error_low: f64,
    pub error_high: f64,
}

/// A shard's forecast: total load over the horizon.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Forecast {
    pub model: ModelKind,
    pub point: f64,
    pub lower: f64,
    pub upper: f64,
    pub backtest_mase: Option<f64>,
    pub history_points: usize,
}

/// A finite, non-negative load.
pub fn sanitise(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        0.0
    } else {
        v.min(MAX_LOAD)
    }
}

/// Makes a raw hourly series usable: gaps (NaN) are interpolated linearly (held at the ends),
/// infinities and negatives become finite, non-negative loads.
pub fn prepare(raw: &[f64]) -> Vec<f64> {
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
    if known.is_empty() {
        return vec![0.0; raw.len()];
    }
    let mut out = vec![0.0; raw.len()];
    let mut next = 0;
    for (i, slot) in out.iter_mut().enumerate() {
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
    out
}

/// The total forecast over `horizon` of one model, ensembles included.
fn predict_total(
    model: ModelKind,
    y: &[f64],
    horizon: usize,
    cache: &mut HashMap<ModelKind, Option<f64>>,
) -> Option<f64> {
    if let Some(total) = cache.get(&model) {
        return *total;
    }
    let total = match model {
        ModelKind::MedianEnsemble => {
            let members: Vec<f64> = ENSEMBLE
                .into_iter()
                .filter_map(|m| predict_total(m, y, horizon, cache))
                .collect();
            (members.len() >= 2).then(|| models::median(members))
        }
        _ => models::predict(model, y, horizon).map(|p| p.into_iter().map(sanitise).sum::<f64>()),
    }
    .map(sanitise);
    cache.insert(model, total);
    total
}

fn horizon_sums(y: &[f64], horizon: usize) -> Vec<f64> {
    if y.len() < horizon {
        return Vec::new();
    }
    y.windows(horizon).map(|w| w.iter().sum()).collect()
}

/// Mean absolute error of seasonal naive (lag one day, or one hour with under two days of
/// history) on horizon totals: the denominator of MASE.
pub fn mase_scale(y: &[f64], horizon: usize) -> f64 {
    let sums = horizon_sums(y, horizon);
    let lag = if y.len() >= 2 * DAY { DAY } else { 1 };
    if sums.len() <= lag {
        return 0.0;
    }
    let diffs: Vec<f64> = sums
        .windows(lag + 1)
        .map(|w| (w[lag] - w[0]).abs())
        .collect();
    diffs.iter().sum::<f64>() / diffs.len() as f64
}

/// Picks a model by rolling-origin backtest: each candidate forecasts the horizon from every
/// origin using only the history before it; the lowest mean absolute error wins (ties go to
/// the simpler model). Histories under a day have no backtest: see [`forecast_with`].
pub fn select(y: &[f64], settings: &Settings) -> Selection {
    let horizon = settings.horizon.max(1);
    let fallback = Selection {
        model: ModelKind::RecentMean,
        mase: None,
        error_low: 0.0,
        error_high: 0.0,
    };
    if y.len() < DAY {
        return Selection {
            model: ModelKind::ClusterProfile,
            ..fallback
        };
    }
    // A constant history (an idle shard, most often) is its own exact forecast.
    if y.iter().all(|v| *v == y[0]) {
        return Selection {
            model: ModelKind::LastValue,
            mase: Some(0.0),
            error_low: 0.0,
            error_high: 0.0,
        };
    }
    let stride = settings.origin_stride.max(1);
    let origins: Vec<usize> = (0..settings.origins.max(1))
        .filter_map(|j| y.len().checked_sub(horizon + j * stride))
        .filter(|&t| t >= 4)
        .collect();
    let Some(&earliest) = origins.last() else {
        return fallback;
    };
    let candidates = ModelKind::candidates(earliest);
    let mut errors: HashMap<ModelKind, Vec<f64>> = HashMap::new();
    for &t in &origins {
        let actual: f64 = y[t..t + horizon].iter().sum();
        let mut cache = HashMap::new();
        for &m in &candidates {
            if let Some(predicted) = predict_total(m, &y[..t], horizon, &mut cache) {
                errors.entry(m).or_default().push(actual - predicted);
            }
        }
    }
    let mean_abs = |e: &Vec<f64>| e.iter().map(|x| x.abs()).sum::<f64>() / e.len() as f64;
    let best = candidates
        .iter()
        .filter_map(|m| {
            errors
                .get(m)
                .filter(|e| e.len() == origins.len())
                .map(|e| (*m, mean_abs(e)))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let Some((model, mae)) = best else {
        return fallback;
    };
    let scale = mase_scale(y, horizon);
    let mase = if scale > 0.0 {
        mae / scale
    } else if mae == 0.0 {
        0.0
    } else {
        f64::MAX
    };
    // Five errors are too few for empirical quantiles: the band is the normal one with the
    // backtest's root mean squared error as its spread.
    let model_errors = errors.remove(&model).unwrap_or_default();
    let rmse =
        (model_errors.iter().map(|e| e * e).sum::<f64>() / model_errors.len().max(1) as f64).sqrt();
    let z = distrs::Normal::ppf(0.5 + settings.level.clamp(0.0, 0.999) / 2.0, 0.0, 1.0);
    let half_width = if (z * rmse).is_finite() {
        z * rmse
    } else {
        0.0
    };
    Selection {
        model,
        mase: Some(sanitise(mase)),
        error_low: -half_width,
        error_high: half_width,
    }
}

/// Forecasts with an already selected model: one fit, no backtest. `hour_of_day` is the UTC
/// hour of the point after the last one, for cold-start profiles.
pub fn forecast_with(
    y: &[f64],
    selection: &Selection,
    settings: &Settings,
    profiles: &Profiles,
    hour_of_day: usize,
) -> Forecast {
    let horizon = settings.horizon.max(1);
    let mut selection = *selection;
    let point = match selection.model {
        ModelKind::ClusterProfile | ModelKind::RecentMean => {
            let (model, point) = profiles.forecast(y, hour_of_day, horizon);
            selection = Selection {
                model,
                mase: None,
                error_low: 0.0,
                error_high: 0.0,
            };
            point
        }
        model => {
            let mut cache = HashMap::new();
            predict_total(model, y, horizon, &mut cache).unwrap_or_else(|| {
                selection = Selection {
                    model: ModelKind::RecentMean,
                    mase: None,
                    error_low: 0.0,
                    error_high: 0.0,
                };
                models::recent_mean(y) * horizon as f64
            })
        }
    };
    let point = sanitise(point);
    let (lower, upper) = if selection.mase.is_some() {
        (
            sanitise(point + selection.error_low).min(point),
            sanitise(point + selection.error_high).max(point),
        )
    } else {
        // No backtest errors to learn from: a Poisson-like band around the level.
        let spread = 1.28 * point.sqrt();
        (
            sanitise(point - spread).min(point),
            sanitise(point + spread).max(point),
        )
    };
    Forecast {
        model: selection.model,
        point,
        lower,
        upper,
        backtest_mase: selection.mase,
        history_points: y.len(),
    }
}

/// Selection and forecast in one.
pub fn forecast(
    y: &[f64],
    settings: &Settings,
    profiles: &Profiles,
    hour_of_day: usize,
) -> Forecast {
    forecast_with(y, &select(y, settings), settings, profiles, hour_of_day)
}

#[cfg(test)]
mod tests;
