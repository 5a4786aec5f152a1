//! The sampling stage: read every shard's cumulative counters, turn them into deltas against the
//! previous reading (core::access::sample), take replication's own reads out of them (copy
//! credits), and add them to the history buckets.

use std::collections::{HashMap, HashSet};

use pgrx::prelude::*;
use shardcast_core::access::{self, Counters, Sample, FINE_BUCKET_SECS};

use crate::catalog::{copy_credits, history, shards};

/// Sizes are refreshed with `pg_total_relation_size`, which stats every file of a relation:
/// only for shards that are new, were written to, or have not been measured for a while, and at
/// most this many per cycle.
const SIZE_REFRESH_BATCH: i64 = 1000;

/// What one sample did.
#[derive(Debug, Default, Clone, Copy)]
pub struct SampleReport {
    pub shards: usize,
    pub buckets_written: usize,
    pub resets: usize,
    pub registered: i64,
    pub retired: i64,
    pub compacted: i64,
}

/// The sampler's memory between cycles: the previous counters of every shard. It is not
/// persisted: after a restart the first reading is a baseline.
#[derive(Default)]
pub struct Sampler {
    previous: HashMap<i32, Counters>,
    written_since_sized: HashSet<i32>,
    /// When the previous sample was taken, if the next one continues from it.
    last_sample_at: Option<pg_sys::TimestampTz>,
}

impl Sampler {
    /// Forgets every previous reading, so that the next sample is a baseline. Used when the
    /// extension was re-created: shard ids then start over and mean other relations.
    pub fn forget(&mut self) {
        self.previous.clear();
        self.written_since_sized.clear();
        self.last_sample_at = None;
    }

    /// Takes one sample. Must run in its own transaction: cumulative statistics are read
    /// through a snapshot taken once per transaction.
    pub fn sample(
        &mut self,
        retention: std::time::Duration,
    ) -> Result<SampleReport, pgrx::spi::Error> {
        let (registered, retired) = shards::sync()?;
        let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
        let bucket = access::bucket_start(now, FINE_BUCKET_SECS);
        let current = shards::counters()?;

        let mut report = SampleReport {
            registered,
            retired,
            shards: current.len(),
            ..Default::default()
        };
        let mut rows = Vec::new();
        for (shard_id, counters) in &current {
            match access::sample(self.previous.get(shard_id), counters) {
                Sample::Baseline => {}
                Sample::Reset => report.resets += 1,
                Sample::Delta(delta) if delta.is_zero() => {}
                Sample::Delta(delta) => {
                    if delta.tuples_written > 0.0 {
                        self.written_since_sized.insert(*shard_id);
                    }
                    rows.push((*shard_id, bucket, delta));
                }
            }
        }
        copy_credits::spend(&mut rows)?;
        rows.retain(|(_, _, delta)| !delta.is_zero());
        // Retired shards drop out of memory with this replacement.
        self.previous = current.into_iter().collect();
        rows.sort_by_key(|(shard_id, _, _)| *shard_id);
        report.buckets_written = history::add_to_buckets(&rows)?;
        report.compacted = history::compact_and_purge(retention)?;
        history::record_sampling(self.last_sample_at, now)?;
        self.last_sample_at = Some(now);
        Ok(report)
    }

    /// Refreshes the size of shards that are new, were written to since they were last
    /// measured (at most once per `written_gap`), or were not measured for an hour. Runs in its
    /// own transaction with a short lock timeout, so that a table locked by DDL delays only its
    /// own size, never a sample.
    pub fn refresh_sizes(
        &mut self,
        written_gap: std::time::Duration,
    ) -> Result<usize, pgrx::spi::Error> {
        let written: Vec<i32> = self.written_since_sized.iter().copied().collect();
        let refreshed = shards::refresh_sizes(written, SIZE_REFRESH_BATCH, written_gap)?;
        for shard_id in &refreshed {
            self.written_since_sized.remove(shard_id);
        }
        Ok(refreshed.len())
    }
}
