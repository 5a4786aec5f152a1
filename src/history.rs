//! Access history: the one write path into the fine buckets (used by the sampler and by
//! `record_access`), compaction of old buckets into day rows, purging, and the SQL functions
//! that import external history.

use std::time::Duration;

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use shardcast_core::access::{self, Access, BucketSums, ExternalSample, SampleError};

use crate::error::{self, spi_error, sql_error, SqlResult};
use crate::registry;

/// How long samples stay in 5-minute buckets before they are compacted into hourly slots.
pub const FINE_HISTORY_SPAN: Duration = Duration::from_secs(6 * 60 * 60);

/// Adds accesses to the fine buckets: `(shard_id, bucket start in PostgreSQL microseconds,
/// accesses)`. Rows should be sorted by shard and bucket, so that concurrent writers lock
/// buckets in the same order. Returns the number of buckets written.
pub fn add_to_buckets(rows: &[(i32, i64, Access)]) -> Result<usize, pgrx::spi::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut shard_ids = Vec::with_capacity(rows.len());
    let mut buckets = Vec::with_capacity(rows.len());
    let mut columns: [Vec<f64>; 5] = Default::default();
    for (shard_id, bucket, a) in rows {
        shard_ids.push(*shard_id);
        buckets.push(pg_timestamp(*bucket));
        for (column, value) in columns.iter_mut().zip([
            a.scans,
            a.tuples_read,
            a.tuples_written,
            a.blocks_hit,
            a.blocks_read,
        ]) {
            column.push(value);
        }
    }
    let [scans, tuples_read, tuples_written, blocks_hit, blocks_read] = columns;
    Spi::run_with_args(
        "INSERT INTO shardcast.recent_access AS r
                (shard_id, bucket_start, scans, tuples_read, tuples_written, blocks_hit, blocks_read)
         SELECT * FROM unnest($1::int4[], $2::timestamptz[], $3::float8[], $4::float8[],
                              $5::float8[], $6::float8[], $7::float8[])
         ON CONFLICT (shard_id, bucket_start) DO UPDATE SET
                scans = r.scans + excluded.scans,
                tuples_read = r.tuples_read + excluded.tuples_read,
                tuples_written = r.tuples_written + excluded.tuples_written,
                blocks_hit = r.blocks_hit + excluded.blocks_hit,
                blocks_read = r.blocks_read + excluded.blocks_read",
        &[
            shard_ids.into(),
            buckets.into(),
            scans.into(),
            tuples_read.into(),
            tuples_written.into(),
            blocks_hit.into(),
            blocks_read.into(),
        ],
    )?;
    Ok(rows.len())
}

/// Moves fine buckets of whole hours older than [`FINE_HISTORY_SPAN`] into the day rows, drops
/// history older than the retention, and returns the number of fine buckets moved or dropped.
pub fn compact_and_purge(retention: Duration) -> Result<i64, pgrx::spi::Error> {
    let retention = pgrx::datum::Interval::from_micros(retention.as_micros() as i64);
    let fine_span = pgrx::datum::Interval::from_micros(FINE_HISTORY_SPAN.as_micros() as i64);
    let moved = Spi::get_one_with_args::<i64>(
        "WITH moved AS (
             DELETE FROM shardcast.recent_access
             WHERE bucket_start < date_trunc('hour', now() - $1::interval)
                OR bucket_start < now() - $2::interval
             RETURNING *
         ), hourly AS (
             SELECT shard_id,
                    (bucket_start AT TIME ZONE 'UTC')::date AS day,
                    extract(hour FROM bucket_start AT TIME ZONE 'UTC')::int4 AS hour,
                    sum(scans) AS scans, sum(tuples_read) AS tuples_read,
                    sum(tuples_written) AS tuples_written, sum(blocks_hit) AS blocks_hit,
                    sum(blocks_read) AS blocks_read
             FROM moved
             WHERE bucket_start >= now() - $2::interval
             GROUP BY 1, 2, 3
         ), merged AS (
             INSERT INTO shardcast.daily_access AS d
                    (shard_id, day, scans, tuples_read, tuples_written, blocks_hit, blocks_read,
                     hours_present)
             SELECT shard_id, day,
                    shardcast._hour_slots(array_agg(hour), array_agg(scans)),
                    shardcast._hour_slots(array_agg(hour), array_agg(tuples_read)),
                    shardcast._hour_slots(array_agg(hour), array_agg(tuples_written)),
                    shardcast._hour_slots(array_agg(hour), array_agg(blocks_hit)),
                    shardcast._hour_slots(array_agg(hour), array_agg(blocks_read)),
                    bit_or(1 << hour)
             FROM hourly
             GROUP BY shard_id, day
             ORDER BY shard_id, day
             ON CONFLICT (shard_id, day) DO UPDATE SET
                    hours_present = d.hours_present | excluded.hours_present,
                    scans = shardcast._add_slots(d.scans, excluded.scans),
                    tuples_read = shardcast._add_slots(d.tuples_read, excluded.tuples_read),
                    tuples_written = shardcast._add_slots(d.tuples_written, excluded.tuples_written),
                    blocks_hit = shardcast._add_slots(d.blocks_hit, excluded.blocks_hit),
                    blocks_read = shardcast._add_slots(d.blocks_read, excluded.blocks_read)
         )
         SELECT count(*) FROM moved",
        &[fine_span.into(), retention.into()],
    )?
    .unwrap_or(0);
    Spi::run_with_args(
        "DELETE FROM shardcast.daily_access
         WHERE day < ((now() - $1::interval) AT TIME ZONE 'UTC')::date",
        &[retention.into()],
    )?;
    Spi::run_with_args(
        "DELETE FROM shardcast.sampling_periods WHERE ended_at < now() - $1::interval",
        &[retention.into()],
    )?;
    Ok(moved)
}

