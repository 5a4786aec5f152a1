//! Access history in the catalog: the one write path into the fine buckets (used by the sampler
//! and by `record_access`), compaction of old buckets into day rows, purging, the sampling
//! periods, and the reads of history (a refresh's, a sparkline's, a report's).

use std::time::Duration;

use pgrx::prelude::*;
use shardcast_core::access::Access;
use shardcast_core::history::{DayRow, Histories};
use shardcast_core::report::Accesses;

use crate::gucs::LoadMeasure;

/// How long samples stay in 5-minute buckets before they are compacted into hourly slots.
pub const FINE_HISTORY_SPAN: Duration = Duration::from_secs(6 * 60 * 60);

/// The columns of the history tables that make up a shard's load (load = the measure's
/// columns + write_weight × tuples written). Fixed strings, never user input.
fn measure_columns(measure: LoadMeasure) -> (&'static str, &'static str) {
    match measure {
        LoadMeasure::Scans => ("scans", "NULL"),
        LoadMeasure::Tuples => ("tuples_read", "NULL"),
        LoadMeasure::Blocks => ("blocks_hit", "blocks_read"),
    }
}

/// The SQL expression of a shard's load over the columns of `shardcast.recent_access` (or
/// `shardcast.access_history`), `$weight` being the parameter that holds write_weight.
pub fn load_expression(measure: LoadMeasure, table: &str, weight: &str) -> String {
    let (first, second) = measure_columns(measure);
    let second = if second == "NULL" {
        String::new()
    } else {
        format!(" + {table}.{second}")
    };
    format!("({table}.{first}{second} + {weight} * {table}.tuples_written)")
}

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

/// Moves fine buckets of whole UTC hours older than [`FINE_HISTORY_SPAN`] into the day rows,
/// the oldest hours first and about `batch` buckets at most (the oldest hour whole, however many
/// it holds): an import of weeks of 5-minute history for thousands of shards is compacted over
/// several short transactions, never in one that runs for minutes. Whole UTC hours (of every
/// shard) move together, as the day rows hold them, so that no hour is read half from its day
/// row and half from its buckets between two batches. Returns the number of buckets moved; 0
/// when none is left. Buckets older than the retention are [`purge`]'s, which runs first.
pub fn compact(batch: i64) -> Result<i64, pgrx::spi::Error> {
    let fine_span = pgrx::datum::Interval::from_micros(FINE_HISTORY_SPAN.as_micros() as i64);
    // The bound first, on its own: inside the DELETE the planner could not estimate it, and took
    // every cycle's (mostly empty) compaction for a third of the table, JIT compilation included.
    // It is before the hour of the bucket `batch` places on among those old enough (the probe
    // walks no newer ones), but past the oldest hour, and never past the fine span; NULL when no
    // bucket is old enough, the case of almost every cycle.
    let Some(before) = Spi::get_one_with_args::<TimestampWithTimeZone>(
        "SELECT CASE WHEN EXISTS (SELECT FROM shardcast.recent_access r WHERE r.bucket_start < fine.before)
             THEN least(
                 fine.before,
                 greatest(
                     coalesce(date_trunc('hour', (SELECT r.bucket_start FROM shardcast.recent_access r
                                                  WHERE r.bucket_start < fine.before
                                                  ORDER BY r.bucket_start OFFSET $2 LIMIT 1), 'UTC'),
                              'infinity'),
                     date_trunc('hour', (SELECT min(r.bucket_start) FROM shardcast.recent_access r), 'UTC')
                         + interval '1 hour'))
             END
         FROM (SELECT date_trunc('hour', now() - $1::interval, 'UTC') AS before) fine",
        &[fine_span.into(), batch.max(1).into()],
    )?
    else {
        return Ok(0);
    };
    let moved = Spi::get_one_with_args::<i64>(
        "WITH moved AS (
             DELETE FROM shardcast.recent_access
             WHERE bucket_start < $1
             RETURNING *
         ), hourly AS (
             SELECT m.shard_id,
                    (m.bucket_start AT TIME ZONE 'UTC')::date AS day,
                    extract(hour FROM m.bucket_start AT TIME ZONE 'UTC')::int4 AS hour,
                    sum(m.scans) AS scans, sum(m.tuples_read) AS tuples_read,
                    sum(m.tuples_written) AS tuples_written, sum(m.blocks_hit) AS blocks_hit,
                    sum(m.blocks_read) AS blocks_read,
                    -- A bucket in time the worker did not observe (for this shard) is imported:
                    -- the hour's measure is then not scaled up once compacted.
                    bool_or(NOT EXISTS (
                        SELECT 1 FROM shardcast.sampling_periods p
                        WHERE p.started_at < m.bucket_start + interval '5 minutes'
                          AND p.ended_at > greatest(m.bucket_start, s.first_seen)
                          AND greatest(p.started_at, s.first_seen, m.bucket_start)
                              < least(p.ended_at, m.bucket_start + interval '5 minutes'))) AS imported
             FROM moved m
             JOIN shardcast.shards s ON s.shard_id = m.shard_id
             GROUP BY 1, 2, 3
         ), merged AS (
             INSERT INTO shardcast.daily_access AS d
                    (shard_id, day, scans, tuples_read, tuples_written, blocks_hit, blocks_read,
                     hours_present, hours_imported)
             SELECT shard_id, day,
                    shardcast._hour_slots(array_agg(hour), array_agg(scans)),
                    shardcast._hour_slots(array_agg(hour), array_agg(tuples_read)),
                    shardcast._hour_slots(array_agg(hour), array_agg(tuples_written)),
                    shardcast._hour_slots(array_agg(hour), array_agg(blocks_hit)),
                    shardcast._hour_slots(array_agg(hour), array_agg(blocks_read)),
                    bit_or(1 << hour),
                    bit_or(CASE WHEN imported THEN 1 << hour ELSE 0 END)
             FROM hourly
             GROUP BY shard_id, day
             ORDER BY shard_id, day
             ON CONFLICT (shard_id, day) DO UPDATE SET
                    hours_present = d.hours_present | excluded.hours_present,
                    hours_imported = d.hours_imported | excluded.hours_imported,
                    scans = shardcast._add_slots(d.scans, excluded.scans),
                    tuples_read = shardcast._add_slots(d.tuples_read, excluded.tuples_read),
                    tuples_written = shardcast._add_slots(d.tuples_written, excluded.tuples_written),
                    blocks_hit = shardcast._add_slots(d.blocks_hit, excluded.blocks_hit),
                    blocks_read = shardcast._add_slots(d.blocks_read, excluded.blocks_read)
         )
         SELECT count(*) FROM moved",
        &[before.into()],
    )?
    .unwrap_or(0);
    Ok(moved)
}

