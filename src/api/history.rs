//! Importing history: `record_access` (one sample, or many at once), and the internal functions
//! that compaction uses to build day rows. The catalog side is `catalog::history`.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use shardcast_core::access::{self, BucketSums, ExternalSample, SampleError};

use crate::catalog::{history, shards};
use crate::error::{self, spi_error, sql_error, SqlResult};
use crate::gucs;

fn now_micros() -> i64 {
    unsafe { pg_sys::GetCurrentTimestamp() }
}

fn check_sample(sample: &ExternalSample, now: i64, position: Option<usize>) -> SqlResult<()> {
    sample.validate(now).map_err(|err| {
        let code = match err {
            SampleError::Negative | SampleError::NotFinite | SampleError::TooLarge => {
                PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE
            }
            SampleError::InTheFuture | SampleError::InfiniteTime => {
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
            }
        };
        let message = match position {
            Some(i) => format!("{} (element {})", err.message(), i + 1),
            None => err.message().to_owned(),
        };
        sql_error(code, message, err.hint())
    })
}

/// `report` with the bulk call's element named in its DETAIL (its message names the relation):
/// an import of thousands of samples is fixed by finding the one at fault.
fn at_element(report: ErrorReport, position: usize) -> ErrorReport {
    let element = format!(
        "The sample at fault is element {} of the arrays.",
        position + 1
    );
    let detail = match report.detail() {
        Some(detail) => format!("{detail}\n{element}"),
        None => element,
    };
    report.set_detail(detail)
}

/// The start of the oldest 5-minute bucket the worker keeps at `now`: `now` minus
/// `shardcast.history_retention`. A sample whose bucket starts before it would be purged at the
/// next compaction, as the purge decides, and is not recorded at all ([`too_old`]).
fn oldest_kept(now: i64) -> i64 {
    now.saturating_sub(gucs::history_retention().as_micros().min(i64::MAX as u128) as i64)
}

/// Whether a sample taken `at` falls in a bucket before `oldest` ([`oldest_kept`]).
fn too_old(at: i64, oldest: i64) -> bool {
    access::bucket_start(at, access::FINE_BUCKET_SECS) < oldest
}

/// A WARNING that `skipped` samples (of `of`) were older than the retention and not recorded:
/// an import of more history than is kept loses its oldest part, and says so.
fn warn_too_old(skipped: usize, of: usize) {
    if skipped == 0 {
        return;
    }
    let retention = retention_text();
    let message = if of == 1 {
        format!("the sample is older than shardcast.history_retention ({retention}) and was not recorded")
    } else {
        format!("{skipped} of {of} samples are older than shardcast.history_retention ({retention}) and were not recorded")
    };
    sql_error(
        PgSqlErrorCode::ERRCODE_WARNING,
        message,
        "The worker keeps no older history; raise shardcast.history_retention to keep more (forecasts read up to the last 28 days).",
    )
    .report(PgLogLevel::WARNING);
}

/// `shardcast.history_retention` as a DBA would write it: days, hours or minutes.
fn retention_text() -> String {
    let minutes = gucs::history_retention().as_secs() / 60;
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match minutes {
        m if m % (24 * 60) == 0 => plural(m / (24 * 60), "day"),
        m if m % 60 == 0 => plural(m / 60, "hour"),
        m => format!("{m} min"),
    }
}

fn null_argument(name: &str) -> pgrx::pg_sys::panic::ErrorReport {
    error::null_argument(
        name,
        "Pass a value for every argument; use 0 for no accesses.",
    )
}

/// The most samples one bulk `record_access` call takes; a larger import is split into calls.
pub const MAX_SAMPLES_PER_CALL: usize = 1_000_000;

/// Records externally observed accesses of one shard (from query logs, say). The timestamp may
/// be in the past, for history import. Declared by hand so that the shard is a regclass read as
/// an OID: it is never opened, and an OID that names nothing is `42P01`.
#[pg_extern(sql = false)]
fn record_access(
    shard: Option<pg_sys::Oid>,
    sampled_at: Option<TimestampWithTimeZone>,
    reads: Option<f64>,
    writes: default!(Option<f64>, 0),
) -> SqlResult<()> {
    let shard = shard.ok_or_else(|| null_argument("shard"))?;
    let at = sampled_at.ok_or_else(|| null_argument("sampled_at"))?;
    let reads = reads.ok_or_else(|| null_argument("reads"))?;
    let writes = writes.ok_or_else(|| null_argument("writes"))?;
    let sample = ExternalSample {
        at: at.into_inner(),
        reads,
        writes,
    };
    let now = now_micros();
    check_sample(&sample, now, None)?;
    let shard_id = shards::shard_id_for(shards::existing_relation(shard)?)?;
    if too_old(sample.at, oldest_kept(now)) {
        warn_too_old(1, 1);
        return Ok(());
    }
    let mut sums = BucketSums::default();
    sums.add(shard_id, sample.at, &sample.access());
    history::add_to_buckets(&sums.into_sorted()).map_err(spi_error)?;
    Ok(())
}

