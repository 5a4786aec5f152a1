//! Scheduling replication tasks: the dispatch order (an express lane first, then Smith's rule
//! with a bounded overtaking window, so that no task waits forever), node assignment, and the
//! allocation plan over worker slots and bandwidth.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

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

/// The key tasks are ordered by, within what the overtaking window allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Smith's rule (WSPT): score per byte to copy, highest first.
    Wspt,
    /// The seed's plain sort: score, highest first.
    Score,
    /// Catalog order: task id.
    Fifo,
}

impl Order {
    pub fn from_name(name: &str) -> Option<Order> {
        match name {
            "wspt" => Some(Order::Wspt),
            "score" => Some(Order::Score),
            "fifo" => Some(Order::Fifo),
            _ => None,
        }
    }
}

/// Copying a table costs at least a page, so that empty tables do not get infinite density.
pub const MIN_TASK_BYTES: f64 = 8192.0;

/// Score per byte to copy: the WSPT key.
pub fn density(task: &Task) -> f64 {
    let d = task.score.max(0.0) / task.bytes.max(MIN_TASK_BYTES);
    if d.is_finite() {
        d
    } else {
        0.0
    }
}

fn compare(order: Order, a: &Task, b: &Task) -> Ordering {
    let key = match order {
        Order::Wspt => density(b).total_cmp(&density(a)),
        Order::Score => b.score.total_cmp(&a.score),
        Order::Fifo => Ordering::Equal,
    };
    key.then(a.task_id.cmp(&b.task_id))
}

/// A task ready to be dispatched, greatest = first under its `order`.
struct Ready<'a> {
    task: &'a Task,
    index: usize,
    order: Order,
}

impl Ord for Ready<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self.order, other.task, self.task).then(other.index.cmp(&self.index))
    }
}

impl PartialOrd for Ready<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ready<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ready<'_> {}

/// The dispatch order: express-lane (prefetch) tasks first, by `order`; then the other tasks by
/// `order` (WSPT by default), except that **a queued task is never overtaken by a task enqueued
/// more than `window_secs` after it**. Returns indexes into `tasks`.
///
/// Each step takes the first, under `order`, of the eligible remaining tasks: those enqueued at
/// most `window_secs` after the oldest remaining one. A one-shot queue (everything enqueued
/// within one window) is therefore exactly in `order`; a window of 0 is FIFO by enqueue time
/// (`order` among equal times); an infinite window is `order` alone. O(n log n).
///
/// Wait bound, on a channel of bandwidth b replanned as tasks arrive: a task enqueued at time a
/// is dispatched before every task enqueued after a + window, so it starts at the latest at
/// a + window + Q / b, where Q is the bytes queued ahead of it at a + window (in flight
/// included), and also at the latest at a + (R + B + A) / b, where R is the rest of the copy in
/// flight at a, B the bytes queued at a and A the bytes enqueued during (a, a + window]: however
/// hot the tasks that keep arriving, nothing enqueued later than a + window goes first. The
/// express lane is outside the window: express-lane bytes that arrive while a task waits add to
/// its bound.
pub fn dispatch_order(tasks: &[Task], order: Order, window_secs: f64) -> Vec<usize> {
    dispatch_order_explained(tasks, order, window_secs)
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

/// Why a task has its place in the dispatch order: the decision [`dispatch_order`] made.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// In the express lane (which goes first); `after`: the express task just before it.
    Express { after: Option<i64> },
    /// The first task outside the express lane.
    First,
    /// After `after`, which ranks at least as high under the order (`after_key` against `key`:
    /// density, score or task id).
    Ranked {
        after: i64,
        after_key: f64,
        key: f64,
    },
    /// After `after`, which ranks lower, because it was not eligible when `after` went: it was
    /// enqueued `late_secs` (more than the window) after `oldest`, the oldest task queued then.
    HeldBack {
        after: i64,
        after_key: f64,
        key: f64,
        oldest: i64,
        late_secs: f64,
    },
}

/// The key `order` sorts by (highest first; FIFO by task id, lowest first).
pub fn order_key(order: Order, task: &Task) -> f64 {
    match order {
        Order::Wspt => density(task),
        Order::Score => task.score,
        Order::Fifo => task.task_id as f64,
    }
}

