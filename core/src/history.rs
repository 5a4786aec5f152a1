//! A refresh's reading of history: every shard's day rows (24 hourly slots and a bitmask of the
//! hours present) and fine buckets, added up into the shard's aligned hourly series
//! ([`crate::series`]). The catalog reads the rows; this keeps the shards apart.

use std::collections::HashMap;

use crate::access::{FINE_BUCKET_SECS, HOURS_PER_DAY};
use crate::series::{Aligned, AlignedSeries, Periods};

const HOUR: f64 = 3600.0;

/// The series of many shards, ending at the same moment, built from rows in any order.
#[derive(Clone, Debug)]
pub struct Histories {
    now: f64,
    hours: usize,
    write_weight: f64,
    index: HashMap<i32, usize>,
    series: Vec<AlignedSeries>,
    /// The spans the worker sampled.
    periods: Periods,
}

/// One day row of a shard: the slots of the load measure's columns (`second` empty when the
/// measure has one column) and of tuples written, and which hours hold history.
#[derive(Clone, Copy, Debug)]
pub struct DayRow<'a> {
    /// The day's start (midnight UTC), in seconds.
    pub start: f64,
    pub first: &'a [f32],
    pub second: &'a [f32],
    pub written: &'a [f32],
    /// Bit h is set when hour h holds history (an imported zero included).
    pub present: i32,
    /// Bit h is set when hour h's history included imported buckets, in time the worker did
    /// not observe (see [`AlignedSeries::add_slot`]).
    pub imported: i32,
}

impl Histories {
    /// Series of `hours` hours ending at `now`, a shard's load being its measure plus
    /// `write_weight` × tuples written; `periods` are the spans the worker sampled.
    pub fn new(now: f64, hours: usize, write_weight: f64, periods: Vec<(f64, f64)>) -> Histories {
        Histories {
            now,
            hours,
            write_weight,
            index: HashMap::new(),
            series: Vec::new(),
            periods: Periods::new(periods),
        }
    }

    /// Adds a shard, first seen at `first_seen`: its series comes `len()`-th in [`finish`].
    /// Its gaps ([`add_gap`]) come before its history.
    ///
    /// [`finish`]: Histories::finish
    /// [`add_gap`]: Histories::add_gap
    pub fn add_shard(&mut self, shard_id: i32, first_seen: f64) {
        self.index.insert(shard_id, self.series.len());
        self.series.push(AlignedSeries::new(
            self.now,
            self.hours,
            &self.periods,
            first_seen,
        ));
    }

    /// Whether the shard was added.
    pub fn contains(&self, shard_id: i32) -> bool {
        self.index.contains_key(&shard_id)
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Adds a day row's present hours to the shard's series; rows of shards not added are
    /// ignored.
    pub fn add_day(&mut self, shard_id: i32, day: &DayRow<'_>) {
        let Some(&i) = self.index.get(&shard_id) else {
            return;
        };
        for h in (0..HOURS_PER_DAY).filter(|h| day.present & (1 << h) != 0) {
            let at = |v: &[f32]| v.get(h).copied().unwrap_or(0.0) as f64;
            let from = day.start + h as f64 * HOUR;
            self.series[i].add_slot(
                from,
                from + HOUR,
                at(day.first) + at(day.second) + self.write_weight * at(day.written),
                day.imported & (1 << h) != 0,
            );
        }
    }

    /// Adds the load of a fine bucket starting at `start` to the shard's series; buckets of
    /// shards not added are ignored.
    pub fn add_bucket(&mut self, shard_id: i32, start: f64, load: f64) {
        let Some(&i) = self.index.get(&shard_id) else {
            return;
        };
        self.series[i].add(start, start + FINE_BUCKET_SECS as f64, load);
    }

    /// Marks [from, to) as unobserved for the shard (see [`AlignedSeries::add_gap`]); gaps of
    /// shards not added are ignored.
    pub fn add_gap(&mut self, shard_id: i32, from: f64, to: f64) {
        if let Some(&i) = self.index.get(&shard_id) {
            self.series[i].add_gap(from, to);
        }
    }

    /// Every shard's series, in the order they were added.
    pub fn finish(self) -> Vec<Aligned> {
        self.series.into_iter().map(AlignedSeries::finish).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_START: f64 = 86_400.0 * 100.0;

    #[test]
    fn present_hours_of_a_day_row_are_added_with_the_write_weight() {
        // Ends at 03:00 of the day: hours 00, 01 and 02.
        let mut h = Histories::new(DAY_START + 3.0 * HOUR, 3, 0.5, Vec::new());
        h.add_shard(7, 0.0);
        let slots = [10.0_f32, 20.0, 30.0];
        let written = [2.0_f32, 2.0, 2.0];
        h.add_day(
            7,
            &DayRow {
                start: DAY_START,
                first: &slots,
                second: &[],
                written: &written,
                present: 0b101,
                imported: 0,
            },
        );
        let aligned = h.finish();
        assert_eq!(aligned.len(), 1);
        let hourly = &aligned[0].hourly;
        assert_eq!(hourly[0], 11.0);
        assert!(hourly[1].is_nan(), "hour 01 is not present: unknown");
        assert_eq!(hourly[2], 31.0);
        assert_eq!(aligned[0].imported_hours, 2);
    }

    #[test]
    fn buckets_and_rows_of_other_shards_are_ignored_and_order_is_kept() {
        let mut h = Histories::new(
            DAY_START + HOUR,
            1,
            0.0,
            vec![(DAY_START, DAY_START + HOUR)],
        );
        h.add_shard(2, 0.0);
        h.add_shard(1, 0.0);
        h.add_bucket(1, DAY_START, 6.0);
        h.add_bucket(9, DAY_START, 100.0);
        h.add_day(
            9,
            &DayRow {
                start: DAY_START,
                first: &[1.0],
                second: &[],
                written: &[],
                present: 1,
                imported: 0,
            },
        );
        assert!(h.contains(1) && !h.contains(9));
        let aligned = h.finish();
        assert!(aligned[0].hourly[0] == 0.0, "shard 2 observed, idle");
        assert_eq!(aligned[1].hourly[0], 6.0);
        assert_eq!(aligned[1].observed_hours, 1);
    }
}
