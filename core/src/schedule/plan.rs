//! The allocation plan: list scheduling of the dispatch order over worker slots and bandwidth,
//! on the plan's own workers or on the nodes the tasks are placed on.

use super::{Slots, Task, MIN_TASK_BYTES};

/// One task in the allocation plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    pub worker: usize,
    pub bandwidth: f64,
    /// Seconds from now.
    pub start: f64,
    pub finish: f64,
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
    use crate::schedule::testing::{arbitrary_tasks, task};
    use crate::schedule::{dispatch_order, Order};
    use proptest::prelude::*;

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
    }
}
