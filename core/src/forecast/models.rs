//! The candidate models. Each predicts the next `horizon` hourly values from a gap-free,
//! non-negative history; none of them may panic, and their outputs are sanitised by the caller.

use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;

pub const DAY: usize = 24;
pub const WEEK: usize = 7 * DAY;

/// A model behind a forecast. Stored by name in `shardcast.forecast_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelKind {
    /// The last hour repeated: what reactive systems use.
    LastValue,
    /// The same hours one day earlier.
    SeasonalNaiveDaily,
    /// The same hours one week earlier.
    SeasonalNaiveWeekly,
    /// The mean of the same hour of the day over the last four weeks: where an hour holds a
    /// few events, a level read from the last hours is mostly their noise, and a mean over days
    /// is not.
    DailyMean,
    /// The level of the last few hours, shaped by the robust daily profile of the last week:
    /// the freshest data sets the level, the history gives the shape.
    SeasonalLevel,
    /// A robust seasonal baseline plus the last hour's excess over it, 70% of which is left
    /// each hour after: a burst under way (news, a batch) is neither smoothed away nor
    /// repeated for the whole horizon.
    DecayingExcess,
    /// The level of the last few hours over the robust weekly profile of the last three weeks,
    /// added: where the week repeats (weekdays and weekends, the same evening peak), the
    /// freshest hours set the level and the weeks the shape, hour by hour of the week.
    WeeklyLevel,
    /// The Theta method: simple exponential smoothing with half the linear trend as drift, on
    /// the deseasonalised series (Assimakopoulos and Nikolopoulos; Hyndman and Billah).
    Theta,
    /// MSTL over daily (and weekly) seasons with a naive trend (augurs).
    Mstl,
    /// Exponential smoothing with a damped trend, ETS(A,Ad,N) (augurs).
    Ets,
    /// Teunter-Syntetos-Babai: intermittent demand, for mostly-zero shards.
    Tsb,
    /// Cold start: the nearest cluster's daily profile, scaled to the shard's level.
    ClusterProfile,
    /// Cold start with no fitting profile: the shard's recent mean.
    RecentMean,
}

