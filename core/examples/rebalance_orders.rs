//! The order of a rebalance's moves, on many synthetic clusters: the hottest node's mean share of
//! the load while the moves run, in the plan's own order, in the order of the move group's load
//! per byte (shardcast 0.1's), and in shardcast's (`rebalance::order`: the most imbalance relieved
//! per byte first), each replayed by `rebalance::schedule` and `rebalance::hottest_share` as
//! `citus_rebalance_report` replays them.
//!
//! cargo run --release -p shardcast-core --example rebalance_orders -- [clusters]
//!
//! A cluster: 3-6 nodes holding 24-240 move groups placed round robin, as Citus places shards,
//! and one node added empty. Loads are Zipfian over the groups (exponent 0.6-1.4, in random
//! order), bytes log-normal (σ = 1). Three plans are made the way Citus's rebalancer makes them,
//! moving a group from the most utilised node to the least while that lowers the spread: by
//! group count (`by_shard_count`), by bytes (`by_disk_size`), both blind to load, and by load
//! (the `shardcast` strategy: utilisation is the load, at least 1 per group). A move lasts 0.5 s
//! plus its bytes at 76 MB/s (a `block_writes` move measured by `make bench-citus`), one at a
//! time per node. Synthetic plans, not Citus's own: `make bench-citus` replays real ones.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use shardcast_core::rebalance::{self, Move, Planned};

struct Cluster {
    nodes: usize,
    placement: Vec<usize>,
    loads: Vec<f64>,
    bytes: Vec<f64>,
}

fn cluster(seed: u64) -> Cluster {
    let mut rng = StdRng::seed_from_u64(seed);
    let old = rng.gen_range(3..=6);
    let groups = old * rng.gen_range(8..=40);
    let exponent = rng.gen_range(0.6..1.4);
    let mut loads: Vec<f64> = (1..=groups)
        .map(|rank| 1000.0 / (rank as f64).powf(exponent))
        .collect();
    loads.shuffle(&mut rng);
    let size = LogNormal::new((16.0 * 1024.0 * 1024.0_f64).ln(), 1.0).expect("valid");
    Cluster {
        nodes: old + 1,
        placement: (0..groups).map(|g| g % old).collect(),
        loads,
        bytes: (0..groups).map(|_| size.sample(&mut rng)).collect(),
    }
}

/// Citus's greedy balancing on `cost` per group: from the most utilised node, the first group
/// (in group order) whose move to the least utilised node lowers the larger of the two, until
/// the spread is within 10% of the average or no group helps.
fn plan(c: &Cluster, cost: &[f64]) -> Vec<(usize, usize, usize)> {
    let mut at = c.placement.clone();
    let mut util = vec![0.0; c.nodes];
    for (g, &n) in at.iter().enumerate() {
        util[n] += cost[g];
    }
    let average = util.iter().sum::<f64>() / c.nodes as f64;
    let mut moves = Vec::new();
    for _ in 0..10 * at.len() {
        let most = (0..c.nodes)
            .max_by(|&a, &b| util[a].total_cmp(&util[b]))
            .unwrap();
        let least = (0..c.nodes)
            .min_by(|&a, &b| util[a].total_cmp(&util[b]))
            .unwrap();
        if util[most] - util[least] <= 0.1 * average {
            break;
        }
        let Some(g) = (0..at.len()).find(|&g| at[g] == most && util[least] + cost[g] < util[most])
        else {
            break;
        };
        // A group moved twice is one move from its first source to its last target.
        match moves
            .iter_mut()
            .find(|m: &&mut (usize, usize, usize)| m.0 == g)
        {
            Some(m) => m.2 = least,
            None => moves.push((g, most, least)),
        }
        at[g] = least;
        util[most] -= cost[g];
        util[least] += cost[g];
    }
    moves.retain(|m| m.1 != m.2);
    moves
}

