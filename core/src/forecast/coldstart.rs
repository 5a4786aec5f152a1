//! Cold start: a shard with under a day of history borrows the daily profile of the cluster it
//! resembles. Profiles are k-means centroids (linfa-clustering) of the normalised daily
//! profiles of shards that have at least two days of history.

use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_clustering::KMeans;
use ndarray::Array2;

use super::models::{ModelKind, DAY};
use super::sanitise;

/// Profiles are learnt from at most this many recent days of each shard.
const PROFILE_DAYS: usize = 14;
const MAX_CLUSTERS: usize = 8;
/// A profile must explain a young shard's hours this much better than a flat line to be used.
const PROFILE_ADVANTAGE: f64 = 0.9;

/// Daily load profiles (24 hourly shares, mean 1), from k-means over shards with history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profiles {
    centroids: Vec<[f64; DAY]>,
}

/// The hour of day of point `i` of a series of `len` points whose next point falls at
/// `next_hour`.
fn hour_of(i: usize, len: usize, next_hour: usize) -> usize {
    (next_hour % DAY + DAY * (len / DAY + 1) - (len - i)) % DAY
}

/// A shard's mean daily shape over its recent days, divided by its mean; None for a shard
/// with under two days of history or no load.
fn daily_profile(y: &[f64], next_hour: usize) -> Option<[f64; DAY]> {
    if y.len() < 2 * DAY {
        return None;
    }
    let start = y.len().saturating_sub(PROFILE_DAYS * DAY);
    let mut sums = [0.0; DAY];
    let mut counts = [0usize; DAY];
    for (i, &v) in y.iter().enumerate().skip(start) {
        let h = hour_of(i, y.len(), next_hour);
        sums[h] += v;
        counts[h] += 1;
    }
    let mut profile = [0.0; DAY];
    for h in 0..DAY {
        profile[h] = sums[h] / counts[h].max(1) as f64;
    }
    let mean = profile.iter().sum::<f64>() / DAY as f64;
    if !(mean.is_finite() && mean > 0.0) {
        return None;
    }
    Some(profile.map(|v| v / mean))
}

impl Profiles {
    /// Learns profiles from shards' histories: (hourly series, UTC hour of its next point).
    pub fn fit<'a>(histories: impl IntoIterator<Item = (&'a [f64], usize)>) -> Profiles {
        let rows: Vec<[f64; DAY]> = histories
            .into_iter()
            .filter_map(|(y, h)| daily_profile(y, h))
            .collect();
        if rows.len() < 4 {
            return Profiles { centroids: rows };
        }
        let k = (rows.len() / 4).clamp(1, MAX_CLUSTERS);
        let data = Array2::from_shape_fn((rows.len(), DAY), |(r, c)| rows[r][c]);
        let Ok(model) = KMeans::params(k)
            .max_n_iterations(100)
            .fit(&DatasetBase::from(data))
        else {
            return Profiles::default();
        };
        let centroids = model
            .centroids()
            .rows()
            .into_iter()
            .filter_map(|row| {
                let mut c = [0.0; DAY];
                for (slot, v) in c.iter_mut().zip(row.iter()) {
                    *slot = sanitise(*v);
                }
                (c.iter().sum::<f64>() > 0.0).then_some(c)
            })
            .collect();
        Profiles { centroids }
    }

    pub fn len(&self) -> usize {
        self.centroids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.centroids.is_empty()
    }

    /// Forecast for a young shard: the nearest profile scaled to the shard's level (least
    /// squares over the hours it has), or its recent mean when no profile fits better than a
    /// flat line.
    pub fn forecast(&self, y: &[f64], next_hour: usize, horizon: usize) -> (ModelKind, Vec<f64>) {
        let n = y.len();
        if n == 0 {
            return (ModelKind::RecentMean, vec![0.0; horizon]);
        }
        let mean = super::models::recent_mean(y);
        let flat_error: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
        let hours: Vec<usize> = (0..n).map(|i| hour_of(i, n, next_hour)).collect();
        let best = self
            .centroids
            .iter()
            .filter_map(|c| {
                let shape: Vec<f64> = hours.iter().map(|&h| c[h]).collect();
                let energy: f64 = shape.iter().map(|s| s * s).sum();
                if energy <= 0.0 {
                    return None;
                }
                let level = y.iter().zip(&shape).map(|(v, s)| v * s).sum::<f64>() / energy;
                let error: f64 = y
                    .iter()
                    .zip(&shape)
                    .map(|(v, s)| (v - level * s).powi(2))
                    .sum();
                Some((c, level, error))
            })
            .min_by(|a, b| a.2.total_cmp(&b.2));
        match best {
            Some((c, level, error))
                if n >= 3 && level > 0.0 && error < flat_error * PROFILE_ADVANTAGE =>
            {
                let path = (0..horizon)
                    .map(|k| sanitise(c[(next_hour + k) % DAY] * level))
                    .collect();
                (ModelKind::ClusterProfile, path)
            }
            _ => (ModelKind::RecentMean, vec![sanitise(mean); horizon]),
        }
    }
}