impl ModelKind {
    pub const ALL: [ModelKind; 13] = [
        ModelKind::LastValue,
        ModelKind::SeasonalNaiveDaily,
        ModelKind::SeasonalNaiveWeekly,
        ModelKind::DailyMean,
        ModelKind::SeasonalLevel,
        ModelKind::DecayingExcess,
        ModelKind::WeeklyLevel,
        ModelKind::Theta,
        ModelKind::Mstl,
        ModelKind::Ets,
        ModelKind::Tsb,
        ModelKind::ClusterProfile,
        ModelKind::RecentMean,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::LastValue => "last_value",
            ModelKind::SeasonalNaiveDaily => "seasonal_naive_daily",
            ModelKind::SeasonalNaiveWeekly => "seasonal_naive_weekly",
            ModelKind::DailyMean => "daily_mean",
            ModelKind::SeasonalLevel => "seasonal_level",
            ModelKind::DecayingExcess => "decaying_excess",
            ModelKind::WeeklyLevel => "weekly_level",
            ModelKind::Theta => "theta",
            ModelKind::Mstl => "mstl",
            ModelKind::Ets => "ets",
            ModelKind::Tsb => "tsb",
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
            ModelKind::Tsb | ModelKind::Ets | ModelKind::Theta => 4,
            ModelKind::SeasonalNaiveDaily | ModelKind::SeasonalLevel => DAY,
            // A daily shape (or mean) from two days at least, not one day's noise.
            ModelKind::DailyMean | ModelKind::DecayingExcess => 2 * DAY,
            // A weekly profile from two weeks at least, not one week's noise.
            ModelKind::SeasonalNaiveWeekly | ModelKind::WeeklyLevel => 2 * WEEK,
            ModelKind::Mstl => 2 * DAY,
        }
    }

    /// The longest horizon (hours) over which a backtest considers the model.
    pub fn max_horizon(self) -> usize {
        match self {
            ModelKind::DecayingExcess => EXCESS_HORIZON_HOURS,
            _ => usize::MAX,
        }
    }

    /// Whether a backtest considers the model for a shard whose history (cleaned of outliers)
    /// is `y`, beyond its length: the weekly level only where the load is above count noise
    /// ([`WEEKLY_MIN_LOAD`]), the daily mean only where it is below ([`few_events`]). Asked once
    /// per selection, on the history as it is now, so that a selection kept between refits
    /// serves the models it backtested even if the load drifts.
    pub fn suits(self, y: &[f64]) -> bool {
        match self {
            ModelKind::WeeklyLevel => weekly_profile_has_load(y),
            ModelKind::DailyMean => few_events(y),
            _ => true,
        }
    }

    /// Cold-start models are not chosen by backtest: they stand in when there is none.
    pub fn is_cold_start(self) -> bool {
        matches!(self, ModelKind::ClusterProfile | ModelKind::RecentMean)
    }

    /// Whether a backtest chooses among this model. MSTL and ETS are not candidates: their
    /// fits (about 1 ms each, at every one of the 24 origins) would make selection cost four
    /// times as much, and on M4 hourly and NAB the combination without them was as accurate
    /// (seasonal level and Theta carry the daily season and the trend). They stay callable for
    /// comparison (`--example model_cost`).
    pub fn is_candidate(self) -> bool {
        !self.is_cold_start() && !matches!(self, ModelKind::Ets | ModelKind::Mstl)
    }

    /// The models a backtest chooses among, for a history of `len` points and this horizon.
    pub fn candidates(len: usize, horizon: usize) -> Vec<ModelKind> {
        ModelKind::ALL
            .into_iter()
            .filter(|m| m.is_candidate() && len >= m.min_history() && horizon <= m.max_horizon())
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
        ModelKind::DailyMean => Some(daily_mean(y, horizon)),
        ModelKind::SeasonalLevel => seasonal_level(y, horizon),
        ModelKind::DecayingExcess => decaying_excess(y, horizon),
        ModelKind::WeeklyLevel => weekly_level(y, horizon),
        ModelKind::Theta => Some(theta(y, horizon)),
        ModelKind::Mstl => mstl(y, horizon),
        ModelKind::Ets => ets(y, horizon),
        ModelKind::Tsb => Some(tsb(y, horizon)),
        ModelKind::RecentMean => Some(vec![recent_mean(y); horizon]),
        // Built from cluster profiles (see `super::coldstart`).
        ModelKind::ClusterProfile => None,
    }
}

fn seasonal_naive(y: &[f64], period: usize, horizon: usize) -> Vec<f64> {
    let start = y.len() - period;
    (0..horizon).map(|i| y[start + i % period]).collect()
}

/// Whether the load of the last [`PROFILE_DAYS`] days averages under [`WEEKLY_MIN_LOAD`] an
/// hour: a few events an hour, where [`ModelKind::DailyMean`] is a candidate. Above it the
/// freshest hours' level is more than their noise, and the daily mean, a candidate everywhere,
/// did not order the queue better: on NAB every window fell a little in two runs on two builds
/// (pooled capture -0.015 to -0.001), the bursty kinds moved within the noise, and the error
/// moved either way (M4's rolling WAPE by under 0.06 point, NAB's by -1.7 to +1.1 points).
/// (With `load_measure` tuples or blocks one scan counts many, and ten is no guard.)
fn few_events(y: &[f64]) -> bool {
    averages_at_least(y, PROFILE_DAYS * DAY, WEEKLY_MIN_LOAD) == Some(false)
}

/// Whether the last `hours` of `y` (all of it when shorter) average at least `load` an hour;
/// None when `y` is empty. The two load gates ([`few_events`], [`weekly_profile_has_load`]).
fn averages_at_least(y: &[f64], hours: usize, load: f64) -> Option<bool> {
    let recent = &y[y.len().saturating_sub(hours)..];
    (!recent.is_empty()).then(|| recent.iter().sum::<f64>() >= load * recent.len() as f64)
}

