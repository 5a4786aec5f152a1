//! Copy credits: the reads replication makes of the shards it copies, taken out of the sampled
//! deltas so that a table just copied does not look hot. A claim grants a credit
//! ([`CopyCredit`], one scan of the whole table); the sampler spends it here.

use std::collections::HashMap;
use std::time::Duration;

use crate::access::Access;

/// Reads that replication makes of a shard it copies: one scan of the whole table. They are not
/// the application's load, and counted as such they would make every table just copied look
/// hot; a claim grants this much credit and the sampler takes it out of the shard's deltas.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CopyCredit {
    pub scans: f64,
    pub tuples_read: f64,
    /// Blocks hit or read: a copy's blocks may be in shared buffers or not.
    pub blocks: f64,
}

impl CopyCredit {
    pub fn is_spent(&self) -> bool {
        self.scans <= 0.0 && self.tuples_read <= 0.0 && self.blocks <= 0.0
    }

    /// Takes what this credit covers out of `delta` (never below zero) and out of the credit.
    pub fn discount(&mut self, delta: &mut Access) {
        fn take(value: &mut f64, credit: &mut f64) {
            let taken = value.min(credit.max(0.0)).max(0.0);
            *value -= taken;
            *credit -= taken;
        }
        take(&mut delta.scans, &mut self.scans);
        take(&mut delta.tuples_read, &mut self.tuples_read);
        take(&mut delta.blocks_hit, &mut self.blocks);
        take(&mut delta.blocks_read, &mut self.blocks);
    }
}

/// What spending the credits did to them: the credits used up (to delete), and those spent in
/// part, with what is left of each (to store).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spending {
    pub spent: Vec<i64>,
    pub left: Vec<(i64, CopyCredit)>,
}

/// Takes `credits` (`(task_id, shard_id, credit)`, oldest first: the copy that started first is
/// the first whose scan is reported) out of one sample's deltas `rows` (`(shard_id, delta)`,
/// one per shard: a credit spent by one row and reported is not reported again), never below
/// zero. A credit that covered nothing is reported neither spent nor left.
pub fn spend(rows: &mut [(i32, Access)], credits: Vec<(i64, i32, CopyCredit)>) -> Spending {
    let mut by_shard: HashMap<i32, Vec<(i64, CopyCredit)>> = HashMap::new();
    for (task_id, shard_id, credit) in credits {
        by_shard
            .entry(shard_id)
            .or_default()
            .push((task_id, credit));
    }
    let mut spending = Spending::default();
    for (shard_id, delta) in rows.iter_mut() {
        for (task_id, credit) in by_shard.get_mut(shard_id).into_iter().flatten() {
            if credit.is_spent() {
                // Reported when it was used up.
                continue;
            }
            let before = *credit;
            credit.discount(delta);
            if credit.is_spent() {
                spending.spent.push(*task_id);
            } else if *credit != before {
                spending.left.push((*task_id, *credit));
            }
        }
    }
    spending
}

