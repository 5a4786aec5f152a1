//! Access samples: turning PostgreSQL's cumulative per-table counters into per-interval deltas,
//! and placing samples into history buckets.
//!
//! PostgreSQL's statistics counters only grow, except when they are reset (`pg_stat_reset()`,
//! crash recovery, a reused OID). A reset must never become a negative load, and the first
//! reading after the sampler starts must never become a burst of all-time totals: both are
//! treated as a new baseline.

use std::collections::HashMap;

// Copy credits have their home in `crate::copy_credits`; the old path still works.
pub use crate::copy_credits::CopyCredit;

/// Cumulative counters of one relation, as read from `pg_stat_user_tables` and
/// `pg_statio_user_tables`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Sequential plus index scans.
    pub scans: i64,
    /// Tuples returned by sequential scans plus tuples fetched by index scans.
    pub tuples_read: i64,
    /// Tuples inserted, updated and deleted.
    pub tuples_written: i64,
    /// Heap, index and TOAST blocks found in shared buffers.
    pub blocks_hit: i64,
    /// Heap, index and TOAST blocks read from outside shared buffers.
    pub blocks_read: i64,
}

impl Counters {
    fn fields(&self) -> [i64; 5] {
        [
            self.scans,
            self.tuples_read,
            self.tuples_written,
            self.blocks_hit,
            self.blocks_read,
        ]
    }
}

/// What one shard did during one interval (or, for external history, what a log says it did).
/// Floating point because external history may carry fractional, sampled or scaled counts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Access {
    pub scans: f64,
    pub tuples_read: f64,
    pub tuples_written: f64,
    pub blocks_hit: f64,
    pub blocks_read: f64,
}

impl Access {
    pub fn is_zero(&self) -> bool {
        *self == Access::default()
    }

    pub fn add(&mut self, other: &Access) {
        self.scans += other.scans;
        self.tuples_read += other.tuples_read;
        self.tuples_written += other.tuples_written;
        self.blocks_hit += other.blocks_hit;
        self.blocks_read += other.blocks_read;
    }

    /// Each count combined with the same count of `other` by `f`.
    fn zip_with(&self, other: &Access, f: impl Fn(f64, f64) -> f64) -> Access {
        Access {
            scans: f(self.scans, other.scans),
            tuples_read: f(self.tuples_read, other.tuples_read),
            tuples_written: f(self.tuples_written, other.tuples_written),
            blocks_hit: f(self.blocks_hit, other.blocks_hit),
            blocks_read: f(self.blocks_read, other.blocks_read),
        }
    }

    /// The `part / whole` share of every count (multiplied before it is divided, which keeps
    /// whole shares of whole counts exact while the product stays under 2^53).
    pub fn share(&self, part: f64, whole: f64) -> Access {
        self.zip_with(self, |v, _| v * part / whole)
    }

    /// Every count rounded to a whole number, but never above the same count of `limit`.
    pub fn rounded_within(&self, limit: &Access) -> Access {
        self.zip_with(limit, |v, limit| v.round().min(limit))
    }

    /// What is left of every count once `other` is taken out of it, never below zero.
    pub fn less(&self, other: &Access) -> Access {
        self.zip_with(other, |v, taken| (v - taken).max(0.0))
    }
}

/// The outcome of comparing a shard's counters with its previous reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sample {
    /// No previous reading (new shard, or the sampler just started): nothing to record yet.
    Baseline,
    /// Some counter went backwards: the counters were reset. The interval is treated as a new
    /// baseline, because how much of the current value predates the reset is unknown.
    Reset,
    /// The accesses made since the previous reading.
    Delta(Access),
}

/// Compares a shard's counters with its previous reading.
pub fn sample(previous: Option<&Counters>, current: &Counters) -> Sample {
    let Some(previous) = previous else {
        return Sample::Baseline;
    };
    let (before, now) = (previous.fields(), current.fields());
    if before.iter().zip(now.iter()).any(|(b, n)| n < b) {
        return Sample::Reset;
    }
    let d = |i: usize| (now[i] - before[i]) as f64;
    Sample::Delta(Access {
        scans: d(0),
        tuples_read: d(1),
        tuples_written: d(2),
        blocks_hit: d(3),
        blocks_read: d(4),
    })
}

