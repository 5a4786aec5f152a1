//! Forecasting a shard's load over the horizon from its hourly history.
//!
//! Model selection (a rolling-origin backtest over every candidate, the best few combined) is
//! costly and is redone rarely; [`forecast_with`] updates a forecast cheaply with the
//! combination selected last time. The series is hourly and ends at the moment of the forecast
//! (the adapter aligns hours to "now"), so that the forecast covers [now, now + horizon).
//! Whatever the input, outputs are finite and non-negative.

pub mod coldstart;
pub mod models;

pub use coldstart::Profiles;
pub use models::ModelKind;
use models::DAY;

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
    /// At most this many models are combined.
    pub members: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            horizon: 1,
            level: 0.8,
            // 24 origins 7 hours apart span the last week and fall on every hour of the day
            // once (7 and 24 are coprime): no hour of the daily cycle decides alone, and one
            // odd hour is one error in 24.
            origins: 24,
            origin_stride: 7,
            members: 3,
        }
    }
}

/// Gaps up to this long (hours nobody observed between observed ones) are interpolated; a
/// longer gap ends the history that models see, so that a sparse old import never stands for
/// the days around it.
pub const MAX_GAP_HOURS: usize = 24;

/// A shard's hourly history made ready for the models.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Hourly loads, oldest first, gap-free, finite and non-negative.
    pub y: Vec<f64>,
    /// Whether each hour was observed (false: interpolated across a short gap).
    pub known: Vec<bool>,
}

impl History {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Hours that were observed.
    pub fn known_hours(&self) -> usize {
        self.known.iter().filter(|k| **k).count()
    }

    /// A fully observed history (benchmarks, tests).
    pub fn from_loads(y: &[f64]) -> History {
        prepare(y)
    }
}

/// The outcome of model selection, kept between refits: which models are combined with which
/// weights, and the interval learnt from the combination's backtest errors.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Models and weights (summing to 1), heaviest first.
    pub members: Vec<(ModelKind, f64)>,
    /// Backtest MASE of the combination (capped mean absolute error of the horizon totals,
    /// scaled by seasonal naive's); None without a backtest.
    pub mase: Option<f64>,
    /// The interval: bounds are `point + error_low/high × (point + error_offset)`, from the
    /// quantiles of the backtest's relative errors at this horizon.
    pub error_low: f64,
    pub error_high: f64,
    pub error_offset: f64,
}

impl Selection {
    fn single(model: ModelKind) -> Selection {
        Selection {
            members: vec![(model, 1.0)],
            mase: None,
            error_low: 0.0,
            error_high: 0.0,
            error_offset: 0.0,
        }
    }

    /// The model that weighs most.
    pub fn model(&self) -> ModelKind {
        self.members
            .first()
            .map_or(ModelKind::RecentMean, |(m, _)| *m)
    }

    /// "combination" when several models are combined, else the one model's name.
    pub fn name(&self) -> &'static str {
        if self.members.len() > 1 {
            COMBINATION
        } else {
            self.model().name()
        }
    }
}

/// The name of a forecast that combines several models.
pub const COMBINATION: &str = "combination";

/// A shard's forecast: total load over the horizon, and per hour.
#[derive(Clone, Debug, PartialEq)]
pub struct Forecast {
    pub selection: Selection,
    pub point: f64,
    pub lower: f64,
    pub upper: f64,
    /// The point forecast of each hour of the horizon (sums to `point`).
    pub path: Vec<f64>,
    pub history_points: usize,
}

impl Forecast {
    /// The forecast over the first `hours` hours of its horizon (a fraction takes that part of
    /// the last hour): a horizon of 90 minutes is forecast as two hours, and keeps one and a
    /// half. The interval shrinks in proportion.
    pub fn truncated(mut self, hours: f64) -> Forecast {
        if !(hours.is_finite() && hours > 0.0) || hours >= self.path.len() as f64 {
            return self;
        }
        let whole = hours.floor() as usize;
        let part = hours - whole as f64;
        self.path.truncate(whole + usize::from(part > 0.0));
        if part > 0.0 {
            if let Some(last) = self.path.last_mut() {
                *last *= part;
            }
        }
        let point = sanitise(self.path.iter().sum());
        let ratio = if self.point > 0.0 {
            point / self.point
        } else {
            0.0
        };
        self.lower = sanitise(self.lower * ratio).min(point);
        self.upper = sanitise(self.upper * ratio).max(point);
        self.point = point;
        self
    }