/// [`ModelKind::DailyMean`]: each hour ahead, the mean of the same hour of the day over the
/// last [`DAILY_MEAN_DAYS`] days (or the whole days there are). Where an hour holds a few events
/// (departures on a schedule, a table a job reads now and then), the level of the last three
/// hours that [`seasonal_level`] scales its shape by is mostly their noise, and seasonal naive
/// repeats one day's; a mean over the days is what exponential smoothing with a daily season
/// (AutoETS, the peer that led on those) comes close to. A mean and not a median: counts of a
/// few are coarse, and the queue orders by the expected load. On real event counts of a few an
/// hour it took the mean WAPE at 1 h from 31.6 to 29.8% (carriers) and 35.3 to 33.7%
/// (destinations) at a random minute, and the queue's order up at most windows (pooled capture
/// +0.014 at 4 h on the destinations, +0.010 at 12 h on the police stops; the film ratings,
/// where sittings make most of the load, -0.013 and -0.011 at 1 and 4 h, within the noise);
/// see bench/HISTORY.md.
fn daily_mean(y: &[f64], horizon: usize) -> Vec<f64> {
    let n = y.len();
    let means = profile(y, DAY, (n / DAY).min(DAILY_MEAN_DAYS), mean);
    (0..horizon).map(|h| means[slot(n + h, n, DAY)]).collect()
}

/// Days of history behind the daily profile of [`ModelKind::SeasonalLevel`] (and the days
/// [`few_events`] averages over).
const PROFILE_DAYS: usize = 7;
/// Days of history behind [`ModelKind::DailyMean`]: four weeks (the default history retention),
/// since at a few events an hour a week holds seven counts per hour of the day, mostly noise.
/// Against one week (2026-11-28, `forecast_accuracy.py --only nab --nab-origins 96`, four weeks
/// of cuts), the mean WAPE fell on each of the seven sets that have the model, at 1 and 4 h, on
/// the hour and at a random minute, by 0.1-2.0 points (but for the sparse kind at 4 h on the
/// hour, +0.1) (police stops 111.0 / 74.5% to 109.8 /
/// 73.4% on the hour, the pizzeria 93.0 to 91.0% at 1 h, the film ratings 87.4 to 86.0% at 4 h),
/// two weeks did half as well, and the queue's order moved within the noise but for the stops
/// (`order_check --cuts 1000`: pooled capture +0.013 [+0.002, +0.024] at 1 h, +0.008 [+0.004,
/// +0.012] at 12 h). Sets above ten an hour (M4, NAB) never have the model and did not move.
const DAILY_MEAN_DAYS: usize = 28;
/// Hours whose load sets the level of [`ModelKind::SeasonalLevel`].
const LEVEL_HOURS: usize = 3;

/// The daily shape of the last week, robust to one odd day: per hour of the day, the median of
/// that hour's loads; scaled to mean 1. Index i is the hour i points after the series' start
/// modulo a day (phase), so `shape[(t) % DAY]` belongs to point t of a series of this length
/// only when read through [`phase`].
fn robust_daily_shape(y: &[f64]) -> Option<[f64; DAY]> {
    let days = (y.len() / DAY).min(PROFILE_DAYS);
    if days == 0 {
        return None;
    }
    let mut shape = [0.0; DAY];
    shape.copy_from_slice(&profile(y, DAY, days, median));
    let mean = shape.iter().sum::<f64>() / DAY as f64;
    (mean > 0.0 && mean.is_finite()).then(|| shape.map(|v| v / mean))
}

/// Per slot of a cycle of `period` points, `summary` (the [`median`] or the [`mean`]) of that
/// slot's loads over the last `cycles` cycles (at least one, and no more than `y` holds). Slot
/// i is the point i after the start of the last cycle; [`slot`] gives the slot of any point.
fn profile(y: &[f64], period: usize, cycles: usize, summary: fn(Vec<f64>) -> f64) -> Vec<f64> {
    let n = y.len();
    (0..period)
        .map(|slot| {
            summary(
                (0..cycles)
                    .map(|c| y[n - period + slot - c * period])
                    .collect(),
            )
        })
        .collect()
}

/// The slot of point `t`, of a series of `n`, in a profile of `period` ([`profile`]).
fn slot(t: usize, n: usize, period: usize) -> usize {
    (t + period - n % period) % period
}

