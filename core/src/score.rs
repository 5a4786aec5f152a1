//! Shard Priority Scores: forecast load × class weight, lifted along foreign keys, published
//! with hysteresis, mapped to a 0-1000 priority weight and grouped into tiers.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// A score after priority inheritance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lifted {
    pub score: f64,
    /// How much inheritance added to the shard's own score.
    pub lift: f64,
    /// The referencing shard whose score lifted this one (the next hop on the chain).
    pub source: Option<i32>,
}

/// A shard's own score: forecast load × class weight. Never negative, never NaN.
pub fn base_score(predicted_load: f64, class_weight: f64) -> f64 {
    let score = predicted_load * class_weight;
    if score.is_finite() && score > 0.0 {
        score
    } else if score == f64::INFINITY {
        f64::MAX
    } else {
        0.0
    }
}

#[derive(PartialEq)]
struct Candidate {
    score: f64,
    shard: i32,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.shard.cmp(&self.shard))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Priority inheritance over foreign keys: a table that hot tables reference is lifted toward
/// their score, `factor` × the referencing table's (lifted) score, along whole chains, so that
/// the tables a query joins arrive together. `references` holds (referencing, referenced)
/// pairs. `factor` is clamped to [0, 1], which keeps lifts finite on cyclic references.
pub fn inherit(
    base: &HashMap<i32, f64>,
    references: &[(i32, i32)],
    factor: f64,
) -> HashMap<i32, Lifted> {
    let factor = if factor.is_finite() {
        factor.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut referenced_by: HashMap<i32, Vec<i32>> = HashMap::new();
    for &(from, to) in references {
        if from != to && base.contains_key(&from) && base.contains_key(&to) {
            referenced_by.entry(from).or_default().push(to);
        }
    }
    let mut lifted: HashMap<i32, Lifted> = base
        .iter()
        .map(|(&id, &score)| {
            (
                id,
                Lifted {
                    score,
                    lift: 0.0,
                    source: None,
                },
            )
        })
        .collect();
    // Highest first, as in Dijkstra's algorithm: with factor <= 1 a lift never exceeds its
    // source, so once a shard is taken from the heap its score is final.
    let mut heap: BinaryHeap<Candidate> = base
        .iter()
        .map(|(&shard, &score)| Candidate { score, shard })
        .collect();
    let mut settled = std::collections::HashSet::new();
    while let Some(Candidate { score, shard }) = heap.pop() {
        if !settled.insert(shard) {
            continue;
        }
        for &to in referenced_by.get(&shard).map(Vec::as_slice).unwrap_or(&[]) {
            let offered = score * factor;
            let current = lifted[&to];
            if offered > current.score && !settled.contains(&to) {
                let own = base[&to];
                lifted.insert(
                    to,
                    Lifted {
                        score: offered,
                        lift: offered - own,
                        source: Some(shard),
                    },
                );
                heap.push(Candidate {
                    score: offered,
                    shard: to,
                });
            }
        }
    }
    lifted
}

/// The score consumers see moves only when the change is material: by more than `threshold`
/// (a fraction, 0.2 = 20%) of the published value, as load-based rebalancers do so that queues
/// do not thrash. A first score, or a move from or to zero, is always published.
pub fn with_hysteresis(published: Option<f64>, fresh: f64, threshold: f64) -> f64 {
    match published {
        Some(old)
            if old > 0.0 && fresh > 0.0 && ((fresh - old).abs() / old) <= threshold.max(0.0) =>
        {
            old
        }
        _ => fresh,
    }
}

/// Maps scores to priority weights 0-1000: `round(1000 × ln(1 + score) / ln(1 + max score))`.
/// Monotone (a higher score never gets a lower weight), 1000 for the top shard, 0 for a zero
/// score; the logarithm keeps the many cold shards distinguishable from each other.
pub fn priority_weights(scores: &[f64]) -> Vec<u16> {
    let max = scores
        .iter()
        .copied()
        .filter(|s| s.is_finite())
        .fold(0.0f64, f64::max);
    let denominator = max.ln_1p();
    scores
        .iter()
        .map(|&s| {
            if !(s.is_finite() && s > 0.0 && denominator > 0.0) {
                return 0;
            }
            (1000.0 * (s.ln_1p() / denominator))
                .round()
                .clamp(0.0, 1000.0) as u16
        })
        .collect()
}

/// Groups shards into `tiers` priority tiers (1 = hottest) by one-dimensional k-means on
/// ln(1 + score), seeded at quantiles so that the result is deterministic. Equal scores always
/// share a tier, and a higher score never lands in a lower tier.
pub fn tiers(scores: &[f64], tiers: usize) -> Vec<u8> {
    let n = scores.len();
    let k = tiers.clamp(1, 255).min(n.max(1));
    if n == 0 {
        return Vec::new();
    }
    let values: Vec<f64> = scores
        .iter()
        .map(|&s| {
            if s.is_finite() && s > 0.0 {
                s.ln_1p()
            } else {
                0.0
            }
        })
        .collect();
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    // Seeds at quantiles of the distinct values, so that a crowd of equal scores does not
    // swallow the seeds of the other tiers.
    let mut distinct = sorted.clone();
    distinct.dedup();
    let m = distinct.len();
    let mut centroids: Vec<f64> = (0..k.min(m))
        .map(|i| distinct[((2 * i + 1) * m) / (2 * k.min(m))])
        .collect();
    centroids.dedup();
    let mut boundaries = Vec::new();
    for _ in 0..100 {
        // In one dimension the clusters are intervals: boundaries are centroid midpoints.
        boundaries = centroids
            .windows(2)
            .map(|w| (w[0] + w[1]) / 2.0)
            .collect::<Vec<_>>();
        let mut sums = vec![0.0; centroids.len()];
        let mut counts = vec![0usize; centroids.len()];
        for &v in &sorted {
            let c = boundaries.partition_point(|&b| b < v);
            sums[c] += v;
            counts[c] += 1;
        }
        let next: Vec<f64> = centroids
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                if counts[i] > 0 {
                    sums[i] / counts[i] as f64
                } else {
                    c
                }
            })
            .collect();
        if next == centroids {
            break;
        }
        centroids = next;
    }
    let clusters = centroids.len();
    values
        .iter()
        .map(|&v| {
            let ascending = boundaries.partition_point(|&b| b < v);
            (clusters - ascending) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(i32, f64)]) -> HashMap<i32, f64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn base_score_is_never_negative_or_nan() {
        assert_eq!(base_score(10.0, 2.0), 20.0);
        assert_eq!(base_score(-1.0, 2.0), 0.0);
        assert_eq!(base_score(f64::NAN, 1.0), 0.0);
        assert_eq!(base_score(f64::INFINITY, 1.0), f64::MAX);
    }

    #[test]
    fn a_hot_table_lifts_what_it_references_along_the_chain() {
        // orders (1) -> customers (2) -> regions (3); products (4) is unrelated.
        let base = map(&[(1, 1000.0), (2, 10.0), (3, 1.0), (4, 5.0)]);
        let lifted = inherit(&base, &[(1, 2), (2, 3)], 0.5);
        assert_eq!(
            lifted[&2],
            Lifted {
                score: 500.0,
                lift: 490.0,
                source: Some(1)
            }
        );
        assert_eq!(
            lifted[&3],
            Lifted {
                score: 250.0,
                lift: 249.0,
                source: Some(2)
            }
        );
        assert_eq!(lifted[&1].lift, 0.0);
        assert_eq!(
            lifted[&4],
            Lifted {
                score: 5.0,
                lift: 0.0,
                source: None
            }
        );
    }

    #[test]
    fn inheritance_never_lowers_a_score_and_survives_cycles() {
        let base = map(&[(1, 100.0), (2, 300.0)]);
        let lifted = inherit(&base, &[(1, 2), (2, 1), (1, 1)], 1.0);
        assert_eq!(lifted[&2].score, 300.0);
        assert_eq!(
            lifted[&1],
            Lifted {
                score: 300.0,
                lift: 200.0,
                source: Some(2)
            }
        );
        let none = inherit(&base, &[(1, 2)], 0.0);
        assert_eq!(none[&2].score, 300.0);
        assert_eq!(none[&1].score, 100.0);
    }

    #[test]
    fn hysteresis_holds_small_moves_and_publishes_material_ones() {
        assert_eq!(with_hysteresis(None, 5.0, 0.2), 5.0);
        assert_eq!(with_hysteresis(Some(100.0), 115.0, 0.2), 100.0);
        assert_eq!(with_hysteresis(Some(100.0), 85.0, 0.2), 100.0);
        assert_eq!(with_hysteresis(Some(100.0), 130.0, 0.2), 130.0);
        assert_eq!(with_hysteresis(Some(100.0), 0.0, 0.2), 0.0);
        assert_eq!(with_hysteresis(Some(0.0), 0.1, 0.2), 0.1);
    }

    #[test]
    fn priority_weights_span_zero_to_a_thousand() {
        assert_eq!(priority_weights(&[0.0, 1e6, 999.0]), vec![0, 1000, 500]);
        assert_eq!(priority_weights(&[]), Vec::<u16>::new());
        assert_eq!(priority_weights(&[0.0, 0.0]), vec![0, 0]);
    }

    #[test]
    fn tiers_separate_orders_of_magnitude() {
        let scores = [1e6, 2e6, 1.5e6, 1e3, 2e3, 1.0, 2.0, 0.0];
        assert_eq!(tiers(&scores, 3), vec![1, 1, 1, 2, 2, 3, 3, 3]);
        assert_eq!(tiers(&[5.0, 5.0, 5.0], 3), vec![1, 1, 1]);
        assert_eq!(tiers(&[], 3), Vec::<u8>::new());
    }

    proptest! {
        #[test]
        fn weights_and_tiers_are_monotone(scores in proptest::collection::vec(0.0f64..1e12, 1..200), k in 1usize..6) {
            let weights = priority_weights(&scores);
            let tier = tiers(&scores, k);
            for i in 0..scores.len() {
                for j in 0..scores.len() {
                    if scores[i] > scores[j] {
                        prop_assert!(weights[i] >= weights[j]);
                        prop_assert!(tier[i] <= tier[j]);
                    }
                }
                prop_assert!(weights[i] <= 1000);
                prop_assert!(tier[i] >= 1 && tier[i] as usize <= k);
            }
        }

        #[test]
        fn inheritance_only_lifts_and_never_beyond_the_hottest(
            scores in proptest::collection::vec(0.0f64..1e9, 1..30),
            edges in proptest::collection::vec((0i32..30, 0i32..30), 0..60),
            factor in 0.0f64..1.0,
        ) {
            let base: HashMap<i32, f64> = scores.iter().enumerate().map(|(i, &s)| (i as i32, s)).collect();
            let hottest = scores.iter().copied().fold(0.0, f64::max);
            let lifted = inherit(&base, &edges, factor);
            for (id, l) in &lifted {
                prop_assert!(l.score >= base[id] && l.score <= hottest && l.lift >= 0.0);
                prop_assert_eq!(l.source.is_some(), l.lift > 0.0);
            }
        }
    }
}

