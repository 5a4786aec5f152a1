//! Forecast accuracy on real traces: rolling-origin MASE at a 1-hour horizon of the model
//! shardcast selects, of seasonal naive and of last value.
//!
//! cargo run --release -p shardcast-core --example accuracy -- ../shared/data/nab/*.csv
//!
//! Each CSV (`timestamp,value`) is one shard's access rate. It is summed into hourly loads (gaps
//! left as gaps, partial hours scaled up), and every hour of the last 7 days is an origin: each
//! forecast sees only the 28 days before it, as the extension's history would.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::hourly;
use shardcast_core::forecast::{self, models, ModelKind, Profiles, Settings};

const EVAL_HOURS: usize = 7 * 24;
const HISTORY_HOURS: usize = 28 * 24;

fn main() {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let defaults = Settings::default();
    let settings = Settings {
        origins: env("BACKTEST_ORIGINS", defaults.origins),
        origin_stride: env("BACKTEST_STRIDE", defaults.origin_stride),
        ..defaults
    };
    let mut rows = Vec::new();
    let started = Instant::now();
    let (mut total_covered, mut total_evaluated) = (0usize, 0usize);
    for path in &paths {
        let series = hourly(path);
        let name = std::path::Path::new(path)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let n = series.len();
        let prepared = forecast::prepare(&series);
        let scale = forecast::mase_scale(&prepared[..n - EVAL_HOURS], 1);
        let (mut auto, mut snaive, mut last) = (0.0, 0.0, 0.0);
        let mut covered = 0usize;
        let mut chosen: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut evaluated = 0;
        for t in n - EVAL_HOURS..n {
            if series[t].is_nan() {
                continue;
            }
            let history = forecast::prepare(&series[t.saturating_sub(HISTORY_HOURS)..t]);
            let truth = series[t];
            let f = forecast::forecast(&history, &settings, &Profiles::default(), 0);
            *chosen.entry(f.model.name()).or_default() += 1;
            let total = |m: ModelKind| models::predict(m, &history, 1).map_or(0.0, |p| p[0]);
            auto += (truth - f.point).abs();
            covered += usize::from(f.lower <= truth && truth <= f.upper);
            snaive += (truth - total(ModelKind::SeasonalNaiveDaily)).abs();
            last += (truth - total(ModelKind::LastValue)).abs();
            evaluated += 1;
        }
        let mase = |e: f64| e / evaluated as f64 / scale;
        rows.push((name, mase(auto), mase(snaive), mase(last), chosen));
        total_covered += covered;
        total_evaluated += evaluated;
    }
    println!("| series | shardcast (auto) | seasonal naive | last value | auto / seasonal naive | models chosen |");
    println!("|---|---:|---:|---:|---:|---|");
    for (name, a, s, l, chosen) in &rows {
        let models: Vec<String> = chosen.iter().map(|(m, c)| format!("{m} {c}")).collect();
        println!(
            "| {name} | {a:.3} | {s:.3} | {l:.3} | {:.2} | {} |",
            a / s,
            models.join(", ")
        );
    }
    let k = rows.len() as f64;
    let mean = |f: fn(&(String, f64, f64, f64, BTreeMap<&str, usize>)) -> f64| {
        rows.iter().map(f).sum::<f64>() / k
    };
    let geo = |f: fn(&(String, f64, f64, f64, BTreeMap<&str, usize>)) -> f64| {
        (rows.iter().map(|r| f(r).ln()).sum::<f64>() / k).exp()
    };
    println!(
        "| **mean** | {:.3} | {:.3} | {:.3} | {:.2} | |",
        mean(|r| r.1),
        mean(|r| r.2),
        mean(|r| r.3),
        mean(|r| r.1) / mean(|r| r.2)
    );
    println!(
        "| **geometric mean** | {:.3} | {:.3} | {:.3} | {:.2} | |",
        geo(|r| r.1),
        geo(|r| r.2),
        geo(|r| r.3),
        geo(|r| r.1) / geo(|r| r.2)
    );
    println!(
        "\n80% interval coverage: {:.0}% of {} origins; {:.1} s in all",
        100.0 * total_covered as f64 / total_evaluated.max(1) as f64,
        total_evaluated,
        started.elapsed().as_secs_f64()
    );
}
