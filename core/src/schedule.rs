//! Scheduling replication tasks: the dispatch order (Smith's rule within tiers, deficit round
//! robin across tiers, an express lane before everything), node assignment, and the allocation
//! plan over worker slots and bandwidth.

use std::cmp::Ordering;

/// One queued task, as the scheduler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub task_id: i64,
    pub bytes: f64,
    pub score: f64,
    /// Priority tier, 1 = hottest.
    pub tier: u8,
    pub prefetch: bool,
}

/// How tasks are ordered within a tier (and across tiers when there is one).
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

/// Each tier's share of capacity: tier t (1 = hottest) weighs 2^(tiers - t), and every tier
/// keeps at least `floor` (then shares are renormalised). Index 0 is tier 1.
pub fn tier_shares(tiers: usize, floor: f64) -> Vec<f64> {
    let tiers = tiers.max(1);
    let weights: Vec<f64> = (0..tiers)
        .map(|i| 2f64.powi((tiers - 1 - i) as i32))
        .collect();
    let floor = if floor.is_finite() {
        floor.clamp(0.0, 1.0 / tiers as f64)
    } else {
        0.0
    };
    // Water-filling: tiers whose weighted share falls under the floor get exactly the floor;
    // the others split what is left by weight.
    let mut floored = vec![false; tiers];
    loop {
        let left = 1.0 - floor * floored.iter().filter(|f| **f).count() as f64;
        let free_weight: f64 = (0..tiers)
            .filter(|&i| !floored[i])
            .map(|i| weights[i])
            .sum();
        let shares: Vec<f64> = (0..tiers)
            .map(|i| {
                if floored[i] {
                    floor
                } else {
                    left * weights[i] / free_weight
                }
            })
            .collect();
        let newly: Vec<usize> = (0..tiers)
            .filter(|&i| !floored[i] && shares[i] < floor)
            .collect();
        if newly.is_empty() {
            return shares;
        }
        for i in newly {
            floored[i] = true;
        }
    }
}