/// One shard going into scoring.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreInput {
    pub shard_id: i32,
    pub predicted_load: f64,
    pub class_weight: f64,
    /// The score published last time, for hysteresis.
    pub published: Option<f64>,
}

/// One shard's published score.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreRow {
    pub shard_id: i32,
    pub base_score: f64,
    pub lift: f64,
    pub lift_source: Option<i32>,
    pub score: f64,
    pub priority_weight: u16,
    pub tier: u8,
    /// 1 = highest score; among equal scores, the higher own score, then the lower shard id.
    pub rank: u32,
}

/// How scores are published.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreSettings {
    pub inheritance_factor: f64,
    pub hysteresis: f64,
    pub tiers: usize,
}

/// The whole scoring step: base scores, inheritance over `references` (referencing,
/// referenced), hysteresis against the published scores, then weights, tiers and ranks.
pub fn score_all(
    inputs: &[ScoreInput],
    references: &[(i32, i32)],
    settings: &ScoreSettings,
) -> Vec<ScoreRow> {
    let base: HashMap<i32, f64> = inputs
        .iter()
        .map(|i| (i.shard_id, base_score(i.predicted_load, i.class_weight)))
        .collect();
    let lifted = inherit(&base, references, settings.inheritance_factor);
    let mut rows: Vec<ScoreRow> = inputs
        .iter()
        .map(|input| {
            let l = lifted[&input.shard_id];
            let own = base[&input.shard_id];
            let score = with_hysteresis(input.published, l.score, settings.hysteresis);
            // The lift explains the published score: what it holds beyond the shard's own.
            let lift = if l.source.is_some() {
                (score - own).max(0.0)
            } else {
                0.0
            };
            ScoreRow {
                shard_id: input.shard_id,
                base_score: own,
                lift,
                lift_source: l.source.filter(|_| lift > 0.0),
                score,
                priority_weight: 0,
                tier: 0,
                rank: 0,
            }
        })
        .collect();
    // Equal scores (a lifted table and the table that lifted it) rank the shard's own score
    // first.
    rows.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.base_score.total_cmp(&a.base_score))
            .then(a.shard_id.cmp(&b.shard_id))
    });
    let scores: Vec<f64> = rows.iter().map(|r| r.score).collect();
    let weights = priority_weights(&scores);
    let tier = tiers(&scores, settings.tiers);
    for (i, row) in rows.iter_mut().enumerate() {
        row.priority_weight = weights[i];
        row.tier = tier[i];
        row.rank = i as u32 + 1;
    }
    rows
}

