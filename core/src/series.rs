//! A shard's load as an hourly series that ends at the moment of the forecast.
//!
//! History is stored by clock time (5-minute buckets, hourly slots of UTC days), but a forecast
//! made at 10:40 is for [10:40, 10:40 + horizon): its series must end at 10:40, with the last
//! point the load of [09:40, 10:40), so that the freshest buckets set the level. Every stored
//! amount is spread evenly over its own span and split between the aligned hours it overlaps.
//!
//! Hours nobody observed are unknown (NaN), never zero: before the shard was first seen, while
//! the worker was stopped or paused, before the extension existed. An hour that the worker
//! observed for part of its span is scaled up to a full hour, except for the time imported
//! history (`record_access`) covers, which counts as imported; an hour it did not observe but
//! that holds imported history counts as imported.

use std::collections::HashMap;
use std::sync::Arc;

/// An hour needs at least this share observed to be read as measured; the last hour (the
/// freshest data: a shard first seen minutes ago) needs any.
pub const MIN_COVERAGE: f64 = 0.25;
/// Partial hours are scaled up from at least this share (five minutes), so that a few seconds
/// of observation never become a full hour's load.
const MIN_SCALE_COVERAGE: f64 = 1.0 / 12.0;
/// The span of the recent rate ([`Aligned::recent_excess`]): three 5-minute buckets, short
/// enough to see a burst begin inside the last hour, long enough to hold more than one bucket.
pub const RECENT_SECS: f64 = RECENT_BUCKETS as f64 * BUCKET_SECS;
/// The recent rate is that of the last [`RECENT_BUCKETS`] buckets, each capped at the largest of
/// the buckets after it ([`lasting_rate`]).
pub const RECENT_BUCKETS: usize = 3;

/// The mean rate of buckets (oldest first), each capped at the largest of those after it: a
/// bucket higher than every bucket since (a spike that is over: a server metric's one busy 5
/// minutes, a batch) counts only as high as they run, since the hour's models already see it,
/// while a burst under way, or one that began in the newest bucket, is followed. On spiky server
/// traces (NAB) the plain rate of the 15 minutes added spikes that were over to the next hour:
/// this took the mean WAPE at 1 h from 52.4% to 50.0% (pooled 96.3% to 87.1%). The median of the
/// buckets did better there (47.5%) but misses the burst that began in the newest bucket: against
/// this rate it lost 0.2-1.2 points of WAPE at 1 h on each of four synthetic event-count sets,
/// and up to 0.09 of the queue's 1 h capture (`bench/order_check.py`).
fn lasting_rate(rates: &[f64]) -> Option<f64> {
    let mut later = f64::NEG_INFINITY;
    let mut total = 0.0;
    for (k, &r) in rates.iter().rev().enumerate() {
        total += if k == 0 { r } else { r.min(later) };
        later = later.max(r);
    }
    (!rates.is_empty()).then(|| total / rates.len() as f64)
}
/// The recent windows end at the last whole bucket: the current bucket holds the reads of its
/// first minutes, or (an import stamped now) a whole bucket's, and either way would tilt 15
/// minutes far more than an hour.
const BUCKET_SECS: f64 = crate::access::FINE_BUCKET_SECS as f64;

/// Imported history is read as fine-grained in the recent windows when at least this share of
/// the last hour's buckets hold some (an imported zero included): an import of hourly totals,
/// one sample an hour, would make the last 15 minutes four times the hour, or nothing. Each
/// window's rate is then that of the buckets that hold some.
const MIN_RECENT_BUCKETS: f64 = 0.75;

/// The spans the worker sampled, sorted and merged, shared by every shard's series.
#[derive(Clone, Debug, Default)]
pub struct Periods(Arc<[(f64, f64)]>);

