//! Tasks for the schedule's tests.

use super::Task;

pub(super) fn task(task_id: i64, bytes: f64, score: f64, tier: u8) -> Task {
    Task {
        task_id,
        bytes,
        score,
        tier,
        prefetch: false,
        enqueued_at: 0.0,
    }
}

pub(super) fn arbitrary_tasks(specs: &[(f64, f64, f64, bool)]) -> Vec<Task> {
    specs
        .iter()
        .enumerate()
        .map(|(i, &(bytes, score, enqueued_at, prefetch))| Task {
            enqueued_at,
            prefetch,
            ..task(i as i64, bytes, score, 1 + (i % 3) as u8)
        })
        .collect()
}