/// The dispatch order: express-lane (prefetch) tasks first, by `order`; then the other tasks by
/// deficit round robin over the tiers, each tier's queue in `order`, each tier credited its
/// share of `quantum_bytes` per round. Returns indexes into `tasks`.
///
/// Starvation bound: while tier t has queued tasks it receives at least its share s_t of every
/// round, so a task with B bytes ahead of it in its own tier (itself included) is dispatched
/// within ceil((B + max task) / (s_t · quantum)) rounds.
pub fn dispatch_order(
    tasks: &[Task],
    order: Order,
    shares: &[f64],
    quantum_bytes: f64,
) -> Vec<usize> {
    let mut express: Vec<usize> = (0..tasks.len()).filter(|&i| tasks[i].prefetch).collect();
    express.sort_by(|&a, &b| compare(order, &tasks[a], &tasks[b]));
    let tiers = shares.len().max(1);
    let mut queues: Vec<Vec<usize>> = vec![Vec::new(); tiers];
    for (i, t) in tasks.iter().enumerate() {
        if !t.prefetch {
            let tier = (t.tier.max(1) as usize).min(tiers) - 1;
            queues[tier].push(i);
        }
    }
    for q in &mut queues {
        q.sort_by(|&a, &b| compare(order, &tasks[a], &tasks[b]));
        q.reverse(); // pop from the end
    }
    let mut out = express;
    let quantum = if quantum_bytes.is_finite() && quantum_bytes > 0.0 {
        quantum_bytes
    } else {
        1.0
    };
    let mut deficit = vec![0.0f64; tiers];
    while queues.iter().any(|q| !q.is_empty()) {
        for (tier, queue) in queues.iter_mut().enumerate() {
            if queue.is_empty() {
                deficit[tier] = 0.0;
                continue;
            }
            deficit[tier] += shares.get(tier).copied().unwrap_or(0.0).max(1e-9) * quantum;
            while let Some(&next) = queue.last() {
                let size = tasks[next].bytes.max(MIN_TASK_BYTES);
                if size > deficit[tier] {
                    break;
                }
                deficit[tier] -= size;
                out.push(next);
                queue.pop();
            }
        }
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

/// A destination node.
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
        .map(|&bytes| {
            let bytes = bytes.max(MIN_TASK_BYTES);
            let best = (0..nodes.len()).min_by(|&a, &b| {
                nodes[a]
                    .finish_after(bytes)
                    .total_cmp(&nodes[b].finish_after(bytes))
                    .then(a.cmp(&b))
            })?;
            nodes[best].assigned_bytes += bytes;
            Some(best)
        })
        .collect()
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

/// List scheduling of the dispatch order on `workers` slots sharing `bandwidth` bytes/s equally:
/// each task starts on the slot that frees first. The first `express_workers` slots take only
/// express-lane tasks while any are left. Returns a slot per task, in dispatch order.
pub fn plan(
    tasks_in_order: &[&Task],
    workers: usize,
    bandwidth: f64,
    express_workers: usize,
) -> Vec<Slot> {
    let workers = workers.max(1);
    let per_slot = (bandwidth / workers as f64).max(f64::MIN_POSITIVE);
    let express_workers = express_workers.min(workers);
    let mut free_at = vec![0.0f64; workers];
    let express_left = tasks_in_order.iter().filter(|t| t.prefetch).count();
    let mut express_done = 0;
    tasks_in_order
        .iter()
        .map(|task| {
            let candidates: Vec<usize> = if task.prefetch || express_done >= express_left {
                (0..workers).collect()
            } else {
                (express_workers..workers).collect()
            };
            let candidates = if candidates.is_empty() {
                (0..workers).collect()
            } else {
                candidates
            };
            let worker = candidates
                .into_iter()
                .min_by(|&a, &b| free_at[a].total_cmp(&free_at[b]).then(a.cmp(&b)))
                .unwrap_or(0);
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
        }
    }

    #[test]
    fn wspt_puts_small_hot_tables_first_and_score_order_does_not() {
        let tasks = [
            task(1, 1e9, 100.0, 1),
            task(2, 1e6, 10.0, 1),
            task(3, 1e6, 1.0, 1),
        ];
        let shares = tier_shares(1, 0.05);
        assert_eq!(
            dispatch_order(&tasks, Order::Wspt, &shares, 1e12),
            vec![1, 2, 0]
        );
        assert_eq!(
            dispatch_order(&tasks, Order::Score, &shares, 1e12),
            vec![0, 1, 2]
        );
        assert_eq!(
            dispatch_order(&tasks, Order::Fifo, &shares, 1e12),
            vec![0, 1, 2]
        );
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
        let wspt = dispatch_order(&tasks, Order::Wspt, &tier_shares(1, 0.0), 1e12);
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
    fn shares_favour_hot_tiers_and_keep_a_floor() {
        let s = tier_shares(3, 0.05);
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(s[0] > s[1] && s[1] > s[2]);
        let s = tier_shares(8, 0.05);
        assert!(s.iter().all(|x| *x >= 0.05 - 1e-12), "{s:?}");
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn an_endless_supply_of_hot_tasks_does_not_starve_a_cold_one() {
        let mut tasks: Vec<Task> = (0..10_000).map(|i| task(i, 1e6, 1000.0, 1)).collect();
        tasks.push(task(99_999, 1e6, 0.001, 3));
        let shares = tier_shares(3, 0.05);
        let quantum = 10e6;
        let order = dispatch_order(&tasks, Order::Wspt, &shares, quantum);
        let cold_position = order
            .iter()
            .position(|&i| tasks[i].task_id == 99_999)
            .unwrap();
        // The bound: ceil((own bytes + max task) / (share * quantum)) rounds, each dispatching
        // at most quantum + max task bytes.
        let rounds = ((1e6 + 1e6) / (shares[2] * quantum)).ceil();
        let bound = (rounds * (quantum + 1e6) / 1e6) as usize;
        assert!(
            cold_position <= bound,
            "cold task at {cold_position}, bound {bound}"
        );
        assert!(cold_position < 100);
    }

    #[test]
    fn express_lane_goes_first() {
        let mut tasks = vec![task(1, 1e6, 100.0, 1), task(2, 1e9, 1.0, 3)];
        tasks[1].prefetch = true;
        assert_eq!(
            dispatch_order(&tasks, Order::Wspt, &tier_shares(3, 0.05), 1e7)[0],
            1
        );
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

    proptest! {
        #[test]
        fn dispatch_is_a_permutation(
            specs in proptest::collection::vec((1.0f64..1e9, 0.0f64..1e6, 1u8..4, proptest::bool::weighted(0.1)), 0..200),
            quantum in 1e3f64..1e10,
        ) {
            let tasks: Vec<Task> = specs.iter().enumerate()
                .map(|(i, &(bytes, score, tier, prefetch))| Task { task_id: i as i64, bytes, score, tier, prefetch })
                .collect();
            let mut order = dispatch_order(&tasks, Order::Wspt, &tier_shares(3, 0.05), quantum);
            let express = tasks.iter().filter(|t| t.prefetch).count();
            prop_assert!(order[..express].iter().all(|&i| tasks[i].prefetch));
            order.sort();
            prop_assert_eq!(order, (0..tasks.len()).collect::<Vec<_>>());
        }
    }
}