fn mean_share(c: &Cluster, moves: &[Move], window: f64) -> f64 {
    let finishes: Vec<f64> = rebalance::schedule(moves, 1).iter().map(|s| s.1).collect();
    rebalance::hottest_share(&c.loads, &c.placement, c.nodes, moves, &finishes, window)
        .map_or(0.0, |s| s.mean)
}

fn main() {
    let clusters: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    println!("# Rebalance orders on {clusters} synthetic clusters (hottest node's mean share while the moves run)\n");
    println!("| plan | moves (mean) | start | plan's order | load per byte | **shardcast** | end | shardcast lower / higher than load per byte | than plan's |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, which) in [("by_shard_count", 0), ("by_disk_size", 1), ("by load", 2)] {
        let (mut n, mut moves_sum, mut start, mut end) = (0.0, 0.0, 0.0, 0.0);
        let mut sums = [0.0; 3];
        let (mut below_density, mut below_plan, mut above_density, mut above_plan) = (0, 0, 0, 0);
        for seed in 0..clusters {
            let c = cluster(seed);
            let cost: Vec<f64> = match which {
                0 => vec![1.0; c.loads.len()],
                1 => c.bytes.clone(),
                _ => c.loads.iter().map(|l| l.max(1.0)).collect(),
            };
            let planned = plan(&c, &cost);
            if planned.is_empty() {
                continue;
            }
            let as_move = |&(g, s, t): &(usize, usize, usize)| Move {
                group: g,
                source: s,
                target: t,
                colocation: g as i64,
                duration: 0.5 + c.bytes[g] / (76.0 * 1024.0 * 1024.0),
            };
            let own: Vec<Move> = planned.iter().map(as_move).collect();
            let mut density = own.clone();
            let per_byte = |m: &Move| c.loads[m.group] / c.bytes[m.group].max(1.0);
            density.sort_by(|a, b| per_byte(b).total_cmp(&per_byte(a)));
            let node_loads = rebalance::node_loads(&c.loads, &c.placement, c.nodes);
            let weighed: Vec<Planned> = own
                .iter()
                .map(|m| Planned {
                    source: m.source,
                    target: m.target,
                    load: c.loads[m.group],
                    bytes: c.bytes[m.group],
                })
                .collect();
            let ours: Vec<Move> = rebalance::order(&weighed, &node_loads, || {})
                .into_iter()
                .map(|i| own[i].clone())
                .collect();
            // Every order over the same window: the plan's moves take as long in any order but
            // for how they fit the per-node limit; the longest replay sets it.
            let window = [&own, &density, &ours]
                .iter()
                .map(|m| {
                    rebalance::schedule(m, 1)
                        .iter()
                        .map(|s| s.1)
                        .fold(0.0, f64::max)
                })
                .fold(0.0, f64::max);
            let shares = [
                mean_share(&c, &own, window),
                mean_share(&c, &density, window),
                mean_share(&c, &ours, window),
            ];
            let finishes: Vec<f64> = rebalance::schedule(&own, 1).iter().map(|s| s.1).collect();
            let whole =
                rebalance::hottest_share(&c.loads, &c.placement, c.nodes, &own, &finishes, window)
                    .expect("load");
            n += 1.0;
            moves_sum += own.len() as f64;
            start += whole.start;
            end += whole.end;
            for (sum, share) in sums.iter_mut().zip(shares) {
                *sum += share;
            }
            below_density += usize::from(shares[2] < shares[1] - 1e-9);
            below_plan += usize::from(shares[2] < shares[0] - 1e-9);
            above_density += usize::from(shares[2] > shares[1] + 1e-9);
            above_plan += usize::from(shares[2] > shares[0] + 1e-9);
        }
        println!(
            "| {name} | {:.0} | {:.3} | {:.3} | {:.3} | **{:.3}** | {:.3} | {below_density} / {above_density} of {n} | {below_plan} / {above_plan} |",
            moves_sum / n,
            start / n,
            sums[0] / n,
            sums[1] / n,
            sums[2] / n,
            end / n,
        );
    }
}
