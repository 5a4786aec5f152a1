//! `citus_rebalance_report`: what the order of a Citus rebalance was worth. The hottest node's
//! share of the predicted load over the rebalance, for the plan shardcast queued in the order the
//! driver ran it and in Citus's own order, and for Citus's `by_shard_count` and `by_disk_size`
//! plans and the `shardcast` strategy's (made at the same moment from the same placement) in
//! Citus's order and in shardcast's, each replayed by `shardcast_core::rebalance` on the measured
//! move durations; and `_citus_move_order`, the order `enqueue_citus_rebalance` ranks its moves in
//! (`shardcast_core::rebalance::order`). The rest of the Citus surface is PL/pgSQL in
//! sql/citus.sql.

// pgrx reads the returned columns from the written-out TableIterator type, so it cannot be aliased.
#![allow(clippy::type_complexity)]

use std::collections::HashMap;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use shardcast_core::rebalance::{self, Move, Planned};

use super::invalid;
use crate::catalog::citus;
use crate::error::{spi_error, sql_error};

type Row = (
    String,
    String,
    i32,
    i64,
    i32,
    f64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<String>,
);

/// One row per plan and order. `planned_at` NULL: the latest planning of
/// `enqueue_citus_rebalance`; `moves_per_node`: the replay's limit, as the driver's
/// `--moves-per-node`. A move that was not measured takes the measured moves' seconds per byte
/// (at least the quickest measured move), or 1 s when none was measured yet.
#[pg_extern(sql = false)]
fn citus_rebalance_report(
    planned_at: Option<TimestampWithTimeZone>,
    moves_per_node: Option<i32>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(plan, String),
            name!(move_order, String),
            name!(moves, i32),
            name!(bytes, i64),
            name!(measured_moves, i32),
            name!(seconds, f64),
            name!(hottest_share_start, Option<f64>),
            name!(hottest_share_mean, Option<f64>),
            name!(hottest_share_end, Option<f64>),
            name!(hottest_node_end, Option<String>),
        ),
    >,
    ErrorReport,
> {
    let per_node = moves_per_node.unwrap_or(1);
    if per_node < 1 {
        return Err(invalid(
            format!("moves_per_node must be 1 or more, not {per_node}"),
            "It is the driver's --moves-per-node: how many moves run at once on one node.",
        ));
    }
    require_citus()?;
    let Some((_, planning)) = citus::planning(planned_at).map_err(spi_error)? else {
        return Ok(TableIterator::new(Vec::<Row>::new()));
    };
    Ok(TableIterator::new(report(&planning, per_node as usize)))
}

/// Internal (`enqueue_citus_rebalance`): the rank of each move, 1 first, in the order of
/// [`rebalance::order`]. The moves are `ids` with their `sources`, `targets` (node names),
/// predicted `loads` and `bytes`, in Citus's order (which breaks ties); `nodes` and `node_loads`
/// are every node's predicted load, the moves under way counted on their targets (a node not
/// listed holds none). STRICT: NULL arrays (no queued move) return no row. Checks for interrupts
/// as it goes: the order is quadratic in the moves.
#[pg_extern(sql = false)]
fn citus_move_order(
    ids: Vec<Option<i64>>,
    sources: Vec<Option<String>>,
    targets: Vec<Option<String>>,
    loads: Vec<Option<f64>>,
    bytes: Vec<Option<f64>>,
    nodes: Vec<Option<String>>,
    node_loads: Vec<Option<f64>>,
) -> Result<TableIterator<'static, (name!(id, i64), name!(rank, i32))>, ErrorReport> {
    let n = ids.len();
    if [sources.len(), targets.len(), loads.len(), bytes.len()]
        .iter()
        .any(|&len| len != n)
        || nodes.len() != node_loads.len()
    {
        return Err(invalid(
            "the moves' arrays (and the nodes' two) must be of one length".to_string(),
            "One element per move: id, source, target, load, bytes; one per node: name, load.",
        ));
    }
    let mut names: Vec<String> = nodes
        .iter()
        .map(|n| n.clone().unwrap_or_default())
        .collect();
    let mut at: Vec<f64> = node_loads.iter().map(|l| l.unwrap_or(0.0)).collect();
    let mut index = |name: &Option<String>| {
        let name = name.as_deref().unwrap_or("");
        names.iter().position(|n| n == name).unwrap_or_else(|| {
            names.push(name.to_string());
            at.push(0.0);
            names.len() - 1
        })
    };
    let moves: Vec<Planned> = (0..n)
        .map(|i| Planned {
            source: index(&sources[i]),
            target: index(&targets[i]),
            load: loads[i].unwrap_or(0.0),
            bytes: bytes[i].unwrap_or(0.0),
        })
        .collect();
    let ranked = rebalance::order(&moves, &at, || {
        pgrx::check_for_interrupts!();
    })
    .into_iter()
    .enumerate()
    .filter_map(|(rank, i)| ids[i].map(|id| (id, rank as i32 + 1)))
    .collect::<Vec<_>>();
    Ok(TableIterator::new(ranked))
}

