//! The queue's SQL surface: the live queue in dispatch order (behind the
//! `shardcast.prioritized_queue` view) and the allocation plan (behind
//! `shardcast.allocation_plan()`). The queue itself is computed in `crate::queue`.

// pgrx reads the returned columns from the written-out TableIterator type, so it cannot be aliased.
#![allow(clippy::type_complexity)]

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use shardcast_core::schedule::{self, NodeCapacity, Placement, Task};

use super::invalid;
use super::nodes::MAX_BANDWIDTH;
use crate::catalog::nodes;
use crate::error::{float_text, spi_error};
use crate::gucs;
use crate::queue::{explain, server_queue};

/// The most worker slots `allocation_plan()` plans over: `shardcast.plan_workers`'s range.
pub const MAX_PLAN_WORKERS: i32 = 1024;

/// Internal: the live queue under the server's `shardcast.ordering` and
/// `shardcast.overtake_window`, behind the `shardcast.prioritized_queue` view.
#[pg_extern(sql = false)]
fn _prioritized_queue() -> Result<
    TableIterator<
        'static,
        (
            name!(position, i64),
            name!(task_id, i64),
            name!(relid, pg_sys::Oid),
            name!(size_bytes, i64),
            name!(score, f64),
            name!(priority_weight, i32),
            name!(density, f64),
            name!(tier, i32),
            name!(prefetch, bool),
            name!(node, Option<String>),
        ),
    >,
    ErrorReport,
> {
    let queue = server_queue().map_err(spi_error)?;
    Ok(TableIterator::new(queue.into_iter().enumerate().map(
        |(i, q)| {
            pg_sys::check_for_interrupts!();
            (
                i as i64 + 1,
                q.task.task_id,
                q.relid,
                q.task.bytes as i64,
                q.task.score,
                q.priority_weight,
                schedule::density(&q.task),
                q.task.tier as i32,
                q.task.prefetch,
                q.node,
            )
        },
    )))
}

/// Internal: the live queue with the reason for each place, behind the
/// `shardcast.queue_explained` view.
#[pg_extern(sql = false)]
fn _queue_explained() -> Result<
    TableIterator<
        'static,
        (
            name!(position, i64),
            name!(task_id, i64),
            name!(relid, pg_sys::Oid),
            name!(size_bytes, i64),
            name!(score, f64),
            name!(density, f64),
            name!(tier, i32),
            name!(prefetch, bool),
            name!(node, Option<String>),
            name!(reason, String),
        ),
    >,
    ErrorReport,
> {
    let queue = server_queue().map_err(spi_error)?;
    Ok(TableIterator::new(queue.into_iter().enumerate().map(
        |(i, q)| {
            pg_sys::check_for_interrupts!();
            (
                i as i64 + 1,
                q.task.task_id,
                q.relid,
                q.task.bytes as i64,
                q.task.score,
                schedule::density(&q.task),
                q.task.tier as i32,
                q.task.prefetch,
                q.node,
                explain(&q.reason),
            )
        },
    )))
}

/// Internal: the allocation plan, behind `shardcast.allocation_plan()`.
#[pg_extern(sql = false)]
fn _allocation_plan(
    workers: Option<i32>,
    bandwidth: Option<i64>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(position, i64),
            name!(task_id, i64),
            name!(relid, pg_sys::Oid),
            name!(tier, i32),
            name!(prefetch, bool),
            name!(worker, Option<i32>),
            name!(node, Option<String>),
            name!(bandwidth_share, Option<f64>),
            name!(start_offset, Option<f64>),
            name!(finish_offset, Option<f64>),
        ),
    >,
    ErrorReport,
> {
    let workers = workers.unwrap_or_else(gucs::plan_workers);
    if !(1..=MAX_PLAN_WORKERS).contains(&workers) {
        return Err(invalid(
            format!("workers must be between 1 and {MAX_PLAN_WORKERS}, not {workers}"),
            "Plan over the number of copy workers the replication scripts run (shardcast.plan_workers' range).",
        ));
    }
    let bandwidth = bandwidth
        .map(|b| b as f64)
        .unwrap_or_else(gucs::plan_bandwidth);
    if !(bandwidth > 0.0 && bandwidth <= MAX_BANDWIDTH) {
        return Err(invalid(
            format!(
                "bandwidth must be a positive number of bytes per second up to 1e15, not {}",
                float_text(bandwidth)
            ),
            "Give the total copy bandwidth, e.g. 100000000 for 100 MB/s.",
        ));
    }
    let queue = server_queue().map_err(spi_error)?;
    let tasks: Vec<&Task> = queue.iter().map(|q| &q.task).collect();
    // Tasks placed on a node copy at that node's pace: its max_concurrent slots sharing
    // capacity × (1 − load); a node that takes no claims (disabled) gives its tasks no start,
    // and so does having nodes but none enabled to tasks without one. Without any node the
    // tasks share the `workers` slots.
    let nodes = nodes::plan_capacities().map_err(spi_error)?;
    let unplaced = if nodes::any().map_err(spi_error)? {
        Placement::Unavailable
    } else {
        Placement::Pool
    };
    let placements: Vec<Placement> = queue
        .iter()
        .map(|q| match &q.node {
            None => unplaced,
            Some(name) => nodes
                .iter()
                .position(|(n, _)| n == name)
                .map_or(Placement::Unavailable, Placement::Node),
        })
        .collect();
    let capacities: Vec<NodeCapacity> = nodes.into_iter().map(|(_, c)| c).collect();
    // O(tasks × log(tasks)) whatever `workers` is: slots no task reaches are never made.
    let slots = schedule::plan_on_nodes(
        &tasks,
        &placements,
        &capacities,
        workers as usize,
        bandwidth,
        gucs::prefetch_workers(),
    );
    Ok(TableIterator::new(
        queue
            .into_iter()
            .zip(slots)
            .enumerate()
            .map(|(i, (q, slot))| {
                pg_sys::check_for_interrupts!();
                (
                    i as i64 + 1,
                    q.task.task_id,
                    q.relid,
                    q.task.tier as i32,
                    q.task.prefetch,
                    slot.as_ref().map(|s| s.worker as i32),
                    q.node,
                    slot.as_ref().map(|s| s.bandwidth),
                    slot.as_ref().map(|s| s.start),
                    slot.as_ref().map(|s| s.finish),
                )
            }),
    ))
}