/// [`purge`], then [`compact`] until nothing is left, in the caller's transaction: for tests.
#[cfg(any(test, feature = "pg_test"))]
pub fn compact_and_purge(retention: Duration) -> Result<i64, pgrx::spi::Error> {
    purge(retention)?;
    let mut moved = 0;
    loop {
        match compact(i64::MAX)? {
            0 => return Ok(moved),
            n => moved += n,
        }
    }
}

/// Purges history older than `retention` (compacted history by whole UTC days) without
/// compacting: what `refresh_forecasts()` does, so that history imported where no worker samples
/// (another database, or while the worker is paused) stays bounded, and what the worker does
/// before it compacts. It leaves the newer 5-minute buckets as they are, so a refresh forecasts
/// from the same history it read before.
pub fn purge(retention: Duration) -> Result<(), pgrx::spi::Error> {
    let retention = pgrx::datum::Interval::from_micros(retention.as_micros() as i64);
    Spi::run_with_args(
        "DELETE FROM shardcast.recent_access WHERE bucket_start < now() - $1::interval",
        &[retention.into()],
    )?;
    purge_older(retention)
}

fn purge_older(retention: pgrx::datum::Interval) -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "DELETE FROM shardcast.daily_access
         WHERE day < ((now() - $1::interval) AT TIME ZONE 'UTC')::date",
        &[retention.into()],
    )?;
    Spi::run_with_args(
        "DELETE FROM shardcast.sampling_periods WHERE ended_at < now() - $1::interval",
        &[retention.into()],
    )?;
    Spi::run_with_args(
        "DELETE FROM shardcast.shard_gaps WHERE ended_at < now() - $1::interval",
        &[retention.into()],
    )
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

