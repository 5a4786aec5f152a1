//! Reading the traces in bench/data: `timestamp,value` CSVs.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;

/// The trace summed into hourly loads: gaps stay NaN, partial hours are scaled up to a full one.
pub fn hourly(path: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(path).expect("readable CSV");
    let mut samples: Vec<(i64, f64)> = Vec::new();
    for line in text.lines().skip(1) {
        let mut parts = line.split(',');
        let (Some(ts), Some(v)) = (parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(ts), Ok(v)) = (
            NaiveDateTime::parse_from_str(ts.trim(), "%Y-%m-%d %H:%M:%S"),
            v.trim().parse::<f64>(),
        ) else {
            continue;
        };
        samples.push((ts.and_utc().timestamp(), v));
    }
    let step = samples
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .filter(|d| *d > 0)
        .min()
        .unwrap_or(3600);
    let per_hour = (3600 / step.max(1)).max(1) as f64;
    let mut hours: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
    for (t, v) in samples {
        let e = hours.entry(t.div_euclid(3600)).or_default();
        e.0 += v;
        e.1 += 1.0;
    }
    let (first, last) = (*hours.keys().next().unwrap(), *hours.keys().last().unwrap());
    (first..=last)
        .map(|h| {
            hours
                .get(&h)
                .map_or(f64::NAN, |(sum, n)| sum * per_hour / n)
        })
        .collect()
}