/// The slot of the daily shape (see [`robust_daily_shape`]) of point `t` of a series of `n`.
fn phase(t: usize, n: usize) -> usize {
    slot(t, n, DAY)
}

/// The mean of the last [`LEVEL_HOURS`] hours, times how much busier (or quieter) each hour
/// ahead usually is than those hours, per the daily shape. The factor is held within
/// [1/4, 4]: on a spiky series the median shape is mostly zeros, and an unbounded ratio would
/// turn one busy hour into a forecast of thousands.
fn seasonal_level(y: &[f64], horizon: usize) -> Option<Vec<f64>> {
    let n = y.len();
    let shape = robust_daily_shape(y)?.map(|s| s.max(0.1));
    let k = LEVEL_HOURS.min(n);
    let recent = y[n - k..].iter().sum::<f64>() / k as f64;
    let usual = (n - k..n).map(|t| shape[phase(t, n)]).sum::<f64>() / k as f64;
    Some(
        (0..horizon)
            .map(|h| recent * (shape[phase(n + h, n)] / usual).clamp(0.25, 4.0))
            .collect(),
    )
}

/// Weeks behind the profile of [`ModelKind::WeeklyLevel`]: an odd number, so that the median
/// is one week's load and one odd week is left out, and what every backtest origin of a 28-day
/// history has at horizons up to 7 hours (the served forecast is the model that was
/// backtested; longer horizons' earliest origins have two weeks). Four did as well on M4.
const WEEKLY_PROFILE_WEEKS: usize = 3;

/// [`ModelKind::WeeklyLevel`] is a candidate only where the load averages at least this much an
/// hour over the weeks its profile would take (see [`ModelKind::suits`]). By default
/// loads count scans, events of their own; the profile is the median of two or three counts per
/// hour of the week, and below about ten an hour one count's Poisson noise (a third of it or
/// more) can be as large as the week's shape, so the profile repeats noise. (With `load_measure`
/// tuples or blocks one scan counts many, and ten is no guard.) On real event counts of a few an
/// hour (departures, police stops, film ratings) the queue's order with the weekly level was
/// lower at one or two windows on each of the four sets (pooled capture -0.008 to -0.012), within
/// the noise but for the destinations at 4 hours (-0.012 [-0.024, -0.003]), and came back
/// without it. The ten was set between those sets (below it) and M4's series (above 13 an hour),
/// so those figures are not held out; M4 and the synthetic kinds did not move, but for the
/// sparse kind's error (+0.2 point). Below it the daily mean is a candidate ([`few_events`]).
const WEEKLY_MIN_LOAD: f64 = 10.0;

/// The weeks behind the weekly profile of a history of `n` hours: up to
/// [`WEEKLY_PROFILE_WEEKS`], as many whole weeks as there are.
fn profile_weeks(n: usize) -> usize {
    (n / WEEK).min(WEEKLY_PROFILE_WEEKS)
}

/// Whether the load of `y` averages at least [`WEEKLY_MIN_LOAD`] an hour over the weeks its
/// profile would take (at least the last one).
fn weekly_profile_has_load(y: &[f64]) -> bool {
    let weeks = profile_weeks(y.len()).max(1);
    averages_at_least(y, weeks * WEEK, WEEKLY_MIN_LOAD) == Some(true)
}

/// The mean excess of the last [`LEVEL_HOURS`] hours over the weekly profile (per hour of the
/// week, the median of its loads over the last [`WEEKLY_PROFILE_WEEKS`] weeks), added to the
/// profile of each hour ahead. Added, not multiplied as in [`seasonal_level`]: a level that
/// moved by some amount moves every hour of the week by about that amount, quiet night hours
/// too, where a ratio to a near-zero night would multiply noise. The weekly rather than daily
/// profile keeps weekends and weekdays apart. On M4 hourly (rolling origins in the last week
/// of train) it took the mean WAPE from 5.9 / 6.0 / 5.6 / 4.9% at 1 / 4 / 12 / 24 hours to
/// 5.5 / 5.7 / 5.4 / 4.8%; the level of the last hour alone (MSTL's naive trend) did worse at
/// 4 hours (5.8%), the daily profile did nothing. The backtest considers it only once its
/// earliest origin has two weeks (about three weeks of history), and where the load is at
/// least [`WEEKLY_MIN_LOAD`] an hour. None when the profile is all zeros (an idle shard with
/// bursts: the level would be the bursts').
fn weekly_level(y: &[f64], horizon: usize) -> Option<Vec<f64>> {
    let n = y.len();
    let weeks = profile_weeks(n);
    if weeks < 2 {
        return None;
    }
    let profile = profile(y, WEEK, weeks, median);
    let total: f64 = profile.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return None;
    }
    let at = |t: usize| profile[slot(t, n, WEEK)];
    let k = LEVEL_HOURS.min(n);
    let level = (n - k..n).map(|t| y[t] - at(t)).sum::<f64>() / k as f64;
    Some((0..horizon).map(|h| (level + at(n + h)).max(0.0)).collect())
}

