// Importing history (`record_access`, api/history.rs), its compaction and retention
// (catalog/history.rs), and the `shard_activity` view over it.

/// The 5-minute buckets of the live table `table_name` (not yet compacted).
fn fine_buckets(table_name: &str) -> i64 {
    Spi::get_one_with_args::<i64>(
        "SELECT count(*) FROM shardcast.recent_access r JOIN shardcast.shards s USING (shard_id)
         WHERE s.table_name = $1",
        &[table_name.into()],
    )
    .unwrap()
    .unwrap()
}

fn total_buckets() -> i64 {
    Spi::get_one::<i64>(
        "SELECT (SELECT count(*) FROM shardcast.recent_access) + (SELECT count(*) FROM shardcast.daily_access)",
    )
    .unwrap()
    .unwrap()
}

#[pg_test]
fn record_access_adds_to_history() {
    Spi::run("CREATE TABLE public.t_ext (id int)").unwrap();
    Spi::run("SELECT shardcast.record_access('public.t_ext', now() - interval '1 minute', 10, 2)").unwrap();
    Spi::run("SELECT shardcast.record_access('public.t_ext', now() - interval '1 minute', 5)").unwrap();
    assert_eq!(history_reads("public.t_ext"), 15.0);
    let writes = Spi::get_one::<f64>(
        "SELECT sum(tuples_written) FROM shardcast.access_history WHERE shard = 'public.t_ext'::regclass",
    )
    .unwrap();
    assert_eq!(writes, Some(2.0));
}

#[pg_test]
fn bulk_record_access_buckets_samples_and_counts_them() {
    Spi::run("CREATE TABLE public.t_bulk_a (id int); CREATE TABLE public.t_bulk_b (id int)").unwrap();
    let recorded = Spi::get_one::<i64>(
        "SELECT shardcast.record_access(
             array_agg(CASE WHEN i % 2 = 0 THEN 'public.t_bulk_a' ELSE 'public.t_bulk_b' END::regclass),
             array_agg(now() - interval '2 hours' + (i % 30) * interval '1 minute'),
             array_agg(1.0::float8),
             array_agg(0.5::float8))
         FROM generate_series(1, 10000) i",
    )
    .unwrap();
    assert_eq!(recorded, Some(10000));
    assert_eq!(history_reads("public.t_bulk_a") + history_reads("public.t_bulk_b"), 10000.0);
    // 30 minutes of samples fall into 6 or 7 five-minute buckets per shard, not 5,000 rows.
    let buckets = Spi::get_one::<i64>(
        "SELECT count(*) FROM shardcast.recent_access r JOIN shardcast.shards s USING (shard_id)
         WHERE s.table_name IN ('t_bulk_a', 't_bulk_b')",
    )
    .unwrap()
    .unwrap();
    assert!((12..=14).contains(&buckets), "{buckets} buckets");
}