/// Width of the fine history buckets that samples are added to, in seconds.
pub const FINE_BUCKET_SECS: i64 = 300;
/// Width of the compacted history buckets (one slot of a day row), in seconds.
pub const COARSE_BUCKET_SECS: i64 = 3600;
/// Hour slots in one compacted day row.
pub const HOURS_PER_DAY: usize = 24;

const MICROS_PER_SEC: i64 = 1_000_000;

/// Start of the bucket of `width_secs` holding the instant `micros` (microseconds since any
/// epoch that is a whole number of buckets away from the Unix epoch, such as PostgreSQL's
/// 2000-01-01). Floors towards the past for instants before the epoch too.
pub fn bucket_start(micros: i64, width_secs: i64) -> i64 {
    let width = width_secs * MICROS_PER_SEC;
    micros.div_euclid(width) * width
}

/// The previous reading, if this one at `now` continues from it: after an interval longer than
/// [`MAX_SPREAD_SECS`] (a worker that could not sample, a hung sample), or with a clock that
/// went back, when the reads happened is not known well enough to place them. The reading is
/// then a new baseline, and the time since the previous one unknown.
pub fn continues(previous: Option<i64>, now: i64) -> Option<i64> {
    previous
        .filter(|&previous| previous < now && now - previous <= MAX_SPREAD_SECS * MICROS_PER_SEC)
}

/// The longest interval between two readings whose accesses are spread over it: a little over
/// the longest `shardcast.sample_interval` (a day), so that a sample a few seconds late at that
/// interval still continues.
pub const MAX_SPREAD_SECS: i64 = 25 * 3600;

/// Spreads what a sample counted since the previous reading, taken at `from`, over the fine
/// buckets of `[from, to)`, each in proportion to its share of the interval: the reads happened
/// at some time since the previous reading, not at the instant of this one. Placed in the
/// bucket of `to` alone, a sample delayed past a bucket boundary or an interval longer than a
/// bucket would put several buckets' reads into one, which reads as a burst. Without a previous
/// reading (or with one not before `to`) everything goes to the bucket of `to`. Returns
/// `(bucket start, accesses)`, oldest first. Counts are split where the running total crosses
/// whole numbers (each bucket gets what its rounded cumulative share adds), so whole counts stay
/// whole and the parts add up to `delta` exactly. `from` is taken no earlier than
/// [`MAX_SPREAD_SECS`] before `to` (see [`continues`]).
pub fn spread(delta: &Access, from: Option<i64>, to: i64, width_secs: i64) -> Vec<(i64, Access)> {
    let width = width_secs.max(1) * MICROS_PER_SEC;
    let Some(from) = from.filter(|&from| from < to) else {
        return vec![(bucket_start(to, width_secs), *delta)];
    };
    let from = from.max(to - MAX_SPREAD_SECS * MICROS_PER_SEC);
    // The bucket of the interval's last instant: a reading taken exactly on a boundary owes
    // nothing to the bucket it starts.
    let last = bucket_start(to - 1, width_secs);
    let span = (to - from) as f64;
    let mut parts = Vec::new();
    let mut given = Access::default();
    let mut start = bucket_start(from, width_secs);
    while start < last {
        let through = delta
            .share(((start + width) - from) as f64, span)
            .rounded_within(delta);
        parts.push((start, through.less(&given)));
        given = through;
        start += width;
    }
    parts.push((last, delta.less(&given)));
    parts
}

/// Why an external access sample is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleError {
    /// A count is negative.
    Negative,
    /// A count is NaN or infinite.
    NotFinite,
    /// The timestamp is after the current time.
    InTheFuture,
    /// The timestamp is infinite.
    InfiniteTime,
    /// A count is above [`MAX_SAMPLE_COUNT`].
    TooLarge,
}

/// The largest count one external sample may carry: a million accesses a second for thirty
/// years. Anything larger is a unit mistake, and would overflow sums of history.
pub const MAX_SAMPLE_COUNT: f64 = 1e15;