/// Citus 13 or later in this database, as `shardcast._citus_require()` (sql/citus.sql) says it:
/// checked here rather than by calling that function, so that the refusal is this function's own
/// error (0A000 with its hint) and not one raised inside SPI.
fn require_citus() -> Result<(), ErrorReport> {
    let version = Spi::get_one::<String>(
        "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'citus')",
    )
    .map_err(spi_error)?;
    let Some(version) = version else {
        let database = Spi::get_one::<String>("SELECT pg_catalog.current_database()::text")
            .map_err(spi_error)?
            .unwrap_or_default();
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("Citus is not installed in database \"{database}\""),
            "shardcast's Citus functions run on a Citus coordinator: add citus to \
             shared_preload_libraries and CREATE EXTENSION citus.",
        ));
    };
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    if major.is_none_or(|m| m < 13) {
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("Citus {version} is too old for shardcast"),
            "shardcast needs Citus 13 or later: install it, then ALTER EXTENSION citus UPDATE.",
        ));
    }
    Ok(())
}

/// The report's rows for one planning (see [`citus_rebalance_report`]).
fn report(planning: &citus::Planning, per_node: usize) -> Vec<Row> {
    // Nodes and groups as indexes.
    let mut nodes: Vec<String> = Vec::new();
    let node = |name: &str, nodes: &mut Vec<String>| match nodes.iter().position(|n| n == name) {
        Some(i) => i,
        None => {
            nodes.push(name.to_string());
            nodes.len() - 1
        }
    };
    let group_index: HashMap<i64, usize> = planning
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.0, i))
        .collect();
    let placement: Vec<usize> = planning
        .groups
        .iter()
        .map(|g| node(g.2.as_deref().unwrap_or("?"), &mut nodes))
        .collect();
    let loads: Vec<f64> = planning.groups.iter().map(|g| g.4).collect();
    let bytes_of = |group: usize| planning.groups[group].3;
    // Each node's load at the planning (nodes that hold no group are added below, holding none).
    let node_loads = rebalance::node_loads(&loads, &placement, nodes.len());

    let measured: HashMap<i64, f64> = planning
        .realised
        .iter()
        .filter_map(|(g, secs)| secs.map(|s| (*g, s)))
        .collect();
    let samples: Vec<(f64, f64)> = measured
        .iter()
        .filter_map(|(g, s)| group_index.get(g).map(|&i| (bytes_of(i), *s)))
        .collect();
    let duration = |group_id: i64, group: usize| {
        measured
            .get(&group_id)
            .copied()
            .or_else(|| rebalance::estimate_duration(bytes_of(group), &samples))
            .unwrap_or(1.0)
    };

    // The plans: (name, order, moves in order).
    let enqueued_name = planning
        .moves
        .iter()
        .find(|m| m.1)
        .map(|m| m.0.clone())
        .unwrap_or_else(|| "enqueued".to_string());
    let mut plans: Vec<(String, String, Vec<Move>)> = Vec::new();
    let to_move = |m: &(String, bool, i64, String, String), nodes: &mut Vec<String>| {
        let &group = group_index.get(&m.2)?;
        Some(Move {
            group,
            source: node(&m.3, nodes),
            target: node(&m.4, nodes),
            colocation: planning.groups[group].1,
            duration: duration(m.2, group),
        })
    };
    let enqueued: Vec<&(String, bool, i64, String, String)> =
        planning.moves.iter().filter(|m| m.1).collect();
    // shardcast's order: the driver's claims, then the queue's order, then any the run did not
    // reach in Citus's order.
    let mut ours: Vec<&(String, bool, i64, String, String)> = Vec::new();
    for (group, _) in &planning.realised {
        if let Some(m) = enqueued.iter().find(|m| m.2 == *group) {
            ours.push(m);
        }
    }
    for m in &enqueued {
        if !ours.iter().any(|o| o.2 == m.2) {
            ours.push(m);
        }
    }
    plans.push((
        enqueued_name.clone(),
        "shardcast".into(),
        ours.iter().filter_map(|m| to_move(m, &mut nodes)).collect(),
    ));
    plans.push((
        enqueued_name.clone(),
        "citus".into(),
        enqueued
            .iter()
            .filter_map(|m| to_move(m, &mut nodes))
            .collect(),
    ));
    let mut others: Vec<String> = planning
        .moves
        .iter()
        .filter(|m| !m.1)
        .map(|m| m.0.clone())
        .collect();
    others.dedup();
    for name in others {
        let citus_order: Vec<Move> = planning
            .moves
            .iter()
            .filter(|m| !m.1 && m.0 == name)
            .filter_map(|m| to_move(m, &mut nodes))
            .collect();
        // shardcast's order of the same plan, as enqueue_citus_rebalance ranks: the most
        // imbalance relieved per byte first, Citus's order breaking ties.
        let planned: Vec<Planned> = citus_order
            .iter()
            .map(|m| Planned {
                source: m.source,
                target: m.target,
                load: loads[m.group],
                bytes: bytes_of(m.group),
            })
            .collect();
        let ours = rebalance::order(&planned, &node_loads, || {
            pgrx::check_for_interrupts!();
        })
        .into_iter()
        .map(|i| citus_order[i].clone())
        .collect();
        plans.push((name.clone(), "shardcast".into(), ours));
        plans.push((name, "citus".into(), citus_order));
    }

    // Every plan over the same window: until the slowest replay ends.
    let finishes: Vec<Vec<f64>> = plans
        .iter()
        .map(|(_, _, moves)| {
            rebalance::schedule(moves, per_node)
                .into_iter()
                .map(|s| s.1)
                .collect()
        })
        .collect();
    let window = finishes.iter().flatten().cloned().fold(0.0, f64::max);
    plans
        .iter()
        .zip(&finishes)
        .map(|((name, order, moves), finish)| {
            let shares =
                rebalance::hottest_share(&loads, &placement, nodes.len(), moves, finish, window);
            (
                name.clone(),
                order.clone(),
                moves.len() as i32,
                moves.iter().map(|m| bytes_of(m.group)).sum::<f64>() as i64,
                moves
                    .iter()
                    .filter(|m| measured.contains_key(&planning.groups[m.group].0))
                    .count() as i32,
                finish.iter().cloned().fold(0.0, f64::max),
                shares.as_ref().map(|s| s.start),
                shares.as_ref().map(|s| s.mean),
                shares.as_ref().map(|s| s.end),
                shares.map(|s| nodes[s.hottest_end].clone()),
            )
        })
        .collect()
}