/// Bulk form of `record_access`: element i of each array is one sample. Validates everything
/// before writing anything; returns the number of samples recorded. The arrays are read in place
/// (`Array`, not `Vec`), and their lengths checked before any element is: an oversized call is
/// refused at once, not after copying up to four arrays of a gigabyte each.
#[pg_extern(sql = false)]
fn record_access_bulk(
    shards: Option<Array<'_, pg_sys::Oid>>,
    sampled_at: Option<Array<'_, TimestampWithTimeZone>>,
    reads: Option<Array<'_, f64>>,
    writes: Option<Array<'_, f64>>,
) -> SqlResult<i64> {
    let shards = shards.ok_or_else(|| null_argument("shards"))?;
    let sampled_at = sampled_at.ok_or_else(|| null_argument("sampled_at"))?;
    let reads = reads.ok_or_else(|| null_argument("reads"))?;
    let n = shards.len();
    if sampled_at.len() != n || reads.len() != n || writes.as_ref().is_some_and(|w| w.len() != n) {
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "the arrays must have the same length",
            "Pass one shard, one timestamp, one read count (and one write count) per sample.",
        ));
    }
    if n > MAX_SAMPLES_PER_CALL {
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("at most {MAX_SAMPLES_PER_CALL} samples per call, not {n}"),
            "Split the import into calls of at most 1,000,000 samples each.",
        ));
    }
    let now = now_micros();
    // Read once: the setting does not change within a call.
    let oldest = oldest_kept(now);
    let mut skipped = 0;
    let mut shard_ids = shards::ShardIdCache::default();
    let mut sums = BucketSums::default();
    // Walked together: an array's elements are found by walking it (`Array::get` walks from the
    // start past NULLs), so one pass over each.
    let mut writes = writes.as_ref().map(|w| w.iter());
    let samples = shards.iter().zip(sampled_at.iter()).zip(reads.iter());
    for (i, ((relid, at), reads)) in samples.enumerate() {
        pg_sys::check_for_interrupts!();
        let element = |name: &str| null_argument(&format!("{name}[{}]", i + 1));
        let relid = relid.ok_or_else(|| element("shards"))?;
        let at = at.ok_or_else(|| element("sampled_at"))?;
        let reads = reads.ok_or_else(|| element("reads"))?;
        let writes = match writes.as_mut().and_then(Iterator::next) {
            Some(w) => w.ok_or_else(|| element("writes"))?,
            None => 0.0,
        };
        let sample = ExternalSample {
            at: at.into_inner(),
            reads,
            writes,
        };
        check_sample(&sample, now, Some(i))?;
        let shard_id = shard_ids
            .get(relid)
            .map_err(|report| at_element(report, i))?;
        if too_old(sample.at, oldest) {
            skipped += 1;
            continue;
        }
        sums.add(shard_id, sample.at, &sample.access());
    }
    history::add_to_buckets(&sums.into_sorted()).map_err(spi_error)?;
    warn_too_old(skipped, n);
    Ok((n - skipped) as i64)
}

/// Internal: spreads per-hour sums over a day row's 24 slots.
#[pg_extern(sql = false)]
fn hour_slots(hours: Vec<Option<i32>>, values: Vec<Option<f64>>) -> Vec<f32> {
    let (hours, values): (Vec<i32>, Vec<f64>) = hours
        .into_iter()
        .zip(values)
        .filter_map(|(h, v)| Some((h?, v?)))
        .unzip();
    access::hour_slots(&hours, &values).to_vec()
}

/// Internal: adds two day rows slot by slot.
#[pg_extern(sql = false)]
fn add_slots(a: Vec<Option<f32>>, b: Vec<Option<f32>>) -> Vec<f32> {
    let dense = |v: Vec<Option<f32>>| v.into_iter().map(|x| x.unwrap_or(0.0)).collect::<Vec<_>>();
    access::add_slots(&dense(a), &dense(b))
}
