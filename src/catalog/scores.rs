//! `shardcast.scores`: the published Shard Priority Scores, one publisher at a time, and the
//! foreign keys that priority inheritance follows.

use std::collections::{HashMap, HashSet};

use pgrx::prelude::*;
use shardcast_core::queue::{Bounds, Scored};
use shardcast_core::score;

use crate::catalog::compat_0_1::expected_column;

/// Serialises publishers until the end of the transaction: the worker and a
/// `refresh_forecasts()` call both replace the published scores.
pub fn lock_publication() -> Result<(), pgrx::spi::Error> {
    Spi::run("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('shardcast.publish'))")
}

/// Each live scored shard's certainty as the express lane reads it
/// (`shardcast_core::queue::certain_shares`): its base score, lift and lift source from the
/// published scores, and its own forecast's expected load and lower bound.
pub fn certainty() -> Result<HashMap<i32, Scored>, pgrx::spi::Error> {
    let sql = format!(
        "SELECT sc.shard_id, sc.base_score, sc.lift, sc.lift_source, {}, f.lower
         FROM shardcast.scores sc
         JOIN shardcast.shards s ON s.shard_id = sc.shard_id AND s.retired_at IS NULL
         LEFT JOIN shardcast.forecast_state f ON f.shard_id = sc.shard_id",
        expected_column("f")?
    );
    Spi::connect(|client| {
        client
            .select(&sql, None, &[])?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                let own = match (row.get::<f64>(5)?, row.get::<f64>(6)?) {
                    (Some(expected), Some(lower)) => Some(Bounds { expected, lower }),
                    _ => None,
                };
                Ok((
                    row.get::<i32>(1)?.unwrap_or_default(),
                    Scored {
                        base: row.get::<f64>(2)?.unwrap_or_default(),
                        lift: row.get::<f64>(3)?.unwrap_or_default(),
                        source: row.get::<i32>(4)?,
                        own,
                    },
                ))
            })
            .collect::<Result<HashMap<_, _>, pgrx::spi::Error>>()
    })
}

/// The ids of the live shards.
pub fn live_shards() -> Result<HashSet<i32>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT shard_id FROM shardcast.shards WHERE retired_at IS NULL",
                None,
                &[],
            )?
            .map(|row| row.get::<i32>(1).map(|id| id.unwrap_or_default()))
            .collect::<Result<HashSet<_>, _>>()
    })
}

/// (referencing, referenced) shard pairs from foreign keys, leaf partitions included on both
/// sides, so that a hot table lifts the tables its joins need. Partitions are read from
/// pg_inherits, which takes no lock: pg_partition_tree() locks every partition, and waited behind
/// any DDL lock on one of them.
pub fn foreign_keys() -> Result<Vec<(i32, i32)>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "WITH RECURSIVE fk AS (
                     SELECT c.conrelid, c.confrelid FROM pg_catalog.pg_constraint c
                     WHERE c.contype = 'f' AND c.conparentid = 0
                 ), tree AS (
                     SELECT e.relid AS root, e.relid
                     FROM (SELECT conrelid AS relid FROM fk UNION SELECT confrelid FROM fk) e
                     UNION
                     SELECT t.root, i.inhrelid
                     FROM tree t
                     JOIN pg_catalog.pg_inherits i ON i.inhparent = t.relid
                     JOIN pg_catalog.pg_class p ON p.oid = i.inhrelid AND p.relispartition
                 )
                 SELECT DISTINCT f.shard_id, t.shard_id
                 FROM fk
                 JOIN tree fp ON fp.root = fk.conrelid
                 JOIN tree tp ON tp.root = fk.confrelid
                 JOIN shardcast.shards f ON f.relid = fp.relid AND f.retired_at IS NULL
                                          AND f.citus_shard_id IS NULL
                 JOIN shardcast.shards t ON t.relid = tp.relid AND t.retired_at IS NULL
                                          AND t.citus_shard_id IS NULL",
                None,
                &[],
            )?
            .map(|row| {
                Ok((
                    row.get::<i32>(1)?.unwrap_or_default(),
                    row.get::<i32>(2)?.unwrap_or_default(),
                ))
            })
            .collect()
    })
}

/// Replaces the published scores; `shards` holds each shard's class, class weight and
/// predicted load.
pub fn write_scores(
    scores: &[score::ScoreRow],
    shards: &HashMap<i32, (&str, f64, f64)>,
) -> Result<(), pgrx::spi::Error> {
    let get = |id: &i32| shards.get(id).copied().unwrap_or(("normal", 1.0, 0.0));
    let ids: Vec<i32> = scores.iter().map(|s| s.shard_id).collect();
    let load: Vec<f64> = scores.iter().map(|s| get(&s.shard_id).2).collect();
    let class: Vec<String> = scores
        .iter()
        .map(|s| get(&s.shard_id).0.to_owned())
        .collect();
    let weight: Vec<f64> = scores.iter().map(|s| get(&s.shard_id).1).collect();
    let base: Vec<f64> = scores.iter().map(|s| s.base_score).collect();
    let lift: Vec<f64> = scores.iter().map(|s| s.lift).collect();
    let source: Vec<Option<i32>> = scores.iter().map(|s| s.lift_source).collect();
    let score: Vec<f64> = scores.iter().map(|s| s.score).collect();
    let priority: Vec<i32> = scores.iter().map(|s| s.priority_weight as i32).collect();
    let tier: Vec<i32> = scores.iter().map(|s| s.tier as i32).collect();
    let rank: Vec<i32> = scores.iter().map(|s| s.rank as i32).collect();
    Spi::run("DELETE FROM shardcast.scores")?;
    Spi::run_with_args(
        "INSERT INTO shardcast.scores (shard_id, computed_at, predicted_load, class, weight, base_score,
                lift, lift_source, score, priority_weight, tier, rank)
         SELECT u.id, now(), u.load, u.class, u.weight, u.base, u.lift, u.source, u.score, u.priority,
                u.tier, u.rank
         FROM unnest($1::int4[], $2::float8[], $3::text[], $4::float8[], $5::float8[], $6::float8[],
                     $7::int4[], $8::float8[], $9::int4[], $10::int4[], $11::int4[])
              AS u(id, load, class, weight, base, lift, source, score, priority, tier, rank)",
        &[
            ids.into(),
            load.into(),
            class.into(),
            weight.into(),
            base.into(),
            lift.into(),
            source.into(),
            score.into(),
            priority.into(),
            tier.into(),
            rank.into(),
        ],
    )
}
