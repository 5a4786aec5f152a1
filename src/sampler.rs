//! The sampling stage: read every shard's cumulative counters, turn them into deltas against the
//! previous reading (core::access::sample), and add the deltas to the history buckets.

use std::collections::{HashMap, HashSet};

use pgrx::prelude::*;
use shardcast_core::access::{self, Access, CopyCredit, Counters, Sample, FINE_BUCKET_SECS};

use crate::history;
use crate::registry;

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
        let (registered, retired) = registry::sync()?;
        let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
        let bucket = access::bucket_start(now, FINE_BUCKET_SECS);
        let current = read_counters()?;

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
        spend_copy_credits(&mut rows)?;
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
        let written_gap = pgrx::datum::Interval::from_micros(written_gap.as_micros() as i64);
        Spi::run("SET LOCAL lock_timeout = '500ms'")?;
        let refreshed: Vec<i32> = Spi::connect_mut(|client| {
            client
                .update(
                    "UPDATE shardcast.shards s
                     SET size_bytes = pg_catalog.pg_total_relation_size(s.relid),
                         size_updated_at = now()
                     WHERE s.shard_id IN (
                         SELECT shard_id FROM shardcast.shards
                         WHERE retired_at IS NULL
                           AND (size_updated_at IS NULL
                                OR size_updated_at < now() - interval '1 hour'
                                OR (shard_id = ANY($1) AND size_updated_at < now() - $3::interval))
                         ORDER BY size_updated_at NULLS FIRST
                         LIMIT $2)
                     RETURNING s.shard_id",
                    None,
                    &[
                        written.into(),
                        SIZE_REFRESH_BATCH.into(),
                        written_gap.into(),
                    ],
                )?
                .map(|row| row.get::<i32>(1).map(|id| id.unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()
        })?;
        for shard_id in &refreshed {
            self.written_since_sized.remove(shard_id);
        }
        Ok(refreshed.len())
    }
}

/// Takes replication's own reads (`shardcast.copy_credits`, granted by claims) out of the
/// deltas, and keeps what is left of each credit until it expires.
fn spend_copy_credits(rows: &mut [(i32, i64, Access)]) -> Result<(), pgrx::spi::Error> {
    Spi::run("DELETE FROM shardcast.copy_credits WHERE valid_until < now()")?;
    // Oldest first: the copy that started first is the first whose scan is reported.
    let credits: Vec<(i64, i32, CopyCredit)> = Spi::connect(|client| {
        client
            .select(
                "SELECT task_id, shard_id, scans, tuples_read, blocks FROM shardcast.copy_credits
                 ORDER BY task_id",
                None,
                &[],
            )?
            .map(|row| {
                Ok((
                    row.get::<i64>(1)?.unwrap_or_default(),
                    row.get::<i32>(2)?.unwrap_or_default(),
                    CopyCredit {
                        scans: row.get::<f64>(3)?.unwrap_or_default(),
                        tuples_read: row.get::<f64>(4)?.unwrap_or_default(),
                        blocks: row.get::<f64>(5)?.unwrap_or_default(),
                    },
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    if credits.is_empty() {
        return Ok(());
    }
    let mut by_shard: HashMap<i32, Vec<(i64, CopyCredit)>> = HashMap::new();
    for (task_id, shard_id, credit) in credits {
        by_shard
            .entry(shard_id)
            .or_default()
            .push((task_id, credit));
    }
    let (mut spent, mut left) = (Vec::new(), Vec::new());
    for (shard_id, _, delta) in rows.iter_mut() {
        for (task_id, credit) in by_shard.get_mut(shard_id).into_iter().flatten() {
            let before = *credit;
            credit.discount(delta);
            if credit.is_spent() {
                spent.push(*task_id);
            } else if *credit != before {
                left.push((*task_id, *credit));
            }
        }
    }
    let column = |f: fn(&CopyCredit) -> f64| left.iter().map(|(_, c)| f(c)).collect::<Vec<f64>>();
    Spi::run_with_args(
        "WITH spent AS (DELETE FROM shardcast.copy_credits WHERE task_id = ANY($1))
         UPDATE shardcast.copy_credits c
         SET scans = l.scans, tuples_read = l.tuples_read, blocks = l.blocks
         FROM unnest($2::int8[], $3::float8[], $4::float8[], $5::float8[]) AS l(task_id, scans, tuples_read, blocks)
         WHERE c.task_id = l.task_id",
        &[
            spent.into(),
            left.iter().map(|(id, _)| *id).collect::<Vec<i64>>().into(),
            column(|c| c.scans).into(),
            column(|c| c.tuples_read).into(),
            column(|c| c.blocks).into(),
        ],
    )
}

/// Every live shard's cumulative counters, from the statistics views.
fn read_counters() -> Result<Vec<(i32, Counters)>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT s.shard_id,
                        coalesce(t.seq_scan, 0) + coalesce(t.idx_scan, 0),
                        coalesce(t.seq_tup_read, 0) + coalesce(t.idx_tup_fetch, 0),
                        t.n_tup_ins + t.n_tup_upd + t.n_tup_del,
                        coalesce(io.heap_blks_hit, 0) + coalesce(io.idx_blks_hit, 0)
                          + coalesce(io.toast_blks_hit, 0) + coalesce(io.tidx_blks_hit, 0),
                        coalesce(io.heap_blks_read, 0) + coalesce(io.idx_blks_read, 0)
                          + coalesce(io.toast_blks_read, 0) + coalesce(io.tidx_blks_read, 0)
                 FROM shardcast.shards s
                 JOIN pg_catalog.pg_stat_user_tables t ON t.relid = s.relid
                 JOIN pg_catalog.pg_statio_user_tables io ON io.relid = s.relid
                 WHERE s.retired_at IS NULL",
                None,
                &[],
            )?
            .map(|row| {
                let count = |i| row.get::<i64>(i).map(|v| v.unwrap_or(0));
                Ok((
                    row.get::<i32>(1)?.unwrap_or_default(),
                    Counters {
                        scans: count(2)?,
                        tuples_read: count(3)?,
                        tuples_written: count(4)?,
                        blocks_hit: count(5)?,
                        blocks_read: count(6)?,
                    },
                ))
            })
            .collect()
    })
}