/// The moment a refresh reads history at: the transaction's time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// In seconds since the Unix epoch, as the core's series count time.
    pub epoch: f64,
    /// The same, exactly, as the catalog stores it: where the forecast's window starts.
    pub at: TimestampWithTimeZone,
    /// The UTC hour of day of the hour ahead (the one a forecast starts in).
    pub next_hour: usize,
}

pub fn clock() -> Result<Clock, pgrx::spi::Error> {
    let (epoch, at, next_hour) = Spi::get_three::<f64, TimestampWithTimeZone, i32>(
        "SELECT extract(epoch FROM now())::float8, now(),
                extract(hour FROM (now() + interval '30 minutes') AT TIME ZONE 'UTC')::int4",
    )?;
    Ok(Clock {
        epoch: epoch.unwrap_or_default(),
        at: at.unwrap_or_else(TimestampWithTimeZone::negative_infinity),
        next_hour: next_hour.unwrap_or_default().clamp(0, 23) as usize,
    })
}

/// The spans the worker sampled that end at or after `start` (seconds since the Unix epoch).
pub fn sampling_periods(start: f64) -> Result<Vec<(f64, f64)>, pgrx::spi::Error> {
    Spi::connect(|client| {
        let mut periods = Vec::new();
        for row in client.select(
            "SELECT extract(epoch FROM started_at)::float8, extract(epoch FROM ended_at)::float8
             FROM shardcast.sampling_periods WHERE ended_at >= to_timestamp($1)",
            None,
            &[start.into()],
        )? {
            if let (Some(from), Some(to)) = (row.get::<f64>(1)?, row.get::<f64>(2)?) {
                periods.push((from, to));
            }
        }
        Ok(periods)
    })
}

/// The spans that end at or after `start` (seconds since the Unix epoch) when one shard was not
/// read though the worker sampled (`shardcast.shard_gaps`): (shard id, from, to).
pub fn shard_gaps(start: f64) -> Result<Vec<(i32, f64, f64)>, pgrx::spi::Error> {
    Spi::connect(|client| {
        let mut gaps = Vec::new();
        for row in client.select(
            "SELECT shard_id, extract(epoch FROM started_at)::float8, extract(epoch FROM ended_at)::float8
             FROM shardcast.shard_gaps WHERE ended_at >= to_timestamp($1)",
            None,
            &[start.into()],
        )? {
            if let (Some(id), Some(from), Some(to)) =
                (row.get::<i32>(1)?, row.get::<f64>(2)?, row.get::<f64>(3)?)
            {
                gaps.push((id, from, to));
            }
        }
        Ok(gaps)
    })
}

/// Adds the live shards' history from `start` (seconds since the Unix epoch) to `histories`:
/// the day rows, then the fine buckets.
pub fn read_into(
    histories: &mut Histories,
    measure: LoadMeasure,
    write_weight: f64,
    start: f64,
) -> Result<(), pgrx::spi::Error> {
    Spi::connect(|client| {
        let (first, second) = measure_columns(measure);
        let days = client.select(
            &format!(
                "SELECT d.shard_id, extract(epoch FROM d.day::timestamp)::float8,
                        d.{first}, {second}::real[], d.tuples_written, d.hours_present,
                        d.hours_imported
                 FROM shardcast.daily_access d
                 JOIN shardcast.shards s ON s.shard_id = d.shard_id AND s.retired_at IS NULL
                 WHERE d.day >= (to_timestamp($1) AT TIME ZONE 'UTC')::date"
            ),
            None,
            &[start.into()],
        )?;
        // A row's worth of work between checks: 10,000 shards x 28 days are 280,000 rows.
        for row in days {
            pg_sys::check_for_interrupts!();
            let shard_id = row.get::<i32>(1)?.unwrap_or_default();
            if !histories.contains(shard_id) {
                continue;
            }
            let day_start = row.get::<f64>(2)?.unwrap_or_default();
            // Borrowed arrays: the day rows are the bulk of what a refresh reads.
            let first = row.get::<pgrx::Array<f32>>(3)?;
            let second = row.get::<pgrx::Array<f32>>(4)?;
            let written = row.get::<pgrx::Array<f32>>(5)?;
            let slots = |a: &Option<pgrx::Array<f32>>| -> Vec<f32> {
                match a.as_ref().map(|a| a.as_slice()) {
                    Some(Ok(slice)) => slice.to_vec(),
                    _ => a
                        .as_ref()
                        .map(|a| a.iter().map(|v| v.unwrap_or(0.0)).collect())
                        .unwrap_or_default(),
                }
            };
            let (first, second, written) = (slots(&first), slots(&second), slots(&written));
            histories.add_day(
                shard_id,
                &DayRow {
                    start: day_start,
                    first: &first,
                    second: &second,
                    written: &written,
                    present: row.get::<i32>(6)?.unwrap_or(0),
                    imported: row.get::<i32>(7)?.unwrap_or(0),
                },
            );
        }
        let recent = client.select(
            &format!(
                "SELECT r.shard_id, extract(epoch FROM r.bucket_start)::float8, {}
                 FROM shardcast.recent_access r
                 JOIN shardcast.shards s ON s.shard_id = r.shard_id AND s.retired_at IS NULL
                 WHERE r.bucket_start >= to_timestamp($1) - interval '5 minutes'",
                load_expression(measure, "r", "$2")
            ),
            None,
            &[start.into(), write_weight.into()],
        )?;
        for row in recent {
            pg_sys::check_for_interrupts!();
            let shard_id = row.get::<i32>(1)?.unwrap_or_default();
            if !histories.contains(shard_id) {
                continue;
            }
            histories.add_bucket(
                shard_id,
                row.get::<f64>(2)?.unwrap_or_default(),
                row.get::<f64>(3)?.unwrap_or_default(),
            );
        }
        Ok(())
    })
}