impl SampleError {
    pub fn message(&self) -> &'static str {
        match self {
            SampleError::Negative => "access counts must not be negative",
            SampleError::NotFinite => "access counts must be finite numbers",
            SampleError::InTheFuture => "an access sample cannot be in the future",
            SampleError::InfiniteTime => "an access sample needs a finite timestamp",
            SampleError::TooLarge => "access counts must be at most 1e15",
        }
    }

    pub fn hint(&self) -> &'static str {
        match self {
            SampleError::Negative | SampleError::NotFinite | SampleError::TooLarge => {
                "Pass the number of reads and writes in the interval, zero or more."
            }
            SampleError::InTheFuture => {
                "Record accesses that have happened; check the clock or time zone of the source."
            }
            SampleError::InfiniteTime => "Pass the time the accesses were observed.",
        }
    }
}

/// One externally observed access sample (from a query log, say).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExternalSample {
    /// Microseconds since PostgreSQL's epoch.
    pub at: i64,
    pub reads: f64,
    pub writes: f64,
}

impl ExternalSample {
    /// Checks the sample against the current time `now` (same epoch as `at`).
    pub fn validate(&self, now: i64) -> Result<(), SampleError> {
        if !self.reads.is_finite() || !self.writes.is_finite() {
            return Err(SampleError::NotFinite);
        }
        if self.reads < 0.0 || self.writes < 0.0 {
            return Err(SampleError::Negative);
        }
        if self.reads > MAX_SAMPLE_COUNT || self.writes > MAX_SAMPLE_COUNT {
            return Err(SampleError::TooLarge);
        }
        if self.at == i64::MAX || self.at == i64::MIN {
            return Err(SampleError::InfiniteTime);
        }
        if self.at > now {
            return Err(SampleError::InTheFuture);
        }
        Ok(())
    }

    /// External history knows reads and writes, not scans or blocks: an imported read counts as
    /// one access (a scan) that reads one tuple from one buffer (a block hit), so that it is load
    /// whatever `shardcast.load_measure` counts, scans, tuples or blocks. (Counted as no block,
    /// imported history forecast zero under `blocks`.)
    pub fn access(&self) -> Access {
        Access {
            scans: self.reads,
            tuples_read: self.reads,
            tuples_written: self.writes,
            blocks_hit: self.reads,
            ..Access::default()
        }
    }
}

/// Sums accesses per (shard, fine bucket), so that a bulk import writes each bucket once.
#[derive(Debug, Default)]
pub struct BucketSums {
    sums: HashMap<(i32, i64), Access>,
}

impl BucketSums {
    pub fn add(&mut self, shard_id: i32, at: i64, access: &Access) {
        let key = (shard_id, bucket_start(at, FINE_BUCKET_SECS));
        self.sums.entry(key).or_default().add(access);
    }

