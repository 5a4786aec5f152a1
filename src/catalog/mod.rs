//! The catalog: every statement on shardcast's tables, one file per table or group of tables.
//! Functions here run SQL and convert rows; they decide nothing (that is the core's, and the
//! callers').
//!
//! Statements that 0.1.0's SQL functions reach through this library, between installing it and
//! `ALTER EXTENSION shardcast UPDATE` (sparkline, enqueue_all, enqueue_publication), test for
//! Citus rows as `to_jsonb(s) ->> 'citus_shard_id' IS NULL`, which is also true on a 0.1.0
//! catalog, where the column does not exist yet. Whether the catalog is 0.1.0's, and the statements
//! adapted to it, are [`compat_0_1`]'s.

pub mod citus;
pub mod claims;
pub mod classes;
pub mod compat_0_1;
pub mod copy_credits;
pub mod forecasts;
pub mod history;
pub mod kept;
pub mod nodes;
pub mod scores;
pub mod shards;
#[cfg(test)]
mod sql_words;
pub mod tasks;
pub mod worker_state;