/// Hours whose median sets the baseline of [`ModelKind::DecayingExcess`]: a burst of a few
/// hours cannot move it.
const EXCESS_BASELINE_HOURS: usize = DAY;
/// The share of an excess over the baseline that is left an hour later (a half-life of about
/// two hours, as news bursts and batch surges fade). A fixed prior, not fitted per shard: the
/// history models see has its past bursts cleaned away (see `clean_outliers`), so a fit there
/// is a fit to noise and to the newest burst, and lands anywhere from 0 to 1. Whether the
/// model suits a shard at all is the backtest's decision. On synthetic event counts with
/// bursts fading over 10 minutes to 3 hours, 0.7 ordered the queue as well as 0.85 and better
/// than 0.5 or 1.
pub const EXCESS_PERSISTENCE: f64 = 0.7;
/// [`ModelKind::DecayingExcess`] is no candidate beyond this horizon: by then an excess has
/// decayed, and what is left is a median baseline, which lags a trend (on M4 hourly at 48 hours
/// it raised MASE from 1.10 to 1.18) where seasonal level and Theta follow it.
pub const EXCESS_HORIZON_HOURS: usize = 12;
/// When the mean load is over this many times the median, bursts are the load (a mostly idle
/// shard woken by jobs at no fixed hour): the median is no baseline, and the burst models
/// (seasonal naive, TSB) forecast it instead.
const BURST_LOAD_RATIO: f64 = 4.0;

/// The expected load of each hour ahead: a baseline (the median deseasonalised load of the last
/// day, times the daily shape) plus the last hour's excess over its baseline, shrinking by
/// [`EXCESS_PERSISTENCE`] an hour. On event counts with news bursts this follows a burst under
/// way, which the smoother models dilute, and lets it fade instead of repeating it for the whole
/// horizon as the last value does. None where there is no baseline (see [`BURST_LOAD_RATIO`]).
fn decaying_excess(y: &[f64], horizon: usize) -> Option<Vec<f64>> {
    let n = y.len();
    let shape = robust_daily_shape(y)?.map(|s| s.max(0.1));
    let deseasonalised = |t: usize| y[t] / shape[phase(t, n)];
    let baseline = median(
        (n - EXCESS_BASELINE_HOURS.min(n)..n)
            .map(deseasonalised)
            .collect(),
    );
    let week = WEEK.min(n);
    let mean = (n - week..n).map(deseasonalised).sum::<f64>() / week as f64;
    if baseline <= 0.0 || !baseline.is_finite() || mean > BURST_LOAD_RATIO * baseline {
        return None;
    }
    let expected = |t: usize| baseline * shape[phase(t, n)];
    let excess = y[n - 1] - expected(n - 1);
    Some(
        (0..horizon)
            .map(|h| (expected(n + h) + EXCESS_PERSISTENCE.powi(h as i32 + 1) * excess).max(0.0))
            .collect(),
    )
}

/// Theta works on the last four weeks: enough for a stable seasonal index and trend.
const THETA_WINDOW: usize = 4 * WEEK;

