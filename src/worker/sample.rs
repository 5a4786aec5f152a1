//! The sampling stage: read every shard's cumulative counters, turn them into deltas against the
//! previous reading (core::access::sample), take replication's own reads out of them (copy
//! credits), and spread them over the history buckets since the previous sample
//! (core::access::spread). On a Citus coordinator, the shards of every node too, read through
//! Citus's connections (see [`CitusSampler`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use pgrx::prelude::*;
use shardcast_core::access::{self, Access, Counters, Sample, FINE_BUCKET_SECS};

use crate::catalog::{citus, copy_credits, history, shards};

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
}

/// The sampler's memory between cycles: the previous counters of every shard. It is not
/// persisted: after a restart the first reading is a baseline.
#[derive(Default)]
pub struct Sampler {
    previous: HashMap<i32, Counters>,
    written_since_sized: HashSet<i32>,
    /// When the previous sample was taken, if the next one continues from it.
    last_sample_at: Option<pg_sys::TimestampTz>,
    citus: CitusSampler,
}

impl Sampler {
    /// Forgets every previous reading, so that the next sample is a baseline. Used when the
    /// extension was re-created: shard ids then start over and mean other relations.
    pub fn forget(&mut self) {
        self.previous.clear();
        self.written_since_sized.clear();
        self.last_sample_at = None;
        self.citus = CitusSampler::default();
    }

    /// Takes one sample of the registered shards (`registered` and `retired` are what the
    /// registration just before did, for the report). Must run in its own transaction:
    /// cumulative statistics are read through a snapshot taken once per transaction.
    pub fn sample(
        &mut self,
        registered: i64,
        retired: i64,
    ) -> Result<SampleReport, pgrx::spi::Error> {
        let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
        let current = shards::counters()?;
        // When the counters were read, not when the transaction began: the reads it counts ran
        // up to now.
        let read_at = unsafe { pg_sys::GetCurrentTimestamp() };
        let since = access::continues(self.last_sample_at, read_at);
        if let (Some(previous), None) = (self.last_sample_at, since) {
            log!(
                "shardcast worker: {:.0} s since the previous sample: this one is a new baseline, and the time between is unknown",
                (read_at - previous) as f64 / 1e6
            );
        }

        let mut report = SampleReport {
            registered,
            retired,
            shards: current.len(),
            ..Default::default()
        };
        let mut deltas = Vec::new();
        for (shard_id, counters) in &current {
            match access::sample(self.previous.get(shard_id), counters) {
                Sample::Baseline => {}
                Sample::Reset => report.resets += 1,
                Sample::Delta(delta) if delta.is_zero() => {}
                Sample::Delta(delta) => {
                    if delta.tuples_written > 0.0 {
                        self.written_since_sized.insert(*shard_id);
                    }
                    deltas.push((*shard_id, delta));
                }
            }
        }
        // Citus's counters are read a moment later, through its connections (at most the
        // connection timeout, 2 s): close enough to spread over the same interval.
        deltas.extend(self.citus.sample(now, &mut report)?);
        if since.is_none() {
            deltas.clear();
        }
        copy_credits::spend(&mut deltas)?;
        // Retired shards drop out of memory with this replacement.
        self.previous = current.into_iter().collect();
        let mut rows: Vec<(i32, i64, Access)> = deltas
            .into_iter()
            .filter(|(_, delta)| !delta.is_zero())
            .flat_map(|(shard_id, delta)| {
                access::spread(&delta, since, read_at, FINE_BUCKET_SECS)
                    .into_iter()
                    .map(move |(bucket, part)| (shard_id, bucket, part))
            })
            .filter(|(_, _, part)| !part.is_zero())
            .collect();
        rows.sort_by_key(|(shard_id, bucket, _)| (*shard_id, *bucket));
        report.buckets_written = history::add_to_buckets(&rows)?;
        history::record_sampling(since, read_at)?;
        self.last_sample_at = Some(read_at);
        Ok(report)
    }

    /// Refreshes the size of shards that are new, were written to since they were last
    /// measured (at most once per `written_gap`), or were not measured for an hour. Runs in its
    /// own transaction with a short lock timeout, so that a table locked by DDL delays only its
    /// own size, never a sample. Returns the shards measured.
    pub fn refresh_sizes(
        &mut self,
        written_gap: std::time::Duration,
    ) -> Result<Vec<i32>, pgrx::spi::Error> {
        let written: Vec<i32> = self.written_since_sized.iter().copied().collect();
        let refreshed = shards::refresh_sizes(written, SIZE_REFRESH_BATCH, written_gap)?;
        for shard_id in &refreshed {
            self.written_since_sized.remove(shard_id);
        }
        Ok(refreshed)
    }

