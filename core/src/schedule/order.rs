//! The keys tasks are ordered by: Smith's rule (WSPT, score per byte), score, or catalog order.

use std::cmp::Ordering;

use super::{Task, MIN_TASK_BYTES};

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

/// Score per byte to copy: the WSPT key.
pub fn density(task: &Task) -> f64 {
    let d = task.score.max(0.0) / task.bytes.max(MIN_TASK_BYTES);
    if d.is_finite() {
        d
    } else {
        0.0
    }
}

/// Which of two tasks goes first under `order` (`Less`: `a`); ties go to the lower task id.
pub(super) fn compare(order: Order, a: &Task, b: &Task) -> Ordering {
    let key = match order {
        Order::Wspt => density(b).total_cmp(&density(a)),
        Order::Score => b.score.total_cmp(&a.score),
        Order::Fifo => Ordering::Equal,
    };
    key.then(a.task_id.cmp(&b.task_id))
}

/// The key `order` sorts by (highest first; FIFO by task id, lowest first).
pub fn order_key(order: Order, task: &Task) -> f64 {
    match order {
        Order::Wspt => density(task),
        Order::Score => task.score,
        Order::Fifo => task.task_id as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::dispatch_order;
    use crate::schedule::testing::task;

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
}
