//! The refit budget: model selection (a backtest of every candidate) is costly, so a refresh
//! selects models again only for the shards that need it and for the stalest of the rest, so
//! that every shard is selected again about once per refit interval.

use std::collections::HashSet;

use crate::forecast::models::DAY;
use crate::forecast::Selection;

/// A shard as the refit budget sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Kept {
    /// How long ago its kept selection was made, in seconds; None when it has none (it is
    /// selected in any case).
    pub selected_age_secs: Option<f64>,
    /// Hours of history it has.
    pub history_hours: usize,
}

/// The shards (indexes into `shards`) whose kept selection is made again in this refresh: of
/// those with a day of history and a selection at least `refit_secs` old, the stalest, as many
/// as `shards × refresh_secs / refit_secs` (rounded up, at least one).
pub fn due(shards: &[Kept], refresh_secs: f64, refit_secs: f64) -> HashSet<usize> {
    let budget = ((shards.len() as f64) * refresh_secs / refit_secs).ceil() as usize;
    let mut stale: Vec<(f64, usize)> = shards
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s.selected_age_secs {
            Some(age) if s.history_hours >= DAY && age >= refit_secs => Some((age, i)),
            _ => None,
        })
        .collect();
    stale.sort_by(|a, b| b.0.total_cmp(&a.0));
    stale
        .into_iter()
        .take(budget.max(1))
        .map(|(_, i)| i)
        .collect()
}

/// Imported history that grew by at least this many hours since the last refresh is a backfill
/// (a DBA's `record_access` of past days), not the clock: the clock moves the window by the
/// hours between two refreshes, and a feed that imports as it goes adds about as many as age
/// out of the window.
pub const BACKFILL_HOURS: usize = DAY;

/// Whether the shard's imported hours grew by a backfill since the last refresh (`before`:
/// the imported hours then, None without one): what the models can learn changed, so they are
/// selected again at once, not at the next refit.
pub fn backfilled(before: Option<i32>, now: usize) -> bool {
    before.is_some_and(|before| now as i64 >= i64::from(before) + BACKFILL_HOURS as i64)
}

/// Whether a shard keeps its `previous` selection: it has a day of history, it is not `due`,
/// and the selection is not a cold-start one (those are replaced once a day of history exists).
pub fn keeps(previous: &Selection, history_hours: usize, due: bool) -> bool {
    history_hours >= DAY && !due && !previous.members.iter().any(|(m, _)| m.is_cold_start())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::ModelKind;

    fn kept(age: Option<f64>, hours: usize) -> Kept {
        Kept {
            selected_age_secs: age,
            history_hours: hours,
        }
    }

    #[test]
    fn the_stalest_go_first_within_the_budget() {
        // 4 shards, refresh every 300 s, refit every 1200 s: one per refresh.
        let shards = [
            kept(Some(1500.0), 48),
            kept(Some(3000.0), 48),
            kept(Some(100.0), 48),
            kept(None, 48),
        ];
        assert_eq!(due(&shards, 300.0, 1200.0), HashSet::from([1]));
        // A budget of two (rounded up from 1.33).
        assert_eq!(due(&shards[..], 400.0, 1200.0), HashSet::from([0, 1]));
    }

    #[test]
    fn young_shards_and_fresh_selections_are_not_due() {
        let shards = [kept(Some(5000.0), DAY - 1), kept(Some(10.0), 48)];
        assert!(due(&shards, 300.0, 1200.0).is_empty());
        assert!(due(&[], 300.0, 1200.0).is_empty());
    }

    #[test]
    fn at_least_one_per_refresh() {
        let shards = [kept(Some(5000.0), 48), kept(Some(6000.0), 48)];
        // 2 × 1 / 4000 of a shard is rounded up to one.
        assert_eq!(due(&shards, 1.0, 4000.0), HashSet::from([1]));
    }

    fn selection(members: Vec<(ModelKind, f64)>) -> Selection {
        Selection {
            members,
            mase: None,
            error_low: 0.0,
            error_high: 0.0,
            error_offset: 0.0,
            last_weight: 0.0,
            error_median: 0.0,
        }
    }

    #[test]
    fn a_backfill_is_a_day_of_imported_hours_more() {
        assert!(!backfilled(None, 600));
        assert!(
            !backfilled(Some(100), 101),
            "the clock, or one imported hour"
        );
        assert!(!backfilled(Some(100), 50), "history aged out");
        assert!(!backfilled(Some(100), 100 + BACKFILL_HOURS - 1));
        assert!(backfilled(Some(100), 100 + BACKFILL_HOURS));
        assert!(backfilled(Some(0), 672));
    }

    #[test]
    fn a_selection_is_kept_unless_due_young_or_cold_start() {
        let cold = selection(vec![(ModelKind::RecentMean, 1.0)]);
        let warm = selection(vec![(ModelKind::Theta, 1.0)]);
        assert!(keeps(&warm, DAY, false));
        assert!(!keeps(&warm, DAY, true));
        assert!(!keeps(&warm, DAY - 1, false));
        assert!(!keeps(&cold, 48, false));
    }
}
