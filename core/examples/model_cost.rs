//! Cost of fitting each candidate model once on 28 days of hourly history.
//!
//! cargo run --release -p shardcast-core --example model_cost

use std::time::Instant;

use shardcast_core::forecast::{self, models, ModelKind, Settings};

fn main() {
    let y: Vec<f64> = (0..28 * 24)
        .map(|i| {
            1000.0
                * (1.0 + 0.6 * ((i % 24) as f64 * std::f64::consts::PI / 12.0).sin())
                * (0.8 + 0.4 * ((i * 7919 % 101) as f64 / 101.0))
        })
        .collect();
    let runs = 200;
    for model in ModelKind::candidates(y.len(), 1)
        .into_iter()
        .chain([ModelKind::Mstl, ModelKind::Ets])
    {
        let started = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(models::predict(model, &y, 1));
        }
        println!(
            "{:>22}: {:8.3} ms per fit",
            model.name(),
            started.elapsed().as_secs_f64() * 1000.0 / runs as f64
        );
    }
    let history = forecast::History::from_loads(&y);
    let started = Instant::now();
    for _ in 0..20 {
        std::hint::black_box(forecast::select(&history.cleaned(), &Settings::default()));
    }
    println!(
        "{:>22}: {:8.3} ms per shard",
        "selection (backtest)",
        started.elapsed().as_secs_f64() * 1000.0 / 20.0
    );
}