    pub fn len(&self) -> usize {
        self.sums.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// The buckets, as (shard_id, bucket start, accesses), in a stable order so that concurrent
    /// writers take row locks in the same order. Zero buckets are kept: an imported zero says
    /// the shard was idle then, which is not the same as nobody knowing.
    pub fn into_sorted(self) -> Vec<(i32, i64, Access)> {
        let mut rows: Vec<_> = self
            .sums
            .into_iter()
            .map(|((shard, bucket), access)| (shard, bucket, access))
            .collect();
        rows.sort_by_key(|(shard, bucket, _)| (*shard, *bucket));
        rows
    }
}

/// Places per-hour values into a day's 24 hour slots. Hours outside 0..24 are ignored; repeated
/// hours add up.
pub fn hour_slots(hours: &[i32], values: &[f64]) -> [f32; HOURS_PER_DAY] {
    let mut slots = [0.0f64; HOURS_PER_DAY];
    for (&hour, &value) in hours.iter().zip(values) {
        if let Some(slot) = usize::try_from(hour).ok().and_then(|h| slots.get_mut(h)) {
            *slot += value;
        }
    }
    slots.map(|v| v as f32)
}

/// Adds two day rows slot by slot; a missing or short row counts as zeros.
pub fn add_slots(a: &[f32], b: &[f32]) -> Vec<f32> {
    let len = a.len().max(b.len()).max(HOURS_PER_DAY);
    (0..len)
        .map(|i| a.get(i).copied().unwrap_or(0.0) + b.get(i).copied().unwrap_or(0.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(v: i64) -> Counters {
        Counters {
            scans: v,
            tuples_read: 10 * v,
            tuples_written: v,
            blocks_hit: 2 * v,
            blocks_read: v,
        }
    }

    const MINUTE: i64 = 60_000_000;

    fn reads(scans: f64) -> Access {
        Access {
            scans,
            tuples_read: 10.0 * scans,
            ..Access::default()
        }
    }

    #[test]
    fn a_sample_s_reads_are_spread_over_the_buckets_since_the_one_before() {
        // Read at 10:03 and again at 10:13: 10:03-10:05 is 2 minutes of 10, 10:05-10:10 is 5,
        // 10:10-10:13 is 3.
        let at = |minute: i64| 10 * 60 * MINUTE + minute * MINUTE;
        let parts = spread(&reads(100.0), Some(at(3)), at(13), 300);
        let buckets: Vec<i64> = parts.iter().map(|(b, _)| *b).collect();
        assert_eq!(buckets, vec![at(0), at(5), at(10)]);
        let scans: Vec<f64> = parts.iter().map(|(_, a)| a.scans).collect();
        assert_eq!(scans, vec![20.0, 50.0, 30.0]);
        assert_eq!(parts[1].1.tuples_read, 500.0);
        // Whole counts stay whole: 7 reads over 2, 5 and 3 minutes of 10.
        let scans: Vec<f64> = spread(&reads(7.0), Some(at(3)), at(13), 300)
            .iter()
            .map(|(_, a)| a.scans)
            .collect();
        assert_eq!(scans, vec![1.0, 4.0, 2.0]);
        // One read goes to the bucket where the running share passes a half.
        let parts = spread(&reads(1.0), Some(at(3)), at(13), 300);
        let scans: Vec<f64> = parts.iter().map(|(_, a)| a.scans).collect();
        assert_eq!(scans, vec![0.0, 1.0, 0.0]);
        // Fractional counts (never from the counters, but allowed) add up too.
        let parts = spread(&reads(2.6), Some(at(3)), at(13), 300);
        assert_eq!(parts.iter().map(|(_, a)| a.scans).sum::<f64>(), 2.6);
        // A reading on a bucket boundary owes nothing to the bucket it starts.
        let parts = spread(&reads(100.0), Some(at(5)), at(10), 300);
        assert_eq!(parts, vec![(at(5), reads(100.0))]);
        // No previous reading, or one not before this one: the bucket of the reading.
        assert_eq!(
            spread(&reads(7.0), None, at(13), 300),
            vec![(at(10), reads(7.0))]
        );
        assert_eq!(
            spread(&reads(7.0), Some(at(13)), at(13), 300),
            vec![(at(10), reads(7.0))]
        );
        // Never over more than the longest interval that continues.
        let parts = spread(&reads(600.0), Some(at(13) - 2 * 1440 * MINUTE), at(13), 300);
        assert_eq!(parts.len() as i64, MAX_SPREAD_SECS / 300 + 1);
        assert_eq!(parts.last().map(|(b, _)| *b), Some(at(10)));
    }

    #[test]
    fn a_reading_after_a_long_silence_or_a_clock_step_is_a_baseline() {
        let now = 1_000 * 86_400 * 1_000_000i64;
        assert_eq!(continues(Some(now - MINUTE), now), Some(now - MINUTE));
        // The longest sample interval, a day, a few seconds late: continues.
        let late_day = now - 1440 * MINUTE - 5_000_000;
        assert_eq!(continues(Some(late_day), now), Some(late_day));
        assert_eq!(continues(Some(now - 26 * 60 * MINUTE), now), None);
        assert_eq!(continues(Some(now + MINUTE), now), None);
        assert_eq!(continues(Some(now), now), None);
        assert_eq!(continues(None, now), None);
    }

    #[test]
    fn first_reading_is_a_baseline_not_a_burst() {
        assert_eq!(sample(None, &counters(1_000_000)), Sample::Baseline);
    }

    #[test]
    fn growth_is_the_delta() {
        let Sample::Delta(d) = sample(Some(&counters(5)), &counters(8)) else {
            panic!()
        };
        assert_eq!(d.scans, 3.0);
        assert_eq!(d.tuples_read, 30.0);
        assert_eq!(d.blocks_hit, 6.0);
    }

    #[test]
    fn unchanged_counters_are_a_zero_delta() {
        let Sample::Delta(d) = sample(Some(&counters(5)), &counters(5)) else {
            panic!()
        };
        assert!(d.is_zero());
    }

    #[test]
    fn any_counter_going_backwards_is_a_reset() {
        let mut after = counters(100);
        after.blocks_read = 0;
        assert_eq!(sample(Some(&counters(50)), &after), Sample::Reset);
        assert_eq!(
            sample(Some(&counters(50)), &Counters::default()),
            Sample::Reset
        );
    }

    #[test]
    fn buckets_floor_towards_the_past() {
        let w = FINE_BUCKET_SECS;
        assert_eq!(bucket_start(0, w), 0);
        assert_eq!(bucket_start(299_999_999, w), 0);
        assert_eq!(bucket_start(300_000_000, w), 300_000_000);
        assert_eq!(bucket_start(-1, w), -300_000_000);
    }

    #[test]
    fn external_samples_are_validated() {
        let now = 1_000;
        let ok = ExternalSample {
            at: 1_000,
            reads: 1.0,
            writes: 0.0,
        };
        assert_eq!(ok.validate(now), Ok(()));
        assert_eq!(
            ExternalSample { reads: -1.0, ..ok }.validate(now),
            Err(SampleError::Negative)
        );
        assert_eq!(
            ExternalSample {
                writes: f64::NAN,
                ..ok
            }
            .validate(now),
            Err(SampleError::NotFinite)
        );
        assert_eq!(
            ExternalSample {
                reads: f64::INFINITY,
                ..ok
            }
            .validate(now),
            Err(SampleError::NotFinite)
        );
        assert_eq!(
            ExternalSample { at: 1_001, ..ok }.validate(now),
            Err(SampleError::InTheFuture)
        );
        assert_eq!(
            ExternalSample { at: i64::MIN, ..ok }.validate(now),
            Err(SampleError::InfiniteTime)
        );
    }

    #[test]
    fn bucket_sums_merge_samples_of_one_bucket_and_keep_zeros() {
        let mut sums = BucketSums::default();
        let read = |n: f64| Access {
            tuples_read: n,
            ..Access::default()
        };
        sums.add(2, 10 * 1_000_000, &read(1.0));
        sums.add(2, 299 * 1_000_000, &read(2.0));
        sums.add(2, 300 * 1_000_000, &read(4.0));
        sums.add(1, 0, &read(0.0));
        let rows = sums.into_sorted();
        assert_eq!(rows.len(), 3);
        // An imported zero is a known idle bucket.
        assert_eq!((rows[0].0, rows[0].1), (1, 0));
        assert!(rows[0].2.is_zero());
        assert_eq!((rows[1].0, rows[1].1, rows[1].2.tuples_read), (2, 0, 3.0));
        assert_eq!(
            (rows[2].0, rows[2].1, rows[2].2.tuples_read),
            (2, 300_000_000, 4.0)
        );
    }

    #[test]
    fn hour_slots_place_and_add() {
        let slots = hour_slots(&[0, 23, 23, 24, -1], &[1.0, 2.0, 3.0, 100.0, 100.0]);
        assert_eq!(slots[0], 1.0);
        assert_eq!(slots[23], 5.0);
        assert_eq!(slots.iter().sum::<f32>(), 6.0);
    }

    #[test]
    fn add_slots_treats_missing_as_zero() {
        let a = [1.0f32; 24];
        let sum = add_slots(&a, &[]);
        assert_eq!(sum.len(), 24);
        assert_eq!(sum.iter().sum::<f32>(), 24.0);
        assert_eq!(add_slots(&a, &a)[5], 2.0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_spread_keeps_every_read_inside_the_interval(
            scans in 0u64..1_000_000_000_000,
            from in -1_000_000_000_000i64..1_000_000_000_000,
            length in 0i64..200_000_000_000,
        ) {
            let to = from + length;
            let scans = scans as f64;
            let delta = Access { scans, tuples_read: 3.0 * scans, ..Access::default() };
            let parts = spread(&delta, Some(from), to, FINE_BUCKET_SECS);
            let width = FINE_BUCKET_SECS * 1_000_000;
            prop_assert!(!parts.is_empty());
            prop_assert!(parts.len() as i64 <= MAX_SPREAD_SECS / FINE_BUCKET_SECS + 1);
            let start = from.max(to - MAX_SPREAD_SECS * 1_000_000);
            let mut total = 0.0;
            for (i, (bucket, part)) in parts.iter().enumerate() {
                prop_assert!(part.scans >= 0.0 && part.tuples_read >= 0.0);
                prop_assert_eq!(part.scans.fract(), 0.0);
                prop_assert_eq!(bucket.rem_euclid(width), 0);
                if i > 0 {
                    prop_assert_eq!(*bucket, parts[i - 1].0 + width);
                }
                total += part.scans;
                // Each bucket's running total is the interval's share up to its end, rounded.
                if length > 0 {
                    let through = ((bucket + width).min(to) - start) as f64 / (to - start) as f64;
                    prop_assert!((total - scans * through).abs() <= 0.5 + 1e-9 * scans, "{} {} {}", i, total, scans * through);
                }
            }
            prop_assert_eq!(total, scans);
            // Every bucket overlaps the interval; the last holds its last instant.
            prop_assert_eq!(parts.last().map(|(b, _)| *b), Some(bucket_start((to - 1).max(from), FINE_BUCKET_SECS)));
            if length > 0 {
                prop_assert!(parts[0].0 + width > from);
            }
        }
    }

    fn counters() -> impl Strategy<Value = Counters> {
        (
            0..i64::MAX / 4,
            0..i64::MAX / 4,
            0..i64::MAX / 4,
            0..i64::MAX / 4,
            0..i64::MAX / 4,
        )
            .prop_map(
                |(scans, tuples_read, tuples_written, blocks_hit, blocks_read)| Counters {
                    scans,
                    tuples_read,
                    tuples_written,
                    blocks_hit,
                    blocks_read,
                },
            )
    }

    proptest! {
        #[test]
        fn a_delta_is_never_negative_and_never_exceeds_the_growth(a in counters(), b in counters()) {
            match sample(Some(&a), &b) {
                Sample::Delta(d) => {
                    for v in [d.scans, d.tuples_read, d.tuples_written, d.blocks_hit, d.blocks_read] {
                        prop_assert!(v >= 0.0 && v.is_finite());
                    }
                    prop_assert_eq!(d.scans, (b.scans - a.scans) as f64);
                }
                Sample::Reset => prop_assert!(a.fields().iter().zip(b.fields()).any(|(x, y)| y < *x)),
                Sample::Baseline => prop_assert!(false, "a previous reading was given"),
            }
        }

        #[test]
        fn consecutive_deltas_add_up_to_the_total_growth(start in counters(), steps in proptest::collection::vec(0..1_000_000i64, 1..20)) {
            let mut previous = start;
            let mut total = 0.0;
            for step in steps.iter() {
                let next = Counters { tuples_read: previous.tuples_read + step, ..previous };
                if let Sample::Delta(d) = sample(Some(&previous), &next) { total += d.tuples_read; }
                previous = next;
            }
            prop_assert_eq!(total, steps.iter().sum::<i64>() as f64);
        }

        #[test]
        fn every_instant_falls_in_its_bucket(micros in -1_000_000_000_000_000i64..1_000_000_000_000_000) {
            let start = bucket_start(micros, FINE_BUCKET_SECS);
            prop_assert!(start <= micros && micros < start + FINE_BUCKET_SECS * 1_000_000);
        }
    }
}
