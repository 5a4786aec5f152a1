//! The order of a Citus rebalance's moves, and what an order was worth: the hottest node's share
//! of the load while the moves run, for one plan in one order, replayed on the measured move
//! durations. Shards of a move group change node when its move finishes; moves are list-scheduled
//! in their order under the limits the driver keeps (a slot per node on source and target, one
//! move per colocation group).

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

/// A planned move as [`order`] weighs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// Node indexes into the node loads.
    pub source: usize,
    pub target: usize,
    /// The move group's predicted load.
    pub load: f64,
    /// The bytes it moves.
    pub bytes: f64,
}

/// A move's fixed set-up, as bytes: Citus takes 0.4-0.5 s to move even a group of a few hundred
/// kB (`block_writes`; more with logical replication), about what 32 MB take at the 76 MB/s it
/// moved bytes at (README, Citus). Without it a group of next to no bytes would rank first
/// whatever it relieves.
pub const MOVE_SETUP_BYTES: f64 = 32.0 * 1024.0 * 1024.0;

/// The order to run a plan's moves in: each next move is the one that most lowers the sum of the
/// nodes' squared loads per byte it moves (its bytes plus [`MOVE_SETUP_BYTES`]), on the node loads
/// as the moves before it left them. `node_loads[n]` is node n's predicted load now, with the
/// moves under way counted on their targets (a node past the end holds none).
///
/// Why this and not the move group's load per byte: a move is worth what it does to the balance,
/// and that depends on where the load goes. Moving load l from a node at L_s to one at L_t lowers
/// the sum of squares by 2 l (L_s - L_t - l): a hot group moved from a hot node to a cold one
/// counts most, the same group moved onto a node it makes the hottest counts against itself.
/// Load-blind plans (`by_disk_size`) have such moves; taken first for their load per byte, they
/// raise the hottest node's share for most of the rebalance. Each move's gain per byte is Smith's
/// rule for the time the imbalance lasts; a move that worsens the balance now (a negative gain)
/// goes late, when the moves before it may have made room for it. Ties keep the plan's order, so
/// without loads the plan runs as planned. O(moves²); `step` runs once per move placed (the
/// extension checks for interrupts there).
pub fn order(moves: &[Planned], node_loads: &[f64], mut step: impl FnMut()) -> Vec<usize> {
    let finite = |x: f64| if x.is_finite() { x.max(0.0) } else { 0.0 };
    let nodes = moves
        .iter()
        .flat_map(|m| [m.source, m.target])
        .max()
        .map_or(0, |n| n + 1)
        .max(node_loads.len());
    let mut at: Vec<f64> = (0..nodes)
        .map(|n| finite(node_loads.get(n).copied().unwrap_or(0.0)))
        .collect();
    let gain = |m: &Planned, at: &[f64]| {
        if m.source == m.target {
            return 0.0;
        }
        let l = finite(m.load);
        let g = 2.0 * l * (at[m.source] - at[m.target] - l) / (finite(m.bytes) + MOVE_SETUP_BYTES);
        if g.is_nan() {
            0.0
        } else {
            g
        }
    };
    // A move's gain changes only when a move touching its source or target is taken.
    let mut gains: Vec<f64> = moves.iter().map(|m| gain(m, &at)).collect();
    let mut left: Vec<usize> = (0..moves.len()).collect();
    let mut out = Vec::with_capacity(moves.len());
    while !left.is_empty() {
        step();
        // The first of the best: `left` keeps the plan's order.
        let mut best = 0;
        for k in 1..left.len() {
            if gains[left[k]] > gains[left[best]] {
                best = k;
            }
        }
        let i = left.remove(best);
        let m = &moves[i];
        if m.source != m.target {
            let l = finite(m.load);
            at[m.source] -= l;
            at[m.target] += l;
            let touched = [m.source, m.target];
            for &j in &left {
                let o = &moves[j];
                if touched.contains(&o.source) || touched.contains(&o.target) {
                    gains[j] = gain(o, &at);
                }
            }
        }
        out.push(i);
    }
    out
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

/// Each of `nodes` nodes' load: the sum of `loads` (per group, negative ones as 0) over the groups
/// `placement` puts on it (a group placed past the last node is left out).
pub fn node_loads(loads: &[f64], placement: &[usize], nodes: usize) -> Vec<f64> {
    let mut node_load = vec![0.0; nodes];
    for (g, &n) in placement.iter().enumerate() {
        if let (Some(l), Some(slot)) = (loads.get(g), node_load.get_mut(n)) {
            *slot += l.max(0.0);
        }
    }
    node_load
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
    let mut node_load = node_loads(loads, placement, nodes);
    let mut at = placement.to_vec();
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

    const MB: f64 = 1024.0 * 1024.0;

    fn planned(source: usize, target: usize, load: f64, bytes: f64) -> Planned {
        Planned {
            source,
            target,
            load,
            bytes,
        }
    }

    /// The replayed mean share of `moves` (group i is move i's) in `sequence`, one move at a time,
    /// 1 s each.
    fn mean_share(loads: &[f64], placement: &[usize], plan: &[Planned], sequence: &[usize]) -> f64 {
        let moves: Vec<Move> = sequence
            .iter()
            .map(|&i| mv(i, plan[i].source, plan[i].target, i as i64, 1.0))
            .collect();
        let finishes: Vec<f64> = schedule(&moves, 1).iter().map(|s| s.1).collect();
        let nodes = placement.iter().max().map_or(0, |n| n + 1).max(3);
        hottest_share(
            loads,
            placement,
            nodes,
            &moves,
            &finishes,
            moves.len() as f64,
        )
        .unwrap()
        .mean
    }

    #[test]
    fn a_load_blind_plan_does_not_pile_load_on_a_node_first() {
        // Node 0 holds a hot group (4) and a cold one (1), node 1 two warm ones (3 each), node 2
        // is new. A plan blind to load moves the hot group onto node 1 and node 1's two groups
        // to node 2. The hot group has the most load per byte; moved first it makes node 1 carry
        // 10 of 14 until the others leave.
        let loads = [4.0, 3.0, 3.0, 1.0];
        let placement = [0, 1, 1, 0];
        // (Citus's greedy plans the hot group's move first.) Bytes in GB, where a move's set-up
        // is small.
        let plan = [
            planned(0, 1, 4.0, 1024.0 * MB),
            planned(1, 2, 3.0, 2048.0 * MB),
            planned(1, 2, 3.0, 2048.0 * MB),
        ];
        let node_loads = [5.0, 6.0, 0.0];
        let greedy = order(&plan, &node_loads, || {});
        assert_eq!(greedy, vec![1, 2, 0]);
        let density = vec![0, 1, 2];
        let (ours, dense) = (
            mean_share(&loads, &placement, &plan, &greedy),
            mean_share(&loads, &placement, &plan, &density),
        );
        // Greedy: 5, 6, 6 of 11 after each move (0.515 mean); density: 10, 7, 6 (0.697).
        assert!(ours < dense - 0.15, "{ours} against {dense}");
    }

    #[test]
    fn the_hot_group_leaves_the_hottest_node_first() {
        // As in moving_the_hot_group_first...: the hot group from node 0 (8) to the new node,
        // before the cold one from node 1 (2), whatever the plan's order.
        let plan = [planned(1, 2, 1.0, MB), planned(0, 2, 4.0, MB)];
        assert_eq!(order(&plan, &[8.0, 2.0, 0.0], || {}), vec![1, 0]);
        // A hot group alone on its node gains little by moving to an empty one: the cold move
        // that spreads load goes first.
        assert_eq!(order(&plan, &[4.1, 3.0], || {}), vec![0, 1]);
        // A move's set-up counts: a hot group of 0 bytes does not outrank a hotter move of a
        // few MB, as it would per byte alone.
        let plan = [planned(0, 2, 1.0, 0.0), planned(1, 2, 4.0, 4.0 * MB)];
        assert_eq!(order(&plan, &[10.0, 10.0, 0.0], || {}), vec![1, 0]);
    }

    #[test]
    fn without_loads_the_plan_runs_in_its_own_order() {
        let plan = [
            planned(0, 1, 0.0, 5.0),
            planned(1, 2, 0.0, 1.0),
            planned(2, 0, f64::NAN, 1.0),
        ];
        assert_eq!(order(&plan, &[], || {}), vec![0, 1, 2]);
        assert!(order(&[], &[1.0], || {}).is_empty());
        // `step` runs once per move.
        let mut steps = 0;
        order(&plan, &[], || steps += 1);
        assert_eq!(steps, 3);
    }

    proptest::proptest! {
        #[test]
        fn every_move_is_ordered_once_and_the_first_gains_most_per_byte(
            raw in proptest::collection::vec((0usize..5, 0usize..5, 0.0f64..100.0, 0.0f64..1e6), 1..40),
            node_loads in proptest::collection::vec(0.0f64..500.0, 0..5),
        ) {
            let plan: Vec<Planned> = raw.iter().map(|&(s, t, l, b)| planned(s, t, l, b)).collect();
            let sequence = order(&plan, &node_loads, || {});
            let mut sorted = sequence.clone();
            sorted.sort_unstable();
            proptest::prop_assert_eq!(sorted, (0..plan.len()).collect::<Vec<_>>());
            let at = |n: usize| node_loads.get(n).copied().unwrap_or(0.0);
            let gain = |m: &Planned| if m.source == m.target { 0.0 } else {
                2.0 * m.load * (at(m.source) - at(m.target) - m.load) / (m.bytes + MOVE_SETUP_BYTES)
            };
            let first = gain(&plan[sequence[0]]);
            for m in &plan {
                proptest::prop_assert!(gain(m) <= first);
            }
        }
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
