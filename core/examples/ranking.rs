//! Ranking on a multi-shard replay of real traces: the share of the next hour's load held by the
//! top-k shards as shardcast ranks them, against the true top-k (perfect foresight) and against
//! ranking by last value and by seasonal naive.
//!
//! cargo run --release -p shardcast-core --example ranking -- bench/data/nab/*.csv
//!
//! Each trace is normalised to mean 1 and replayed as four shards: ending 0, 1, 2 and 3 days
//! before the trace ends, at levels spread over 1x-3x, so that the ranking turns on each shard's
//! dynamics rather than on its units. Every hour of the last 4 days is an origin.

mod common;

use common::hourly;
use shardcast_core::forecast::{self, models, ModelKind, Profiles, Settings};

const EVAL_HOURS: usize = 4 * 24;
const HISTORY_HOURS: usize = 28 * 24;
const SHIFTS_DAYS: [usize; 4] = [0, 1, 2, 3];

fn top_share(predicted: &[f64], truth: &[f64], k: usize) -> f64 {
    let mut order: Vec<usize> = (0..predicted.len()).collect();
    order.sort_by(|&a, &b| predicted[b].total_cmp(&predicted[a]).then(a.cmp(&b)));
    let total: f64 = truth.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    order.iter().take(k).map(|&i| truth[i]).sum::<f64>() / total
}

fn main() {
    let mut shards: Vec<Vec<f64>> = Vec::new();
    for path in std::env::args().skip(1) {
        let series = forecast::prepare(&hourly(&path)).y;
        let mean = series.iter().sum::<f64>() / series.len() as f64;
        for (j, shift) in SHIFTS_DAYS.iter().enumerate() {
            let end = series.len() - shift * 24;
            let level = 1.0 + 2.0 * ((shards.len() * 7 + j) % 11) as f64 / 10.0;
            shards.push(
                series[..end]
                    .iter()
                    .map(|v| level * v / mean.max(f64::MIN_POSITIVE))
                    .collect(),
            );
        }
    }
    let n = shards.len();
    let settings = Settings::default();
    let ks = [1usize, 3, 5, 10];
    let methods = [
        "shardcast",
        "last value",
        "seasonal naive",
        "perfect foresight",
    ];
    let mut shares = vec![vec![0.0; ks.len()]; methods.len()];
    for back in (1..=EVAL_HOURS).rev() {
        let mut predictions = vec![vec![0.0; n]; 3];
        let mut truth = vec![0.0; n];
        for (s, y) in shards.iter().enumerate() {
            let t = y.len() - back;
            let history = &y[t.saturating_sub(HISTORY_HOURS)..t];
            truth[s] = y[t];
            predictions[0][s] = forecast::forecast(
                &forecast::History::from_loads(history),
                &settings,
                &Profiles::default(),
                0,
            )
            .point;
            let one = |m: ModelKind| models::predict(m, history, 1).map_or(0.0, |p| p[0]);
            predictions[1][s] = one(ModelKind::LastValue);
            predictions[2][s] = one(ModelKind::SeasonalNaiveDaily);
        }
        for (ki, &k) in ks.iter().enumerate() {
            for m in 0..3 {
                shares[m][ki] += top_share(&predictions[m], &truth, k);
            }
            shares[3][ki] += top_share(&truth, &truth, k);
        }
    }
    println!(
        "{n} shards, {EVAL_HOURS} hourly origins: share of the next hour's load held by the top k"
    );
    println!();
    print!("| ranking |");
    for k in ks {
        print!(" top {k} |");
    }
    println!();
    println!("|---|{}", "---:|".repeat(ks.len()));
    for (m, name) in methods.iter().enumerate() {
        print!("| {name} |");
        for (mine, best) in shares[m].iter().zip(&shares[3]) {
            let share = mine / EVAL_HOURS as f64;
            let oracle = best / EVAL_HOURS as f64;
            if m == 3 {
                print!(" {:.1}% |", 100.0 * share);
            } else {
                print!(
                    " {:.1}% ({:.0}% of best) |",
                    100.0 * share,
                    100.0 * share / oracle
                );
            }
        }
        println!();
    }
}
