//! The replication queue's two decisions per task, besides its place in the dispatch order
//! ([`crate::schedule::dispatch_order`]): whether it takes the express lane, and which node it
//! copies to.

use std::collections::HashMap;

use crate::schedule::{self, density, Node, Order, Task};

/// A forecast as the express lane reads it: the expected load and the interval's lower bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    pub expected: f64,
    pub lower: f64,
}

impl Bounds {
    /// The lower bound as a share of the expected load, in [0, 1]; 0 without a forecast or
    /// without a positive one.
    fn certain(bounds: Option<Bounds>) -> f64 {
        match bounds {
            Some(Bounds { expected, lower }) if expected > 0.0 && lower > 0.0 => {
                let share = lower / expected;
                if share.is_nan() {
                    0.0
                } else {
                    share.min(1.0)
                }
            }
            _ => 0.0,
        }
    }
}

/// A scored shard as the express lane judges its certainty: its base score (its own expected
/// load times its class weight), what priority inheritance lifted it by, the shard that lifted it
/// (the next hop of the chain), and its own forecast.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub base: f64,
    pub lift: f64,
    pub source: Option<i32>,
    pub own: Option<Bounds>,
}

/// The share of each shard's score that is left when every forecast it rests on is at its lower
/// bound, in [0, 1]. Inheritance takes the larger of a shard's own score and `factor` times its
/// source's (lifted) score, so a lifted shard's certain score is the larger of its own base at
/// its own lower bound and its score times its source's certain share, along the whole chain: a
/// table that a certain hot table references is as certain as that table, whatever its own
/// forecast, and one lifted by an uncertain table is no more certain than its own load makes it.
/// A chain that loops (which inheritance never makes) counts as uncertain where it loops.
pub fn certain_shares(scored: &HashMap<i32, Scored>) -> HashMap<i32, f64> {
    let finite = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
    let mut shares: HashMap<i32, f64> = HashMap::with_capacity(scored.len());
    for &start in scored.keys() {
        // Walk up the chain to a shard without a lift (or one already known), then back down.
        let mut chain: Vec<i32> = Vec::new();
        let mut at = Some(start);
        let mut above = 0.0;
        while let Some(id) = at {
            if let Some(&known) = shares.get(&id) {
                above = known;
                break;
            }
            if chain.contains(&id) {
                above = 0.0;
                break;
            }
            let Some(s) = scored.get(&id) else {
                above = 0.0;
                break;
            };
            chain.push(id);
            at = if finite(s.lift) > 0.0 { s.source } else { None };
        }
        for &id in chain.iter().rev() {
            let s = scored[&id];
            let (base, lift) = (finite(s.base), finite(s.lift));
            let total = base + lift;
            let own = base * Bounds::certain(s.own);
            let share = if !(total > 0.0 && total.is_finite()) {
                0.0
            } else if lift > 0.0 {
                (own.max(total * above) / total).clamp(0.0, 1.0)
            } else {
                (own / total).clamp(0.0, 1.0)
            };
            shares.insert(id, share);
            above = share;
        }
    }
    shares
}

/// What the express lane compares under `order`: the key the order sorts by where it has one
/// (density under WSPT, the score under the plain sort), the score under FIFO.
fn lane_key(order: Order, task: &Task) -> f64 {
    match order {
        Order::Wspt => density(task),
        Order::Score | Order::Fifo => {
            if task.score.is_finite() {
                task.score.max(0.0)
            } else {
                0.0
            }
        }
    }
}