/// The hourly load of the live shard of `relid` over the last `hours` hours (0 where there is
/// none, and for an OID that is no shard). Hours are UTC hours, as history's buckets are: in a
/// session zone half an hour off UTC, the session's hours would split each of them.
pub fn hourly_load(
    relid: pg_sys::Oid,
    hours: i32,
    measure: LoadMeasure,
    write_weight: f64,
) -> Result<Vec<f64>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                &format!(
                    "SELECT coalesce(sum({}), 0)::float8
                     FROM generate_series(date_trunc('hour', now(), 'UTC') - make_interval(hours => $2),
                                          date_trunc('hour', now(), 'UTC'), interval '1 hour') AS g(hour)
                     LEFT JOIN shardcast.access_history h
                            ON h.shard_id = (SELECT s.shard_id FROM shardcast.shards s
                                             WHERE s.relid = $1 AND s.retired_at IS NULL
                                               AND to_jsonb(s) ->> 'citus_shard_id' IS NULL)
                           AND date_trunc('hour', h.bucket_start, 'UTC') = g.hour
                     GROUP BY g.hour ORDER BY g.hour",
                    load_expression(measure, "h", "$3")
                ),
                None,
                &[relid.into(), hours.into(), write_weight.into()],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                row.get::<f64>(1).map(|v| v.unwrap_or_default())
            })
            .collect::<Result<Vec<_>, _>>()
    })
}

/// The accesses of the shards `ids` during [start, end] (seconds since the Unix epoch), each
/// `Accesses::shard` being the shard's index in `ids`.
pub fn accesses(
    ids: &[i32],
    start: f64,
    end: f64,
    measure: LoadMeasure,
    write_weight: f64,
) -> Result<Vec<Accesses>, pgrx::spi::Error> {
    let load = load_expression(measure, "h", "$4");
    Spi::connect(|client| {
        client
            .select(
                &format!(
                    "SELECT array_position($1::int4[], h.shard_id) - 1,
                            extract(epoch FROM h.bucket_start)::float8,
                            extract(epoch FROM h.bucket_start + h.bucket_width)::float8,
                            {load}::float8
                     FROM shardcast.access_history h
                     WHERE h.shard_id = ANY($1)
                       AND h.bucket_start < to_timestamp($3) AND h.bucket_start + h.bucket_width > to_timestamp($2)"
                ),
                None,
                &[ids.to_vec().into(), start.into(), end.into(), write_weight.into()],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                Ok(Accesses {
                    shard: row.get::<i32>(1)?.unwrap_or_default().max(0) as usize,
                    start: row.get::<f64>(2)?.unwrap_or_default(),
                    end: row.get::<f64>(3)?.unwrap_or_default(),
                    load: row.get::<f64>(4)?.unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
}
