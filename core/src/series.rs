//! A shard's load as an hourly series that ends at the moment of the forecast.
//!
//! History is stored by clock time (5-minute buckets, hourly slots of UTC days), but a forecast
//! made at 10:40 is for [10:40, 10:40 + horizon): its series must end at 10:40, with the last
//! point the load of [09:40, 10:40), so that the freshest buckets set the level. Every stored
//! amount is spread evenly over its own span and split between the aligned hours it overlaps.
//!
//! Hours nobody observed are unknown (NaN), never zero: before the shard was first seen, while
//! the worker was stopped or paused, before the extension existed. An hour that the worker
//! observed for part of its span is scaled up to a full hour; an hour it did not observe but
//! that holds imported history (`record_access`) counts as imported.

/// An hour needs at least this share observed to be read as measured; the last hour (the
/// freshest data: a shard first seen minutes ago) needs any.
pub const MIN_COVERAGE: f64 = 0.25;
/// Partial hours are scaled up from at least this share (five minutes), so that a few seconds
/// of observation never become a full hour's load.
const MIN_SCALE_COVERAGE: f64 = 1.0 / 12.0;
/// The span of the recent rate ([`Aligned::recent_excess`]): three 5-minute buckets, short
/// enough to see a burst begin inside the last hour, long enough to hold more than one bucket.
pub const RECENT_SECS: f64 = 15.0 * 60.0;
/// The recent windows end at the last whole bucket: the current bucket holds the reads of its
/// first minutes, or (an import stamped now) a whole bucket's, and either way would tilt 15
/// minutes far more than an hour.
const BUCKET_SECS: f64 = crate::access::FINE_BUCKET_SECS as f64;

/// Imported history is read as fine-grained in the recent windows when at least this share of
/// the last hour's buckets hold some (an imported zero included): an import of hourly totals,
/// one sample an hour, would make the last 15 minutes four times the hour, or nothing. Each
/// window's rate is then that of the buckets that hold some.
const MIN_RECENT_BUCKETS: f64 = 0.75;

/// The load inside a window that ends at the last whole bucket, and how many amounts fell
/// there (a bucket or an hourly slot each).
#[derive(Clone, Debug)]
struct Window {
    from: f64,
    to: f64,
    load: f64,
    pieces: usize,
}

impl Window {
    fn new(to: f64, span: f64) -> Window {
        Window {
            from: to - span,
            to,
            load: 0.0,
            pieces: 0,
        }
    }

    fn add(&mut self, from: f64, to: f64, amount: f64) {
        let inside = to.min(self.to) - from.max(self.from);
        if inside > 0.0 {
            self.load += amount * inside / (to - from);
            self.pieces += 1;
        }
    }
}

/// Builds one shard's aligned series. Times are in seconds (any epoch), the same for every
/// argument.
#[derive(Clone, Debug)]
pub struct AlignedSeries {
    /// The moment of the forecast: the end of the last hour.
    now: f64,
    /// Loads per aligned hour, oldest first.
    load: Vec<f64>,
    /// Whether any history (measured or imported) fell into each hour.
    touched: Vec<bool>,
    /// The last [`RECENT_SECS`] and the last hour, both ending at the last whole bucket.
    recent: Window,
    recent_hour: Window,
    /// Spans inside the sampling periods when this shard in particular was not read (a Citus
    /// shard whose node did not answer, or that moved between two samples): unknown.
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
    /// How far the load per hour of the last [`RECENT_SECS`] ran above (or below) that of
    /// the last hour, both ending at the last whole 5-minute bucket and scaled up from the part
    /// observed as an hour is; None when either is unknown.
    pub recent_excess: Option<f64>,
}

const HOUR: f64 = 3600.0;

impl AlignedSeries {
    /// A series of `hours` hours ending at `now`.
    pub fn new(now: f64, hours: usize) -> AlignedSeries {
        let last_bucket_end = (now / BUCKET_SECS).floor() * BUCKET_SECS;
        AlignedSeries {
            now,
            load: vec![0.0; hours],
            touched: vec![false; hours],
            recent: Window::new(last_bucket_end, RECENT_SECS),
            recent_hour: Window::new(last_bucket_end, HOUR),
            gaps: Vec::new(),
        }
    }

