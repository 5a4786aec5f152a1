//! The catalog: every statement on shardcast's tables, one file per table or group of tables.
//! Functions here run SQL and convert rows; they decide nothing (that is the core's, and the
//! callers').

pub mod citus;
pub mod claims;
pub mod classes;
pub mod copy_credits;
pub mod forecasts;
pub mod history;
pub mod kept;
pub mod nodes;
pub mod scores;
pub mod shards;
pub mod tasks;
pub mod worker_state;
