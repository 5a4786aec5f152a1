//! The dispatch order: the express lane first, then the order's key within a bounded
//! overtaking window, so that no task waits forever; with the reason for each place.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::order::{compare, order_key};
use super::{Order, Task};

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
/// express lane goes first whatever its tasks' enqueue times, so the bound holds because
/// `crate::queue::mark_express` takes no task enqueued more than the window after the oldest
/// queued one.
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
    let window = overtake_window(window_secs);
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

/// An overtaking window of `secs` as the dispatch order and the express lane read it: negative
/// is 0, and so is NaN.
pub fn overtake_window(secs: f64) -> f64 {
    if secs.is_nan() {
        0.0
    } else {
        secs.max(0.0)
    }
}

/// The `quantile` of `keys` (interpolated; infinite without keys): what a task's key at its
/// forecast's lower bound must exceed for the express lane ([`crate::queue::mark_express`]).
pub fn prefetch_threshold(keys: &[f64], quantile: f64) -> f64 {
    let mut sorted: Vec<f64> = keys.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f64::INFINITY;
    }
    sorted.sort_by(f64::total_cmp);
    let position = quantile.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (position.floor() as usize, position.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (position - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::density;
    use crate::schedule::testing::{arbitrary_tasks, task};
    use proptest::prelude::*;

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
    /// arriving within the window) that the bound counts at its arrival. With `lane` (a quantile
    /// and the window the lane is held to), the hot tasks' scores vary (1000-2000, spread
    /// evenly) and every replan marks the express lane, every forecast certain
    /// (`crate::queue::mark_express`); the third value is the bytes of express tasks enqueued
    /// after the cold task's window that went before it.
    fn simulate_stream(
        window: f64,
        bandwidth: f64,
        hot_bytes: f64,
        every: f64,
        cold_at: f64,
        until: f64,
        lane: Option<(f64, f64)>,
    ) -> (Option<f64>, f64, f64) {
        const COLD: i64 = -1;
        let score = |i: usize| match lane {
            Some(_) => 1000.0 * (1.0 + ((i * 37) % 100) as f64 / 100.0),
            None => 1000.0,
        };
        let mut arrivals: Vec<Task> = (0..)
            .map(|i| i as f64 * every)
            .take_while(|at| *at < until)
            .enumerate()
            .map(|(i, at)| Task {
                enqueued_at: at,
                ..task(i as i64, hot_bytes, score(i), 1)
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
        let mut express_late = 0.0;
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
                if let Some((quantile, lane_window)) = lane {
                    let certain = vec![1.0; queue.len()];
                    crate::queue::mark_express(
                        &mut queue,
                        &certain,
                        Order::Wspt,
                        quantile,
                        lane_window,
                    );
                }
                let first = dispatch_order(&queue, Order::Wspt, window)[0];
                let task = queue.swap_remove(first);
                if task.task_id == COLD {
                    return (Some(now), counted.unwrap_or(0.0), express_late);
                }
                if task.prefetch && task.enqueued_at > cold_at + window && counted.is_some() {
                    express_late += task.bytes;
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
        (None, counted.unwrap_or(0.0), express_late)
    }

    #[test]
    fn an_endless_stream_of_hot_tasks_does_not_starve_a_cold_one() {
        // 1 MB hot tasks every 0.5 s on a 1 MB/s channel: the backlog grows without end.
        let (bandwidth, hot, every, cold_at, window) = (1e6, 1e6, 0.5, 10.25, 30.0);
        let (dispatched, counted, _) =
            simulate_stream(window, bandwidth, hot, every, cold_at, 1000.0, None);
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
        let (starved, _, _) =
            simulate_stream(f64::INFINITY, bandwidth, hot, every, cold_at, 1000.0, None);
        assert_eq!(starved, None);
    }

    #[test]
    fn the_express_lane_in_an_endless_stream_keeps_the_wait_bound() {
        // As above, the hot tasks' densities varied and every forecast certain, so that each
        // replan sends the densest of the queue to the express lane: the window bounds it, and
        // the cold task starts within the bound that holds without the lane. (A lane outside the
        // window took most new arrivals, the backlog keeping the less dense: it starved.)
        let (bandwidth, hot, every, cold_at, window) = (1e6, 1e6, 0.5, 10.25, 30.0);
        for quantile in [0.99, 0.9, 0.5] {
            let (dispatched, counted, late) = simulate_stream(
                window,
                bandwidth,
                hot,
                every,
                cold_at,
                2000.0,
                Some((quantile, window)),
            );
            let dispatched = dispatched.expect("the cold task is dispatched");
            let wait = dispatched - cold_at;
            let bound = counted / bandwidth;
            assert!(
                wait <= bound + 1e-9,
                "q {quantile}: waited {wait} s, bound {bound} s"
            );
            assert_eq!(late, 0.0, "q {quantile}: a task past the window went first");
        }
        // With the lane outside the window, it starves.
        let lane = Some((0.99, f64::INFINITY));
        let (starved, _, _) = simulate_stream(window, bandwidth, hot, every, cold_at, 2000.0, lane);
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