    pub fn model_name(&self) -> &'static str {
        self.selection.name()
    }

    pub fn backtest_mase(&self) -> Option<f64> {
        self.selection.mase
    }
}

/// A finite, non-negative load.
pub fn sanitise(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        0.0
    } else {
        v.min(MAX_LOAD)
    }
}

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
    }
}

/// The freshest hours are never cleaned: a surge that is happening now is the news.
const FRESH_HOURS: usize = 6;
/// A point this many robust standard deviations away from its neighbours is an outlier.
const OUTLIER_SIGMAS: f64 = 5.0;

/// The history the models fit: isolated outliers (a spike or a dip that neither the same hour
/// on the neighbouring days nor the same hour on the neighbouring weeks shares) are replaced by
/// the median of those neighbours, so that no model repeats a one-off at full height. What
/// recurs daily or weekly stays, and so do the last [`FRESH_HOURS`] hours.
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
        if !recurs {
            out[t] = expected[t];
        }
    }
    out
}

/// The history a forecast at hour `t` is made from: the cleaned history with its last
/// [`FRESH_HOURS`] as measured (see [`clean_outliers`]).
fn served_history(cleaned: &[f64], raw: &[f64], t: usize) -> Vec<f64> {
    let fresh = t.saturating_sub(FRESH_HOURS);
    let mut history = cleaned[..fresh].to_vec();
    history.extend_from_slice(&raw[fresh..t]);
    history
}

