//! `shardcast.replication_tasks` outside claims, one file per concern: enqueueing
//! ([`enqueue`](mod@enqueue)), the queue as read for dispatch and the stored dispatch order
//! ([`dispatch`]), tasks whose shard is gone ([`gone`]), an operator's cancel, retry and forget
//! ([`lifecycle`]), and what reports and manifests read back ([`reports`]). 0.1.0's catalog is
//! [`super::compat_0_1`]'s.

mod dispatch;
mod enqueue;
pub mod gone;
mod lifecycle;
mod reports;

pub use dispatch::{queued, store_dispatch_order, DispatchOrder, QueuedRow};
pub use enqueue::{
    enqueue, live_shard_ids, lock_queue, not_permanent, persistence, publication_exists,
    publication_shards, queued_among, resize_queued, try_lock_queue, Enqueued,
};
pub use gone::cancel_gone;
pub use lifecycle::{cancel, forget_replica, requeue, retry_check};
pub use reports::{first_copies, manifest, ReportScope};
