//! One-line Unicode charts for psql.

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Draws `history` (oldest first) as bars scaled to the largest value, then `│` and the
/// forecast on the same scale when there is one. Non-finite or negative values draw as zero.
pub fn sparkline(history: &[f64], forecast: Option<f64>) -> String {
    let clean = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
    let max = history
        .iter()
        .copied()
        .chain(forecast)
        .map(clean)
        .fold(0.0, f64::max);
    let bar = |v: f64| {
        if max <= 0.0 {
            BARS[0]
        } else {
            BARS[((clean(v) / max) * (BARS.len() - 1) as f64).round() as usize]
        }
    };
    let mut line: String = history.iter().map(|&v| bar(v)).collect();
    if let Some(f) = forecast {
        line.push('│');
        line.push(bar(f));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_history_and_forecast_on_one_scale() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0], Some(8.0)), "▁▂▃▅│█");
        assert_eq!(sparkline(&[], None), "");
        assert_eq!(sparkline(&[0.0, f64::NAN], Some(0.0)), "▁▁│▁");
    }
}
