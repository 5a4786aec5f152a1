//! How much prioritization was worth: access-weighted availability (AWA) of a replication order,
//! the share of all accesses during a window that hit shards already copied (see DESIGN.md).

use crate::schedule::MIN_TASK_BYTES;

/// Accesses of one shard spread evenly over [start, end) (seconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accesses {
    pub shard: usize,
    pub start: f64,
    pub end: f64,
    pub load: f64,
}

/// AWA over `window` when shard i is ready at `ready[i]`: accesses are taken as spread evenly
/// over their bucket, clipped to the window. 0 when nothing was accessed.
pub fn awa(ready: &[f64], accesses: &[Accesses], window: (f64, f64)) -> f64 {
    let (from, to) = window;
    let (mut hit, mut total) = (0.0, 0.0);
    for a in accesses {
        let (start, end) = (a.start.max(from), a.end.min(to));
        let width = a.end - a.start;
        if end <= start || width <= 0.0 || !(a.load.is_finite() && a.load > 0.0) {
            continue;
        }
        let in_window = a.load * (end - start) / width;
        total += in_window;
        let ready_at = ready.get(a.shard).copied().unwrap_or(f64::INFINITY);
        let copied_from = ready_at.max(start);
        if copied_from < end {
            hit += in_window * (end - copied_from) / (end - start);
        }
    }
    if total > 0.0 {
        hit / total
    } else {
        0.0
    }
}

/// Ready times when shards are copied one after another in `order` over one channel of
/// `bandwidth` bytes/s starting at `start`.
pub fn sequential_ready(bytes: &[f64], order: &[usize], bandwidth: f64, start: f64) -> Vec<f64> {
    let mut ready = vec![f64::INFINITY; bytes.len()];
    let mut t = start;
    for &i in order {
        t += bytes[i].max(MIN_TASK_BYTES) / bandwidth.max(f64::MIN_POSITIVE);
        ready[i] = t;
    }
    ready
}

/// The perfect-foresight order: WSPT on the true load during the window.
pub fn oracle_order(bytes: &[f64], accesses: &[Accesses], window: (f64, f64)) -> Vec<usize> {
    let mut load = vec![0.0; bytes.len()];
    for a in accesses {
        let (start, end) = (a.start.max(window.0), a.end.min(window.1));
        if end > start && a.end > a.start && a.shard < load.len() {
            load[a.shard] += a.load * (end - start) / (a.end - a.start);
        }
    }
    let mut order: Vec<usize> = (0..bytes.len()).collect();
    order.sort_by(|&a, &b| {
        (load[b] / bytes[b].max(MIN_TASK_BYTES))
            .total_cmp(&(load[a] / bytes[a].max(MIN_TASK_BYTES)))
            .then(a.cmp(&b))
    });
    order
}

/// Capture: how much of the gap between FIFO and perfect foresight the realised order closed.
pub fn capture(realised: f64, fifo: f64, oracle: f64) -> Option<f64> {
    let gap = oracle - fifo;
    (gap.abs() > 1e-12).then(|| (realised - fifo) / gap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awa_counts_accesses_after_the_copy() {
        let accesses = [
            Accesses {
                shard: 0,
                start: 0.0,
                end: 10.0,
                load: 100.0,
            },
            Accesses {
                shard: 1,
                start: 0.0,
                end: 10.0,
                load: 100.0,
            },
        ];
        // Shard 0 ready at 5 (half of its accesses hit), shard 1 never.
        assert!((awa(&[5.0, f64::INFINITY], &accesses, (0.0, 10.0)) - 0.25).abs() < 1e-12);
        assert_eq!(awa(&[0.0, 0.0], &accesses, (0.0, 10.0)), 1.0);
        assert_eq!(awa(&[0.0], &[], (0.0, 10.0)), 0.0);
    }

    #[test]
    fn hot_small_first_beats_fifo_and_the_oracle_bounds_it() {
        let bytes = [1e9, 1e6];
        let accesses = [
            Accesses {
                shard: 0,
                start: 0.0,
                end: 100.0,
                load: 1.0,
            },
            Accesses {
                shard: 1,
                start: 0.0,
                end: 100.0,
                load: 1000.0,
            },
        ];
        let window = (0.0, 100.0);
        let fifo = awa(
            &sequential_ready(&bytes, &[0, 1], 1e7, 0.0),
            &accesses,
            window,
        );
        let oracle_ready =
            sequential_ready(&bytes, &oracle_order(&bytes, &accesses, window), 1e7, 0.0);
        let oracle = awa(&oracle_ready, &accesses, window);
        assert!(oracle > fifo + 0.5, "{oracle} vs {fifo}");
        assert_eq!(capture(oracle, fifo, oracle), Some(1.0));
        assert_eq!(capture(fifo, fifo, oracle), Some(0.0));
        assert_eq!(capture(0.5, 0.5, 0.5), None);
    }
}
