//! `prioritization_report_since`: what prioritization was worth on the tasks done, evaluated by
//! `shardcast_core::report::evaluate` (behind the `shardcast.prioritization_report` view).

// pgrx reads the returned columns from the written-out TableIterator type, so it cannot be aliased.
#![allow(clippy::type_complexity)]

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use shardcast_core::report::{self, Copied};

use super::{invalid, null_argument};
use crate::catalog::history;
use crate::catalog::tasks::{self, ReportScope};
use crate::error::spi_error;
use crate::gucs;

/// The report's row.
type ReportRow = (
    i64,
    Option<TimestampWithTimeZone>,
    Option<TimestampWithTimeZone>,
    i64,
    f64,
    f64,
    f64,
    f64,
    Option<f64>,
);

/// What prioritization was worth on the copies claimed at or after `since` (all when NULL). The
/// `shardcast.prioritization_report` view shows it for all.
#[pg_extern(sql = false)]
fn prioritization_report_since(
    since: Option<TimestampWithTimeZone>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(tasks, i64),
            name!(window_start, Option<TimestampWithTimeZone>),
            name!(window_end, Option<TimestampWithTimeZone>),
            name!(bytes_copied, i64),
            name!(bandwidth, f64),
            name!(awa_realised, f64),
            name!(awa_fifo, f64),
            name!(awa_oracle, f64),
            name!(capture, Option<f64>),
        ),
    >,
    ErrorReport,
> {
    report_rows(ReportScope {
        since,
        ..ReportScope::default()
    })
}

/// What prioritization was worth on the copies claimed and finished in [`since`, `until`) (a
/// NULL bound: unbounded): one run's window. Declared as `prioritization_report_since(since,
/// until)`.
#[pg_extern(sql = false)]
fn prioritization_report_between(
    since: Option<TimestampWithTimeZone>,
    until: Option<TimestampWithTimeZone>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(tasks, i64),
            name!(window_start, Option<TimestampWithTimeZone>),
            name!(window_end, Option<TimestampWithTimeZone>),
            name!(bytes_copied, i64),
            name!(bandwidth, f64),
            name!(awa_realised, f64),
            name!(awa_fifo, f64),
            name!(awa_oracle, f64),
            name!(capture, Option<f64>),
        ),
    >,
    ErrorReport,
> {
    if let (Some(start), Some(end)) = (since, until) {
        if start.into_inner() > end.into_inner() {
            return Err(invalid(
                "the report's window starts after it ends: since is after until".into(),
                "Pass since before until: the report covers the copies claimed in [since, until).",
            ));
        }
    }
    report_rows(ReportScope {
        since,
        until,
        worker: None,
    })
}

/// What prioritization was worth on the copies one worker made (`claimed_by`): one driver run,
/// which claims under a name of its own.
#[pg_extern(sql = false)]
fn prioritization_report_for(
    worker: Option<&str>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(tasks, i64),
            name!(window_start, Option<TimestampWithTimeZone>),
            name!(window_end, Option<TimestampWithTimeZone>),
            name!(bytes_copied, i64),
            name!(bandwidth, f64),
            name!(awa_realised, f64),
            name!(awa_fifo, f64),
            name!(awa_oracle, f64),
            name!(capture, Option<f64>),
        ),
    >,
    ErrorReport,
> {
    let worker = worker.ok_or_else(|| null_argument("worker"))?;
    report_rows(ReportScope {
        worker: Some(worker),
        ..ReportScope::default()
    })
}

/// The report over the copies in `scope`: no row when there are none. (Not a SQL function: its
/// result type may name the row by its alias.)
fn report_rows(scope: ReportScope<'_>) -> Result<TableIterator<'static, ReportRow>, ErrorReport> {
    let rows: Vec<ReportRow> = report(scope)?;
    Ok(TableIterator::new(rows))
}

fn report(scope: ReportScope<'_>) -> Result<Vec<ReportRow>, ErrorReport> {
    // One row per shard copied (its first successful copy), in catalog (FIFO) order.
    let copied = tasks::first_copies(scope).map_err(spi_error)?;
    let ids: Vec<i32> = copied.iter().map(|(id, _)| *id).collect();
    let copies: Vec<Copied> = copied.into_iter().map(|(_, c)| c).collect();
    let Some((start, end)) = report::span(&copies) else {
        return Ok(Vec::new());
    };
    // The report weighs accesses by the same load the forecasts predict.
    let accesses = history::accesses(&ids, start, end, gucs::load_measure(), gucs::write_weight())
        .map_err(spi_error)?;
    let Some(e) = report::evaluate(&copies, &accesses) else {
        return Ok(Vec::new());
    };
    let timestamp =
        |secs: f64| TimestampWithTimeZone::try_from(((secs - 946_684_800.0) * 1e6) as i64).ok();
    Ok(vec![(
        e.copies as i64,
        timestamp(e.start),
        timestamp(e.end),
        e.bytes as i64,
        e.bandwidth,
        e.realised,
        e.fifo,
        e.oracle,
        e.capture,
    )])
}