/// The Theta method (standard theta, θ = 2): the series is deseasonalised (classical
/// multiplicative decomposition with a daily period, when a daily season is significant), then
/// forecast by simple exponential smoothing plus half the slope of its linear trend, and
/// reseasonalised.
fn theta(y: &[f64], horizon: usize) -> Vec<f64> {
    let y = &y[y.len().saturating_sub(THETA_WINDOW)..];
    let n = y.len();
    let season = seasonal_indices(y);
    let adjusted: Vec<f64> = y
        .iter()
        .enumerate()
        .map(|(t, v)| season.as_ref().map_or(*v, |s| v / s[t % DAY]))
        .collect();
    let (alpha, level) = fit_ses(&adjusted);
    let slope = trend_slope(&adjusted);
    let decay = (1.0 - alpha).powi(n as i32);
    (0..horizon)
        .map(|h| {
            let drift = 0.5 * slope * (h as f64 + (1.0 - decay) / alpha);
            let value = level + drift;
            season.as_ref().map_or(value, |s| value * s[(n + h) % DAY])
        })
        .collect()
}

/// Multiplicative daily indices (mean 1, indexed by point modulo a day) when the daily season
/// is significant at 90% (autocorrelation at lag 24 against Bartlett's bound), else None.
fn seasonal_indices(y: &[f64]) -> Option<[f64; DAY]> {
    let n = y.len();
    if n < 3 * DAY {
        return None;
    }
    let mean = y.iter().sum::<f64>() / n as f64;
    let variance: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    if variance <= 0.0 || mean <= 0.0 {
        return None;
    }
    let acf = |lag: usize| -> f64 {
        (lag..n)
            .map(|t| (y[t] - mean) * (y[t - lag] - mean))
            .sum::<f64>()
            / variance
    };
    let r: Vec<f64> = (1..=DAY).map(acf).collect();
    let bound =
        1.645 * ((1.0 + 2.0 * r[..DAY - 1].iter().map(|x| x * x).sum::<f64>()) / n as f64).sqrt();
    if r[DAY - 1].abs() <= bound {
        return None;
    }
    // Centred 2x24 moving average, then the mean ratio per slot.
    let mut sums = [0.0; DAY];
    let mut counts = [0usize; DAY];
    for t in DAY / 2..n - DAY / 2 {
        let average = (0.5 * y[t - DAY / 2]
            + y[t + 1 - DAY / 2..t + DAY / 2].iter().sum::<f64>()
            + 0.5 * y[t + DAY / 2])
            / DAY as f64;
        if average > 0.0 {
            sums[t % DAY] += y[t] / average;
            counts[t % DAY] += 1;
        }
    }
    if counts.contains(&0) {
        return None;
    }
    let mut indices = [0.0; DAY];
    for s in 0..DAY {
        indices[s] = sums[s] / counts[s] as f64;
    }
    let mean_index = indices.iter().sum::<f64>() / DAY as f64;
    if mean_index.is_nan() || mean_index <= 0.0 {
        return None;
    }
    // A slot that is always idle would divide by zero: floor the indices.
    Some(indices.map(|i| (i / mean_index).max(0.01)))
}

/// Simple exponential smoothing with the smoothing constant that minimises the one-step squared
/// error (golden-section search). Returns (alpha, final level).
fn fit_ses(y: &[f64]) -> (f64, f64) {
    let run = |alpha: f64| -> (f64, f64) {
        let mut level = y[0];
        let mut sse = 0.0;
        for &v in &y[1..] {
            let e = v - level;
            sse += e * e;
            level += alpha * e;
        }
        (sse, level)
    };
    let (mut a, mut b) = (0.01f64, 0.99f64);
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - ratio * (b - a);
    let mut d = a + ratio * (b - a);
    let (mut fc, mut fd) = (run(c).0, run(d).0);
    for _ in 0..30 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - ratio * (b - a);
            fc = run(c).0;
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + ratio * (b - a);
            fd = run(d).0;
        }
    }
    let alpha = (a + b) / 2.0;
    (alpha, run(alpha).1)
}

/// Least-squares slope of `y` against time.
fn trend_slope(y: &[f64]) -> f64 {
    let n = y.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let t_mean = (n - 1.0) / 2.0;
    let y_mean = y.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (t, v) in y.iter().enumerate() {
        let dt = t as f64 - t_mean;
        num += dt * (v - y_mean);
        den += dt * dt;
    }
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
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

fn mean(values: Vec<f64>) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

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