/// Marks the express lane (`Task::prefetch`) among the queued `tasks`: a task goes there when
/// its key under `order`, times the share of its score that is certain (`certain[i]`, see
/// [`certain_shares`]; 0 where missing), is above the `quantile` of all queued tasks' keys
/// ([`schedule::prefetch_threshold`]), and above zero; and when it was enqueued at most
/// `window_secs` (the overtaking window) after the oldest queued task.
///
/// The lane goes first. Comparing in the order's own key keeps that cheap: what the lane takes
/// is above the quantile even at its lower bounds, so on a one-shot queue under WSPT it can go
/// before only tasks above the quantile too (with certain forecasts, the lane is exactly the
/// head of WSPT's order). When the lane compared loads, the hottest shard went first whatever
/// its size: on groups of ten real hourly series (M4) and one copy channel the queue captured
/// 0.979 of the foresight order's gain at 1 h, against 1.000 for WSPT on the same forecasts.
/// The window bounds the lane as it bounds the order: the quantile is the queue's, and in an
/// endless stream of hot tasks the backlog keeps the less dense, so that a lane outside the
/// window took most new arrivals and a cold task waited for ever (simulated in
/// `schedule::dispatch`). In a queue of n tasks the densest one takes the lane only when its
/// certain share is above 1 - (1 - quantile) (n - 1) or so (the quantile is interpolated), so
/// that with the default 0.99 a short queue takes only near-certain tasks.
pub fn mark_express(
    tasks: &mut [Task],
    certain: &[f64],
    order: Order,
    quantile: f64,
    window_secs: f64,
) {
    let keys: Vec<f64> = tasks.iter().map(|t| lane_key(order, t)).collect();
    let threshold = schedule::prefetch_threshold(&keys, quantile);
    let window = schedule::overtake_window(window_secs);
    let oldest = tasks
        .iter()
        .map(|t| t.enqueued_at)
        .filter(|at| at.is_finite())
        .fold(f64::INFINITY, f64::min);
    for (i, task) in tasks.iter_mut().enumerate() {
        let share = certain.get(i).copied().unwrap_or(0.0);
        let share = if share.is_nan() {
            0.0
        } else {
            share.clamp(0.0, 1.0)
        };
        let key = keys[i] * share;
        let in_window = task.enqueued_at <= oldest + window;
        task.prefetch = key > threshold && key > 0.0 && in_window;
    }
}