/// [`dispatch_order`] with the reason for each place: `(index into tasks, reason)`, in dispatch
/// order.
pub fn dispatch_order_explained(
    tasks: &[Task],
    order: Order,
    window_secs: f64,
) -> Vec<(usize, Reason)> {
    let mut express: Vec<usize> = (0..tasks.len()).filter(|&i| tasks[i].prefetch).collect();
    express.sort_by(|&a, &b| compare(order, &tasks[a], &tasks[b]).then(a.cmp(&b)));
    let mut out: Vec<(usize, Reason)> = Vec::with_capacity(tasks.len());
    for (k, &i) in express.iter().enumerate() {
        let after = k.checked_sub(1).map(|p| tasks[express[p]].task_id);
        out.push((i, Reason::Express { after }));
    }
    let window = if window_secs.is_nan() {
        0.0
    } else {
        window_secs.max(0.0)
    };
    let arrival = |i: usize| {
        let at = tasks[i].enqueued_at;
        if at.is_nan() {
            f64::INFINITY
        } else {
            at
        }
    };
    // The other tasks by enqueue time; `oldest` points at the oldest remaining one (dispatched
    // ones are skipped lazily), `next` at the first not yet eligible.
    let mut by_arrival: Vec<usize> = (0..tasks.len()).filter(|&i| !tasks[i].prefetch).collect();
    by_arrival.sort_by(|&a, &b| arrival(a).total_cmp(&arrival(b)).then(a.cmp(&b)));
    let mut dispatched = vec![false; tasks.len()];
    let mut ready = BinaryHeap::with_capacity(by_arrival.len());
    let (mut oldest, mut next) = (0, 0);
    // The previous task outside the express lane, and the oldest task queued when it went.
    let mut previous: Option<(usize, usize)> = None;
    while oldest < by_arrival.len() {
        if dispatched[by_arrival[oldest]] {
            oldest += 1;
            continue;
        }
        let limit = arrival(by_arrival[oldest]) + window;
        while next < by_arrival.len() && (next <= oldest || arrival(by_arrival[next]) <= limit) {
            let index = by_arrival[next];
            ready.push(Ready {
                task: &tasks[index],
                index,
                order,
            });
            next += 1;
        }
        // The oldest remaining task is eligible, so there is always one ready.
        let Some(first) = ready.pop() else { break };
        dispatched[first.index] = true;
        let reason = match previous {
            None => Reason::First,
            Some((p, oldest_then)) => {
                let (after, key) = (&tasks[p], first.task);
                if compare(order, after, key) != Ordering::Greater {
                    Reason::Ranked {
                        after: after.task_id,
                        after_key: order_key(order, after),
                        key: order_key(order, key),
                    }
                } else {
                    Reason::HeldBack {
                        after: after.task_id,
                        after_key: order_key(order, after),
                        key: order_key(order, key),
                        oldest: tasks[oldest_then].task_id,
                        late_secs: arrival(first.index) - arrival(oldest_then),
                    }
                }
            }
        };
        previous = Some((first.index, by_arrival[oldest]));
        out.push((first.index, reason));
    }
    out
}

/// Tasks whose forecast lower bound is extreme: above the `quantile` of all shards' point
/// forecasts. They go to the express lane.
pub fn prefetch_threshold(points: &[f64], quantile: f64) -> f64 {
    let mut sorted: Vec<f64> = points.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f64::INFINITY;
    }
    sorted.sort_by(f64::total_cmp);
    let position = quantile.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (position.floor() as usize, position.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (position - lo as f64)
}

/// A replication node.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    /// Bytes per second.
    pub capacity: f64,
    /// Current load, 0-1: the share of its capacity already in use.
    pub load: f64,
    /// Bytes already assigned to it.
    pub assigned_bytes: f64,
}

impl Node {
    /// Seconds until the node would have copied `extra` more bytes after what it has.
    fn finish_after(&self, extra: f64) -> f64 {
        let free = self.capacity * (1.0 - self.load.clamp(0.0, 0.99));
        if free > 0.0 {
            (self.assigned_bytes + extra) / free
        } else {
            f64::INFINITY
        }
    }
}

/// Assigns tasks, in the given (priority) order, each to the node that would finish it
/// earliest: the lowest (current load + assigned work) / capacity. Hot shards land on fast,
/// idle nodes. Returns the node index per task (in the order given); None without nodes.
pub fn assign_nodes(task_bytes: &[f64], nodes: &mut [Node]) -> Vec<Option<usize>> {
    task_bytes
        .iter()
        .map(|&bytes| assign_node_except(bytes, nodes, |_| false))
        .collect()
}

/// Assigns one task as [`assign_nodes`] does, to a node that `excluded` does not rule out (one
/// that already has the shard coming, say). None when no node is left.
pub fn assign_node_except(
    bytes: f64,
    nodes: &mut [Node],
    excluded: impl Fn(&Node) -> bool,
) -> Option<usize> {
    let bytes = bytes.max(MIN_TASK_BYTES);
    let best = (0..nodes.len())
        .filter(|&n| !excluded(&nodes[n]))
        .min_by(|&a, &b| {
            nodes[a]
                .finish_after(bytes)
                .total_cmp(&nodes[b].finish_after(bytes))
                .then(a.cmp(&b))
        })?;
    nodes[best].assigned_bytes += bytes;
    Some(best)
}

/// One task in the allocation plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    pub worker: usize,
    pub bandwidth: f64,
    /// Seconds from now.
    pub start: f64,
    pub finish: f64,
}

/// Worker slots `range.start..range.end`, each free from `start` until given work, taken earliest
/// free first (the lowest index among equals). Only the slots given work are kept: a range of
/// millions of slots costs what the tasks placed on it need, O(log used) a task.
#[derive(Clone, Debug)]
pub struct Slots {
    busy: BinaryHeap<std::cmp::Reverse<FreeSlot>>,
    next_unused: usize,
    end: usize,
    start: f64,
}

/// A slot and when it is free, ordered by (time, index).
#[derive(Clone, Copy, Debug)]
struct FreeSlot(f64, usize);

impl Ord for FreeSlot {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

impl PartialOrd for FreeSlot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for FreeSlot {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for FreeSlot {}

impl Slots {
    pub fn new(range: std::ops::Range<usize>, start: f64) -> Slots {
        Slots {
            busy: BinaryHeap::new(),
            next_unused: range.start,
            end: range.end.max(range.start),
            start,
        }
    }

    /// The slot that frees first and when: (time, index); None for an empty range.
    pub fn peek(&self) -> Option<(f64, usize)> {
        let unused =
            (self.next_unused < self.end).then_some(FreeSlot(self.start, self.next_unused));
        let busy = self.busy.peek().map(|r| r.0);
        let first = match (unused, busy) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some((first.0, first.1))
    }