    /// Marks [from, to) as not observed for this shard, though the worker sampled then.
    pub fn add_gap(&mut self, from: f64, to: f64) {
        self.gaps.push((from, to));
    }

    fn start(&self) -> f64 {
        self.now - self.load.len() as f64 * HOUR
    }

    /// Calls `f(hour index, overlap seconds)` for each aligned hour that [from, to) overlaps.
    fn overlaps(&self, from: f64, to: f64, mut f: impl FnMut(usize, f64)) {
        let start = self.start();
        let (from, to) = (from.max(start), to.min(self.now));
        if to.is_nan() || from.is_nan() || to <= from {
            return;
        }
        let first = ((from - start) / HOUR).floor() as usize;
        let last = (((to - start) / HOUR).ceil() as usize).min(self.load.len());
        for i in first..last {
            let hour_start = start + i as f64 * HOUR;
            let overlap = to.min(hour_start + HOUR) - from.max(hour_start);
            if overlap > 0.0 {
                f(i, overlap);
            }
        }
    }

    /// Adds `amount` of load that happened evenly over [from, to), marking those hours as
    /// known. An amount whose span ends after `now` (the current bucket) is spread over the
    /// part up to `now`.
    pub fn add(&mut self, from: f64, to: f64, amount: f64) {
        // Zero is added too: it marks the hours as known (an imported idle hour).
        if !amount.is_finite() || amount < 0.0 {
            return;
        }
        let to = to.min(self.now);
        if to.is_nan() || from.is_nan() || to <= from {
            return;
        }
        let span = to - from;
        let mut shares = Vec::new();
        self.overlaps(from, to, |i, overlap| shares.push((i, overlap / span)));
        for (i, share) in shares {
            self.load[i] += amount * share;
            self.touched[i] = true;
        }
        self.recent.add(from, to, amount);
        self.recent_hour.add(from, to, amount);
    }

    /// Seconds of [from, to) that the worker observed for this shard: inside `periods`, after
    /// `since`, outside the shard's own gaps. Periods may overlap; the total never exceeds the
    /// span.
    fn observed(&self, periods: &[(f64, f64)], since: f64, from: f64, to: f64) -> f64 {
        let inside = |(a, b): (f64, f64)| (b.min(to) - a.max(from)).max(0.0);
        let sampled: f64 = periods
            .iter()
            .map(|&(a, b)| inside((a.max(since), b)))
            .sum();
        let missed: f64 = self
            .gaps
            .iter()
            .map(|&(a, b)| inside((a.max(since), b)))
            .sum();
        (sampled.min(to - from) - missed).max(0.0)
    }