/// How long after a copy's lease or end its credit stays: a scan's statistics reach the
/// cumulative views when it finishes (within seconds), and the sampler sees them a sample later.
pub fn margin(sample_interval: Duration) -> Duration {
    (sample_interval * 3).max(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn delta(scans: f64, tuples_read: f64, blocks_hit: f64, blocks_read: f64) -> Access {
        Access {
            scans,
            tuples_read,
            tuples_written: 0.0,
            blocks_hit,
            blocks_read,
        }
    }

    fn credit(scans: f64, tuples_read: f64, blocks: f64) -> CopyCredit {
        CopyCredit {
            scans,
            tuples_read,
            blocks,
        }
    }

    #[test]
    fn a_copy_scan_is_taken_out_and_its_credit_spent() {
        let mut rows = vec![(1, delta(3.0, 1000.0, 40.0, 60.0))];
        let spending = spend(&mut rows, vec![(7, 1, credit(1.0, 1000.0, 100.0))]);
        assert_eq!(rows[0].1, delta(2.0, 0.0, 0.0, 0.0));
        assert_eq!(spending.spent, vec![7]);
        assert!(spending.left.is_empty());
    }

    #[test]
    fn what_is_not_covered_yet_is_left_for_later_samples() {
        let mut rows = vec![(1, delta(0.0, 400.0, 10.0, 0.0))];
        let spending = spend(&mut rows, vec![(7, 1, credit(1.0, 1000.0, 100.0))]);
        assert!(rows[0].1.is_zero());
        assert!(spending.spent.is_empty());
        assert_eq!(spending.left, vec![(7, credit(1.0, 600.0, 90.0))]);
    }

    #[test]
    fn oldest_credit_first_and_only_for_its_own_shard() {
        let mut rows = vec![
            (1, delta(1.0, 100.0, 0.0, 0.0)),
            (2, delta(5.0, 5.0, 0.0, 0.0)),
        ];
        let spending = spend(
            &mut rows,
            vec![
                (3, 1, credit(1.0, 100.0, 0.0)),
                (4, 1, credit(1.0, 100.0, 0.0)),
            ],
        );
        // Task 3's credit covers the one scan; task 4's is untouched, so not reported.
        assert_eq!(spending.spent, vec![3]);
        assert!(spending.left.is_empty());
        assert!(rows[0].1.is_zero());
        assert_eq!(rows[1].1, delta(5.0, 5.0, 0.0, 0.0));
    }

    #[test]
    fn credits_outlive_three_samples_and_at_least_ten_minutes() {
        assert_eq!(margin(Duration::from_secs(60)), Duration::from_secs(600));
        assert_eq!(margin(Duration::from_secs(1000)), Duration::from_secs(3000));
    }

    #[test]
    fn no_credits_change_nothing() {
        let mut rows = vec![(1, delta(1.0, 1.0, 1.0, 1.0))];
        assert_eq!(spend(&mut rows, Vec::new()), Spending::default());
        assert_eq!(rows[0].1, delta(1.0, 1.0, 1.0, 1.0));
    }

    #[test]
    fn a_copy_credit_is_spent_across_samples() {
        let mut credit = CopyCredit {
            scans: 1.0,
            tuples_read: 20_000.0,
            blocks: 300.0,
        };
        let mut first = Access {
            scans: 3.0,
            tuples_read: 5_000.0,
            tuples_written: 7.0,
            blocks_hit: 100.0,
            blocks_read: 50.0,
        };
        credit.discount(&mut first);
        assert_eq!(
            first,
            Access {
                scans: 2.0,
                tuples_read: 0.0,
                tuples_written: 7.0,
                blocks_hit: 0.0,
                blocks_read: 0.0
            }
        );
        assert!(!credit.is_spent());
        let mut second = Access {
            scans: 1.0,
            tuples_read: 40_000.0,
            blocks_hit: 500.0,
            ..Default::default()
        };
        credit.discount(&mut second);
        assert_eq!(
            (second.scans, second.tuples_read, second.blocks_hit),
            (1.0, 25_000.0, 350.0)
        );
        assert!(credit.is_spent());
    }

    proptest! {
        #[test]
        fn a_copy_credit_takes_out_what_it_covers_and_no_more(
            delta in (0.0..1e9f64, 0.0..1e9f64, 0.0..1e9f64, 0.0..1e9f64, 0.0..1e9f64),
            credit in (0.0..10.0f64, 0.0..1e9f64, 0.0..1e9f64),
        ) {
            let before = Access { scans: delta.0, tuples_read: delta.1, tuples_written: delta.2,
                                  blocks_hit: delta.3, blocks_read: delta.4 };
            let granted = CopyCredit { scans: credit.0, tuples_read: credit.1, blocks: credit.2 };
            let (mut after, mut left) = (before, granted);
            left.discount(&mut after);
            for v in [after.scans, after.tuples_read, after.blocks_hit, after.blocks_read, left.scans,
                      left.tuples_read, left.blocks] {
                prop_assert!(v >= 0.0);
            }
            prop_assert_eq!(after.tuples_written, before.tuples_written);
            prop_assert!((before.tuples_read - after.tuples_read + left.tuples_read - granted.tuples_read).abs() < 1e-6);
            prop_assert!((after.tuples_read == 0.0) || left.tuples_read == 0.0);
            let blocks_taken = before.blocks_hit + before.blocks_read - after.blocks_hit - after.blocks_read;
            prop_assert!((blocks_taken - (granted.blocks - left.blocks)).abs() < 1e-3);
        }
    }
}
