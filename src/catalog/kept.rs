//! Kept plans: the statements that every claim, heartbeat and completion runs are prepared once
//! per session and kept, because planning them costs as much as running them. The functions
//! that run them force generic plans (sql/functions.sql), so that they are planned once; PostgreSQL's
//! plan cache revalidates them after DDL.

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::prelude::*;

thread_local! {
    /// The kept plans of this session, by statement text.
    static KEPT_PLANS: RefCell<HashMap<&'static str, pgrx::spi::OwnedPreparedStatement>> =
        RefCell::new(HashMap::new());
}

/// A statement made at run time (from a template, or derived from another statement) as the
/// `&'static str` that keys its kept plan: made once per process, in a `LazyLock`.
pub fn leak(statement: String) -> &'static str {
    Box::leak(statement.into_boxed_str())
}

/// Runs a mutating statement through its kept plan, preparing it on first use.
pub fn run_kept<R>(
    sql: &'static str,
    types: &[PgOid],
    args: &[pgrx::datum::DatumWithOid<'_>],
    read: impl FnOnce(pgrx::spi::SpiTupleTable<'_>) -> Result<R, pgrx::spi::Error>,
) -> Result<R, pgrx::spi::Error> {
    Spi::connect_mut(|client| {
        KEPT_PLANS.with(|plans| {
            let mut plans = plans.borrow_mut();
            if !plans.contains_key(sql) {
                let plan = client.prepare_mut(sql, types)?.keep();
                plans.insert(sql, plan);
            }
            let plan = &plans[sql];
            read(client.update(plan, None, args)?)
        })
    })
}