#[pg_test]
fn bad_input_is_an_error_with_sqlstate_and_hint_and_writes_nothing() {
    Spi::run("CREATE TABLE public.t_bad (id int)").unwrap();
    Spi::run("CREATE VIEW public.v_bad AS SELECT 1 AS x").unwrap();
    Spi::run("CREATE SEQUENCE public.s_bad").unwrap();
    Spi::run("CREATE TABLE public.p_bad (id int) PARTITION BY RANGE (id)").unwrap();
    Spi::run("CREATE TEMP TABLE tmp_bad (id int)").unwrap();
    let before = total_buckets();
    let cases = [
        ("SELECT shardcast.record_access(NULL, now(), 1)", "22004"),
        ("SELECT shardcast.record_access('public.t_bad', NULL, 1)", "22004"),
        ("SELECT shardcast.record_access('public.t_bad', now(), NULL)", "22004"),
        ("SELECT shardcast.record_access('public.t_bad', now(), 1, NULL)", "22004"),
        ("SELECT shardcast.record_access('public.t_bad', now(), -1)", "22003"),
        ("SELECT shardcast.record_access('public.t_bad', now(), 1, -0.5)", "22003"),
        ("SELECT shardcast.record_access('public.t_bad', now(), 'NaN')", "22003"),
        ("SELECT shardcast.record_access('public.t_bad', now(), 'Infinity')", "22003"),
        // Huge but finite counts would overflow history sums (and stall the worker): refused.
        ("SELECT shardcast.record_access('public.t_bad', now(), 1e308)", "22003"),
        ("SELECT shardcast.record_access('public.t_bad', now(), 1, 1e16)", "22003"),
        ("SELECT shardcast.record_access('public.t_bad', now(), 1, '-Infinity')", "22003"),
        ("SELECT shardcast.record_access('public.t_bad', now() + interval '1 hour', 1)", "22023"),
        ("SELECT shardcast.record_access('public.t_bad', 'infinity', 1)", "22023"),
        ("SELECT shardcast.record_access('public.t_bad', '-infinity', 1)", "22023"),
        ("SELECT shardcast.record_access('public.v_bad', now(), 1)", "42809"),
        ("SELECT shardcast.record_access('public.s_bad', now(), 1)", "42809"),
        ("SELECT shardcast.record_access('public.p_bad', now(), 1)", "42809"),
        ("SELECT shardcast.record_access('tmp_bad', now(), 1)", "42809"),
        ("SELECT shardcast.record_access('shardcast.shards', now(), 1)", "42809"),
        ("SELECT shardcast.record_access('pg_catalog.pg_class', now(), 1)", "42809"),
        // Bulk: one bad element fails the whole call, before anything is written.
        (
            "SELECT shardcast.record_access(ARRAY['public.t_bad', 'public.t_bad']::regclass[],
                 ARRAY[now(), now()], ARRAY[1, -1]::float8[])",
            "22003",
        ),
        (
            "SELECT shardcast.record_access(ARRAY['public.t_bad', NULL]::regclass[],
                 ARRAY[now(), now()], ARRAY[1, 1]::float8[])",
            "22004",
        ),
        (
            "SELECT shardcast.record_access(ARRAY['public.t_bad', 'public.v_bad']::regclass[],
                 ARRAY[now(), now()], ARRAY[1, 1]::float8[])",
            "42809",
        ),
        (
            "SELECT shardcast.record_access(ARRAY['public.t_bad']::regclass[],
                 ARRAY[now(), now()], ARRAY[1, 1]::float8[])",
            "22023",
        ),
        ("SELECT shardcast.record_access(NULL::regclass[], ARRAY[now()], ARRAY[1::float8])", "22004"),
    ];
    for (sql, sqlstate) in cases {
        assert_eq!(outcome(sql), format!("{sqlstate} with hint"), "{sql}");
    }
    assert_eq!(total_buckets(), before, "a refused call wrote history");
}

#[pg_test]
fn purging_drops_what_is_past_the_retention_and_compacts_nothing() {
    // What refresh_forecasts() runs where no sampler runs (pg_test/test_worker.py checks that).
    Spi::run("CREATE TABLE public.t_imported (id int)").unwrap();
    Spi::run(
        "SELECT shardcast.record_access('public.t_imported', now() - interval '10 days', 3);
         SELECT shardcast.record_access('public.t_imported', now() - interval '1 minute', 2);",
    )
    .unwrap();
    // A bucket imported long ago, now past the retention (28 days), as time would make it.
    Spi::run(
        "INSERT INTO shardcast.recent_access (shard_id, bucket_start, scans, tuples_read, blocks_hit)
         SELECT shard_id, date_trunc('hour', now()) - interval '30 days', 5, 5, 5
         FROM shardcast.shards WHERE table_name = 't_imported'",
    )
    .unwrap();
    let fine = || fine_buckets("t_imported");
    assert_eq!(fine(), 3);
    crate::catalog::history::purge(crate::gucs::history_retention()).unwrap();
    // The bucket past the retention is gone; the 10-day-old one is still a 5-minute bucket.
    assert_eq!(fine(), 2);
    assert_eq!(history_reads("public.t_imported"), 5.0);
}

