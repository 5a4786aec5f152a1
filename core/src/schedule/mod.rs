//! Scheduling replication tasks: the dispatch order (an express lane first, then Smith's rule
//! with a bounded overtaking window, so that no task waits forever), node assignment, and the
//! allocation plan over worker slots and bandwidth.
//!
//! One file a concept: `order.rs` the keys tasks are ordered by (WSPT: [`density`]);
//! `dispatch.rs` the dispatch order itself ([`dispatch_order`]: the express lane, then the key
//! within the overtaking window) and why each task has its place ([`Reason`]); `assign.rs` node
//! assignment ([`assign_nodes`]); `slots.rs` worker slots taken earliest free first ([`Slots`]);
//! `plan.rs` the allocation plan over them ([`plan()`], [`plan_on_nodes`]).

mod assign;
mod dispatch;
mod order;
mod plan;
mod slots;
#[cfg(test)]
mod testing;

pub use assign::{assign_node_except, assign_nodes, Node};
pub use dispatch::{
    dispatch_order, dispatch_order_explained, overtake_window, prefetch_threshold, Reason,
};
pub use order::{density, order_key, Order};
pub use plan::{plan, plan_on_nodes, NodeCapacity, Placement, Slot};
pub use slots::Slots;

/// One queued task, as the scheduler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub task_id: i64,
    pub bytes: f64,
    pub score: f64,
    /// Priority tier, 1 = hottest. Informational: the order does not depend on it.
    pub tier: u8,
    pub prefetch: bool,
    /// When the task was enqueued, in seconds (any epoch): what the overtaking window counts from.
    pub enqueued_at: f64,
}

/// Copying a table costs at least a page, so that empty tables do not get infinite density.
pub const MIN_TASK_BYTES: f64 = 8192.0;