#[cfg(test)]
mod pipeline_tests {
    use super::*;

    #[test]
    fn scoring_ranks_weights_and_lifts() {
        let input = |shard_id, predicted_load, class_weight| ScoreInput {
            shard_id,
            predicted_load,
            class_weight,
            published: None,
        };
        let rows = score_all(
            &[
                input(1, 1000.0, 1.0),
                input(2, 10.0, 1.0),
                input(3, 100.0, 10.0),
                input(4, 0.0, 1.0),
            ],
            &[(1, 2)],
            &ScoreSettings {
                inheritance_factor: 0.5,
                hysteresis: 0.2,
                tiers: 3,
            },
        );
        let order: Vec<i32> = rows.iter().map(|r| r.shard_id).collect();
        assert_eq!(order, vec![1, 3, 2, 4]);
        assert_eq!(rows[0].priority_weight, 1000);
        assert_eq!(
            (rows[2].score, rows[2].lift, rows[2].lift_source),
            (500.0, 490.0, Some(1))
        );
        assert_eq!(rows[3].priority_weight, 0);
        assert_eq!(
            rows.iter().map(|r| r.rank).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(rows[0].tier, 1);
        assert_eq!(rows[3].tier, 3);
    }

    #[test]
    fn published_scores_hold_through_small_changes() {
        let rows = score_all(
            &[ScoreInput {
                shard_id: 1,
                predicted_load: 105.0,
                class_weight: 1.0,
                published: Some(100.0),
            }],
            &[],
            &ScoreSettings {
                inheritance_factor: 1.0,
                hysteresis: 0.2,
                tiers: 3,
            },
        );
        assert_eq!(rows[0].score, 100.0);
    }
}

#[cfg(test)]
mod tie_tests {
    use super::*;

    #[test]
    fn a_table_ranks_above_the_tables_it_lifts_to_its_score() {
        let input = |shard_id, predicted_load| ScoreInput {
            shard_id,
            predicted_load,
            class_weight: 1.0,
            published: None,
        };
        let rows = score_all(
            &[input(1, 1.0), input(2, 1.0), input(3, 100.0)],
            &[(3, 1), (3, 2)],
            &ScoreSettings {
                inheritance_factor: 1.0,
                hysteresis: 0.2,
                tiers: 3,
            },
        );
        assert_eq!(
            rows.iter().map(|r| r.shard_id).collect::<Vec<_>>(),
            vec![3, 1, 2]
        );
        assert_eq!((rows[1].lift, rows[1].lift_source), (99.0, Some(3)));
    }
}