#[pg_test]
fn compaction_moves_old_buckets_into_hourly_slots_and_retention_purges() {
    Spi::run("CREATE TABLE public.t_old (id int)").unwrap();
    Spi::run(
        "SELECT shardcast.record_access('public.t_old', date_trunc('hour', now()) - interval '10 hours' + interval '7 minutes', 3);
         SELECT shardcast.record_access('public.t_old', date_trunc('hour', now()) - interval '10 hours' + interval '47 minutes', 4);
         SELECT shardcast.record_access('public.t_old', now() - interval '3 days', 100);
         SELECT shardcast.record_access('public.t_old', now() - interval '1 minute', 1);",
    )
    .unwrap();
    assert_eq!(history_reads("public.t_old"), 108.0);
    // A retention of two days (history older than the default 28 days is not recorded at all).
    // (The purge drops the 3-day-old bucket first; two buckets are compacted.)
    let moved = crate::catalog::history::compact_and_purge(std::time::Duration::from_secs(2 * 86400)).unwrap();
    assert_eq!(moved, 2);
    // The 3-day-old sample is gone, the two from 10 hours ago are one hourly bucket.
    assert_eq!(history_reads("public.t_old"), 8.0);
    let hourly = Spi::get_one::<f64>(
        "SELECT tuples_read FROM shardcast.access_history
         WHERE shard = 'public.t_old'::regclass AND bucket_width = interval '1 hour'
           AND bucket_start = date_trunc('hour', now()) - interval '10 hours'",
    )
    .unwrap();
    assert_eq!(hourly, Some(7.0));
    // Compacting the same hour again (a late import) adds to the day row.
    Spi::run(
        "SELECT shardcast.record_access('public.t_old', date_trunc('hour', now()) - interval '10 hours', 5)",
    )
    .unwrap();
    crate::catalog::history::compact_and_purge(std::time::Duration::from_secs(28 * 86400)).unwrap();
    assert_eq!(history_reads("public.t_old"), 13.0);
    let day_rows = Spi::get_one::<i64>(
        "SELECT count(*) FROM shardcast.daily_access d JOIN shardcast.shards s USING (shard_id)
         WHERE s.table_name = 't_old'",
    )
    .unwrap();
    assert!(matches!(day_rows, Some(1) | Some(2)));
}

#[pg_test]
fn compaction_moves_whole_hours_a_batch_at_a_time() {
    // Three UTC hours of 5-minute buckets 20 days ago, older than anything else in the catalog;
    // in a time zone whose hours are not UTC hours (India's, +05:30), since day rows hold UTC
    // hours and the batches move whole ones.
    Spi::run("SET LOCAL timezone = 'Asia/Kolkata'").unwrap();
    Spi::run("CREATE TABLE public.t_batch (id int)").unwrap();
    Spi::run(
        "SELECT shardcast.record_access(array_fill('public.t_batch'::regclass, ARRAY[36]),
                                        ARRAY(SELECT date_trunc('hour', now(), 'UTC') - interval '20 days'
                                                     + k * interval '5 minutes'
                                              FROM generate_series(0, 35) k),
                                        array_fill(1::float8, ARRAY[36]))",
    )
    .unwrap();
    let fine = || fine_buckets("t_batch");
    let compact = |batch: i64| crate::catalog::history::compact(batch).unwrap();
    assert_eq!(fine(), 36);
    // A batch smaller than an hour still moves the oldest hour, whole.
    assert!(compact(5) >= 12);
    assert_eq!(fine(), 24);
    assert_eq!(history_reads("public.t_batch"), 36.0);
    // The 14th bucket is in the third hour: the batch stops before it, after the second.
    compact(13);
    assert_eq!(fine(), 12);
    assert_eq!(history_reads("public.t_batch"), 36.0);
    // No batch limit: everything older than the fine span.
    compact(i64::MAX);
    assert_eq!(fine(), 0);
    assert_eq!(history_reads("public.t_batch"), 36.0);
    let hourly = Spi::get_one::<i64>(
        "SELECT count(*) FROM shardcast.access_history
         WHERE shard = 'public.t_batch'::regclass AND bucket_width = interval '1 hour' AND tuples_read = 12",
    )
    .unwrap();
    assert_eq!(hourly, Some(3));
    // Nothing older than the fine span is left (in this transaction's catalog): 0 moved.
    Spi::run("DELETE FROM shardcast.recent_access WHERE bucket_start < date_trunc('hour', now() - interval '6 hours', 'UTC')").unwrap();
    assert_eq!(compact(5), 0);
}

