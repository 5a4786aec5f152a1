//! The queue's SQL surface: the live queue in dispatch order (behind the
//! `shardcast.prioritized_queue` view) and the allocation plan (behind
//! `shardcast.allocation_plan()`). The queue itself is computed in `crate::queue`.

// pgrx reads the returned columns from the written-out TableIterator type, so it cannot be aliased.
#![allow(clippy::type_complexity)]

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use shardcast_core::schedule::{self, Task};

use super::invalid;
use super::nodes::MAX_BANDWIDTH;
use crate::error::{float_text, spi_error};
use crate::gucs;
use crate::queue::server_queue;

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
            name!(worker, i32),
            name!(node, Option<String>),
            name!(bandwidth_share, f64),
            name!(start_offset, f64),
            name!(finish_offset, f64),
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
    // O(tasks × log(tasks)) whatever `workers` is: slots no task reaches are never made.
    let slots = schedule::plan(
        &tasks,
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
                    slot.worker as i32,
                    q.node,
                    slot.bandwidth,
                    slot.start,
                    slot.finish,
                )
            }),
    ))
}
