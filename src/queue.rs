//! The replication queue: the queued tasks in dispatch order, each with its node, computed from
//! the catalog (`catalog::tasks`, `catalog::nodes`) with the scheduling policy of
//! `shardcast_core::schedule` and `shardcast_core::queue`; and the replan that stores it for
//! claims to follow. Its SQL surface is `api::queue`.

use pgrx::prelude::*;
use shardcast_core::queue as policy;
use shardcast_core::schedule::{self, Order, Reason, Task};

use crate::catalog::{nodes, scores, tasks};
use crate::gucs;

/// One queued task in dispatch order.
pub struct Queued {
    pub task: Task,
    pub relid: pg_sys::Oid,
    pub priority_weight: i32,
    pub node: Option<String>,
    /// Why it has its place (the decision the order made).
    pub reason: Reason,
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
    let mut queued = tasks::queued()?;
    let mut all: Vec<Task> = queued.iter().map(|q| q.task.clone()).collect();
    // Every scored shard's certainty, since a chain of lifts runs through shards not queued; not
    // read for an empty queue (most replans after the last claim).
    let shares = if queued.is_empty() {
        Default::default()
    } else {
        policy::certain_shares(&scores::certainty()?)
    };
    let certain: Vec<f64> = queued
        .iter()
        .map(|q| shares.get(&q.shard_id).copied().unwrap_or(0.0))
        .collect();
    policy::mark_express(
        &mut all,
        &certain,
        settings.order,
        settings.prefetch_quantile,
        settings.window_secs,
    );
    for (q, task) in queued.iter_mut().zip(&all) {
        q.task.prefetch = task.prefetch;
    }
    let order = schedule::dispatch_order_explained(&all, settings.order, settings.window_secs);

    let mut nodes = nodes::enabled()?;
    let mut result = Vec::with_capacity(order.len());
    let mut slots: Vec<Option<tasks::QueuedRow>> = queued.drain(..).map(Some).collect();
    for (i, reason) in order {
        pg_sys::check_for_interrupts!();
        let Some(q) = slots[i].take() else {
            continue;
        };
        let node = policy::node_for(q.task.bytes, q.requested_node, &q.taken, &mut nodes);
        result.push(Queued {
            task: q.task,
            relid: q.relid,
            priority_weight: q.priority_weight,
            node,
            reason,
        });
    }
    Ok(result)
}

/// The queue under the server's `shardcast.ordering` and `shardcast.overtake_window`: the order
/// claims follow, whichever session computes it.
pub fn server_queue() -> Result<Vec<Queued>, pgrx::spi::Error> {
    compute_queue(QueueSettings::server())
}

/// A reason as a sentence, under the server's order and window.
pub fn explain(reason: &Reason) -> String {
    let settings = QueueSettings::server();
    let number = |v: f64| {
        if v == 0.0 {
            "0".to_string()
        } else if settings.order == Order::Fifo {
            // The key is the task id.
            format!("{v:.0}")
        } else if settings.order == Order::Wspt {
            format!("{v:.3e}")
        } else {
            format!("{v:.4}")
        }
    };
    let name = match settings.order {
        Order::Wspt => "density",
        Order::Score => "score",
        Order::Fifo => "task id",
    };
    let by = |after: i64, after_key: f64, own: f64| match settings.order {
        Order::Fifo => {
            format!("after task {after}: first come, first served (shardcast.ordering = fifo)")
        }
        _ => format!(
            "after task {after} by {name} {} vs {}",
            number(after_key),
            number(own)
        ),
    };
    // The express lane compares the order's key, the score under FIFO (core's `mark_express`).
    let lane = match settings.order {
        Order::Wspt => "density",
        Order::Score | Order::Fifo => "score",
    };
    let express = format!(
        "express lane: even at its forecasts' lower bounds, its {lane} is above shardcast.prefetch_quantile of the queue's"
    );
    match reason {
        Reason::Express { after: None } => express,
        Reason::Express { after: Some(p) } => format!("{express}; after express task {p}"),
        Reason::First => match settings.order {
            Order::Wspt => "first after the express lane: the densest (score per byte) of the tasks the overtake window lets go".to_string(),
            Order::Score => "first after the express lane: the highest score of the tasks the overtake window lets go".to_string(),
            Order::Fifo => "first after the express lane: the oldest task".to_string(),
        },
        Reason::Ranked {
            after,
            after_key,
            key: own,
        } => by(*after, *after_key, *own),
        Reason::HeldBack {
            after,
            after_key,
            key: own,
            oldest,
            late_secs,
        } => format!(
            "held back by the overtake window behind task {after} ({name} {} vs {}): enqueued {:.0} min after task {oldest}, \
             the oldest queued then, more than shardcast.overtake_window ({:.0} min)",
            number(*after_key),
            number(*own),
            late_secs / 60.0,
            settings.window_secs / 60.0
        ),
    }
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