/// Records that the worker observed up to `now`: the period that ended at the previous sample
/// is extended, or, after a baseline (no previous sample), a new period starts at `now`.
pub fn record_sampling(
    previous: Option<pg_sys::TimestampTz>,
    now: pg_sys::TimestampTz,
) -> Result<(), pgrx::spi::Error> {
    let now = pg_timestamp(now);
    match previous {
        Some(previous) => Spi::run_with_args(
            "WITH extended AS (
                 UPDATE shardcast.sampling_periods SET ended_at = $2
                 WHERE ended_at = $1 RETURNING 1)
             INSERT INTO shardcast.sampling_periods (started_at, ended_at)
             SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM extended)
             ON CONFLICT (started_at) DO UPDATE SET ended_at = excluded.ended_at",
            &[pg_timestamp(previous).into(), now.into()],
        ),
        None => Spi::run_with_args(
            "INSERT INTO shardcast.sampling_periods (started_at, ended_at) VALUES ($1, $1)
             ON CONFLICT (started_at) DO NOTHING",
            &[now.into()],
        ),
    }
}

fn pg_timestamp(micros: i64) -> TimestampWithTimeZone {
    // Bucket starts come from finite, validated timestamps floored to a bucket, so they are in
    // range; the fallback only keeps this total.
    TimestampWithTimeZone::try_from(micros)
        .unwrap_or_else(|_| TimestampWithTimeZone::negative_infinity())
}

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
#[pg_extern(
    name = "record_access",
    sql = "
CREATE FUNCTION shardcast.record_access(
    shard regclass, sampled_at timestamptz, reads double precision, writes double precision DEFAULT 0
) RETURNS void
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'record_access_wrapper';
"
)]
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
    check_sample(&sample, now_micros(), None)?;
    let shard_id = registry::shard_id_for(registry::existing_relation(shard)?)?;
    let mut sums = BucketSums::default();
    sums.add(shard_id, sample.at, &sample.access());
    add_to_buckets(&sums.into_sorted()).map_err(spi_error)?;
    Ok(())
}

/// Bulk form of `record_access`: element i of each array is one sample. Validates everything
/// before writing anything; returns the number of samples recorded.
#[pg_extern(
    name = "record_access",
    sql = "
CREATE FUNCTION shardcast.record_access(
    shards regclass[], sampled_at timestamptz[], reads double precision[],
    writes double precision[] DEFAULT NULL
) RETURNS bigint
LANGUAGE c SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'record_access_bulk_wrapper';
COMMENT ON FUNCTION shardcast.record_access(regclass[], timestamptz[], double precision[], double precision[]) IS
    'Imports many access samples at once: element i of each array is one sample; writes NULL means no writes.';
"
)]
fn record_access_bulk(
    shards: Option<Vec<Option<pg_sys::Oid>>>,
    sampled_at: Option<Vec<Option<TimestampWithTimeZone>>>,
    reads: Option<Vec<Option<f64>>>,
    writes: Option<Vec<Option<f64>>>,
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
    let mut shard_ids = registry::ShardIdCache::default();
    let mut sums = BucketSums::default();
    for i in 0..n {
        pg_sys::check_for_interrupts!();
        let element = |name: &str| null_argument(&format!("{name}[{}]", i + 1));
        let relid = shards[i].ok_or_else(|| element("shards"))?;
        let at = sampled_at[i].ok_or_else(|| element("sampled_at"))?;
        let reads = reads[i].ok_or_else(|| element("reads"))?;
        let writes = match &writes {
            Some(w) => w[i].ok_or_else(|| element("writes"))?,
            None => 0.0,
        };
        let sample = ExternalSample {
            at: at.into_inner(),
            reads,
            writes,
        };
        check_sample(&sample, now, Some(i))?;
        let shard_id = shard_ids.get(relid)?;
        sums.add(shard_id, sample.at, &sample.access());
    }
    add_to_buckets(&sums.into_sorted()).map_err(spi_error)?;
    Ok(n as i64)
}

/// Internal: spreads per-hour sums over a day row's 24 slots.
#[pg_extern(name = "_hour_slots", immutable, parallel_safe)]
fn hour_slots(hours: Vec<Option<i32>>, values: Vec<Option<f64>>) -> Vec<f32> {
    let (hours, values): (Vec<i32>, Vec<f64>) = hours
        .into_iter()
        .zip(values)
        .filter_map(|(h, v)| Some((h?, v?)))
        .unzip();
    access::hour_slots(&hours, &values).to_vec()
}

/// Internal: adds two day rows slot by slot.
#[pg_extern(name = "_add_slots", immutable, parallel_safe)]
fn add_slots(a: Vec<Option<f32>>, b: Vec<Option<f32>>) -> Vec<f32> {
    let dense = |v: Vec<Option<f32>>| v.into_iter().map(|x| x.unwrap_or(0.0)).collect::<Vec<_>>();
    access::add_slots(&dense(a), &dense(b))
}