/// The node a task of `bytes` copies to, taking its share of that node's work: its
/// `requested_node` when it was given one (counted against that node if it is among `nodes`),
/// else the node that finishes it first among those that no other open task of the shard
/// copies to (`taken`). None when no node is left.
pub fn node_for(
    bytes: f64,
    requested_node: Option<String>,
    taken: &[String],
    nodes: &mut [Node],
) -> Option<String> {
    match requested_node {
        Some(fixed) => {
            if let Some(n) = nodes.iter_mut().find(|n| n.name == fixed) {
                n.assigned_bytes += bytes.max(schedule::MIN_TASK_BYTES);
            }
            Some(fixed)
        }
        None => schedule::assign_node_except(bytes, nodes, |n| taken.contains(&n.name))
            .map(|n| nodes[n].name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(name: &str, capacity: f64) -> Node {
        Node {
            name: name.into(),
            capacity,
            load: 0.0,
            assigned_bytes: 0.0,
        }
    }

    fn queued(specs: &[(f64, f64)]) -> Vec<Task> {
        specs
            .iter()
            .enumerate()
            .map(|(i, &(bytes, score))| Task {
                task_id: i as i64 + 1,
                bytes,
                score,
                tier: 1,
                prefetch: false,
                enqueued_at: 0.0,
            })
            .collect()
    }

    fn lane(tasks: &[Task]) -> Vec<bool> {
        tasks.iter().map(|t| t.prefetch).collect()
    }

    fn bounds(expected: f64, lower: f64) -> Option<Bounds> {
        Some(Bounds { expected, lower })
    }

    /// A case of the lane: its name, the certain shares, the order, the quantile, the window,
    /// and which of the three tasks take the lane.
    type Case = (&'static str, &'static [f64], Order, f64, f64, [bool; 3]);

    #[test]
    fn the_express_lane_compares_the_orders_key_at_the_lower_bound() {
        use Order::{Fifo, Score, Wspt};
        let mut tasks = queued(&[(1e9, 100.0), (1e6, 10.0), (1e6, 5.0)]);
        const ALL: f64 = f64::INFINITY;
        #[rustfmt::skip]
        let cases: [Case; 10] = [
            // The hottest shard is also the largest: by load it would be extreme, by density it
            // is the coldest, so WSPT keeps it out of the lane; the plain sort puts it there.
            ("wspt", &[0.9, 0.9, 0.0], Wspt, 0.5, ALL, [false, true, false]),
            ("score", &[0.9, 0.9, 0.0], Score, 0.5, ALL, [true, false, false]),
            ("fifo", &[0.9, 0.9, 0.0], Fifo, 0.5, ALL, [true, false, false]),
            // A wide interval keeps the densest out: at its lower bound it is no denser than
            // the middle task.
            ("wide", &[0.0, 0.4, 0.0], Wspt, 0.5, ALL, [false, false, false]),
            // Nothing without a certain share, above the top quantile, or with shares missing
            // (a flag set before is cleared).
            ("no share", &[0.0, 0.0, f64::NAN], Wspt, 0.0, ALL, [false, false, false]),
            ("top", &[1.0, 1.0, 1.0], Wspt, 1.0, ALL, [false, false, false]),
            // At quantile 0 everything above the least dense goes.
            ("bottom", &[1.0, 1.0, 1.0], Wspt, 0.0, ALL, [false, true, true]),
            ("missing", &[], Wspt, 0.0, ALL, [false, false, false]),
            // The window bounds the lane: enqueued more than the window after the oldest queued
            // task (the middle one, 3601 s late in these two), the densest waits its turn.
            ("late", &[0.9, 0.9, 0.0], Wspt, 0.5, 3600.0, [false, false, false]),
            ("in time", &[0.9, 0.9, 0.0], Wspt, 0.5, 3601.0, [false, true, false]),
        ];
        for (name, certain, order, quantile, window, expected) in cases {
            tasks[1].enqueued_at = if window < ALL { 3601.0 } else { 0.0 };
            mark_express(&mut tasks, certain, order, quantile, window);
            assert_eq!(lane(&tasks), expected, "{name}");
        }
    }

    fn scored(base: f64, lift: f64, source: Option<i32>, own: Option<Bounds>) -> Scored {
        Scored {
            base,
            lift,
            source,
            own,
        }
    }

    #[test]
    fn the_certain_share_follows_the_chain_of_lifts() {
        let shares = certain_shares(&HashMap::from([
            // Its own forecast only: lower / expected.
            (1, scored(10.0, 0.0, None, bounds(10.0, 9.0))),
            // A certain hot table (2) lifts 3 (unknown of its own) to its score: as certain as 2;
            // 3 lifts 4 in turn (a chain): still certain.
            (2, scored(1000.0, 0.0, None, bounds(500.0, 500.0))),
            (3, scored(2.0, 998.0, Some(2), None)),
            (4, scored(0.0, 1000.0, Some(3), bounds(0.0, 0.0))),
            // An uncertain table (5, half) lifts 6, certain of its own at half the score: the
            // larger of the two certain parts, a half, not their sum.
            (5, scored(1000.0, 0.0, None, bounds(10.0, 5.0))),
            (6, scored(500.0, 500.0, Some(5), bounds(1.0, 1.0))),
            // ... and one lifted by an idle middle table whose own forecast is nothing: the
            // middle table's certainty is its source's.
            (7, scored(0.0, 1000.0, Some(2), bounds(0.0, 0.0))),
            (8, scored(1.0, 999.0, Some(7), None)),
            // A loop (scores published at different times), a source that is gone, nothing to
            // be certain of, values that are no loads, a lower bound above the expected load.
            (9, scored(1.0, 9.0, Some(10), None)),
            (10, scored(1.0, 9.0, Some(9), None)),
            (11, scored(1.0, 9.0, Some(99), bounds(1.0, 1.0))),
            (12, scored(0.0, 0.0, None, bounds(1.0, 1.0))),
            (13, scored(f64::NAN, f64::INFINITY, None, bounds(1.0, 1.0))),
            (
                14,
                scored(5.0, 0.0, None, bounds(f64::INFINITY, f64::INFINITY)),
            ),
            (15, scored(5.0, 0.0, None, bounds(1.0, 3.0))),
        ]));
        let share = |id: i32| shares[&id];
        assert_eq!(share(1), 0.9);
        assert_eq!((share(2), share(3), share(4)), (1.0, 1.0, 1.0));
        assert_eq!((share(5), share(6)), (0.5, 0.5));
        assert_eq!((share(7), share(8)), (1.0, 1.0));
        assert_eq!((share(9), share(10)), (0.0, 0.0));
        assert_eq!(share(11), 0.1);
        assert_eq!(
            (share(12), share(13), share(14), share(15)),
            (0.0, 0.0, 0.0, 1.0)
        );
        assert_eq!(shares.len(), 15);
    }

    /// The interpolated quantile, computed apart from `prefetch_threshold`.
    fn quantile_of(keys: &[f64], q: f64) -> f64 {
        let mut sorted = keys.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = q * (sorted.len() - 1) as f64;
        let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo as f64)
    }

    proptest! {
        #[test]
        fn the_lane_holds_exactly_the_tasks_above_the_quantile_at_their_lower_bounds(
            specs in proptest::collection::vec(
                (1.0f64..1e9, 0.0f64..1e6, prop_oneof![Just(0.0), Just(1.0), Just(f64::NAN), 0.0f64..=1.0]),
                1..100,
            ),
            quantile in 0.0f64..=1.0,
            order in prop_oneof![Just(Order::Wspt), Just(Order::Score), Just(Order::Fifo)],
        ) {
            let mut tasks = queued(&specs.iter().map(|&(b, s, _)| (b, s)).collect::<Vec<_>>());
            let shares: Vec<f64> = specs.iter().map(|s| s.2).collect();
            mark_express(&mut tasks, &shares, order, quantile, f64::INFINITY);
            let key = |t: &Task| if order == Order::Wspt { density(t) } else { t.score };
            let keys: Vec<f64> = tasks.iter().map(key).collect();
            let threshold = quantile_of(&keys, quantile);
            for (t, &share) in tasks.iter().zip(&shares) {
                let certain = if share.is_nan() { 0.0 } else { key(t) * share };
                prop_assert_eq!(t.prefetch, certain > threshold && certain > 0.0);
            }
            // Under WSPT the lane goes before only tasks above the quantile; with certain
            // forecasts it is the head of WSPT's order.
            if order == Order::Wspt {
                let slowest = tasks.iter().filter(|t| t.prefetch).map(density).fold(f64::INFINITY, f64::min);
                for t in tasks.iter().filter(|t| !t.prefetch && density(t) > slowest) {
                    prop_assert!(density(t) > threshold);
                }
                let mut certain = tasks.clone();
                mark_express(&mut certain, &vec![1.0; tasks.len()], order, quantile, f64::INFINITY);
                for t in &certain {
                    prop_assert_eq!(t.prefetch, density(t) > threshold && density(t) > 0.0);
                }
            }
        }
    }

    #[test]
    fn a_requested_node_is_kept_and_counted() {
        let mut nodes = vec![node("a", 100.0), node("b", 100.0)];
        assert_eq!(
            node_for(10.0, Some("b".into()), &[], &mut nodes),
            Some("b".into())
        );
        assert_eq!(nodes[1].assigned_bytes, schedule::MIN_TASK_BYTES);
        assert_eq!(nodes[0].assigned_bytes, 0.0);
        // A requested node that is not an enabled node is kept, and counts against nothing.
        assert_eq!(
            node_for(1e6, Some("gone".into()), &[], &mut nodes),
            Some("gone".into())
        );
        assert_eq!(nodes[1].assigned_bytes, schedule::MIN_TASK_BYTES);
    }

    #[test]
    fn assignment_avoids_nodes_the_shard_already_goes_to() {
        let mut nodes = vec![node("fast", 1000.0), node("slow", 1.0)];
        assert_eq!(node_for(1e6, None, &[], &mut nodes), Some("fast".into()));
        assert_eq!(
            node_for(1e6, None, &["fast".into()], &mut nodes),
            Some("slow".into())
        );
        assert_eq!(
            node_for(1e6, None, &["fast".into(), "slow".into()], &mut nodes),
            None
        );
        assert_eq!(node_for(1e6, None, &[], &mut []), None);
    }
}