#[pg_test]
fn compaction_keeps_the_history_a_refresh_reads() {
    // The worker first saw the table 50 minutes into an hour 8 hours ago and sampled it for 6
    // hours from then; the 50 minutes before were imported. That hour is 50 minutes of import
    // and 10 of measure, neither scaled: once its buckets are compacted into an hourly slot,
    // the history must read the same (the slot spreads the hour's load evenly, which moves
    // load between the two now-aligned hours it overlaps, but changes no total).
    Spi::run("CREATE TABLE public.t_mixed (id int)").unwrap();
    Spi::run(
        "SELECT shardcast.record_access('public.t_mixed', date_trunc('hour', now()) - interval '8 hours'
                                        + k * interval '5 minutes', 60)
         FROM generate_series(0, 9) k;
         SELECT shardcast.record_access('public.t_mixed', date_trunc('hour', now()) - interval '8 hours'
                                        + interval '52 minutes', 12);
         UPDATE shardcast.shards SET first_seen = date_trunc('hour', now()) - interval '8 hours' + interval '50 minutes'
         WHERE relid = 'public.t_mixed'::regclass AND retired_at IS NULL;
         DELETE FROM shardcast.sampling_periods
         WHERE started_at < date_trunc('hour', now()) - interval '2 hours';
         INSERT INTO shardcast.sampling_periods (started_at, ended_at)
         VALUES (date_trunc('hour', now()) - interval '8 hours' + interval '50 minutes',
                 date_trunc('hour', now()) - interval '2 hours');",
    )
    .unwrap();
    let shard = Spi::get_one::<i32>(
        "SELECT shard_id FROM shardcast.shards WHERE relid = 'public.t_mixed'::regclass AND retired_at IS NULL",
    )
    .unwrap()
    .unwrap();
    let total = || crate::worker::refresh::known_history(shard).iter().sum::<f64>();
    let before = total();
    assert!((before - 612.0).abs() < 6.0, "before compaction: {before}");
    crate::catalog::history::compact_and_purge(std::time::Duration::from_secs(28 * 86400)).unwrap();
    let after = total();
    assert!((after - before).abs() < 1e-6, "before compaction {before}, after {after}");
    // Whether the now-aligned hours overlapping it are scaled at all depends on the minute of
    // now(): the day row says that the hour held imports whatever the minute.
    let flagged = Spi::get_one_with_args::<bool>(
        "SELECT d.hours_imported & (1 << extract(hour FROM (date_trunc('hour', now()) - interval '8 hours')
                                                          AT TIME ZONE 'UTC')::int) <> 0
         FROM shardcast.daily_access d
         WHERE d.shard_id = $1
           AND d.day = ((date_trunc('hour', now()) - interval '8 hours') AT TIME ZONE 'UTC')::date",
        &[shard.into()],
    )
    .unwrap();
    assert_eq!(flagged, Some(true));
}

#[pg_test]
fn shard_activity_shows_live_shards_with_totals() {
    Spi::run("CREATE TABLE public.t_act (id int)").unwrap();
    Spi::run(
        "SELECT shardcast.record_access('public.t_act', now() - interval '2 minutes', 900, 90);
         SELECT shardcast.record_access('public.t_act', now() - interval '3 hours', 50);",
    )
    .unwrap();
    let (hour, day) = Spi::get_two::<f64, f64>(
        "SELECT tuples_read_last_hour, tuples_read_last_day FROM shardcast.shard_activity
         WHERE shard = 'public.t_act'::regclass",
    )
    .unwrap();
    assert_eq!((hour, day), (Some(900.0), Some(950.0)));
}
