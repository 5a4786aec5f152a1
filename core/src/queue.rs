//! The replication queue's two decisions per task, besides its place in the dispatch order
//! ([`crate::schedule::dispatch_order`]): whether it takes the express lane, and which node it
//! copies to.

use crate::schedule::{self, density, Node, Order, Task};

/// A task's forecast: its shard's expected load and the interval's lower bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    pub expected: f64,
    pub lower: f64,
}

/// What the express lane compares under `order`: the key the order sorts by where it has one
/// (density under WSPT, the score under the plain sort), the score under FIFO.
fn lane_key(order: Order, task: &Task) -> f64 {
    match order {
        Order::Wspt => density(task),
        Order::Score | Order::Fifo => task.score.max(0.0),
    }
}

/// The key a task would have if its shard's load were only its forecast's lower bound: the key
/// scaled by lower / expected (the score is the expected load times the class weight, plus
/// what inheritance lifts it by, which is scaled alike). 0 without a forecast.
fn certain_key(order: Order, task: &Task, bounds: Option<Bounds>) -> f64 {
    let Some(Bounds { expected, lower }) = bounds else {
        return 0.0;
    };
    if !(expected > 0.0 && lower > 0.0) {
        return 0.0;
    }
    let key = lane_key(order, task) * (lower / expected).min(1.0);
    if key.is_finite() {
        key
    } else {
        0.0
    }
}

/// Marks the express lane (`Task::prefetch`) among the queued `tasks` (`bounds[i]` is the
/// forecast of `tasks[i]`'s shard): a task goes there when, even at its forecast's lower bound,
/// its key under `order` is above the `quantile` of all queued tasks' keys
/// ([`schedule::prefetch_threshold`]), and above zero.
///
/// The lane goes first, before the order and outside the overtaking window. Comparing in the
/// order's own key makes that free where it matters: a task that is certainly among the densest
/// is one WSPT would take first anyway, so on a one-shot queue the lane leaves the expected
/// order as it was, while a certainly hot task enqueued late still overtakes the window. When
/// the lane compared loads, the hottest shard went first whatever its size: on ten real hourly
/// series (M4) and one copy channel it captured 0.979 of the foresight order's gain at 1 h,
/// against 1.000 for WSPT on the same forecasts.
pub fn mark_express(tasks: &mut [Task], bounds: &[Option<Bounds>], order: Order, quantile: f64) {
    let keys: Vec<f64> = tasks.iter().map(|t| lane_key(order, t)).collect();
    let threshold = schedule::prefetch_threshold(&keys, quantile);
    for (task, bounds) in tasks.iter_mut().zip(bounds) {
        let key = certain_key(order, task, *bounds);
        task.prefetch = key > threshold && key > 0.0;
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

    #[test]
    fn the_express_lane_compares_the_orders_key_at_the_lower_bound() {
        // The hottest shard is also the largest: by load it would be extreme, by density it is
        // the coldest, so WSPT keeps it out of the lane; the plain sort puts it there.
        let bounds = |expected: f64| {
            Some(Bounds {
                expected,
                lower: 0.9 * expected,
            })
        };
        let mut tasks = queued(&[(1e9, 100.0), (1e6, 10.0), (1e6, 5.0)]);
        let bounds = [bounds(100.0), bounds(10.0), None];
        mark_express(&mut tasks, &bounds, Order::Wspt, 0.5);
        assert_eq!(lane(&tasks), [false, true, false]);
        mark_express(&mut tasks, &bounds, Order::Score, 0.5);
        assert_eq!(lane(&tasks), [true, false, false]);
        // A wide interval keeps the densest out: at its lower bound it is no denser than the
        // middle task.
        let wide = [
            None,
            Some(Bounds {
                expected: 10.0,
                lower: 4.0,
            }),
            None,
        ];
        mark_express(&mut tasks, &wide, Order::Wspt, 0.5);
        assert_eq!(lane(&tasks), [false, false, false]);
        // Nothing without a forecast, a positive lower bound, or above the top quantile.
        mark_express(&mut tasks, &[None, None, None], Order::Wspt, 0.0);
        assert_eq!(lane(&tasks), [false, false, false]);
        let zero = Some(Bounds {
            expected: 10.0,
            lower: 0.0,
        });
        mark_express(&mut tasks, &[zero, zero, zero], Order::Wspt, 0.0);
        assert_eq!(lane(&tasks), [false, false, false]);
        mark_express(&mut tasks, &bounds, Order::Wspt, 1.0);
        assert_eq!(lane(&tasks), [false, false, false]);
    }

    proptest! {
        #[test]
        fn on_a_one_shot_queue_the_lane_passes_only_tasks_of_the_top_quantile(
            specs in proptest::collection::vec((1.0f64..1e9, 0.0f64..1e6, 0.0f64..=1.0), 1..100),
            quantile in 0.0f64..=1.0,
            certain in proptest::bool::ANY,
        ) {
            let mut tasks = queued(&specs.iter().map(|&(b, s, _)| (b, s)).collect::<Vec<_>>());
            let bounds: Vec<Option<Bounds>> = specs
                .iter()
                .map(|&(_, s, share)| {
                    let share = if certain { 1.0 } else { share };
                    Some(Bounds { expected: s.max(1.0), lower: s.max(1.0) * share })
                })
                .collect();
            mark_express(&mut tasks, &bounds, Order::Wspt, quantile);
            let densities: Vec<f64> = tasks.iter().map(density).collect();
            let threshold = schedule::prefetch_threshold(&densities, quantile);
            // A task the lane puts ahead of a denser one passes only tasks above the quantile.
            let slowest = tasks.iter().filter(|t| t.prefetch).map(density).fold(f64::INFINITY, f64::min);
            for t in tasks.iter().filter(|t| !t.prefetch && density(t) > slowest) {
                prop_assert!(density(t) > threshold);
            }
            // With certain forecasts, the lane is the top of WSPT's order: the dispatch order
            // is WSPT's.
            if certain {
                let order = schedule::dispatch_order(&tasks, Order::Wspt, f64::INFINITY);
                let mut wspt: Vec<usize> = (0..tasks.len()).collect();
                wspt.sort_by(|&a, &b| densities[b].total_cmp(&densities[a]).then(a.cmp(&b)));
                let keys = |o: &[usize]| o.iter().map(|&i| densities[i]).collect::<Vec<_>>();
                prop_assert_eq!(keys(&order), keys(&wspt));
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
