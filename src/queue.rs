//! The replication queue: the queued tasks in dispatch order, each with its node, computed from
//! the catalog (`catalog::tasks`, `catalog::nodes`) with the scheduling policy of
//! `shardcast_core::schedule` and `shardcast_core::queue`; and the replan that stores it for
//! claims to follow. Its SQL surface is `api::queue`.

use pgrx::prelude::*;
use shardcast_core::queue as policy;
use shardcast_core::schedule::{self, Order, Task};

use crate::catalog::{forecasts, nodes, tasks};
use crate::gucs;

/// One queued task in dispatch order.
pub struct Queued {
    pub task: Task,
    pub relid: pg_sys::Oid,
    pub priority_weight: i32,
    pub node: Option<String>,
}

/// What shapes the stored dispatch order: the server's settings, whichever session replans
/// (`shardcast.ordering`, `shardcast.overtake_window`, `shardcast.prefetch_quantile`, all
/// reload settings), and the stored scores and forecasts.
#[derive(Clone, Copy)]
pub(crate) struct QueueSettings {
    pub order: Order,
    pub window_secs: f64,
    pub prefetch_quantile: f64,
}

impl QueueSettings {
    pub fn server() -> QueueSettings {
        QueueSettings {
            order: gucs::ordering(),
            window_secs: gucs::overtake_window().as_secs_f64(),
            prefetch_quantile: gucs::prefetch_quantile(),
        }
    }
}

/// The queued tasks in dispatch order under `settings.order` and an overtaking window of
/// `settings.window_secs` (see `schedule::dispatch_order`): the express lane first, then the
/// order, no task going before one enqueued more than the window earlier; each assigned a node.
/// Tasks of dropped shards, and of shards whose relation is no longer theirs, are left out.
/// Scores and tiers are the stored ones (a shard not scored yet takes the coldest stored tier),
/// never the session's settings.
fn compute_queue(settings: QueueSettings) -> Result<Vec<Queued>, pgrx::spi::Error> {
    let threshold = forecasts::live_points()?
        .map(|points| schedule::prefetch_threshold(&points, settings.prefetch_quantile))
        .unwrap_or(f64::INFINITY);
    let mut queued = tasks::queued()?;
    for q in &mut queued {
        q.task.prefetch = policy::express(q.lower, threshold);
    }
    let all: Vec<Task> = queued.iter().map(|q| q.task.clone()).collect();
    let order = schedule::dispatch_order(&all, settings.order, settings.window_secs);

    let mut nodes = nodes::enabled()?;
    let mut result = Vec::with_capacity(order.len());
    let mut slots: Vec<Option<tasks::QueuedRow>> = queued.drain(..).map(Some).collect();
    for i in order {
        pg_sys::check_for_interrupts!();
        let Some(q) = slots[i].take() else {
            continue;
        };
        let node = policy::node_for(q.task.bytes, q.destination, &q.taken, &mut nodes);
        result.push(Queued {
            task: q.task,
            relid: q.relid,
            priority_weight: q.priority_weight,
            node,
        });
    }
    Ok(result)
}

/// The queue under the server's `shardcast.ordering` and `shardcast.overtake_window`: the order
/// claims follow, whichever session computes it.
pub fn server_queue() -> Result<Vec<Queued>, pgrx::spi::Error> {
    compute_queue(QueueSettings::server())
}

/// Task ids in dispatch order under another ordering and window than the server's: the order
/// settings can only change on a reload, which a #[pg_test]'s transaction cannot wait for.
#[cfg(any(test, feature = "pg_test"))]
pub(crate) fn queue_task_ids(order: Order, window_secs: f64) -> Vec<i64> {
    compute_queue(QueueSettings {
        order,
        window_secs,
        ..QueueSettings::server()
    })
    .unwrap()
    .iter()
    .map(|q| q.task.task_id)
    .collect()
}

/// Stores the dispatch order (under the server's `shardcast.ordering` and
/// `shardcast.overtake_window`) that claims follow, with each task's node, score, tier and
/// express-lane flag; cancels tasks of dropped shards.
/// Returns the number of queued tasks.
pub fn replan() -> Result<usize, pgrx::spi::Error> {
    tasks::lock_queue()?;
    tasks::cancel_gone()?;
    let queue = server_queue()?;
    tasks::store_dispatch_order(tasks::DispatchOrder {
        ids: queue.iter().map(|q| q.task.task_id).collect(),
        nodes: queue.iter().map(|q| q.node.clone()).collect(),
        scores: queue.iter().map(|q| q.task.score).collect(),
        weights: queue.iter().map(|q| q.priority_weight).collect(),
        tiers: queue.iter().map(|q| q.task.tier as i32).collect(),
        prefetch: queue.iter().map(|q| q.task.prefetch).collect(),
    })?;
    Ok(queue.len())
}