/// Spans sorted and merged where they overlap or touch, empty ones dropped: disjoint, so that
/// their lengths add up to the time they cover.
fn merged(mut spans: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    spans.retain(|(from, to)| from < to);
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(spans.len());
    for (from, to) in spans {
        match merged.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    merged
}

impl Periods {
    pub fn new(spans: Vec<(f64, f64)>) -> Periods {
        Periods(merged(spans).into())
    }

    /// Seconds of [from, to) inside the periods, from `since` on.
    fn inside(&self, since: f64, from: f64, to: f64) -> f64 {
        let from = from.max(since);
        // The first period that ends after `from`; periods are disjoint and sorted.
        let first = self.0.partition_point(|&(_, end)| end <= from);
        self.0[first..]
            .iter()
            .take_while(|&&(start, _)| start < to)
            .map(|&(start, end)| (end.min(to) - start.max(from)).max(0.0))
            .sum()
    }
}

/// Load that fell into a span (an aligned hour, or a recent window), split by whether the worker
/// observed the time it fell in (see [`AlignedSeries::split`]).
#[derive(Clone, Copy, Debug, Default)]
struct Split {
    /// Load in time the worker observed: measured (imports there add to it).
    measured: f64,
    /// Load in time it did not observe: imported.
    imported: f64,
    /// Seconds of unobserved time that hold history (at most the span's unobserved seconds
    /// where pieces do not overlap).
    imported_secs: f64,
}

impl Split {
    fn add(&mut self, other: Split) {
        self.measured += other.measured;
        self.imported += other.imported;
        self.imported_secs += other.imported_secs;
    }

    /// The span's load, `observed` of its `span` seconds observed: measured load scaled up to
    /// the unobserved time that no import covers (from five minutes of observation at least,
    /// never down), plus what was imported there. An hour the worker saw for ten minutes of a
    /// table created ten minutes ago, whose fifty minutes before were imported, is the import
    /// plus ten minutes of measure, not the import scaled up six times.
    fn load(&self, observed: f64, span: f64) -> f64 {
        let uncovered = (span - observed - self.imported_secs).max(0.0);
        // A recent bucket is shorter than the least an hour is scaled from: its floor is half.
        let floor = (MIN_SCALE_COVERAGE * HOUR).min(span / 2.0);
        let scale = ((observed + uncovered) / observed.max(floor)).max(1.0);
        self.measured * scale + self.imported
    }
}

/// The load inside a window that ends at the last whole bucket, and how many amounts fell
/// there (a bucket or an hourly slot each).
#[derive(Clone, Debug)]
struct Window {
    from: f64,
    to: f64,
    load: Split,
    pieces: usize,
}

impl Window {
    fn new(to: f64, span: f64) -> Window {
        Window {
            from: to - span,
            to,
            load: Split::default(),
            pieces: 0,
        }
    }
}

/// Builds one shard's aligned series. Times are in seconds (any epoch), the same for every
/// argument. What the worker observed (its sampling periods, when it first saw the shard, the
/// shard's own gaps) is given before any history is added: each amount is split by it.
#[derive(Clone, Debug)]
pub struct AlignedSeries {
    /// The moment of the forecast: the end of the last hour.
    now: f64,
    /// Loads per aligned hour, oldest first.
    load: Vec<f64>,
    /// The same, split by what the worker observed, for the hours it observed in part: only
    /// they need the split (a whole observed hour is measured, an unobserved one imported), and
    /// they are few (where sampling began or stopped, where the shard was first seen).
    partial: HashMap<usize, Split>,
    /// Whether any history (measured or imported) fell into each hour.
    touched: Vec<bool>,
    /// The last [`RECENT_BUCKETS`] buckets, oldest first, and the last hour, all ending at the
    /// last whole bucket.
    recent: [Window; RECENT_BUCKETS],
    recent_hour: Window,
    /// The spans the worker sampled.
    periods: Periods,
    /// When the worker first saw the shard.
    since: f64,
    /// Spans when this shard in particular was not read though the worker sampled (a Citus
    /// shard whose node did not answer, or that moved between two samples): unknown. Merged
    /// ([`merged`]), so that no time is missed twice.
    gaps: Vec<(f64, f64)>,
}

/// What a finished series says about itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Aligned {
    /// Hourly loads, oldest first; NaN where nobody observed the hour.
    pub hourly: Vec<f64>,
    /// Hours that the worker observed (fully or in part).
    pub observed_hours: usize,
    /// Hours known only from imported history.
    pub imported_hours: usize,
    /// How far the load per hour of the last [`RECENT_SECS`] (its [`RECENT_BUCKETS`]
    /// buckets' [`lasting_rate`]) ran above (or below) that of the last hour, both
    /// ending at the last whole 5-minute bucket and scaled up from the part observed as an hour
    /// is; None when either is unknown.
    pub recent_excess: Option<f64>,
}

const HOUR: f64 = 3600.0;