    /// On a Citus coordinator, measures the Citus shards again (`citus_shard_sizes()`), at most
    /// once per `every`. Runs in its own transaction, under a statement timeout.
    pub fn refresh_citus_sizes(&mut self, every: Duration) -> Result<i64, pgrx::spi::Error> {
        if !self.citus.coordinator || self.citus.sized_at.is_some_and(|at| at.elapsed() < every) {
            return Ok(0);
        }
        self.citus.sized_at = Some(Instant::now());
        citus::refresh_sizes()
    }
}

/// The Citus shards of every node, sampled by the coordinator's worker: one
/// `run_command_on_all_nodes` per cycle returns each node's counters of its own placements.
/// A placement's previous reading is keyed by its shard and node group, so a shard that moved
/// starts from a baseline on its new node (the copy's own writes there are not load) and its
/// history, keyed by shard, goes on: never reset, never counted twice. A shard not read in full
/// (its node did not answer, or it moved since the previous sample) has a gap from its last
/// reading until it is read again: unknown history, not idle.
#[derive(Default)]
struct CitusSampler {
    /// Whether the last sample found this database to be a Citus coordinator.
    coordinator: bool,
    /// The previous reading of each placement: (shard id, node group) → counters.
    previous: HashMap<(i32, i32), Counters>,
    /// When each Citus shard was last read in full, continuing from the reading before.
    last_read: HashMap<i32, pg_sys::TimestampTz>,
    /// The node groups that did not answer the last sample (logged when this changes).
    failed: HashSet<i32>,
    sized_at: Option<Instant>,
}

/// How long the coordinator waits for a connection to a node: a quarter of the sample interval,
/// between 100 ms and 2 s, so that a node that does not answer never delays the next sample.
fn connect_timeout_ms() -> u64 {
    (crate::gucs::sample_interval() / 4)
        .as_millis()
        .clamp(100, 2000) as u64
}

impl CitusSampler {
    fn sample(
        &mut self,
        now: pg_sys::TimestampTz,
        report: &mut SampleReport,
    ) -> Result<Vec<(i32, Access)>, pgrx::spi::Error> {
        self.coordinator = citus::is_coordinator()?;
        if !self.coordinator {
            self.previous.clear();
            self.last_read.clear();
            return Ok(Vec::new());
        }
        let (registered, retired) = citus::sync()?;
        report.registered += registered;
        report.retired += retired;
        let nodes = citus::read_nodes(connect_timeout_ms())?;
        report.shards += nodes.placements.len();
        if nodes.failed_groups != self.failed {
            if !nodes.failed_groups.is_empty() {
                log!(
                    "shardcast worker: Citus node group(s) {:?} did not answer; their shards' history is unknown until they do",
                    nodes.failed_groups
                );
            } else {
                log!("shardcast worker: every Citus node answers again");
            }
            self.failed = nodes.failed_groups.clone();
        }
        let mut current = HashMap::with_capacity(nodes.readings.len());
        let mut deltas: HashMap<i32, Access> = HashMap::new();
        let mut baseline: HashSet<i32> = HashSet::new();
        for (shard_id, group, counters) in nodes.readings {
            match access::sample(self.previous.get(&(shard_id, group)), &counters) {
                Sample::Baseline => {
                    baseline.insert(shard_id);
                }
                Sample::Reset => report.resets += 1,
                Sample::Delta(delta) => deltas.entry(shard_id).or_default().add(&delta),
            }
            current.insert((shard_id, group), counters);
        }
        let mut rows = Vec::new();
        let mut gaps = Vec::new();
        for (shard_id, groups) in &nodes.placements {
            let complete = groups
                .iter()
                .all(|g| current.contains_key(&(*shard_id, *g)));
            if complete && !baseline.contains(shard_id) {
                if let Some(delta) = deltas.remove(shard_id).filter(|d| !d.is_zero()) {
                    rows.push((*shard_id, delta));
                }
                self.last_read.insert(*shard_id, now);
                continue;
            }
            // Not read in full, or read from a baseline (moved, or a node back): the time since
            // its last reading is unknown, up to now.
            match self.last_read.get(shard_id) {
                Some(since) => gaps.push((*shard_id, *since)),
                // Never read in full since this sampler started (its node was already down): the
                // unknown time starts now, and the next reading that misses it records the gap.
                None => {
                    self.last_read.insert(*shard_id, now);
                }
            }
            if complete {
                self.last_read.insert(*shard_id, now);
            }
        }
        gaps.sort_unstable();
        citus::record_gaps(&gaps, now)?;
        self.last_read
            .retain(|shard_id, _| nodes.placements.contains_key(shard_id));
        self.previous = current;
        Ok(rows)
    }
}
