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
}

const HOUR: f64 = 3600.0;

impl AlignedSeries {
    /// A series of `hours` hours ending at `now`.
    pub fn new(now: f64, hours: usize) -> AlignedSeries {
        AlignedSeries {
            now,
            load: vec![0.0; hours],
            touched: vec![false; hours],
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