/// The hourly path of one model.
fn predict_path(model: ModelKind, y: &[f64], horizon: usize) -> Option<Vec<f64>> {
    models::predict(model, y, horizon).map(|p| p.into_iter().map(sanitise).collect())
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

/// The mean absolute error with each error capped at three times the mean outcome: a spike in
/// the outcomes costs every model the same capped amount instead of deciding the selection, and
/// a model that now and then forecasts wildly still pays for each time it does.
fn capped_mean_abs(errors: &[f64], cap: f64, weights: &[f64]) -> f64 {
    let total: f64 = weights.iter().take(errors.len()).sum();
    if errors.is_empty() || total <= 0.0 {
        return 0.0;
    }
    errors
        .iter()
        .zip(weights)
        .map(|(e, w)| w * e.abs().min(cap))
        .sum::<f64>()
        / total
}

/// Backtest errors lose half their weight every this many hours of age: the most recent
/// origins say most about the shard as it is now (after a level shift, say), the older ones
/// still keep one odd day from deciding.
const ERROR_HALF_LIFE_HOURS: f64 = 72.0;

/// No forecast total may exceed this many times the largest total the history saw over any
/// window of the horizon's length: beyond it a model has extrapolated, not forecast.
const MAX_TOTAL_RATIO: f64 = 2.0;

/// The largest horizon total in `y` times [`MAX_TOTAL_RATIO`].
fn total_ceiling(y: &[f64], horizon: usize) -> f64 {
    let windows = horizon_sums(y, horizon.min(y.len()).max(1));
    let highest = windows.iter().copied().fold(0.0, f64::max);
    MAX_TOTAL_RATIO * highest * (horizon as f64 / horizon.min(y.len()).max(1) as f64)
}

/// A path scaled down to the ceiling when its total exceeds it.
fn bounded(mut path: Vec<f64>, ceiling: f64) -> Vec<f64> {
    let total: f64 = path.iter().sum();
    if total > ceiling && total > 0.0 {
        path.iter_mut().for_each(|v| *v *= ceiling / total);
    }
    path
}

/// A model more than this many times worse than the best is not combined.
const MEMBER_LOSS_RATIO: f64 = 2.0;
/// Fewer backtest errors than this make no empirical interval.
const MIN_INTERVAL_ERRORS: usize = 8;

/// Selects and weights models by a rolling-origin backtest. From every origin (see
/// [`Settings`]) each candidate forecasts the horizon total from the history before it; the
/// loss is the recency-weighted mean absolute error with errors capped (see
/// [`capped_mean_abs`]). The best few (at most `members`, none worse than twice the best) are
/// combined with weights inversely proportional to their squared loss, so that no single
/// model's quirk (seasonal naive repeating yesterday's spike) comes back at full height. The
/// interval comes from the empirical quantiles of the combination's relative backtest errors
/// (split-conformal style). Histories under a day have no backtest: see [`forecast_with`].
pub fn select(history: &History, settings: &Settings) -> Selection {
    let raw = &history.y;
    let horizon = settings.horizon.max(1);
    if raw.len() < DAY {
        return Selection::single(ModelKind::ClusterProfile);
    }
    let cleaned = clean_outliers(raw);
    let y = &cleaned;
    // A constant history (an idle shard, most often) is its own exact forecast.
    if y.iter().all(|v| *v == y[0]) {
        return Selection {
            mase: Some(0.0),
            ..Selection::single(ModelKind::LastValue)
        };
    }
    let stride = settings.origin_stride.max(1);
    // Origins whose outcome was mostly observed, each with at least a day of history before it.
    let origins: Vec<usize> = (0..settings.origins.max(1))
        .filter_map(|j| y.len().checked_sub(horizon + j * stride))
        .filter(|&t| t >= DAY)
        .filter(|&t| 2 * history.known[t..t + horizon].iter().filter(|k| **k).count() >= horizon)
        .collect();
    let Some(&earliest) = origins.last() else {
        return Selection::single(ModelKind::RecentMean);
    };
    let candidates = ModelKind::candidates(earliest);
    // Outcomes are what happened, outliers included.
    let actual: Vec<f64> = origins
        .iter()
        .map(|&t| raw[t..t + horizon].iter().sum())
        .collect();
    // Each origin's ceiling depends on the history alone, not on the candidate.
    let ceilings: Vec<f64> = origins
        .iter()
        .map(|&t| total_ceiling(&y[..t], horizon))
        .collect();
    // What each origin's forecast would have seen: as when serving, the freshest hours before
    // it are as measured, not cleaned (a persistence model backtested on a history whose last
    // burst was cleaned away would be judged on a series it never forecasts from).
    let seen: Vec<Vec<f64>> = origins.iter().map(|&t| served_history(y, raw, t)).collect();
    // predictions[c][o]: candidate c's total from origin o.
    let mut predictions: Vec<Option<Vec<f64>>> = Vec::with_capacity(candidates.len());
    for &m in &candidates {
        let totals: Option<Vec<f64>> = seen
            .iter()
            .zip(&ceilings)
            .map(|(h, &ceiling)| {
                predict_path(m, h, horizon).map(|p| bounded(p, ceiling).iter().sum::<f64>())
            })
            .collect();
        predictions.push(totals);
    }
    let cap = 3.0 * actual.iter().sum::<f64>() / actual.len() as f64 + f64::MIN_POSITIVE;
    let newest = origins[0];
    let weights: Vec<f64> = origins
        .iter()
        .map(|&t| 0.5f64.powf((newest - t) as f64 / ERROR_HALF_LIFE_HOURS))
        .collect();
    let mut ranked: Vec<(usize, f64)> = predictions
        .iter()
        .enumerate()
        .filter_map(|(c, p)| {
            let p = p.as_ref()?;
            let errors: Vec<f64> = actual.iter().zip(p).map(|(a, f)| a - f).collect();
            Some((c, capped_mean_abs(&errors, cap, &weights)))
        })
        .collect();
    // Ties go to the simpler model (candidates are listed simplest first).
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let Some(&(_, best_loss)) = ranked.first() else {
        return Selection::single(ModelKind::RecentMean);
    };
    let chosen: Vec<(usize, f64)> = if best_loss <= 0.0 {
        vec![(ranked[0].0, 1.0)]
    } else {
        let kept: Vec<(usize, f64)> = ranked
            .iter()
            .take(settings.members.max(1))
            .filter(|(_, loss)| *loss <= MEMBER_LOSS_RATIO * best_loss)
            .map(|&(c, loss)| (c, (best_loss / loss).powi(2)))
            .collect();
        let total: f64 = kept.iter().map(|(_, w)| w).sum();
        kept.into_iter().map(|(c, w)| (c, w / total)).collect()
    };
    let combined: Vec<f64> = (0..origins.len())
        .map(|o| {
            chosen
                .iter()
                .map(|&(c, w)| w * predictions[c].as_ref().map_or(0.0, |p| p[o]))
                .sum()
        })
        .collect();
    let errors: Vec<f64> = actual.iter().zip(&combined).map(|(a, f)| a - f).collect();
    let scale = mase_scale(y, horizon);
    let loss = capped_mean_abs(&errors, cap, &weights);
    let mase = if scale > 0.0 {
        loss / scale
    } else if loss == 0.0 {
        0.0
    } else {
        f64::MAX
    };
    let (error_low, error_high, error_offset) = interval(
        &actual,
        &combined,
        settings.level,
        independent_errors(origins.len(), stride, horizon),
    );
    Selection {
        members: chosen
            .into_iter()
            .map(|(c, w)| (candidates[c], w))
            .collect(),
        mase: Some(sanitise(mase)),
        error_low,
        error_high,
        error_offset,
    }
}

/// The interval from backtest outcomes and forecasts: relative errors e / (forecast + offset),
/// where the offset (a tenth of the mean outcome) keeps quiet hours from blowing them up; the
/// bounds are their empirical quantiles at 1 − q and q, q = (1 − α/2)(m + 1)/m: the
/// split-conformal choice that covers at least the nominal level on m exchangeable errors, with m
/// the number of independent errors among them (see [`independent_errors`]).
fn interval(actual: &[f64], predicted: &[f64], level: f64, independent: f64) -> (f64, f64, f64) {
    let n = actual.len();
    let offset = 0.1 * actual.iter().sum::<f64>() / n.max(1) as f64 + 1e-9;
    if n < MIN_INTERVAL_ERRORS {
        return (-0.5, 0.5, offset);
    }
    let mut relative: Vec<f64> = actual
        .iter()
        .zip(predicted)
        .map(|(a, f)| (a - f) / (f + offset))
        .collect();
    relative.sort_by(f64::total_cmp);
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

/// How many independent errors `origins` backtest origins `stride` hours apart are worth at a
/// horizon of `horizon` hours: outcome windows that overlap share their hours (and their
/// surprises), so a day-long horizon backtested every 7 hours has about 7 independent errors,
/// not 24. Fewer independent errors make the conformal quantile reach further out.
fn independent_errors(origins: usize, stride: usize, horizon: usize) -> f64 {
    origins as f64 * (stride as f64 / horizon.max(1) as f64).min(1.0)
}

/// Forecasts with an already selected combination: one fit per member, no backtest.
/// `hour_of_day` is the UTC hour of the point after the last one, for cold-start profiles.
pub fn forecast_with(
    history: &History,
    selection: &Selection,
    settings: &Settings,
    profiles: &Profiles,
    hour_of_day: usize,
) -> Forecast {
    let raw = &history.y;
    let horizon = settings.horizon.max(1);
    let mut selection = selection.clone();
    let cold = selection.members.iter().any(|(m, _)| m.is_cold_start());
    let path: Vec<f64> = if cold || selection.members.is_empty() {
        let (model, path) = profiles.forecast(raw, hour_of_day, horizon);
        selection = Selection::single(model);
        path
    } else {
        let y = &clean_outliers(raw);
        let ceiling = total_ceiling(y, horizon);
        let fitted: Vec<(Vec<f64>, f64)> = selection
            .members
            .iter()
            .filter_map(|&(m, w)| predict_path(m, y, horizon).map(|p| (bounded(p, ceiling), w)))
            .collect();
        let weight: f64 = fitted.iter().map(|(_, w)| w).sum();
        if fitted.is_empty() || weight <= 0.0 {
            selection = Selection::single(ModelKind::RecentMean);
            vec![models::recent_mean(y); horizon]
        } else {
            (0..horizon)
                .map(|h| fitted.iter().map(|(p, w)| p[h] * w).sum::<f64>() / weight)
                .collect()
        }
    };
    let mut path: Vec<f64> = path.into_iter().map(sanitise).collect();
    let total: f64 = path.iter().sum();
    if total > MAX_LOAD {
        path.iter_mut().for_each(|v| *v *= MAX_LOAD / total);
    }
    let point = sanitise(path.iter().sum());
    let (lower, upper) = if selection.mase.is_some() {
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
    };
    Forecast {
        selection,
        point,
        lower,
        upper,
        path,
        history_points: raw.len(),
    }
}

/// Selection and forecast in one.
pub fn forecast(
    history: &History,
    settings: &Settings,
    profiles: &Profiles,
    hour_of_day: usize,
) -> Forecast {
    forecast_with(
        history,
        &select(history, settings),
        settings,
        profiles,
        hour_of_day,
    )
}

#[cfg(test)]
mod tests;
