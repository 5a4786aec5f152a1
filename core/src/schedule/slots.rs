//! Worker slots, each taken when it frees first: what the allocation plan schedules on.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Worker slots `range.start..range.end`, each free from `start` until given work, taken earliest
/// free first (the lowest index among equals). Only the slots given work are kept: a range of
/// millions of slots costs what the tasks placed on it need, O(log used) a task.
#[derive(Clone, Debug)]
pub struct Slots {
    busy: BinaryHeap<std::cmp::Reverse<FreeSlot>>,
    next_unused: usize,
    end: usize,
    start: f64,
}

/// A slot and when it is free, ordered by (time, index).
#[derive(Clone, Copy, Debug)]
struct FreeSlot(f64, usize);

impl Ord for FreeSlot {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

impl PartialOrd for FreeSlot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for FreeSlot {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for FreeSlot {}

impl Slots {
    pub fn new(range: std::ops::Range<usize>, start: f64) -> Slots {
        Slots {
            busy: BinaryHeap::new(),
            next_unused: range.start,
            end: range.end.max(range.start),
            start,
        }
    }

    /// The slot that frees first and when: (time, index); None for an empty range.
    pub fn peek(&self) -> Option<(f64, usize)> {
        let unused =
            (self.next_unused < self.end).then_some(FreeSlot(self.start, self.next_unused));
        let busy = self.busy.peek().map(|r| r.0);
        let first = match (unused, busy) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some((first.0, first.1))
    }

    /// Gives the slot that frees first `duration` more seconds of work; returns (index, start,
    /// finish), or None for an empty range.
    pub fn assign(&mut self, duration: f64) -> Option<(usize, f64, f64)> {
        let (free_at, index) = self.peek()?;
        // Busy slots all have indexes below `next_unused`.
        if self.next_unused < self.end && index == self.next_unused {
            self.next_unused += 1;
        } else {
            self.busy.pop();
        }
        let finish = free_at + duration;
        self.busy.push(std::cmp::Reverse(FreeSlot(finish, index)));
        Some((index, free_at, finish))
    }
}
