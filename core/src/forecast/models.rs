//! The candidate models. Each predicts the next `horizon` hourly values from a gap-free,
//! non-negative history; none of them may panic, and their outputs are sanitised by the caller.

use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;

pub const DAY: usize = 24;
pub const WEEK: usize = 7 * DAY;

/// The model behind a forecast. Stored by name in `shardcast.forecasts.model`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// The last hour repeated: what reactive systems use.
    LastValue,
    /// The same hour one day earlier.
    SeasonalNaiveDaily,
    /// The same hour one week earlier.
    SeasonalNaiveWeekly,
    /// MSTL over daily (and weekly) seasons with a naive trend (augurs).
    Mstl,
    /// Exponential smoothing with a damped trend, ETS(A,Ad,N) (augurs).
    Ets,
    /// Teunter-Syntetos-Babai: intermittent demand, for mostly-zero shards.
    Tsb,
    /// The median of last value, daily seasonal naive, MSTL and ETS.
    MedianEnsemble,
    /// Cold start: the nearest cluster's daily profile, scaled to the shard's level.
    ClusterProfile,
    /// Cold start with no fitting profile: the shard's recent mean.
    RecentMean,
}

impl ModelKind {
    pub const ALL: [ModelKind; 9] = [
        ModelKind::LastValue,
        ModelKind::SeasonalNaiveDaily,
        ModelKind::SeasonalNaiveWeekly,
        ModelKind::Mstl,
        ModelKind::Ets,
        ModelKind::Tsb,
        ModelKind::MedianEnsemble,
        ModelKind::ClusterProfile,
        ModelKind::RecentMean,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::LastValue => "last_value",
            ModelKind::SeasonalNaiveDaily => "seasonal_naive_daily",
            ModelKind::SeasonalNaiveWeekly => "seasonal_naive_weekly",
            ModelKind::Mstl => "mstl",
            ModelKind::Ets => "ets",
            ModelKind::Tsb => "tsb",
            ModelKind::MedianEnsemble => "median_ensemble",
            ModelKind::ClusterProfile => "cluster_profile",
            ModelKind::RecentMean => "recent_mean",
        }
    }

    pub fn from_name(name: &str) -> Option<ModelKind> {
        ModelKind::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The fewest history points the model needs to be fitted.
    pub fn min_history(self) -> usize {
        match self {
            ModelKind::LastValue | ModelKind::RecentMean | ModelKind::ClusterProfile => 1,
            ModelKind::Tsb | ModelKind::Ets => 4,
            ModelKind::SeasonalNaiveDaily => DAY,
            ModelKind::SeasonalNaiveWeekly => 2 * WEEK,
            ModelKind::Mstl | ModelKind::MedianEnsemble => 2 * DAY,
        }
    }

    /// Cold-start models are not chosen by backtest: they stand in when there is none.
    pub fn is_cold_start(self) -> bool {
        matches!(self, ModelKind::ClusterProfile | ModelKind::RecentMean)
    }

    /// The models a backtest chooses among, for a history of `len` points.
    pub fn candidates(len: usize) -> Vec<ModelKind> {
        ModelKind::ALL
            .into_iter()
            .filter(|m| !m.is_cold_start() && len >= m.min_history())
            .collect()
    }
}

/// Predicts the next `horizon` values of `y` with `model`. `None` when the model cannot be
/// fitted (too short a history, a library error): the caller falls back.
pub fn predict(model: ModelKind, y: &[f64], horizon: usize) -> Option<Vec<f64>> {
    if y.len() < model.min_history() || horizon == 0 {
        return None;
    }
    match model {
        ModelKind::LastValue => Some(vec![*y.last()?; horizon]),
        ModelKind::SeasonalNaiveDaily => Some(seasonal_naive(y, DAY, horizon)),
        ModelKind::SeasonalNaiveWeekly => Some(seasonal_naive(y, WEEK, horizon)),
        ModelKind::Mstl => mstl(y, horizon),
        ModelKind::Ets => ets(y, horizon),
        ModelKind::Tsb => Some(tsb(y, horizon)),
        ModelKind::RecentMean => Some(vec![recent_mean(y); horizon]),
        // Built from other models' forecasts (see `super::predict_total`) or from cluster
        // profiles (see `super::coldstart`).
        ModelKind::MedianEnsemble | ModelKind::ClusterProfile => None,
    }
}

fn seasonal_naive(y: &[f64], period: usize, horizon: usize) -> Vec<f64> {
    let start = y.len() - period;
    (0..horizon).map(|i| y[start + i % period]).collect()
}

/// Fitting cost grows with the history: MSTL sees the last two weeks (two full cycles of its
/// longest period, as it needs), ETS the last week (it weighs recent points most anyway).
const MSTL_WINDOW: usize = 2 * WEEK;
const ETS_WINDOW: usize = WEEK;

/// MSTL over a daily season, and a weekly one once two weeks exist.
fn mstl(y: &[f64], horizon: usize) -> Option<Vec<f64>> {
    use augurs::{Fit, Predict};
    let y = &y[y.len().saturating_sub(MSTL_WINDOW)..];
    let periods = if y.len() >= 2 * WEEK {
        vec![DAY, WEEK]
    } else {
        vec![DAY]
    };
    let fitted = MSTLModel::naive(periods).fit(y).ok()?;
    Some(fitted.predict(horizon, None).ok()?.point)
}

/// Damped-trend exponential smoothing, ETS(A,Ad,N). (augurs 0.10 fails to fit ETS(A,N,N).)
fn ets(y: &[f64], horizon: usize) -> Option<Vec<f64>> {
    use augurs::{Fit, Predict};
    let y = &y[y.len().saturating_sub(ETS_WINDOW)..];
    // ETS fits a likelihood: a constant series has nothing to fit, and its forecast is itself.
    if y.iter().all(|v| *v == y[0]) {
        return Some(vec![y[0]; horizon]);
    }
    let fitted = AutoETS::new(1, "AAN")
        .ok()?
        .damped(true)
        .ok()?
        .fit(y)
        .ok()?;
    Some(fitted.predict(horizon, None).ok()?.point)
}

/// TSB: separate smoothing of the demand probability and of the demand size when non-zero.
/// Forecast = probability × size, flat over the horizon.
fn tsb(y: &[f64], horizon: usize) -> Vec<f64> {
    const ALPHA_SIZE: f64 = 0.1;
    const ALPHA_PROBABILITY: f64 = 0.1;
    let first = y.iter().position(|v| *v > 0.0);
    let Some(first) = first else {
        return vec![0.0; horizon];
    };
    let mut size = y[first];
    let mut probability = 1.0 / (first + 1) as f64;
    for &v in &y[first + 1..] {
        let occurred = v > 0.0;
        probability += ALPHA_PROBABILITY * (if occurred { 1.0 } else { 0.0 } - probability);
        if occurred {
            size += ALPHA_SIZE * (v - size);
        }
    }
    vec![probability * size; horizon]
}

/// The members of the median ensemble.
pub const ENSEMBLE: [ModelKind; 4] = [
    ModelKind::LastValue,
    ModelKind::SeasonalNaiveDaily,
    ModelKind::Mstl,
    ModelKind::Ets,
];

pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// Mean of the last day (or of all there is).
pub fn recent_mean(y: &[f64]) -> f64 {
    let tail = &y[y.len().saturating_sub(DAY)..];
    if tail.is_empty() {
        0.0
    } else {
        tail.iter().sum::<f64>() / tail.len() as f64
    }
}