    /// The hourly series. `periods` are the spans the worker sampled, `since` when the shard
    /// was first seen: observed hours are scaled up to a full hour, imported-only hours are as
    /// they are, the rest are unknown.
    pub fn finish(self, periods: &[(f64, f64)], since: f64) -> Aligned {
        let mut observed = vec![0.0; self.load.len()];
        for &(from, to) in periods {
            self.overlaps(from.max(since), to, |i, overlap| {
                observed[i] = (observed[i] + overlap).min(HOUR)
            });
        }
        for &(from, to) in &self.gaps {
            self.overlaps(from.max(since), to, |i, overlap| {
                observed[i] = (observed[i] - overlap).max(0.0)
            });
        }
        let mut out = Aligned::default();
        if !self.load.is_empty() {
            let coverage =
                |w: &Window| self.observed(periods, since, w.from, w.to) / (w.to - w.from);
            let (recent_coverage, hour_coverage) =
                (coverage(&self.recent), coverage(&self.recent_hour));
            // The worker spreads a sample's reads over the buckets since the sample before
            // (`access::spread`), so its windows hold what happened in them whatever the sample
            // interval. An import may be hourly totals, which say nothing of 15 minutes: an
            // imported hour is read only when most of its buckets hold a sample.
            let fine = hour_coverage > 0.0
                || self.recent_hour.pieces as f64 >= MIN_RECENT_BUCKETS * HOUR / BUCKET_SECS;
            let rate = |w: &Window, coverage: f64| -> Option<f64> {
                let span = w.to - w.from;
                // Scaled up from five minutes at least, as an hour is.
                let least = MIN_SCALE_COVERAGE * HOUR / span;
                match coverage {
                    c if c > 0.0 => Some(w.load / c.max(least) * (HOUR / span)),
                    // Imported: the rate of the buckets that hold some (an imported zero
                    // included); a bucket missing from the feed is not known to be idle.
                    _ => (w.pieces > 0)
                        .then(|| w.load / (w.pieces as f64 * BUCKET_SECS).min(span) * HOUR),
                }
            };
            if fine {
                out.recent_excess = rate(&self.recent, recent_coverage)
                    .zip(rate(&self.recent_hour, hour_coverage))
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
                    load / coverage.max(MIN_SCALE_COVERAGE)
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

    #[test]
    fn the_last_hour_ends_now_and_splits_clock_hours() {
        // Now is 10:40; three hours: [07:40, 08:40), [08:40, 09:40), [09:40, 10:40). The clock
        // hour 09:00-10:00 (600 reads) splits 40 minutes to 20 between the last two.
        let now = 10.0 * HOUR + 40.0 * 60.0;
        let mut s = AlignedSeries::new(now, 3);
        s.add(9.0 * HOUR, 10.0 * HOUR, 600.0);
        // The current clock hour's buckets, 10:00-10:40: 400 reads.
        s.add(10.0 * HOUR, 11.0 * HOUR, 400.0);
        let a = s.finish(&[(0.0, now)], 0.0);
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
        let mut s = AlignedSeries::new(now, 4);
        s.add(now - 4.0 * HOUR, now - 3.0 * HOUR, 100.0);
        s.add(now - 1.5 * HOUR, now, 300.0);
        s.add_gap(now - 3.0 * HOUR, now - 1.5 * HOUR);
        let a = s.finish(&[(now - 4.0 * HOUR, now)], 0.0);
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
    fn unobserved_hours_are_unknown_and_partial_ones_scaled_up() {
        let now = 100.0 * HOUR;
        let mut s = AlignedSeries::new(now, 4);
        // The worker ran for the last 90 minutes only; an import filled the first hour.
        s.add(now - 4.0 * HOUR, now - 3.0 * HOUR, 50.0);
        s.add(now - 1.5 * HOUR, now, 300.0);
        let a = s.finish(&[(now - 1.5 * HOUR, now)], 0.0);
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
        let mut s = AlignedSeries::new(now, 3);
        s.add(now - 600.0, now, 50.0);
        let a = s.clone().finish(&[(0.0, now)], now - 600.0);
        assert_eq!((a.observed_hours, a.imported_hours), (1, 0));
        assert!(
            (a.hourly[2] - 300.0).abs() < 1e-9,
            "ten minutes scaled to an hour: {:?}",
            a.hourly
        );
        // Seconds of observation are scaled as if they were five minutes.
        let a = s.finish(&[(0.0, now)], now - 30.0);
        assert!(a.hourly[2] <= 12.0 * 50.0 + 1e-9, "{:?}", a.hourly);
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
        let sampled = |since: f64| {
            let mut s = AlignedSeries::new(now, 2);
            let mut start = 9.0 * HOUR + 30.0 * 60.0;
            while start < now {
                let (from, to) = (start.max(since), (start + 300.0).min(now));
                let amount: f64 = (0..(to - from).max(0.0) as usize)
                    .map(|k| rate(from + k as f64) / HOUR)
                    .sum();
                s.add(start, start + 300.0, amount);
                start += 300.0;
            }
            s
        };
        let excess = |a: &Aligned| a.recent_excess.expect("known");
        let a = sampled(0.0).finish(&[(0.0, now)], 0.0);
        assert!((excess(&a) - 270.0).abs() < 1e-6, "{a:?}");
        // The current bucket, even an import stamped now of a whole bucket's reads, moves it
        // not at all.
        let mut s = sampled(0.0);
        s.add(now - 120.0, now + 180.0, 1000.0);
        let b = s.finish(&[(0.0, now)], 0.0);
        assert_eq!(b.recent_excess, a.recent_excess);
        // The worker ran for the last ten minutes only: both windows are scaled up from the
        // eight minutes of them it saw, at 480.
        let a = sampled(now - 600.0).finish(&[(now - 600.0, now)], 0.0);
        assert!(excess(&a).abs() < 1e-6, "{a:?}");
        // Not observed but imported in 5-minute steps: as it is.
        let a = sampled(0.0).finish(&[], 0.0);
        assert!((excess(&a) - 270.0).abs() < 1e-6, "{a:?}");
        // Sampled every 10 minutes at a flat 120 an hour, the last sample at 10:37: spread over
        // the buckets since the sample before, the reads show no excess. Had each sample's
        // reads gone to its own bucket, 40 would sit in 12 minutes of the last 15, running at
        // 200 an hour.
        let flat = |spread: bool| {
            let mut s = AlignedSeries::new(now, 3);
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
            s.finish(&[(0.0, now - 300.0)], 0.0)
        };
        assert!(excess(&flat(true)).abs() < 1e-6, "{:?}", flat(true));
        assert!(excess(&flat(false)) > 60.0, "{:?}", flat(false));
        // An import feed that began 45 minutes ago, at a flat rate: the hour's rate is that of
        // the buckets it holds, not a quarter lower.
        let mut s = AlignedSeries::new(now, 2);
        let end = (now / 300.0).floor() * 300.0;
        for k in 1..=9 {
            s.add(end - k as f64 * 300.0, end - (k - 1) as f64 * 300.0, 10.0);
        }
        let a = s.finish(&[], 0.0);
        assert!(excess(&a).abs() < 1e-6, "{a:?}");
        // Imported hourly totals, one sample an hour, tell nothing of the last 15 minutes.
        let mut s = AlignedSeries::new(now, 3);
        for k in 0..3 {
            s.add(
                now - 1200.0 - k as f64 * HOUR,
                now - 900.0 - k as f64 * HOUR,
                300.0,
            );
        }
        assert_eq!(s.finish(&[], 0.0).recent_excess, None);
        // Nothing known of the last hour: unknown. Observed and idle: zero.
        let mut s = AlignedSeries::new(now, 3);
        s.add(now - 3.0 * HOUR, now - 2.0 * HOUR, 100.0);
        assert_eq!(s.clone().finish(&[], 0.0).recent_excess, None);
        assert_eq!(s.finish(&[(0.0, now)], 0.0).recent_excess, Some(0.0));
    }

    #[test]
    fn an_imported_zero_is_known() {
        let now = 10.0 * HOUR;
        let mut s = AlignedSeries::new(now, 2);
        s.add(now - 2.0 * HOUR, now - HOUR, 0.0);
        let a = s.finish(&[], 0.0);
        assert_eq!(a.hourly[0], 0.0);
        assert!(a.hourly[1].is_nan());
        assert_eq!(a.imported_hours, 1);
    }

    #[test]
    fn idle_observed_hours_are_zero() {
        let s = AlignedSeries::new(10.0 * HOUR, 2);
        assert_eq!(
            s.clone().finish(&[(0.0, 10.0 * HOUR)], 0.0).hourly,
            vec![0.0, 0.0]
        );
        // Before the shard was first seen, nothing was observed of it.
        let a = s.finish(&[(0.0, 10.0 * HOUR)], 9.0 * HOUR);
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
            let mut s = AlignedSeries::new(now, hours);
            let start = now - hours as f64 * HOUR;
            let mut expected = 0.0;
            for (offset, length, amount) in spans {
                let from = start + offset * HOUR;
                let to = from + length * HOUR;
                s.add(from, to, amount);
                let inside = (to.min(now) - from.max(start)).max(0.0);
                expected += amount * inside / (to.min(now) - from);
            }
            let total: f64 = s.finish(&[(0.0, now)], 0.0).hourly.iter().sum();
            prop_assert!((total - expected).abs() <= 1e-6 * expected.max(1.0));
        }
    }
}
