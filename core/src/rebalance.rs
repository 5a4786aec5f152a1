//! What a Citus rebalance's order was worth: the hottest node's share of the load while the moves
//! run, for one plan in one order, replayed on the measured move durations. Shards of a move
//! group change node when its move finishes; moves are list-scheduled in their order under the
//! limits the driver keeps (a slot per node on source and target, one move per colocation group).

/// One move of a plan, in the order it is replayed.
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    /// The move group (index into the loads and placement).
    pub group: usize,
    pub source: usize,
    pub target: usize,
    pub colocation: i64,
    /// Seconds it takes (measured, or [`estimate_duration`]).
    pub duration: f64,
}

/// The hottest node's share of the load over a replay.
#[derive(Clone, Debug, PartialEq)]
pub struct Shares {
    /// Before the first move finishes.
    pub start: f64,
    /// Time-weighted mean over [0, window): what the rebalance's order is judged by.
    pub mean: f64,
    /// After every move.
    pub end: f64,
    /// The hottest node after every move.
    pub hottest_end: usize,
}

/// The shortest a move is taken to last, in seconds.
const MIN_DURATION: f64 = 1e-3;

/// (start, finish) of each move when `moves` are dispatched in their order: each starts as soon
/// as its source and its target each have one of `per_node` slots free and no other move of its
/// colocation group runs (and never before the move dispatched before it started: the driver
/// claims in order). O(moves²) in the worst case, fine for a plan's hundreds of moves.
pub fn schedule(moves: &[Move], per_node: usize) -> Vec<(f64, f64)> {
    let per_node = per_node.max(1);
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(moves.len());
    let mut earliest = 0.0_f64;
    for (i, m) in moves.iter().enumerate() {
        // The earliest time at or after `earliest` when the limits let this move start: one of
        // the finish times of the moves before it, or `earliest` itself.
        let mut candidates: Vec<f64> = out[..i]
            .iter()
            .map(|&(_, f)| f)
            .filter(|&f| f > earliest)
            .collect();
        candidates.push(earliest);
        candidates.sort_by(f64::total_cmp);
        let start = candidates
            .into_iter()
            .find(|&t| {
                let running = |j: usize| out[j].0 <= t && t < out[j].1;
                let on = |node: usize| {
                    (0..i)
                        .filter(|&j| {
                            running(j) && (moves[j].source == node || moves[j].target == node)
                        })
                        .count()
                };
                on(m.source) < per_node
                    && on(m.target) < per_node
                    && !(0..i).any(|j| running(j) && moves[j].colocation == m.colocation)
            })
            .unwrap_or(earliest);
        let finish = start + m.duration.max(MIN_DURATION);
        out.push((start, finish));
        earliest = start;
    }
    out
}

/// The hottest node's share of `loads` (per group, on `placement[group]` at first) when each
/// move is applied at its finish (`finishes`), over [0, `window`) (a window shorter than the
/// replay is taken to its end). None when there is no load.
pub fn hottest_share(
    loads: &[f64],
    placement: &[usize],
    nodes: usize,
    moves: &[Move],
    finishes: &[f64],
    window: f64,
) -> Option<Shares> {
    let total: f64 = loads.iter().filter(|l| l.is_finite() && **l > 0.0).sum();
    if total <= 0.0 || nodes == 0 {
        return None;
    }
    let mut node_load = vec![0.0; nodes];
    let mut at = placement.to_vec();
    for (g, &n) in placement.iter().enumerate() {
        if let (Some(l), Some(slot)) = (loads.get(g), node_load.get_mut(n)) {
            *slot += l.max(0.0);
        }
    }
    let share = |node_load: &[f64]| node_load.iter().cloned().fold(0.0, f64::max) / total;
    let start = share(&node_load);
    let mut events: Vec<(f64, usize)> = finishes.iter().cloned().zip(0..moves.len()).collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let end_time = window.max(events.last().map(|e| e.0).unwrap_or(0.0));
    let (mut area, mut last, mut current) = (0.0, 0.0, start);
    for (t, i) in events {
        area += current * (t - last);
        last = t;
        let m = &moves[i];
        let load = loads.get(m.group).cloned().unwrap_or(0.0).max(0.0);
        // A group moves from where it is: its plan's source, unless an earlier move took it.
        let from = at.get(m.group).cloned().unwrap_or(m.source);
        if from < nodes && m.target < nodes && from != m.target {
            node_load[from] -= load;
            node_load[m.target] += load;
            if let Some(slot) = at.get_mut(m.group) {
                *slot = m.target;
            }
        }
        current = share(&node_load);
    }
    area += current * (end_time - last);
    let hottest_end = (0..nodes)
        .max_by(|&a, &b| node_load[a].total_cmp(&node_load[b]))
        .unwrap_or(0);
    Some(Shares {
        start,
        mean: if end_time > 0.0 {
            area / end_time
        } else {
            current
        },
        end: current,
        hottest_end,
    })
}