    /// Gives the slot that frees first `duration` more seconds of work; returns (index, start,
    /// finish), or None for an empty range.
    pub fn assign(&mut self, duration: f64) -> Option<(usize, f64, f64)> {
        let (free_at, index) = self.peek()?;
        // Busy slots all have indexes below `next_unused`.
        if self.next_unused < self.end && index == self.next_unused {
            self.next_unused += 1;
        } else {
            self.busy.pop();
        }
        let finish = free_at + duration;
        self.busy.push(std::cmp::Reverse(FreeSlot(finish, index)));
        Some((index, free_at, finish))
    }
}

/// List scheduling of the dispatch order on `workers` slots sharing `bandwidth` bytes/s equally:
/// each task starts on the slot that frees first. The first `express_workers` slots take only
/// express-lane tasks while any are left. Returns a slot per task, in dispatch order.
///
/// O(tasks × log(tasks)) in time and O(tasks) in memory, whatever `workers` is: slots that no
/// task reaches are never materialised.
pub fn plan(
    tasks_in_order: &[&Task],
    workers: usize,
    bandwidth: f64,
    express_workers: usize,
) -> Vec<Slot> {
    let workers = workers.max(1);
    let per_slot = (bandwidth / workers as f64).max(f64::MIN_POSITIVE);
    let express_workers = express_workers.min(workers);
    let mut express = Slots::new(0..express_workers, 0.0);
    let mut regular = Slots::new(express_workers..workers, 0.0);
    let express_left = tasks_in_order.iter().filter(|t| t.prefetch).count();
    let mut express_done = 0;
    tasks_in_order
        .iter()
        .map(|task| {
            let any_slot =
                task.prefetch || express_done >= express_left || workers == express_workers;
            let use_express = any_slot
                && match (express.peek(), regular.peek()) {
                    (Some((a, i)), Some((b, j))) => a.total_cmp(&b).then(i.cmp(&j)).is_le(),
                    (Some(_), None) => true,
                    (None, _) => false,
                };
            if task.prefetch {
                express_done += 1;
            }
            let duration = task.bytes.max(MIN_TASK_BYTES) / per_slot;
            let slots = if use_express {
                &mut express
            } else {
                &mut regular
            };
            // Neither range is empty when it is chosen: `regular` is empty only when every
            // slot is an express slot, and then `any_slot` holds.
            let (worker, start, finish) = slots.assign(duration).unwrap_or((0, 0.0, duration));
            Slot {
                worker: worker + 1,
                bandwidth: per_slot,
                start,
                finish,
            }
        })
        .collect()
}

/// A node as the allocation plan sees it: what it can take at once.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeCapacity {
    /// Bytes per second.
    pub capacity: f64,
    /// Current load, 0-1: the share of its capacity already in use.
    pub load: f64,
    /// The most tasks it copies at once (`max_concurrent`).
    pub max_concurrent: usize,
}

impl NodeCapacity {
    /// The bandwidth left for copies: capacity × (1 − load), load taken at most 0.99 (as node
    /// assignment takes it), so that a node reported fully busy is slow, not stopped.
    pub fn available(&self) -> f64 {
        let free = self.capacity * (1.0 - self.load.clamp(0.0, 0.99));
        if free.is_finite() && free > 0.0 {
            free
        } else {
            f64::MIN_POSITIVE
        }
    }
}

/// Where a task of the allocation plan copies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// No node: the plan's own workers and bandwidth.
    Pool,
    /// A node among those given to [`plan_on_nodes`] (an index).
    Node(usize),
    /// A node that takes no claims now (disabled, or gone): the task has no start.
    Unavailable,
}

