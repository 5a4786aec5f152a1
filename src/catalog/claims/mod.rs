//! The statements of claims and leases, one file per concern: claiming the next task
//! ([`claim`]), leases (expiring, locking a claimed task, heartbeats, releases: [`leases`]) and
//! completions ([`completion`]).

mod claim;
mod completion;
mod leases;

pub use claim::claim_next;
pub use completion::{complete, Completion};
pub use leases::{expire_leases, lock_task, release, renew_lease, Locked};