/// A move's duration when it was not measured: the measured moves' seconds per byte times its
/// bytes, and never less than the quickest measured move (a move costs Citus a fixed set-up
/// whatever its size). None without a measured move.
pub fn estimate_duration(bytes: f64, measured: &[(f64, f64)]) -> Option<f64> {
    let measured: Vec<(f64, f64)> = measured
        .iter()
        .cloned()
        .filter(|(b, s)| b.is_finite() && *b >= 0.0 && s.is_finite() && *s > 0.0)
        .collect();
    if measured.is_empty() {
        return None;
    }
    let quickest = measured.iter().map(|m| m.1).fold(f64::INFINITY, f64::min);
    let (bytes_sum, secs_sum) = measured
        .iter()
        .fold((0.0, 0.0), |(b, s), m| (b + m.0, s + m.1));
    let by_bytes = if bytes_sum > 0.0 {
        secs_sum / bytes_sum * bytes.max(0.0)
    } else {
        0.0
    };
    Some(by_bytes.max(quickest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(group: usize, source: usize, target: usize, colocation: i64, duration: f64) -> Move {
        Move {
            group,
            source,
            target,
            colocation,
            duration,
        }
    }

    #[test]
    fn one_colocation_group_moves_one_at_a_time() {
        let moves = [mv(0, 0, 2, 1, 2.0), mv(1, 1, 2, 1, 3.0)];
        assert_eq!(schedule(&moves, 4), vec![(0.0, 2.0), (2.0, 5.0)]);
    }

    #[test]
    fn a_node_takes_per_node_moves_at_once_and_other_nodes_run_beside() {
        let moves = [
            mv(0, 0, 2, 1, 2.0),
            mv(1, 1, 2, 2, 3.0),
            mv(2, 1, 3, 3, 1.0),
        ];
        // One per node: the second waits for node 2, the third for node 1 (and never starts
        // before the second, which was dispatched before it).
        assert_eq!(
            schedule(&moves, 1),
            vec![(0.0, 2.0), (2.0, 5.0), (5.0, 6.0)]
        );
        // Two per node: all but the limits of colocation run at once.
        assert_eq!(
            schedule(&moves, 2),
            vec![(0.0, 2.0), (0.0, 3.0), (0.0, 1.0)]
        );
    }

    #[test]
    fn moving_the_hot_group_first_lowers_the_mean_share_not_the_end() {
        // Node 0 holds two hot groups (4 each), node 1 two cold ones (1 each), node 2 is new;
        // the plan moves a hot group and a cold one to node 2.
        let loads = [4.0, 4.0, 1.0, 1.0];
        let placement = [0, 0, 1, 1];
        let hot_first = [mv(0, 0, 2, 1, 1.0), mv(2, 1, 2, 1, 1.0)];
        let hot_last = [mv(2, 1, 2, 1, 1.0), mv(0, 0, 2, 1, 1.0)];
        let run = |moves: &[Move]| {
            let finishes: Vec<f64> = schedule(moves, 1).iter().map(|s| s.1).collect();
            hottest_share(&loads, &placement, 3, moves, &finishes, 2.0).unwrap()
        };
        let (first, last) = (run(&hot_first), run(&hot_last));
        assert_eq!((first.start, first.end, first.hottest_end), (0.8, 0.5, 2));
        assert_eq!((last.start, last.end, last.hottest_end), (0.8, 0.5, 2));
        // Hot first: 0.8 for 1 s, then 0.4; hot last: 0.8 for both seconds.
        assert!((first.mean - 0.6).abs() < 1e-12, "{first:?}");
        assert!((last.mean - 0.8).abs() < 1e-12, "{last:?}");
    }

    #[test]
    fn after_a_replay_ends_its_share_holds_for_the_rest_of_the_window() {
        let shares =
            hottest_share(&[1.0, 1.0], &[0, 0], 2, &[mv(0, 0, 1, 1, 1.0)], &[1.0], 4.0).unwrap();
        assert_eq!((shares.start, shares.end), (1.0, 0.5));
        assert!((shares.mean - (1.0 + 0.5 * 3.0) / 4.0).abs() < 1e-12);
        assert!(hottest_share(&[0.0], &[0], 1, &[], &[], 1.0).is_none());
    }

    #[test]
    fn unmeasured_moves_take_the_measured_rate_and_at_least_the_quickest_move() {
        let measured = [(100.0, 2.0), (300.0, 6.0)];
        assert_eq!(estimate_duration(1000.0, &measured), Some(20.0));
        assert_eq!(estimate_duration(10.0, &measured), Some(2.0));
        assert_eq!(estimate_duration(10.0, &[]), None);
    }
}
