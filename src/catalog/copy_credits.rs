//! `shardcast.copy_credits`: replication's own reads of the shards it copies. A claim grants
//! its task a credit (the `credited` step of the claim statement, [`super::claims::claim_next`]),
//! heartbeats and completions keep it a [`margin`] longer, and the sampler spends it
//! ([`spend`]): what the credit covers is taken out of the shard's sampled deltas
//! (`shardcast_core::copy_credits`).

use pgrx::prelude::*;
use shardcast_core::access::{Access, CopyCredit};
use shardcast_core::copy_credits;

use crate::gucs;

/// How long after a copy's lease or end its credit stays (see `copy_credits::margin`).
pub fn margin() -> pgrx::datum::Interval {
    let margin = copy_credits::margin(gucs::sample_interval());
    pgrx::datum::Interval::from_micros(margin.as_micros() as i64)
}

/// Takes replication's own reads out of the sampled deltas `rows` (`(shard_id, delta)`, one per
/// shard), and keeps what is left of each credit until it expires. Called by the sampler.
pub fn spend(rows: &mut [(i32, Access)]) -> Result<(), pgrx::spi::Error> {
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
    let copy_credits::Spending { spent, left } = copy_credits::spend(rows, credits);
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