impl AlignedSeries {
    /// A series of `hours` hours ending at `now`, observed by the worker during `periods` from
    /// `since` on (no periods: history is all imported).
    pub fn new(now: f64, hours: usize, periods: &Periods, since: f64) -> AlignedSeries {
        let last_bucket_end = (now / BUCKET_SECS).floor() * BUCKET_SECS;
        AlignedSeries {
            now,
            load: vec![0.0; hours],
            partial: HashMap::new(),
            touched: vec![false; hours],
            recent: std::array::from_fn(|k| {
                Window::new(
                    last_bucket_end - ((RECENT_BUCKETS - 1 - k) as f64) * BUCKET_SECS,
                    BUCKET_SECS,
                )
            }),
            recent_hour: Window::new(last_bucket_end, HOUR),
            periods: periods.clone(),
            since,
            gaps: Vec::new(),
        }
    }

    /// Marks [from, to) as not observed for this shard, though the worker sampled then. Gaps
    /// come before history: amounts already added are not split again.
    pub fn add_gap(&mut self, from: f64, to: f64) {
        debug_assert!(
            !self.touched.iter().any(|t| *t),
            "a gap added after history"
        );
        let mut gaps = std::mem::take(&mut self.gaps);
        gaps.push((from, to));
        self.gaps = merged(gaps);
    }

    fn start(&self) -> f64 {
        self.now - self.load.len() as f64 * HOUR
    }

    /// Calls `f(hour index, from, to)` with the part of [from, to) in each aligned hour it
    /// overlaps.
    fn overlaps(&self, from: f64, to: f64, mut f: impl FnMut(usize, f64, f64)) {
        let start = self.start();
        let (from, to) = (from.max(start), to.min(self.now));
        if to.is_nan() || from.is_nan() || to <= from {
            return;
        }
        let first = ((from - start) / HOUR).floor() as usize;
        let last = (((to - start) / HOUR).ceil() as usize).min(self.load.len());
        for i in first..last {
            let hour_start = start + i as f64 * HOUR;
            let (a, b) = (from.max(hour_start), to.min(hour_start + HOUR));
            if b > a {
                f(i, a, b);
            }
        }
    }

    /// Adds `amount` of load that happened evenly over [from, to), marking those hours as
    /// known. An amount whose span ends after `now` (the current bucket) is spread over the
    /// part up to `now`.
    pub fn add(&mut self, from: f64, to: f64, amount: f64) {
        self.add_slot(from, to, amount, false);
    }

    /// Adds an hourly slot of compacted history (see [`AlignedSeries::add`]). `imported`: its
    /// buckets included imported ones, which covered the time of the slot the worker did not
    /// observe, so that none of its load is scaled up. Once compacted, an hour the worker
    /// began observing twenty minutes before its end, and whose first forty minutes were
    /// imported, is one amount: without the flag it would read as twenty minutes of measure,
    /// scaled up three times.
    pub fn add_slot(&mut self, from: f64, to: f64, amount: f64, imported: bool) {
        // Zero is added too: it marks the hours as known (an imported idle hour).
        if !amount.is_finite() || amount < 0.0 {
            return;
        }
        let to = to.min(self.now);
        if to.is_nan() || from.is_nan() || to <= from {
            return;
        }
        let span = to - from;
        let mut parts = Vec::new();
        self.overlaps(from, to, |i, a, b| parts.push((i, a, b)));
        let start = self.start();
        for (i, a, b) in parts {
            let part = amount * (b - a) / span;
            self.load[i] += part;
            self.touched[i] = true;
            let hour_start = start + i as f64 * HOUR;
            let observed = self.observed(hour_start, hour_start + HOUR);
            if observed > 0.0 && observed < HOUR {
                let split = self.split(a, b, part, imported);
                self.partial.entry(i).or_default().add(split);
            }
        }
        // The part inside each recent window, split before either window is written.
        let inside = |w: &Window| {
            let (a, b) = (from.max(w.from), to.min(w.to));
            (b > a).then(|| self.split(a, b, amount * (b - a) / span, imported))
        };
        let recent = self.recent.each_ref().map(inside);
        let recent_hour = inside(&self.recent_hour);
        for (w, split) in self
            .recent
            .iter_mut()
            .zip(recent)
            .chain([(&mut self.recent_hour, recent_hour)])
        {
            if let Some(split) = split {
                w.load.add(split);
                w.pieces += 1;
            }
        }
    }

