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
    /// one access (a scan) that reads one tuple, so that it is load whatever
    /// `shardcast.load_measure` counts, scans or tuples.
    pub fn access(&self) -> Access {
        Access {
            scans: self.reads,
            tuples_read: self.reads,
            tuples_written: self.writes,
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
