//! How much prioritization was worth: access-weighted availability (AWA) of a replication order,
//! the share of all accesses during a window that hit shards already copied (see DESIGN.md).

/// The shortest a copy is taken to last, in seconds.
const MIN_DURATION: f64 = 1e-3;

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

/// Ready times when the copies are dispatched in `order` to `channels` parallel workers starting
/// at `start`, each copy taking its `durations[i]` seconds (list scheduling: the next copy goes to
/// the first worker free). Replaying other orders with the run's own workers and the copies' own
/// measured durations compares orders, not throughput. With one channel and durations of
/// bytes / B this is DESIGN.md's definition (Cⱼ = bytes up to and including j / B); real syncs
/// also pay a fixed latency per table, which that definition would credit to FIFO alone.
///
/// O(copies × log(channels)): the first free worker comes from a heap, not a scan of them all.
pub fn replay_ready(durations: &[f64], order: &[usize], channels: usize, start: f64) -> Vec<f64> {
    let mut ready = vec![f64::INFINITY; durations.len()];
    let mut workers = crate::schedule::Slots::new(0..channels.max(1), start);
    for &i in order {
        let Some(duration) = durations.get(i) else {
            continue;
        };
        if let Some((_, _, finish)) = workers.assign(duration.max(MIN_DURATION)) {
            ready[i] = finish;
        }
    }
    ready
}

/// The most copies that were in flight at once, from their (start, end) intervals: the run's
/// workers.
pub fn max_concurrency(intervals: &[(f64, f64)]) -> usize {
    let mut events: Vec<(f64, i32)> = intervals
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end.max(start), -1)])
        .collect();
    // Ends before starts at the same instant: a worker that finishes is free for the next.
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in events {
        now += step;
        most = most.max(now);
    }
    most.max(1) as usize
}

/// The perfect-foresight order: Smith's rule on the true load during the window per second of
/// copying.
pub fn oracle_order(durations: &[f64], accesses: &[Accesses], window: (f64, f64)) -> Vec<usize> {
    let mut load = vec![0.0; durations.len()];
    for a in accesses {
        let (start, end) = (a.start.max(window.0), a.end.min(window.1));
        if end > start && a.end > a.start && a.shard < load.len() {
            load[a.shard] += a.load * (end - start) / (a.end - a.start);
        }
    }
    let mut order: Vec<usize> = (0..durations.len()).collect();
    order.sort_by(|&a, &b| {
        (load[b] / durations[b].max(MIN_DURATION))
            .total_cmp(&(load[a] / durations[a].max(MIN_DURATION)))
            .then(a.cmp(&b))
    });
    order
}

/// Capture: how much of the gap between FIFO and perfect foresight the realised order closed.
pub fn capture(realised: f64, fifo: f64, oracle: f64) -> Option<f64> {
    let gap = oracle - fifo;
    (gap.abs() > 1e-12).then(|| (realised - fifo) / gap)
}

/// Capture of `order` for a one-shot queue copied on one channel of `bandwidth` bytes/s from the
/// start of `window`, with shard i's `bytes[i]` to copy and `load[i]` accesses spread evenly over
/// the window: DESIGN.md's one-channel definition, FIFO being index order and the oracle Smith's
/// rule on the true load. None when no order can do better than FIFO.
pub fn one_channel_capture(
    bytes: &[f64],
    load: &[f64],
    bandwidth: f64,
    window: (f64, f64),
    order: &[usize],
) -> Option<f64> {
    let durations: Vec<f64> = bytes.iter().map(|b| b / bandwidth).collect();
    let accesses: Vec<Accesses> = load
        .iter()
        .enumerate()
        .map(|(shard, &load)| Accesses {
            shard,
            start: window.0,
            end: window.1,
            load,
        })
        .collect();
    let awa_of = |order: &[usize]| {
        awa(
            &replay_ready(&durations, order, 1, window.0),
            &accesses,
            window,
        )
    };
    let fifo: Vec<usize> = (0..durations.len()).collect();
    let oracle = oracle_order(&durations, &accesses, window);
    capture(awa_of(order), awa_of(&fifo), awa_of(&oracle))
}

/// A shard's first successful copy in the window a report covers (seconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Copied {
    pub bytes: f64,
    pub claimed_at: f64,
    pub finished_at: f64,
}

/// What prioritization was worth on a run of copies: `shardcast.prioritization_report`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    pub copies: usize,
    /// The first claim and the last finish.
    pub start: f64,
    pub end: f64,
    pub bytes: f64,
    /// Bytes per second over the run (each copy at least a page).
    pub bandwidth: f64,
    /// AWA of the order the copies were made in, of FIFO and of perfect foresight, both
    /// replayed on the run's own workers with each copy taking as long as it did.
    pub realised: f64,
    pub fifo: f64,
    pub oracle: f64,
    pub capture: Option<f64>,
}

/// The span the copies cover, from the first claim to the last finish (the accesses to read);
/// None without copies.
pub fn span(copies: &[Copied]) -> Option<(f64, f64)> {
    if copies.is_empty() {
        return None;
    }
    let start = copies
        .iter()
        .map(|c| c.claimed_at)
        .fold(f64::INFINITY, f64::min);
    let end = copies
        .iter()
        .map(|c| c.finished_at)
        .fold(f64::NEG_INFINITY, f64::max);
    Some((start, end))
}