/// The allocation plan when tasks are placed on nodes: tasks without a node ([`Placement::Pool`])
/// are planned by [`plan`] on `workers` slots sharing `bandwidth`, as before; the tasks of a node
/// are list-scheduled, in dispatch order, on its `max_concurrent` slots, which share its
/// available bandwidth (capacity × (1 − load)) equally. So a node never has more than
/// `max_concurrent` copies at once, nor more bandwidth than it has free. A task whose node takes
/// no claims gets None. Returns one entry per task, in dispatch order. O(tasks × log(tasks)).
pub fn plan_on_nodes(
    tasks_in_order: &[&Task],
    placements: &[Placement],
    nodes: &[NodeCapacity],
    workers: usize,
    bandwidth: f64,
    express_workers: usize,
) -> Vec<Option<Slot>> {
    let placement = |i: usize| placements.get(i).copied().unwrap_or(Placement::Pool);
    let pooled: Vec<&Task> = tasks_in_order
        .iter()
        .enumerate()
        .filter(|&(i, _)| placement(i) == Placement::Pool)
        .map(|(_, t)| *t)
        .collect();
    let mut pool = plan(&pooled, workers, bandwidth, express_workers).into_iter();
    let mut node_slots: Vec<(Slots, f64)> = nodes
        .iter()
        .map(|n| {
            let slots = n.max_concurrent.max(1);
            (Slots::new(0..slots, 0.0), n.available() / slots as f64)
        })
        .collect();
    tasks_in_order
        .iter()
        .enumerate()
        .map(|(i, task)| match placement(i) {
            Placement::Pool => pool.next(),
            Placement::Unavailable => None,
            Placement::Node(n) => {
                let (slots, per_slot) = node_slots.get_mut(n)?;
                let duration = task.bytes.max(MIN_TASK_BYTES) / *per_slot;
                let (worker, start, finish) = slots.assign(duration)?;
                Some(Slot {
                    worker: worker + 1,
                    bandwidth: *per_slot,
                    start,
                    finish,
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn task(task_id: i64, bytes: f64, score: f64, tier: u8) -> Task {
        Task {
            task_id,
            bytes,
            score,
            tier,
            prefetch: false,
            enqueued_at: 0.0,
        }
    }

    /// The order `order` alone: what the window must leave untouched on a one-shot queue.
    fn sorted(tasks: &[Task], order: Order) -> Vec<usize> {
        let mut express: Vec<usize> = (0..tasks.len()).filter(|&i| tasks[i].prefetch).collect();
        let mut rest: Vec<usize> = (0..tasks.len()).filter(|&i| !tasks[i].prefetch).collect();
        express.sort_by(|&a, &b| compare(order, &tasks[a], &tasks[b]).then(a.cmp(&b)));
        rest.sort_by(|&a, &b| compare(order, &tasks[a], &tasks[b]).then(a.cmp(&b)));
        express.extend(rest);
        express
    }

    #[test]
    fn wspt_puts_small_hot_tables_first_and_score_order_does_not() {
        let tasks = [
            task(1, 1e9, 100.0, 1),
            task(2, 1e6, 10.0, 1),
            task(3, 1e6, 1.0, 1),
        ];
        assert_eq!(dispatch_order(&tasks, Order::Wspt, 3600.0), vec![1, 2, 0]);
        assert_eq!(dispatch_order(&tasks, Order::Score, 3600.0), vec![0, 1, 2]);
        assert_eq!(dispatch_order(&tasks, Order::Fifo, 3600.0), vec![0, 1, 2]);
    }

    #[test]
    fn wspt_minimises_weighted_completion_time_on_one_channel() {
        let tasks = [
            task(1, 5e6, 10.0, 1),
            task(2, 1e6, 4.0, 1),
            task(3, 3e6, 9.0, 1),
            task(4, 2e6, 1.0, 1),
        ];
        let cost = |order: &[usize]| {
            let mut t = 0.0;
            order
                .iter()
                .map(|&i| {
                    t += tasks[i].bytes;
                    tasks[i].score * t
                })
                .sum::<f64>()
        };
        let wspt = dispatch_order(&tasks, Order::Wspt, 3600.0);
        let mut best = f64::INFINITY;
        let mut perm = vec![0, 1, 2, 3];
        permute(&mut perm, 0, &mut |p| best = best.min(cost(p)));
        assert!((cost(&wspt) - best).abs() < 1e-6 * best);
    }

    fn permute(v: &mut Vec<usize>, k: usize, f: &mut impl FnMut(&[usize])) {
        if k == v.len() {
            f(v);
            return;
        }
        for i in k..v.len() {
            v.swap(k, i);
            permute(v, k + 1, f);
            v.swap(k, i);
        }
    }

    #[test]
    fn a_one_shot_batch_is_exactly_wspt_whatever_the_tiers() {
        // Spread over less than the window, tiers mixed: the window never binds.
        let tasks: Vec<Task> = (0..50)
            .map(|i| Task {
                enqueued_at: 1000.0 + (i * 37 % 50) as f64,
                ..task(
                    i,
                    1e5 * (1 + i * 7 % 13) as f64,
                    (i * 11 % 17) as f64,
                    1 + (i % 3) as u8,
                )
            })
            .collect();
        for order in [Order::Wspt, Order::Score, Order::Fifo] {
            assert_eq!(dispatch_order(&tasks, order, 3600.0), sorted(&tasks, order));
            assert_eq!(
                dispatch_order(&tasks, order, f64::INFINITY),
                sorted(&tasks, order)
            );
        }
    }

    #[test]
    fn a_task_is_not_overtaken_by_one_enqueued_more_than_a_window_later() {
        let tasks = [
            Task {
                enqueued_at: 0.0,
                ..task(1, 1e9, 1.0, 3)
            },
            Task {
                enqueued_at: 100.0,
                ..task(2, 1e6, 100.0, 1)
            },
            Task {
                enqueued_at: 5000.0,
                ..task(3, 1e6, 1000.0, 1)
            },
        ];
        // The cold task goes before what came more than the window after it, not before the rest.
        assert_eq!(dispatch_order(&tasks, Order::Wspt, 3600.0), vec![1, 0, 2]);
        // Window 0: FIFO by enqueue time; no window: WSPT alone.
        assert_eq!(dispatch_order(&tasks, Order::Wspt, 0.0), vec![0, 1, 2]);
        assert_eq!(
            dispatch_order(&tasks, Order::Wspt, f64::INFINITY),
            vec![2, 1, 0]
        );
        // Equal enqueue times under window 0: WSPT among them.
        let same = [task(1, 1e9, 1.0, 1), task(2, 1e6, 1.0, 1)];
        assert_eq!(dispatch_order(&same, Order::Wspt, 0.0), vec![1, 0]);
    }

    /// One channel of `bandwidth` bytes/s: hot tasks of `hot_bytes` arrive every `every` seconds
    /// from 0 on, one cold task of `hot_bytes` at `cold_at`; whenever the channel is free the
    /// queue is replanned (as the driver's --follow does at every arrival, and nothing else
    /// changes between arrivals) and the first task is dispatched. Returns the cold task's
    /// dispatch time, if it is dispatched before `until`, and the bytes (in flight, queued,
    /// arriving within the window) that the bound counts at its arrival.
    fn simulate_stream(
        window: f64,
        bandwidth: f64,
        hot_bytes: f64,
        every: f64,
        cold_at: f64,
        until: f64,
    ) -> (Option<f64>, f64) {
        const COLD: i64 = -1;
        let mut arrivals: Vec<Task> = (0..)
            .map(|i| i as f64 * every)
            .take_while(|at| *at < until)
            .enumerate()
            .map(|(i, at)| Task {
                enqueued_at: at,
                ..task(i as i64, hot_bytes, 1000.0, 1)
            })
            .collect();
        arrivals.push(Task {
            enqueued_at: cold_at,
            ..task(COLD, hot_bytes, 0.001, 3)
        });
        arrivals.sort_by(|a, b| a.enqueued_at.total_cmp(&b.enqueued_at));
        let (mut now, mut arrived, mut busy_until) = (0.0f64, 0, 0.0f64);
        let mut queue: Vec<Task> = Vec::new();
        let mut counted = None;
        while now < until {
            while arrived < arrivals.len() && arrivals[arrived].enqueued_at <= now {
                if arrivals[arrived].task_id == COLD {
                    // At the cold task's arrival: the rest of the copy in flight, the queue,
                    // and what arrives within the window.
                    let in_flight = (busy_until - now).max(0.0) * bandwidth;
                    let queued: f64 = queue.iter().map(|t| t.bytes).sum();
                    let coming: f64 = arrivals[arrived + 1..]
                        .iter()
                        .filter(|t| t.enqueued_at <= cold_at + window)
                        .map(|t| t.bytes)
                        .sum();
                    counted = Some(in_flight + queued + coming);
                }
                queue.push(arrivals[arrived].clone());
                arrived += 1;
            }
            if busy_until <= now && !queue.is_empty() {
                let first = dispatch_order(&queue, Order::Wspt, window)[0];
                let task = queue.swap_remove(first);
                if task.task_id == COLD {
                    return (Some(now), counted.unwrap_or(0.0));
                }
                busy_until = now + task.bytes / bandwidth;
            }
            // The next event: an arrival or the channel coming free.
            let next_arrival = arrivals
                .get(arrived)
                .map_or(f64::INFINITY, |t| t.enqueued_at);
            let free = if busy_until > now {
                busy_until
            } else {
                f64::INFINITY
            };
            now = next_arrival.min(free);
        }
        (None, counted.unwrap_or(0.0))
    }

    #[test]
    fn an_endless_stream_of_hot_tasks_does_not_starve_a_cold_one() {
        // 1 MB hot tasks every 0.5 s on a 1 MB/s channel: the backlog grows without end.
        let (bandwidth, hot, every, cold_at, window) = (1e6, 1e6, 0.5, 10.25, 30.0);
        let (dispatched, counted) = simulate_stream(window, bandwidth, hot, every, cold_at, 1000.0);
        let dispatched = dispatched.expect("the cold task is dispatched");
        let wait = dispatched - cold_at;
        // The stated bound, in both forms (the second is tighter when the channel is busy).
        let bound = window + counted / bandwidth;
        assert!(wait <= bound + 1e-9, "waited {wait} s, bound {bound} s");
        assert!(
            wait <= counted / bandwidth + 1e-9,
            "waited {wait} s, bound {} s",
            counted / bandwidth
        );
        // Here it is tight: the cold task goes right after the hot tasks of its window.
        assert!(wait >= counted / bandwidth - 1.0 - 1e-9, "waited {wait} s");
        // Without the window it starves: the hot tasks are always denser.
        let (starved, _) = simulate_stream(f64::INFINITY, bandwidth, hot, every, cold_at, 1000.0);
        assert_eq!(starved, None);
    }

    #[test]
    fn each_place_has_the_reason_the_order_gave_it() {
        let mut tasks = vec![
            Task {
                enqueued_at: 0.0,
                ..task(1, 1e9, 1.0, 3)
            },
            Task {
                enqueued_at: 100.0,
                ..task(2, 1e6, 100.0, 1)
            },
            Task {
                enqueued_at: 5000.0,
                ..task(3, 1e6, 1000.0, 1)
            },
            Task {
                enqueued_at: 0.0,
                ..task(4, 1e6, 1.0, 1)
            },
        ];
        tasks[3].prefetch = true;
        let explained = dispatch_order_explained(&tasks, Order::Wspt, 3600.0);
        let order: Vec<usize> = explained.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, dispatch_order(&tasks, Order::Wspt, 3600.0));
        assert_eq!(order, vec![3, 1, 0, 2]);
        assert_eq!(explained[0].1, Reason::Express { after: None });
        assert_eq!(explained[1].1, Reason::First);
        // Task 1 after task 2: lower density.
        assert_eq!(
            explained[2].1,
            Reason::Ranked {
                after: 2,
                after_key: density(&tasks[1]),
                key: density(&tasks[0]),
            }
        );
        // Task 3 is the densest, but came 5000 s after task 1, the oldest then: held back.
        assert_eq!(
            explained[3].1,
            Reason::HeldBack {
                after: 1,
                after_key: density(&tasks[0]),
                key: density(&tasks[2]),
                oldest: 1,
                late_secs: 5000.0,
            }
        );
    }

    #[test]
    fn express_lane_goes_first() {
        let mut tasks = vec![task(1, 1e6, 100.0, 1), task(2, 1e9, 1.0, 3)];
        tasks[1].prefetch = true;
        assert_eq!(dispatch_order(&tasks, Order::Wspt, 0.0)[0], 1);
    }

    #[test]
    fn prefetch_threshold_is_a_quantile_of_points() {
        let points: Vec<f64> = (0..101).map(|i| i as f64).collect();
        assert_eq!(prefetch_threshold(&points, 0.99), 99.0);
        assert_eq!(prefetch_threshold(&[], 0.99), f64::INFINITY);
    }

    #[test]
    fn hot_work_lands_on_fast_idle_nodes() {
        let mut nodes = vec![
            Node {
                name: "slow".into(),
                capacity: 10e6,
                load: 0.0,
                assigned_bytes: 0.0,
            },
            Node {
                name: "fast".into(),
                capacity: 100e6,
                load: 0.0,
                assigned_bytes: 0.0,
            },
            Node {
                name: "busy".into(),
                capacity: 100e6,
                load: 0.95,
                assigned_bytes: 0.0,
            },
        ];
        let assigned = assign_nodes(&[50e6, 50e6, 50e6, 10e6], &mut nodes);
        assert_eq!(assigned[0], Some(1));
        let fast = assigned.iter().filter(|a| **a == Some(1)).count();
        assert!(fast >= 3, "{assigned:?}");
        assert_eq!(assign_nodes(&[1.0], &mut []), vec![None]);
        // A node ruled out (it already has the shard coming) is passed over, even if fastest.
        let best = assign_node_except(1.0, &mut nodes, |n| n.name == "fast");
        assert_ne!(best.map(|b| nodes[b].name.as_str()), Some("fast"));
        assert_eq!(assign_node_except(1.0, &mut nodes, |_| true), None);
    }

    #[test]
    fn the_plan_shares_bandwidth_and_reserves_express_slots() {
        let mut tasks = vec![
            task(1, 100.0 * MIN_TASK_BYTES, 1.0, 1),
            task(2, 100.0 * MIN_TASK_BYTES, 1.0, 1),
        ];
        tasks.push(Task {
            prefetch: true,
            ..task(3, 100.0 * MIN_TASK_BYTES, 1.0, 1)
        });
        let order = [&tasks[2], &tasks[0], &tasks[1]];
        let slots = plan(&order, 2, 200.0 * MIN_TASK_BYTES, 1);
        assert_eq!(slots[0].worker, 1);
        assert_eq!((slots[0].start, slots[0].finish), (0.0, 1.0));
        assert_eq!(slots[1].worker, 2);
        assert_eq!(slots[2].start, 1.0);
        assert!(slots.iter().all(|s| s.bandwidth == 100.0 * MIN_TASK_BYTES));
    }

    /// The plan as first written: every slot a vector entry, every task a scan of them all.
    fn naive_plan(tasks: &[&Task], workers: usize, bandwidth: f64, express: usize) -> Vec<Slot> {
        let per_slot = (bandwidth / workers as f64).max(f64::MIN_POSITIVE);
        let express = express.min(workers);
        let mut free_at = vec![0.0f64; workers];
        let express_left = tasks.iter().filter(|t| t.prefetch).count();
        let mut express_done = 0;
        tasks
            .iter()
            .map(|task| {
                let mut candidates: Vec<usize> = if task.prefetch || express_done >= express_left {
                    (0..workers).collect()
                } else {
                    (express..workers).collect()
                };
                if candidates.is_empty() {
                    candidates = (0..workers).collect();
                }
                let worker = candidates
                    .into_iter()
                    .min_by(|&a, &b| free_at[a].total_cmp(&free_at[b]).then(a.cmp(&b)))
                    .unwrap();
                if task.prefetch {
                    express_done += 1;
                }
                let start = free_at[worker];
                let finish = start + task.bytes.max(MIN_TASK_BYTES) / per_slot;
                free_at[worker] = finish;
                Slot {
                    worker: worker + 1,
                    bandwidth: per_slot,
                    start,
                    finish,
                }
            })
            .collect()
    }

    #[test]
    fn a_plan_over_more_workers_than_tasks_costs_what_the_tasks_need() {
        // allocation_plan(2147483647, 1) once allocated a slot vector per task: 16.8 GB for 7
        // tasks. Slots no task reaches are never materialised, however many there are.
        let tasks: Vec<Task> = (0..7).map(|i| task(i, 1e6, 1.0, 1)).collect();
        let order: Vec<&Task> = tasks.iter().collect();
        let slots = plan(&order, usize::MAX / 2, 1.0, 1);
        assert_eq!(slots.len(), 7);
        // No express-lane task: each task starts at once on a slot of its own, the express
        // slot included.
        let workers: Vec<usize> = slots.iter().map(|s| s.worker).collect();
        assert_eq!(workers, vec![1, 2, 3, 4, 5, 6, 7]);
        assert!(slots.iter().all(|s| s.start == 0.0 && s.finish > 0.0));
    }

    fn arbitrary_tasks(specs: &[(f64, f64, f64, bool)]) -> Vec<Task> {
        specs
            .iter()
            .enumerate()
            .map(|(i, &(bytes, score, enqueued_at, prefetch))| Task {
                enqueued_at,
                prefetch,
                ..task(i as i64, bytes, score, 1 + (i % 3) as u8)
            })
            .collect()
    }

    fn node(capacity: f64, load: f64, max_concurrent: usize) -> NodeCapacity {
        NodeCapacity {
            capacity,
            load,
            max_concurrent,
        }
    }

    /// The most slots busy at once and the most bandwidth in use at once among `slots`.
    fn peak(slots: &[&Slot]) -> (usize, f64) {
        let mut events: Vec<(f64, i32, f64)> = slots
            .iter()
            .flat_map(|s| [(s.start, 1, s.bandwidth), (s.finish, -1, -s.bandwidth)])
            .collect();
        // Ends before starts at the same instant.
        events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let (mut now, mut most, mut used, mut most_used) = (0i32, 0i32, 0.0f64, 0.0f64);
        for (_, step, bandwidth) in events {
            now += step;
            used += bandwidth;
            most = most.max(now);
            most_used = most_used.max(used);
        }
        (most as usize, most_used)
    }

    #[test]
    fn five_copies_on_a_node_that_takes_four_wait_for_a_free_slot() {
        let tasks: Vec<Task> = (0..5).map(|i| task(i, 50e6, 1.0, 1)).collect();
        let order: Vec<&Task> = tasks.iter().collect();
        let placements = vec![Placement::Node(0); 5];
        let slots = plan_on_nodes(&order, &placements, &[node(200e6, 0.0, 4)], 8, 400e6, 1);
        let slots: Vec<Slot> = slots.into_iter().map(Option::unwrap).collect();
        // Four at once, each a quarter of 200 MB/s: 50 MB take 1 s; the fifth starts at 1 s.
        assert!(slots[..4]
            .iter()
            .all(|s| s.start == 0.0 && s.finish == 1.0 && s.bandwidth == 50e6));
        assert_eq!((slots[4].start, slots[4].finish), (1.0, 2.0));
        assert_eq!(slots[4].worker, 1);
    }

    #[test]
    fn a_busy_node_copies_with_what_it_has_free() {
        // 100 MB/s, reported 70% busy, 2 at once: 15 MB/s a copy.
        let tasks = [task(1, 30e6, 1.0, 1)];
        let slots = plan_on_nodes(
            &[&tasks[0]],
            &[Placement::Node(0)],
            &[node(100e6, 0.7, 2)],
            8,
            400e6,
            1,
        );
        let slot = slots[0].clone().unwrap();
        assert!((slot.bandwidth - 15e6).abs() < 1e-3, "{slot:?}");
        assert!((slot.finish - 2.0).abs() < 1e-9, "{slot:?}");
        // Reported fully busy: slow, never stopped.
        let slots = plan_on_nodes(
            &[&tasks[0]],
            &[Placement::Node(0)],
            &[node(100e6, 1.0, 2)],
            8,
            400e6,
            1,
        );
        assert!(slots[0].as_ref().unwrap().finish.is_finite());
    }

    #[test]
    fn tasks_without_a_node_keep_the_workers_plan_and_unavailable_ones_have_none() {
        let tasks: Vec<Task> = (0..4).map(|i| task(i, 1e6, 1.0, 1)).collect();
        let order: Vec<&Task> = tasks.iter().collect();
        let placements = [
            Placement::Pool,
            Placement::Node(0),
            Placement::Unavailable,
            Placement::Pool,
        ];
        let slots = plan_on_nodes(&order, &placements, &[node(1e6, 0.0, 1)], 2, 2e6, 0);
        let pooled = plan(&[&tasks[0], &tasks[3]], 2, 2e6, 0);
        assert_eq!(slots[0].as_ref(), Some(&pooled[0]));
        assert_eq!(slots[3].as_ref(), Some(&pooled[1]));
        assert_eq!(slots[2], None);
        assert_eq!(slots[1].as_ref().map(|s| s.finish), Some(1.0));
    }

    proptest! {
        #[test]
        fn dispatch_is_a_permutation_with_the_express_lane_first(
            specs in proptest::collection::vec((1.0f64..1e9, 0.0f64..1e6, 0.0f64..1e5, proptest::bool::weighted(0.1)), 0..200),
            window in 0.0f64..1e5,
        ) {
            let tasks = arbitrary_tasks(&specs);
            let mut order = dispatch_order(&tasks, Order::Wspt, window);
            let express = tasks.iter().filter(|t| t.prefetch).count();
            prop_assert!(order[..express].iter().all(|&i| tasks[i].prefetch));
            order.sort();
            prop_assert_eq!(order, (0..tasks.len()).collect::<Vec<_>>());
        }

        #[test]
        fn the_plan_is_list_scheduling_on_the_earliest_free_slot(
            specs in proptest::collection::vec((1.0f64..1e9, 0.0f64..1e6, 0.0f64..1e5, proptest::bool::weighted(0.2)), 0..80),
            workers in 1usize..12,
            express in 0usize..4,
            bandwidth in 1.0f64..1e9,
        ) {
            let tasks = arbitrary_tasks(&specs);
            let order: Vec<&Task> = dispatch_order(&tasks, Order::Wspt, 3600.0).into_iter().map(|i| &tasks[i]).collect();
            prop_assert_eq!(plan(&order, workers, bandwidth, express), naive_plan(&order, workers, bandwidth, express));
        }

        #[test]
        fn no_task_is_overtaken_by_one_enqueued_more_than_a_window_later(
            specs in proptest::collection::vec((1.0f64..1e9, 0.0f64..1e6, 0.0f64..1e4, proptest::bool::weighted(0.1)), 0..150),
            window in prop_oneof![Just(0.0f64), 0.0f64..2e3],
            order in prop_oneof![Just(Order::Wspt), Just(Order::Score), Just(Order::Fifo)],
        ) {
            let tasks = arbitrary_tasks(&specs);
            let dispatched = dispatch_order(&tasks, order, window);
            for (position, &first) in dispatched.iter().enumerate() {
                for &then in &dispatched[position + 1..] {
                    if !tasks[first].prefetch && !tasks[then].prefetch {
                        prop_assert!(
                            tasks[first].enqueued_at <= tasks[then].enqueued_at + window,
                            "task {} (enqueued at {}) overtook task {} (enqueued at {})",
                            tasks[first].task_id, tasks[first].enqueued_at,
                            tasks[then].task_id, tasks[then].enqueued_at,
                        );
                    }
                }
            }
        }

        #[test]
        fn on_a_one_shot_queue_the_default_order_captures_what_wspt_does(
            specs in proptest::collection::vec((1e4f64..1e9, 0.0f64..1e6, 0.1f64..10.0, 0.0f64..600.0), 2..150),
        ) {
            // Predictions (scores) are the true load times an error; a batch enqueued over ten
            // minutes; one channel that copies everything in about half of the hour horizon.
            let tasks: Vec<Task> = specs.iter().enumerate()
                .map(|(i, &(bytes, load, error, enqueued_at))| Task { enqueued_at, ..task(i as i64, bytes, load * error, 1 + (i % 3) as u8) })
                .collect();
            let bytes: Vec<f64> = tasks.iter().map(|t| t.bytes).collect();
            let load: Vec<f64> = specs.iter().map(|s| s.1).collect();
            let bandwidth = bytes.iter().sum::<f64>() / 1800.0;
            let capture = |order: &[usize]| {
                crate::report::one_channel_capture(&bytes, &load, bandwidth, (0.0, 3600.0), order)
            };
            let default = capture(&dispatch_order(&tasks, Order::Wspt, 3600.0));
            let wspt = capture(&sorted(&tasks, Order::Wspt));
            match (default, wspt) {
                (Some(default), Some(wspt)) => prop_assert!((default - wspt).abs() <= 0.02, "{} vs {}", default, wspt),
                (default, wspt) => prop_assert_eq!(default, wspt),
            }
        }

        #[test]
        fn a_node_never_copies_more_at_once_than_it_may_nor_faster_than_it_can(
            specs in proptest::collection::vec((1.0f64..1e9, 0.0f64..1e6, 0.0f64..1e5, proptest::bool::weighted(0.2), 0usize..4), 0..120),
            nodes in proptest::collection::vec((1e3f64..1e9, 0.0f64..1.0, 1usize..6), 1..4),
            workers in 1usize..12,
        ) {
            let tasks = arbitrary_tasks(&specs.iter().map(|s| (s.0, s.1, s.2, s.3)).collect::<Vec<_>>());
            let nodes: Vec<NodeCapacity> = nodes.iter().map(|&(c, l, m)| node(c, l, m)).collect();
            // 0..nodes: that node; nodes: no node; above: a node that takes no claims.
            let placements: Vec<Placement> = specs.iter().map(|s| match s.4 {
                n if n < nodes.len() => Placement::Node(n),
                n if n == nodes.len() => Placement::Pool,
                _ => Placement::Unavailable,
            }).collect();
            let order: Vec<&Task> = tasks.iter().collect();
            let slots = plan_on_nodes(&order, &placements, &nodes, workers, 1e8, 1);
            prop_assert_eq!(slots.len(), tasks.len());
            for (n, capacity) in nodes.iter().enumerate() {
                let on_node: Vec<&Slot> = slots.iter().zip(&placements)
                    .filter(|(_, p)| **p == Placement::Node(n))
                    .map(|(s, _)| s.as_ref().unwrap())
                    .collect();
                let (at_once, bandwidth) = peak(&on_node);
                prop_assert!(at_once <= capacity.max_concurrent, "{} at once, limit {}", at_once, capacity.max_concurrent);
                prop_assert!(bandwidth <= capacity.available() * (1.0 + 1e-9), "{} B/s, {} free", bandwidth, capacity.available());
                // Each copy takes its bytes at its share: the plan's finish times are real.
                for (slot, task) in on_node.iter().zip(order.iter().zip(&placements).filter(|(_, p)| **p == Placement::Node(n)).map(|(t, _)| t)) {
                    prop_assert!(((slot.finish - slot.start) * slot.bandwidth - task.bytes.max(MIN_TASK_BYTES)).abs() <= 1e-6 * task.bytes.max(MIN_TASK_BYTES));
                }
            }
            for (slot, placement) in slots.iter().zip(&placements) {
                prop_assert_eq!(slot.is_none(), *placement == Placement::Unavailable);
            }
        }

        #[test]
        fn a_held_back_task_came_more_than_a_window_after_the_oldest_and_ranked_ones_rank_lower(
            specs in proptest::collection::vec((1.0f64..1e9, 0.0f64..1e6, 0.0f64..1e4, proptest::bool::weighted(0.1)), 0..150),
            window in 0.0f64..2e3,
        ) {
            let tasks = arbitrary_tasks(&specs);
            let explained = dispatch_order_explained(&tasks, Order::Wspt, window);
            for (k, (i, reason)) in explained.iter().enumerate() {
                match reason {
                    Reason::Express { .. } => prop_assert!(tasks[*i].prefetch),
                    Reason::First => prop_assert!(!tasks[*i].prefetch),
                    Reason::Ranked { after, .. } => {
                        let p = explained[k - 1].0;
                        prop_assert_eq!(tasks[p].task_id, *after);
                        prop_assert!(compare(Order::Wspt, &tasks[p], &tasks[*i]) != Ordering::Greater);
                    }
                    Reason::HeldBack { late_secs, .. } => prop_assert!(*late_secs > window),
                }
            }
        }

        #[test]
        fn within_one_window_the_order_is_the_key_alone(
            specs in proptest::collection::vec((1.0f64..1e9, 0.0f64..1e6, 0.0f64..3600.0, proptest::bool::weighted(0.1)), 0..150),
        ) {
            let tasks = arbitrary_tasks(&specs);
            prop_assert_eq!(dispatch_order(&tasks, Order::Wspt, 3600.0), sorted(&tasks, Order::Wspt));
        }
    }
}