    /// `amount`, fallen over [from, to): measured if the worker observed any of that time (its
    /// own buckets lie in time it observed, though the first after it began, or an hourly slot
    /// it was compacted into, reaches back before), imported if it observed none (the worker
    /// never writes there).
    /// `imported`: the amount is a compacted slot that held imports for the time the worker
    /// did not observe (see [`AlignedSeries::add_slot`]): that time is covered.
    fn split(&self, from: f64, to: f64, amount: f64, imported: bool) -> Split {
        let observed = self.observed(from, to);
        if observed > 0.0 {
            Split {
                measured: amount,
                imported_secs: if imported { to - from - observed } else { 0.0 },
                ..Split::default()
            }
        } else {
            Split {
                imported: amount,
                imported_secs: to - from,
                ..Split::default()
            }
        }
    }

    /// Seconds of [from, to) that the worker observed for this shard: inside its periods, after
    /// `since`, outside the shard's own gaps. What a gap misses is the sampled time inside it:
    /// a gap that reaches past the periods takes nothing more away.
    fn observed(&self, from: f64, to: f64) -> f64 {
        let sampled = self.periods.inside(self.since, from, to);
        let missed: f64 = self
            .gaps
            .iter()
            .filter(|&&(a, b)| a < to && b > from)
            .map(|&(a, b)| self.periods.inside(self.since, a.max(from), b.min(to)))
            .sum();
        (sampled - missed).max(0.0)
    }