/// Evaluates the copies (in catalog, FIFO, order; `Accesses::shard` indexes them) against the
/// accesses during their [`span`]. None without copies.
pub fn evaluate(copies: &[Copied], accesses: &[Accesses]) -> Option<Evaluation> {
    let (start, end) = span(copies)?;
    let window = (start, end.max(start));
    let bytes: Vec<f64> = copies.iter().map(|c| c.bytes).collect();
    let bandwidth = bytes
        .iter()
        .map(|b| b.max(crate::schedule::MIN_TASK_BYTES))
        .sum::<f64>()
        / (end - start).max(1e-3);
    let realised_ready: Vec<f64> = copies.iter().map(|c| c.finished_at).collect();
    let realised = awa(&realised_ready, accesses, window);
    let intervals: Vec<(f64, f64)> = copies
        .iter()
        .map(|c| (c.claimed_at, c.finished_at))
        .collect();
    let durations: Vec<f64> = intervals
        .iter()
        .map(|(from, to)| (to - from).max(0.0))
        .collect();
    let workers = max_concurrency(&intervals);
    let replay = |order: &[usize]| {
        awa(
            &replay_ready(&durations, order, workers, start),
            accesses,
            window,
        )
    };
    let fifo = replay(&(0..copies.len()).collect::<Vec<_>>());
    let oracle = replay(&oracle_order(&durations, accesses, window));
    Some(Evaluation {
        copies: copies.len(),
        start,
        end,
        bytes: bytes.iter().sum::<f64>(),
        bandwidth,
        realised,
        fifo,
        oracle,
        capture: capture(realised, fifo, oracle),
    })
}

#[cfg(test)]
mod evaluation_tests {
    use super::*;

    fn copied(bytes: f64, claimed_at: f64, finished_at: f64) -> Copied {
        Copied {
            bytes,
            claimed_at,
            finished_at,
        }
    }

    #[test]
    fn no_copies_no_report() {
        assert_eq!(span(&[]), None);
        assert_eq!(evaluate(&[], &[]), None);
    }

    #[test]
    fn hot_shard_copied_first_captures_the_gap() {
        // One worker: shard 0 (cold) queued first, shard 1 (hot) copied first.
        let copies = [copied(1000.0, 10.0, 20.0), copied(1000.0, 0.0, 10.0)];
        assert_eq!(span(&copies), Some((0.0, 20.0)));
        let accesses = [Accesses {
            shard: 1,
            start: 0.0,
            end: 20.0,
            load: 100.0,
        }];
        let e = evaluate(&copies, &accesses).unwrap();
        assert_eq!(e.copies, 2);
        assert_eq!((e.start, e.end, e.bytes), (0.0, 20.0, 2000.0));
        assert_eq!(e.bandwidth, 2.0 * crate::schedule::MIN_TASK_BYTES / 20.0);
        assert!((e.realised - 0.5).abs() < 1e-9);
        assert!(e.fifo.abs() < 1e-9, "FIFO copies the hot shard last");
        assert!((e.oracle - 0.5).abs() < 1e-9);
        assert_eq!(e.capture, Some(1.0));
    }
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
        let durations = [100.0, 0.1];
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
            &replay_ready(&durations, &[0, 1], 1, 0.0),
            &accesses,
            window,
        );
        let oracle_ready = replay_ready(
            &durations,
            &oracle_order(&durations, &accesses, window),
            1,
            0.0,
        );
        let oracle = awa(&oracle_ready, &accesses, window);
        assert!(oracle > fifo + 0.5, "{oracle} vs {fifo}");
        assert_eq!(capture(oracle, fifo, oracle), Some(1.0));
        assert_eq!(capture(fifo, fifo, oracle), Some(0.0));
        assert_eq!(capture(0.5, 0.5, 0.5), None);
    }

    #[test]
    fn one_channel_capture_is_1_for_the_oracle_and_0_for_fifo() {
        let (bytes, load) = ([100e6, 1e6, 10e6], [1.0, 1000.0, 10.0]);
        let capture_of =
            |order: &[usize]| one_channel_capture(&bytes, &load, 1e6, (0.0, 200.0), order);
        assert_eq!(capture_of(&[0, 1, 2]), Some(0.0));
        assert!((capture_of(&[1, 2, 0]).unwrap() - 1.0).abs() < 1e-12);
        assert!(capture_of(&[2, 0, 1]).unwrap() < 0.0);
    }

    #[test]
    fn a_replay_sends_each_copy_to_the_first_free_worker() {
        let ready = replay_ready(&[3.0, 1.0, 1.0, 1.0], &[0, 1, 2, 3], 2, 10.0);
        assert_eq!(ready, vec![13.0, 11.0, 12.0, 13.0]);
        assert_eq!(replay_ready(&[1.0, 2.0], &[1, 0], 1, 0.0), vec![3.0, 2.0]);
        assert_eq!(replay_ready(&[1.0], &[0, 5], 0, 0.0), vec![1.0]);
        // Workers no copy reaches cost nothing.
        assert_eq!(
            replay_ready(&[1.0, 2.0], &[0, 1], usize::MAX / 2, 0.0),
            vec![1.0, 2.0]
        );
    }

    #[test]
    fn concurrency_counts_overlapping_copies_only() {
        assert_eq!(max_concurrency(&[(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]), 2);
        assert_eq!(max_concurrency(&[(0.0, 1.0), (1.0, 2.0)]), 1);
        assert_eq!(max_concurrency(&[]), 1);
    }
}
