//! shardcast's forecaster as a filter, for benchmarks against other forecasters.
//!
//! cargo run --release -p shardcast-core --example forecast_cli -- --horizon 4 --level 0.8
//!
//! Reads JSON lines `{"id": .., "y": [hourly loads, oldest first, null = unknown],
//! "next_hour": UTC hour of the point after the last, "recent" and "recent_hour": optional loads
//! per hour, the last three 5-minute buckets' (each capped at the largest after it) and the last
//! hour's, both ending at the last whole 5-minute bucket (the hour defaults to the last point)}`
//! and writes, per line and in order,
//! `{"id": .., "model": .., "members": {..}, "point": .., "lower": .., "upper": .., "expected": ..,
//! "path": [..]}`: the point forecast of the total over the horizon, its interval, the expected
//! total and its hourly path, made exactly as the extension makes them (selection by backtest,
//! combination, calibrated interval).

use std::io::{BufRead, Write};

use serde_json::{json, Value};
use shardcast_core::forecast::{self, Profiles, Settings};

fn main() {
    // Bad input is a message and exit status 2, not a panic.
    if let Err(message) = run() {
        eprintln!("forecast_cli: {message}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    // A flag that is given must parse (a horizon of at least 1): a typo is no default.
    fn parsed<T: std::str::FromStr>(
        flag: &str,
        given: Option<String>,
        default: T,
    ) -> Result<T, String> {
        given.map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("{flag} {v:?} is not a number"))
        })
    }
    let defaults = Settings::default();
    let settings = Settings {
        horizon: parsed("--horizon", value("--horizon"), 1)?,
        level: parsed("--level", value("--level"), defaults.level)?,
        origins: parsed("--origins", value("--origins"), defaults.origins)?,
        origin_stride: parsed("--stride", value("--stride"), defaults.origin_stride)?,
        members: parsed("--members", value("--members"), defaults.members)?,
    };
    if settings.horizon == 0 {
        return Err("--horizon must be at least 1 hour".into());
    }
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    for (number, line) in stdin.lock().lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: unreadable: {e}", number + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let input: Value = serde_json::from_str(&line)
            .map_err(|e| format!("line {}: not a JSON object: {e}", number + 1))?;
        let raw: Vec<f64> = input
            .get("y")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("line {}: no array \"y\" of hourly loads", number + 1))?
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect();
        let next_hour = input["next_hour"].as_u64().unwrap_or(0) as usize % 24;
        // The recent excess over the last hour, as the extension reads it (both ending at the
        // last whole 5-minute bucket; the hour defaults to the series' last).
        let hour = input["recent_hour"].as_f64().or(raw.last().copied());
        let excess = input["recent"]
            .as_f64()
            .zip(hour)
            .map(|(recent, hour)| recent - hour);
        let history = forecast::prepare(&raw).with_recent_excess(excess);
        let f = forecast::forecast(&history, &settings, &Profiles::default(), next_hour);
        let members: serde_json::Map<String, Value> = f
            .selection
            .members
            .iter()
            .map(|(m, w)| (m.name().to_owned(), json!(w)))
            .collect();
        let output = json!({
            "id": input["id"],
            "model": f.model_name(),
            "members": members,
            "point": f.point,
            "expected": f.expected,
            "lower": f.lower,
            "upper": f.upper,
            "path": f.path,
        });
        writeln!(out, "{output}").map_err(|e| format!("writing the output: {e}"))?;
    }
    out.flush().map_err(|e| format!("writing the output: {e}"))
}