    /// The hourly series: observed hours are scaled up to a full hour where nothing was
    /// imported for the time not observed, imported-only hours are as they are, the rest are
    /// unknown.
    pub fn finish(self) -> Aligned {
        let start = self.start();
        let observed: Vec<f64> = (0..self.load.len())
            .map(|i| {
                let from = start + i as f64 * HOUR;
                self.observed(from, from + HOUR)
            })
            .collect();
        let mut out = Aligned::default();
        if !self.load.is_empty() {
            let observed_in = |w: &Window| self.observed(w.from, w.to);
            let hour_observed = observed_in(&self.recent_hour);
            // The worker spreads a sample's reads over the buckets since the sample before
            // (`access::spread`), so its windows hold what happened in them whatever the sample
            // interval. An import may be hourly totals, which say nothing of 15 minutes: an
            // imported hour is read only when most of its buckets hold a sample.
            let fine = hour_observed > 0.0
                || self.recent_hour.pieces as f64 >= MIN_RECENT_BUCKETS * HOUR / BUCKET_SECS;
            let rate = |w: &Window, observed: f64| -> Option<f64> {
                let span = w.to - w.from;
                if observed > 0.0 {
                    Some(w.load.load(observed, span) * HOUR / span)
                } else {
                    // Imported: the rate of the buckets that hold some (an imported zero
                    // included); a bucket missing from the feed is not known to be idle.
                    (w.pieces > 0)
                        .then(|| w.load.imported / (w.pieces as f64 * BUCKET_SECS).min(span) * HOUR)
                }
            };
            if fine {
                // A bucket the worker saw some, but less than half of, is left out: its load may
                // be a whole bucket's import, or a few seconds' scaled up. (With a
                // sample_interval over 150 s the newest bucket often is, and a burst that began
                // in it waits for the next.)
                let rates: Vec<f64> = self
                    .recent
                    .iter()
                    .filter_map(|w| {
                        let observed = observed_in(w);
                        let glimpsed = observed > 0.0 && observed < (w.to - w.from) / 2.0;
                        (!glimpsed).then(|| rate(w, observed)).flatten()
                    })
                    .collect();
                out.recent_excess = lasting_rate(&rates)
                    .zip(rate(&self.recent_hour, hour_observed))
                    .map(|(recent, hour)| recent - hour);
            }
        }
        let last = self.load.len().saturating_sub(1);
        out.hourly = self
            .load
            .iter()
            .zip(&observed)
            .zip(&self.touched)
            .enumerate()
            .map(|(i, ((&load, &observed), &touched))| {
                let coverage = observed / HOUR;
                if coverage >= MIN_COVERAGE || (i == last && coverage > 0.0) {
                    out.observed_hours += 1;
                    self.partial
                        .get(&i)
                        .map_or(load, |split| split.load(observed, HOUR))
                } else if touched {
                    out.imported_hours += 1;
                    load
                } else {
                    f64::NAN
                }
            })
            .collect();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Access;
    use proptest::prelude::*;

    fn series(now: f64, hours: usize, periods: &[(f64, f64)], since: f64) -> AlignedSeries {
        AlignedSeries::new(now, hours, &Periods::new(periods.to_vec()), since)
    }

    #[test]
    fn a_compacted_hour_that_held_imports_is_not_scaled_up() {
        // The worker first saw the shard 40 minutes into hour 7 and sampled it from then on;
        // the slot of hour 7 holds 40 minutes of import and 20 of measure.
        let now = 10.0 * HOUR;
        let since = 7.0 * HOUR + 2400.0;
        let hour_7 = |imported: bool| {
            let mut s = series(now, 10, &[(since, now)], since);
            s.add_slot(7.0 * HOUR, 8.0 * HOUR, 612.0, imported);
            s.finish().hourly[7]
        };
        assert!((hour_7(true) - 612.0).abs() < 1e-9, "{}", hour_7(true));
        // Without imports the twenty minutes measured stand for the hour.
        assert!(
            (hour_7(false) - 3.0 * 612.0).abs() < 1e-9,
            "{}",
            hour_7(false)
        );
    }

    #[test]
    fn the_last_hour_ends_now_and_splits_clock_hours() {
        // Now is 10:40; three hours: [07:40, 08:40), [08:40, 09:40), [09:40, 10:40). The clock
        // hour 09:00-10:00 (600 reads) splits 40 minutes to 20 between the last two.
        let now = 10.0 * HOUR + 40.0 * 60.0;
        let mut s = series(now, 3, &[(0.0, now)], 0.0);
        s.add(9.0 * HOUR, 10.0 * HOUR, 600.0);
        // The current clock hour's buckets, 10:00-10:40: 400 reads.
        s.add(10.0 * HOUR, 11.0 * HOUR, 400.0);
        let a = s.finish();
        assert_eq!(a.observed_hours, 3);
        assert_eq!(a.hourly.len(), 3);
        assert_eq!(a.hourly[0], 0.0);
        assert!((a.hourly[1] - 400.0).abs() < 1e-9, "{:?}", a.hourly);
        assert!((a.hourly[2] - 600.0).abs() < 1e-9, "{:?}", a.hourly);
    }

    #[test]
    fn a_shard_s_own_gap_is_unknown_though_the_worker_sampled() {
        // The worker sampled all four hours; this shard (a Citus shard whose node did not
        // answer) was not read during the second hour and half of the third.
        let now = 100.0 * HOUR;
        let mut s = series(now, 4, &[(now - 4.0 * HOUR, now)], 0.0);
        s.add_gap(now - 3.0 * HOUR, now - 1.5 * HOUR);
        s.add(now - 4.0 * HOUR, now - 3.0 * HOUR, 100.0);
        s.add(now - 1.5 * HOUR, now, 300.0);
        let a = s.finish();
        assert_eq!(a.hourly[0], 100.0);
        assert!(a.hourly[1].is_nan(), "not read: unknown, not idle");
        assert!(
            (a.hourly[2] - 200.0).abs() < 1e-9,
            "half read, scaled: {:?}",
            a.hourly
        );
        assert!((a.hourly[3] - 200.0).abs() < 1e-9);
        assert_eq!(a.observed_hours, 3);
    }

    #[test]
    fn overlapping_gaps_and_gaps_beyond_the_periods_miss_no_time_twice() {
        // The worker sampled the last two hours and a half. The shard's gaps: two that overlap
        // over the third hour's first 30 minutes, and one from before the periods began to
        // 15 minutes into them.
        let now = 100.0 * HOUR;
        let mut s = series(now, 4, &[(now - 2.5 * HOUR, now)], 0.0);
        s.add_gap(now - 2.0 * HOUR, now - 1.75 * HOUR);
        s.add_gap(now - 1.9 * HOUR, now - 1.5 * HOUR);
        s.add_gap(now - 3.5 * HOUR, now - 2.25 * HOUR);
        // A read a minute while the shard was read.
        s.add(now - 2.25 * HOUR, now - 2.0 * HOUR, 15.0);
        s.add(now - 1.5 * HOUR, now, 90.0);
        let a = s.finish();
        // Hour 1 (before the periods): unknown. Hour 2: sampled for 30 minutes, 15 of them
        // missed, so 15 reads in 15 minutes observed, scaled by 4. Hour 3: the merged gap
        // misses 30 minutes (the two overlapping gaps, summed, took 39), so 30 reads scaled by
        // 2. Hour 4: whole.
        assert!(
            a.hourly[0].is_nan() && a.hourly[1].is_finite(),
            "{:?}",
            a.hourly
        );
        assert!((a.hourly[1] - 60.0).abs() < 1e-9, "{:?}", a.hourly);
        assert!((a.hourly[2] - 60.0).abs() < 1e-9, "{:?}", a.hourly);
        assert!((a.hourly[3] - 60.0).abs() < 1e-9, "{:?}", a.hourly);
    }

    #[test]
    fn unobserved_hours_are_unknown_and_partial_ones_scaled_up() {
        let now = 100.0 * HOUR;
        // The worker ran for the last 90 minutes only; an import filled the first hour.
        let mut s = series(now, 4, &[(now - 1.5 * HOUR, now)], 0.0);
        s.add(now - 4.0 * HOUR, now - 3.0 * HOUR, 50.0);
        s.add(now - 1.5 * HOUR, now, 300.0);
        let a = s.finish();
        assert_eq!(a.hourly[0], 50.0);
        assert!(a.hourly[1].is_nan());
        assert!(
            (a.hourly[2] - 200.0).abs() < 1e-9,
            "half observed, scaled: {:?}",
            a.hourly
        );
        assert!((a.hourly[3] - 200.0).abs() < 1e-9);
        assert_eq!((a.observed_hours, a.imported_hours), (2, 1));
    }

    #[test]
    fn a_shard_seen_minutes_ago_has_a_last_hour() {
        let now = 10.0 * HOUR;
        let mut s = series(now, 3, &[(0.0, now)], now - 600.0);
        s.add(now - 600.0, now, 50.0);
        let a = s.finish();
        assert_eq!((a.observed_hours, a.imported_hours), (1, 0));
        assert!(
            (a.hourly[2] - 300.0).abs() < 1e-9,
            "ten minutes scaled to an hour: {:?}",
            a.hourly
        );
        // Seconds of observation are scaled as if they were five minutes.
        let mut s = series(now, 3, &[(0.0, now)], now - 30.0);
        s.add(now - 600.0, now, 50.0);
        let a = s.finish();
        assert!(a.hourly[2] <= 12.0 * 50.0 + 1e-9, "{:?}", a.hourly);
    }

    #[test]
    fn an_import_beside_a_shard_seen_minutes_ago_is_not_scaled_up() {
        // A table created minutes ago, first seen at 10:38:30, and 5-minute history imported up
        // to now (10:42), 10 reads a bucket. The worker observed 3.5 minutes of the last hour;
        // the import holds the rest. The hour is the import, 126 (the current bucket's 10 fall
        // in its first two minutes), not the import scaled up from 3.5 minutes (1512). It comes
        // to 134: the bucket the shard was first seen in counts as measured, and the minutes of
        // it before are scaled from the minutes after.
        let now = 10.0 * HOUR + 42.0 * 60.0;
        let since = now - 210.0;
        let mut s = series(now, 3, &[(since - 60.0, now)], since);
        let mut start = now - 3.0 * HOUR - 300.0;
        while start <= now {
            let bucket = (start / 300.0).floor() * 300.0;
            s.add(bucket, bucket + 300.0, 10.0);
            start += 300.0;
        }
        let a = s.finish();
        assert!((a.hourly[2] - 134.0).abs() < 1e-9, "{a:?}");
        assert!((a.hourly[1] - 120.0).abs() < 1e-9, "{a:?}");
        assert_eq!((a.observed_hours, a.imported_hours), (1, 2));
        assert!(a.recent_excess.expect("known").abs() < 1e-6, "{a:?}");
    }

    #[test]
    fn the_recent_excess_compares_the_last_whole_buckets() {
        // Now is 10:42, two minutes into a bucket: the windows end at 10:40. Reads ran at 120
        // an hour, and at 480 from 10:25: [10:25, 10:40) runs at 480 and [09:40, 10:40) at
        // 45 minutes × 120 + 15 × 480, 210. The current bucket is left out.
        let now = 10.0 * HOUR + 42.0 * 60.0;
        let rate = |t: f64| {
            if t >= 10.0 * HOUR + 25.0 * 60.0 {
                480.0
            } else {
                120.0
            }
        };
        // What the sampler's buckets hold when it ran from `since`: the reads up to now.
        let sampled = |since: f64, periods: &[(f64, f64)]| {
            let mut s = series(now, 2, periods, 0.0);
            let mut start = 9.0 * HOUR + 30.0 * 60.0;
            while start < now {
                let (from, to) = (start.max(since), (start + 300.0).min(now));
                let amount: f64 = (0..(to - from).max(0.0) as usize)
                    .map(|k| rate(from + k as f64) / HOUR)
                    .sum();
                // The worker writes no bucket it saw nothing in.
                if amount > 0.0 {
                    s.add(start, start + 300.0, amount);
                }
                start += 300.0;
            }
            s
        };
        let excess = |a: &Aligned| a.recent_excess.expect("known");
        let a = sampled(0.0, &[(0.0, now)]).finish();
        assert!((excess(&a) - 270.0).abs() < 1e-6, "{a:?}");
        // The current bucket, even an import stamped now of a whole bucket's reads, moves it
        // not at all.
        let mut s = sampled(0.0, &[(0.0, now)]);
        s.add(now - 120.0, now + 180.0, 1000.0);
        let b = s.finish();
        assert_eq!(b.recent_excess, a.recent_excess);
        // The worker ran for the last ten minutes only: both windows are scaled up from the
        // eight minutes of them it saw, at 480.
        let a = sampled(now - 600.0, &[(now - 600.0, now)]).finish();
        assert!(excess(&a).abs() < 1e-6, "{a:?}");
        // Not observed but imported in 5-minute steps: as it is.
        let a = sampled(0.0, &[]).finish();
        assert!((excess(&a) - 270.0).abs() < 1e-6, "{a:?}");
        // Sampled every 10 minutes at a flat 120 an hour, the last sample at 10:37: spread over
        // the buckets since the sample before, the reads show no excess. Had each sample's
        // reads gone to its own bucket, the buckets would hold 20 and nothing in turn, and the
        // recent rate would be far off the hour's (here 0, the 20 being over by the next).
        let flat = |spread: bool| {
            let mut s = series(now, 3, &[(0.0, now - 300.0)], 0.0);
            let mut at = now - 300.0;
            while at > now - 3.0 * HOUR {
                let micros = |t: f64| (t * 1e6) as i64;
                let delta = Access {
                    scans: 20.0,
                    ..Access::default()
                };
                let parts = if spread {
                    crate::access::spread(&delta, Some(micros(at - 600.0)), micros(at), 300)
                } else {
                    vec![(crate::access::bucket_start(micros(at), 300), delta)]
                };
                for (bucket, part) in parts {
                    let start = bucket as f64 / 1e6;
                    s.add(start, start + 300.0, part.scans);
                }
                at -= 600.0;
            }
            s.finish()
        };
        assert!(excess(&flat(true)).abs() < 1e-6, "{:?}", flat(true));
        assert!(excess(&flat(false)).abs() > 60.0, "{:?}", flat(false));
        // An import feed that began 45 minutes ago, at a flat rate: the hour's rate is that of
        // the buckets it holds, not a quarter lower.
        let mut s = series(now, 2, &[], 0.0);
        let end = (now / 300.0).floor() * 300.0;
        for k in 1..=9 {
            s.add(end - k as f64 * 300.0, end - (k - 1) as f64 * 300.0, 10.0);
        }
        let a = s.finish();
        assert!(excess(&a).abs() < 1e-6, "{a:?}");
        // Imported hourly totals, one sample an hour, tell nothing of the last 15 minutes.
        let mut s = series(now, 3, &[], 0.0);
        for k in 0..3 {
            s.add(
                now - 1200.0 - k as f64 * HOUR,
                now - 900.0 - k as f64 * HOUR,
                300.0,
            );
        }
        assert_eq!(s.finish().recent_excess, None);
        // Nothing known of the last hour: unknown. Observed and idle: zero.
        for (periods, excess) in [(&[][..], None), (&[(0.0, now)][..], Some(0.0))] {
            let mut s = series(now, 3, periods, 0.0);
            s.add(now - 3.0 * HOUR, now - 2.0 * HOUR, 100.0);
            assert_eq!(s.finish().recent_excess, excess);
        }
    }

    #[test]
    fn a_spike_that_is_over_is_no_recent_excess_but_a_burst_under_way_is() {
        // Now is 10:42; reads run at 120 an hour, 10 a bucket. A spike of 200 in one of the
        // last three whole buckets, over by the newest, is no excess: the three run at 120 an
        // hour, below the hour's 310. In the newest bucket it is a burst that began, and
        // counts: 880 an hour, the plain rate. In the last two: 1,640 an hour, the hour's 500.
        let now = 10.0 * HOUR + 42.0 * 60.0;
        let end = 10.0 * HOUR + 40.0 * 60.0;
        let excess = |busy: &[f64]| {
            let mut s = series(now, 2, &[(0.0, now)], 0.0);
            let mut start = 8.0 * HOUR + 45.0 * 60.0;
            while start < end {
                let amount = if busy.contains(&start) { 200.0 } else { 10.0 };
                s.add(start, start + 300.0, amount);
                start += 300.0;
            }
            s.finish().recent_excess.expect("known")
        };
        for over in [end - 900.0, end - 600.0] {
            let spike = excess(&[over]);
            assert!((spike - (120.0 - 310.0)).abs() < 1e-6, "{spike}");
        }
        let began = excess(&[end - 300.0]);
        assert!((began - (880.0 - 310.0)).abs() < 1e-6, "{began}");
        let burst = excess(&[end - 600.0, end - 300.0]);
        assert!((burst - (1640.0 - 500.0)).abs() < 1e-6, "{burst}");
    }

    #[test]
    fn the_lasting_rate_caps_each_bucket_at_the_largest_after_it() {
        assert_eq!(lasting_rate(&[]), None);
        assert_eq!(lasting_rate(&[5.0]), Some(5.0));
        assert_eq!(lasting_rate(&[9.0, 1.0, 1.0]), Some(1.0));
        assert_eq!(lasting_rate(&[1.0, 9.0, 1.0]), Some(1.0));
        assert_eq!(lasting_rate(&[1.0, 1.0, 7.0]), Some(3.0));
        assert_eq!(lasting_rate(&[9.0, 3.0, 6.0]), Some(5.0));
        // Never above the plain mean, and equal to it for a rising or flat run.
        assert_eq!(lasting_rate(&[1.0, 2.0, 3.0]), Some(2.0));
    }

    #[test]
    fn an_imported_zero_is_known() {
        let now = 10.0 * HOUR;
        let mut s = series(now, 2, &[], 0.0);
        s.add(now - 2.0 * HOUR, now - HOUR, 0.0);
        let a = s.finish();
        assert_eq!(a.hourly[0], 0.0);
        assert!(a.hourly[1].is_nan());
        assert_eq!(a.imported_hours, 1);
    }

    #[test]
    fn idle_observed_hours_are_zero() {
        let s = series(10.0 * HOUR, 2, &[(0.0, 10.0 * HOUR)], 0.0);
        assert_eq!(s.finish().hourly, vec![0.0, 0.0]);
        // Before the shard was first seen, nothing was observed of it.
        let a = series(10.0 * HOUR, 2, &[(0.0, 10.0 * HOUR)], 9.0 * HOUR).finish();
        assert!(a.hourly[0].is_nan());
        assert_eq!(a.hourly[1], 0.0);
    }

    proptest! {
        #[test]
        fn load_inside_the_window_is_conserved(
            now in 10.0 * HOUR..20.0 * HOUR,
            spans in proptest::collection::vec((0.0f64..10.0, 0.01f64..2.0, 0.0f64..1e6), 0..20),
        ) {
            let hours = 8;
            let mut s = series(now, hours, &[(0.0, now)], 0.0);
            let start = now - hours as f64 * HOUR;
            let mut expected = 0.0;
            for (offset, length, amount) in spans {
                let from = start + offset * HOUR;
                let to = from + length * HOUR;
                s.add(from, to, amount);
                let inside = (to.min(now) - from.max(start)).max(0.0);
                expected += amount * inside / (to.min(now) - from);
            }
            let total: f64 = s.finish().hourly.iter().sum();
            prop_assert!((total - expected).abs() <= 1e-6 * expected.max(1.0));
        }
    }
}
