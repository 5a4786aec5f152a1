// Tests of the SQL surface and of each worker stage, called directly. A #[pg_test] is one
// transaction that is rolled back, so sampling of real accesses is tested end to end in pg_test/.

use pgrx::prelude::*;

/// Runs `sql` and returns "ok", or the SQLSTATE and hint of the error it raised, without
/// aborting the test's transaction.
fn outcome(sql: &str) -> String {
    Spi::run(
        r#"CREATE OR REPLACE FUNCTION pg_temp.outcome(q text) RETURNS text LANGUAGE plpgsql AS $$
           DECLARE hint text;
           BEGIN
               EXECUTE q;
               RETURN 'ok';
           EXCEPTION WHEN OTHERS THEN
               GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
               RETURN SQLSTATE || CASE WHEN hint <> '' THEN ' with hint' ELSE ' without hint' END;
           END $$"#,
    )
    .unwrap();
    Spi::get_one_with_args::<String>("SELECT pg_temp.outcome($1)", &[sql.into()]).unwrap().unwrap()
}

fn history_reads(table: &str) -> f64 {
    Spi::get_one_with_args::<f64>(
        "SELECT coalesce(sum(tuples_read), 0) FROM shardcast.access_history WHERE shard = $1::regclass",
        &[table.into()],
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
fn sync_registers_tables_and_leaf_partitions_only() {
    Spi::run(
        "CREATE TABLE public.t_plain (id int);
         CREATE TABLE public.t_parted (id int) PARTITION BY RANGE (id);
         CREATE TABLE public.t_part_1 PARTITION OF public.t_parted FOR VALUES FROM (0) TO (10);
         CREATE TABLE public.t_part_2 PARTITION OF public.t_parted FOR VALUES FROM (10) TO (20);
         CREATE VIEW public.v_plain AS SELECT 1;
         CREATE MATERIALIZED VIEW public.mv_plain AS SELECT 1;",
    )
    .unwrap();
    crate::catalog::shards::sync().unwrap();
    let shards = Spi::get_one::<String>(
        "SELECT string_agg(table_name || ':' || coalesce(parent_relid::regclass::text, '-'), ',' ORDER BY table_name)
         FROM shardcast.shards WHERE retired_at IS NULL AND table_name ~ '^(t_|v_|mv_)'",
    )
    .unwrap();
    assert_eq!(shards.as_deref(), Some("t_part_1:t_parted,t_part_2:t_parted,t_plain:-"));
}

#[pg_test]
fn dropped_table_is_retired_and_its_successor_is_a_new_shard() {
    Spi::run("CREATE TABLE public.t_reborn (id int)").unwrap();
    crate::catalog::shards::sync().unwrap();
    Spi::run("SELECT shardcast.record_access('public.t_reborn', now(), 7)").unwrap();
    let first = Spi::get_one::<i32>(
        "SELECT shard_id FROM shardcast.shards WHERE table_name = 't_reborn' AND retired_at IS NULL",
    )
    .unwrap();
    Spi::run("DROP TABLE public.t_reborn; CREATE TABLE public.t_reborn (id int)").unwrap();
    let (registered, retired) = crate::catalog::shards::sync().unwrap();
    assert!(registered >= 1 && retired >= 1);
    let rows = Spi::get_one::<String>(
        "SELECT string_agg(shard_id || ':' || (retired_at IS NOT NULL), ',' ORDER BY shard_id)
         FROM shardcast.shards WHERE table_name = 't_reborn'",
    )
    .unwrap()
    .unwrap();
    let first = first.unwrap();
    assert!(rows.starts_with(&format!("{first}:true,")), "{rows}");
    assert!(rows.ends_with(":false"), "{rows}");
    // The retired shard keeps its history; the new one starts empty.
    assert_eq!(history_reads("public.t_reborn"), 0.0);
    let kept = Spi::get_one_with_args::<f64>(
        "SELECT sum(tuples_read) FROM shardcast.access_history WHERE shard_id = $1 AND shard IS NULL",
        &[first.into()],
    )
    .unwrap();
    assert_eq!(kept, Some(7.0));
}

#[pg_test]
fn renamed_table_is_a_new_shard() {
    Spi::run("CREATE TABLE public.t_old_name (id int)").unwrap();
    crate::catalog::shards::sync().unwrap();
    Spi::run("ALTER TABLE public.t_old_name RENAME TO t_new_name").unwrap();
    crate::catalog::shards::sync().unwrap();
    let live = Spi::get_one::<String>(
        "SELECT string_agg(table_name, ',') FROM shardcast.shards
         WHERE retired_at IS NULL AND table_name IN ('t_old_name', 't_new_name')",
    )
    .unwrap();
    assert_eq!(live.as_deref(), Some("t_new_name"));
}

#[pg_test]
fn compaction_moves_old_buckets_into_hourly_slots_and_retention_purges() {
    Spi::run("CREATE TABLE public.t_old (id int)").unwrap();
    Spi::run(
        "SELECT shardcast.record_access('public.t_old', date_trunc('hour', now()) - interval '10 hours' + interval '7 minutes', 3);
         SELECT shardcast.record_access('public.t_old', date_trunc('hour', now()) - interval '10 hours' + interval '47 minutes', 4);
         SELECT shardcast.record_access('public.t_old', now() - interval '40 days', 100);
         SELECT shardcast.record_access('public.t_old', now() - interval '1 minute', 1);",
    )
    .unwrap();
    assert_eq!(history_reads("public.t_old"), 108.0);
    let moved = crate::catalog::history::compact_and_purge(std::time::Duration::from_secs(28 * 86400)).unwrap();
    assert_eq!(moved, 3);
    // The 40-day-old sample is gone, the two from 10 hours ago are one hourly bucket.
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

#[pg_test]
fn worker_status_has_one_row() {
    let rows = Spi::get_one::<i64>("SELECT count(*) FROM shardcast.worker_status").unwrap();
    assert_eq!(rows, Some(1));
}

#[pg_test]
fn settings_have_units_and_bounds() {
    let interval = Spi::get_one::<String>(
        "SELECT unit || ' ' || min_val || '..' || max_val || ' ' || context
         FROM pg_settings WHERE name = 'shardcast.sample_interval'",
    )
    .unwrap();
    assert_eq!(interval.as_deref(), Some("s 1..86400 sighup"));
    let retention =
        Spi::get_one::<String>("SELECT setting || unit FROM pg_settings WHERE name = 'shardcast.history_retention'")
            .unwrap();
    assert_eq!(retention.as_deref(), Some("40320min"));
    // The queue's order settings are server-wide: the stored order every claimer follows.
    let window = Spi::get_one::<String>(
        "SELECT setting || unit || ' ' || min_val || '..' || max_val || ' ' || context
         FROM pg_settings WHERE name = 'shardcast.overtake_window'",
    )
    .unwrap();
    assert_eq!(window.as_deref(), Some("3600s 0..604800 sighup"));
    let ordering =
        Spi::get_one::<String>("SELECT setting || ' ' || context FROM pg_settings WHERE name = 'shardcast.ordering'")
            .unwrap();
    assert_eq!(ordering.as_deref(), Some("wspt sighup"));
    assert_eq!(
        Spi::get_one::<i64>("SELECT count(*) FROM pg_settings WHERE name = 'shardcast.min_tier_share'").unwrap(),
        Some(0)
    );
}

#[pg_test]
fn views_are_public_and_recording_is_not() {
    let privileges = Spi::get_one::<String>(
        "SELECT concat_ws(',',
             has_table_privilege('public', 'shardcast.shard_activity', 'SELECT'),
             has_table_privilege('public', 'shardcast.access_history', 'SELECT'),
             has_table_privilege('public', 'shardcast.worker_status', 'SELECT'),
             has_table_privilege('public', 'shardcast.recent_access', 'INSERT'),
             has_function_privilege('public', 'shardcast.record_access(regclass, timestamptz, float8, float8)', 'EXECUTE'),
             has_function_privilege('public', 'shardcast.record_access(regclass[], timestamptz[], float8[], float8[])', 'EXECUTE'))",
    )
    .unwrap();
    assert_eq!(privileges.as_deref(), Some("t,t,t,f,f,f"));
}

#[pg_test]
fn classes_apply_to_tables_and_partitions_inherit_them() {
    Spi::run(
        "CREATE TABLE public.c_orders (id int, at date) PARTITION BY RANGE (at);
         CREATE TABLE public.c_orders_1 PARTITION OF public.c_orders FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
         CREATE TABLE public.c_orders_2 PARTITION OF public.c_orders FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
         CREATE TABLE public.c_log (id int);
         CREATE TABLE public.c_plain (id int);
         SELECT shardcast.set_shard_class('public.c_orders', 'critical');
         SELECT shardcast.set_shard_class('public.c_orders_2', 'normal');
         SELECT shardcast.set_shard_class('public.c_log', 'log');",
    )
    .unwrap();
    crate::catalog::shards::sync().unwrap();
    let classes = Spi::get_one::<String>(
        "SELECT string_agg(shard::text || '=' || class || ':' || weight || ':' || coalesce(class_source::text, '-'), ' ' ORDER BY shard::text)
         FROM shardcast.effective_classes WHERE shard::text LIKE 'c\\_%'",
    )
    .unwrap();
    assert_eq!(
        classes.as_deref(),
        Some("c_log=log:0.1:c_log c_orders_1=critical:10:c_orders c_orders_2=normal:1:c_orders_2 c_plain=normal:1:-")
    );
}

#[pg_test]
fn bad_class_input_is_an_error_with_sqlstate_and_hint() {
    Spi::run("CREATE TABLE public.c_bad (id int); CREATE VIEW public.c_view AS SELECT 1").unwrap();
    let cases = [
        ("SELECT shardcast.set_shard_class('public.c_bad', 'vip')", "22023"),
        ("SELECT shardcast.set_shard_class('public.c_bad', NULL)", "22004"),
        ("SELECT shardcast.set_shard_class(NULL, 'log')", "22004"),
        ("SELECT shardcast.set_shard_class('public.c_view', 'log')", "42809"),
    ];
    for (sql, sqlstate) in cases {
        assert_eq!(outcome(sql), format!("{sqlstate} with hint"), "{sql}");
    }
    let assigned = Spi::get_one::<i64>(
        "SELECT count(*) FROM shardcast.shard_class_assignments WHERE table_name IN ('c_bad', 'c_view')",
    )
    .unwrap();
    assert_eq!(assigned, Some(0));
}

/// Three days of hourly history: `orders` busy with a daily cycle, `customers` (which orders
/// references) quiet, `audit` barely read.
fn shop_with_history() {
    Spi::run(
        "CREATE TABLE public.f_customers (id int PRIMARY KEY);
         CREATE TABLE public.f_orders (id int PRIMARY KEY, customer_id int REFERENCES public.f_customers);
         CREATE TABLE public.f_audit (id int);
         SELECT shardcast.record_access(
             array_agg(t.rel::regclass),
             array_agg(date_trunc('hour', now()) - h * interval '1 hour' + interval '10 minutes'),
             array_agg(t.level * (2 + sin(h * pi() / 12))))
         FROM generate_series(1, 72) h,
              (VALUES ('public.f_orders', 1000.0), ('public.f_customers', 10.0), ('public.f_audit', 1.0)) t(rel, level);",
    )
    .unwrap();
}

fn score_of(table: &str) -> (f64, i32, i32, i32, String) {
    let row = Spi::get_one_with_args::<String>(
        "SELECT concat_ws('|', score, priority_weight, tier, rank, coalesce(lift_source::text, '-'))
         FROM shardcast.priority_scores WHERE shard = $1::regclass",
        &[table.into()],
    )
    .unwrap()
    .unwrap();
    let p: Vec<&str> = row.split('|').collect();
    (p[0].parse().unwrap(), p[1].parse().unwrap(), p[2].parse().unwrap(), p[3].parse().unwrap(), p[4].to_owned())
}

#[pg_test]
fn refresh_scores_shards_from_history_with_inheritance() {
    shop_with_history();
    let scored = Spi::get_one::<i64>("SELECT shardcast.refresh_forecasts()").unwrap().unwrap();
    assert!(scored >= 3);
    let orders = score_of("public.f_orders");
    let customers = score_of("public.f_customers");
    let audit = score_of("public.f_audit");
    assert_eq!(orders.1, 1000);
    assert_eq!(orders.2, 1);
    // customers is referenced by orders: lifted to its score (inheritance_factor 1).
    assert_eq!(customers.4, "f_orders");
    assert!((customers.0 - orders.0).abs() < 1e-6 * orders.0);
    assert!(audit.0 < orders.0 / 100.0, "{audit:?} vs {orders:?}");
    assert!(audit.2 > orders.2);
    let forecast = Spi::get_one::<String>(
        "SELECT f.model || ':' || (f.lower <= f.point AND f.point <= f.upper) || ':' || (f.history_points >= 72)
         FROM shardcast.forecasts f WHERE f.shard = 'public.f_orders'::regclass",
    )
    .unwrap()
    .unwrap();
    assert!(forecast.ends_with(":true:true"), "{forecast}");
    // Between 2 and 3 times the level, one hour ahead.
    let point = Spi::get_one::<f64>(
        "SELECT predicted_load FROM shardcast.priority_scores WHERE shard = 'public.f_orders'::regclass",
    )
    .unwrap()
    .unwrap();
    assert!((800.0..=3500.0).contains(&point), "{point}");
}

#[pg_test]
fn without_inheritance_a_referenced_table_keeps_its_own_score() {
    shop_with_history();
    Spi::run("SET LOCAL shardcast.inheritance_factor = 0").unwrap();
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    let customers = score_of("public.f_customers");
    assert_eq!(customers.4, "-");
    assert!(customers.0 < score_of("public.f_orders").0 / 10.0);
}

#[pg_test]
fn class_weight_multiplies_the_score() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    let before = score_of("public.f_audit").0;
    Spi::run("SELECT shardcast.set_shard_class('public.f_audit', 'critical'); SELECT shardcast.refresh_forecasts()")
        .unwrap();
    let after = score_of("public.f_audit").0;
    assert!((after - 10.0 * before).abs() < 1e-6 * after, "{before} -> {after}");
}

#[pg_test]
fn published_scores_move_only_on_material_change() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    let fresh = score_of("public.f_orders").0;
    // A published score within 20% of the fresh one is kept; one further away is replaced.
    Spi::run_with_args(
        "UPDATE shardcast.scores SET score = $1 WHERE shard_id = (SELECT shard_id FROM shardcast.shards WHERE table_name = 'f_orders')",
        &[(fresh * 1.1).into()],
    )
    .unwrap();
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    assert!((score_of("public.f_orders").0 - fresh * 1.1).abs() < 1e-6 * fresh);
    Spi::run_with_args(
        "UPDATE shardcast.scores SET score = $1 WHERE shard_id = (SELECT shard_id FROM shardcast.shards WHERE table_name = 'f_orders')",
        &[(fresh * 2.0).into()],
    )
    .unwrap();
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    assert!((score_of("public.f_orders").0 - fresh).abs() < 1e-6 * fresh);
}

#[pg_test]
fn tiers_follow_the_setting() {
    shop_with_history();
    Spi::run("SET LOCAL shardcast.tiers = 1; SELECT shardcast.refresh_forecasts()").unwrap();
    let tiers = Spi::get_one::<i64>("SELECT count(DISTINCT tier) FROM shardcast.priority_scores").unwrap();
    assert_eq!(tiers, Some(1));
    // Three distinct levels (no lift) make three tiers, hottest first.
    Spi::run("SET LOCAL shardcast.inheritance_factor = 0; SET LOCAL shardcast.tiers = 3; SELECT shardcast.refresh_forecasts()")
        .unwrap();
    let tiers = Spi::get_one::<String>(
        "SELECT string_agg(tier::text, ',' ORDER BY rank) FROM shardcast.priority_scores",
    )
    .unwrap();
    assert_eq!(tiers.as_deref(), Some("1,2,3"));
}

#[pg_test]
fn sparkline_draws_history_and_forecast() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    let line = Spi::get_one::<String>("SELECT sparkline FROM shardcast.priority_scores WHERE shard = 'public.f_orders'::regclass")
        .unwrap()
        .unwrap();
    assert_eq!(line.chars().count(), 25 + 2, "{line}");
    assert!(line.contains('│'));
    let short = Spi::get_one::<String>("SELECT shardcast.sparkline('public.f_orders', '6 hours')").unwrap().unwrap();
    assert_eq!(short.chars().count(), 7 + 2, "{short}");
}

fn two_nodes() {
    Spi::run(
        "SELECT shardcast.add_node('fast', 100e6, 4);
         SELECT shardcast.add_node('slow', 10e6, 2, 'host=127.0.0.1 port=1');",
    )
    .unwrap();
}

fn set_size(table: &str, bytes: i64) {
    Spi::run_with_args(
        "UPDATE shardcast.shards SET size_bytes = $2 WHERE relid = $1::regclass AND retired_at IS NULL",
        &[table.into(), bytes.into()],
    )
    .unwrap();
}

/// The queued tables in the order of the `prioritized_queue` view: the server's settings.
fn queue_view() -> String {
    Spi::get_one::<String>("SELECT string_agg(shard::text, ',' ORDER BY position) FROM shardcast.prioritized_queue")
        .unwrap()
        .unwrap_or_default()
}

/// The queued tables in the order `ordering` gives with an overtaking window of `window_secs`.
/// Both are server settings (a reload, which a test's transaction cannot wait for), so the
/// queue is computed directly.
fn queue_order_with(ordering: &str, window_secs: f64) -> String {
    let order = shardcast_core::schedule::Order::from_name(ordering).unwrap();
    let ids = crate::queue::queue_task_ids(order, window_secs);
    Spi::get_one_with_args::<String>(
        "SELECT string_agg(s.relid::regclass::text, ',' ORDER BY u.n)
         FROM unnest($1::int8[]) WITH ORDINALITY u(id, n)
         JOIN shardcast.replication_tasks t ON t.task_id = u.id JOIN shardcast.shards s USING (shard_id)",
        &[ids.into()],
    )
    .unwrap()
    .unwrap_or_default()
}

/// The queued tables in the order `ordering` gives with the default window.
fn queue_order(ordering: &str) -> String {
    queue_order_with(ordering, 3600.0)
}

#[pg_test]
fn node_errors_have_sqlstates_and_hints() {
    two_nodes();
    let cases = [
        ("SELECT shardcast.add_node('fast', 1e6)", "42710"),
        ("SELECT shardcast.add_node('x', 0)", "22023"),
        ("SELECT shardcast.add_node('x', 'NaN')", "22023"),
        ("SELECT shardcast.add_node('x', 1e6, 0)", "22023"),
        ("SELECT shardcast.add_node(NULL, 1e6)", "22004"),
        ("SELECT shardcast.report_node_load('nowhere', 0.5)", "42704"),
        ("SELECT shardcast.report_node_load('fast', 1.5)", "22023"),
        ("SELECT shardcast.enqueue('pg_catalog.pg_class')", "42809"),
        ("SELECT shardcast.enqueue_all('nowhere')", "42704"),
        ("SELECT shardcast.enqueue_publication('no_such_publication')", "42704"),
        ("SELECT * FROM shardcast.allocation_plan(0, 1000)", "22023"),
        ("SELECT * FROM shardcast.allocation_plan(2, -5)", "22023"),
        ("SELECT shardcast.heartbeat(424242)", "42704"),
        ("SELECT shardcast.complete_task(424242)", "42704"),
        ("SELECT * FROM shardcast.claim_task(NULL)", "22004"),
    ];
    for (sql, sqlstate) in cases {
        assert_eq!(outcome(sql), format!("{sqlstate} with hint"), "{sql}");
    }
}

#[pg_test]
fn enqueue_is_idempotent_and_covers_publications() {
    shop_with_history();
    let first = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.f_orders')").unwrap();
    let again = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.f_orders')").unwrap();
    assert_eq!(first, again);
    Spi::run("CREATE PUBLICATION f_pub FOR TABLE public.f_orders, public.f_audit").unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue_publication('f_pub')").unwrap(), Some(2));
    let open = Spi::get_one::<i64>(
        "SELECT count(*) FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
         WHERE s.table_name LIKE 'f\\_%' AND t.state = 'queued'",
    )
    .unwrap();
    assert_eq!(open, Some(2));
}

#[pg_test]
fn wspt_orders_by_score_per_byte_and_the_other_orders_differ() {
    shop_with_history();
    Spi::run("SET LOCAL shardcast.inheritance_factor = 0; SELECT shardcast.refresh_forecasts()").unwrap();
    // orders is hottest but huge; customers is cooler but tiny.
    set_size("public.f_orders", 100_000_000_000);
    set_size("public.f_customers", 10_000);
    set_size("public.f_audit", 10_000_000);
    // No express lane, and everything enqueued at once: the order is the ordering's alone,
    // whatever the tiers.
    as_if_reloaded("shardcast.prefetch_quantile", "1");
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    assert_eq!(queue_order("wspt"), "f_customers,f_audit,f_orders");
    // The view and the stored order follow the server's ordering (wspt), not the session's.
    assert_eq!(queue_view(), "f_customers,f_audit,f_orders");
    assert_eq!(outcome("SET shardcast.ordering = 'fifo'"), "55P02 without hint");
    assert_eq!(outcome("SET shardcast.overtake_window = 0"), "55P02 without hint");
    assert_eq!(queue_order("score"), "f_orders,f_customers,f_audit");
    let fifo = queue_order("fifo");
    let ids = Spi::get_one::<String>(
        "SELECT string_agg(s.table_name::text, ',' ORDER BY t.task_id) FROM shardcast.replication_tasks t
         JOIN shardcast.shards s USING (shard_id) WHERE t.state = 'queued'",
    )
    .unwrap()
    .unwrap();
    assert_eq!(fifo, ids);
}

/// The stored dispatch order: what claims follow.
fn stored_order() -> String {
    Spi::get_one::<String>(
        "SELECT string_agg(s.relid::regclass::text, ',' ORDER BY t.dispatch_rank)
         FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id) WHERE t.state = 'queued'",
    )
    .unwrap()
    .unwrap_or_default()
}

#[pg_test]
fn hot_tasks_enqueued_later_than_the_window_do_not_overtake_a_cold_one() {
    shop_with_history();
    Spi::run("SET LOCAL shardcast.inheritance_factor = 0; SELECT shardcast.refresh_forecasts()").unwrap();
    // Scores as published, pinned so that the test is about the queue alone: orders hottest.
    Spi::run(
        "UPDATE shardcast.scores sc SET score = CASE s.table_name WHEN 'f_orders' THEN 1000 WHEN 'f_customers' THEN 10 ELSE 1 END
         FROM shardcast.shards s WHERE s.shard_id = sc.shard_id AND s.table_name IN ('f_orders', 'f_customers', 'f_audit')",
    )
    .unwrap();
    let pinned = Spi::get_one::<i64>(
        "SELECT count(*) FROM shardcast.scores sc JOIN shardcast.shards s USING (shard_id)
         WHERE s.table_name IN ('f_orders', 'f_customers', 'f_audit') AND s.retired_at IS NULL",
    )
    .unwrap();
    assert_eq!(pinned, Some(3));
    set_size("public.f_orders", 100_000_000_000);
    set_size("public.f_customers", 10_000);
    set_size("public.f_audit", 10_000_000);
    as_if_reloaded("shardcast.prefetch_quantile", "1");
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    // A one-shot queue is WSPT: the huge orders table, least dense, goes last.
    assert_eq!(queue_view(), "f_customers,f_audit,f_orders");
    assert_eq!(stored_order(), "f_customers,f_audit,f_orders");
    // orders has waited: the others came 2 hours (more than the default 1 h window) after it,
    // as hot tasks keep arriving under the driver's --follow. They no longer go first.
    Spi::run(
        "UPDATE shardcast.replication_tasks t SET enqueued_at = t.enqueued_at + interval '2 hours'
         FROM shardcast.shards s WHERE s.shard_id = t.shard_id AND s.table_name IN ('f_customers', 'f_audit')",
    )
    .unwrap();
    assert_eq!(queue_view(), "f_orders,f_customers,f_audit");
    // The next replan (here an idempotent enqueue) stores that order, and a claim follows it.
    Spi::run("SELECT shardcast.enqueue('public.f_orders')").unwrap();
    assert_eq!(stored_order(), "f_orders,f_customers,f_audit");
    let claimed = Spi::get_two::<String, i64>("SELECT shard::text, task_id FROM shardcast.claim_task('copier-1')").unwrap();
    assert_eq!(claimed.0.as_deref(), Some("f_orders"));
    Spi::run(&format!("SELECT shardcast.release_task({}, 'copier-1')", claimed.1.unwrap())).unwrap();
    // Within a window of 3 hours, WSPT alone; with none, first come, first served (WSPT among
    // the tasks enqueued together).
    assert_eq!(queue_order_with("wspt", 3.0 * 3600.0), "f_customers,f_audit,f_orders");
    assert_eq!(queue_order_with("wspt", 0.0), "f_orders,f_customers,f_audit");
    // audit came 2 hours later still (4 hours after orders): under a 3-hour window customers
    // (2 hours after orders) may pass orders, audit may not.
    Spi::run(
        "UPDATE shardcast.replication_tasks t SET enqueued_at = t.enqueued_at + interval '2 hours'
         FROM shardcast.shards s WHERE s.shard_id = t.shard_id AND s.table_name = 'f_audit'",
    )
    .unwrap();
    assert_eq!(queue_order_with("wspt", 3.0 * 3600.0), "f_customers,f_orders,f_audit");
}

#[pg_test]
fn the_express_lane_goes_first_in_queue_plan_and_manifest() {
    shop_with_history();
    Spi::run("SET LOCAL shardcast.inheritance_factor = 0; SELECT shardcast.refresh_forecasts()").unwrap();
    set_size("public.f_orders", 100_000_000_000);
    set_size("public.f_customers", 10_000);
    set_size("public.f_audit", 10_000);
    // With three shards, the 0.5 quantile of points is the middle one: only orders' lower
    // bound can exceed it.
    as_if_reloaded("shardcast.prefetch_quantile", "0.5");
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    let first = Spi::get_one::<String>("SELECT shard::text || ':' || prefetch FROM shardcast.prioritized_queue WHERE position = 1")
        .unwrap();
    assert_eq!(first.as_deref(), Some("f_orders:true"));
    let plan = Spi::get_one::<String>(
        "SELECT shard::text || ':' || worker || ':' || (expected_start = now()) FROM shardcast.allocation_plan(2, 1000000) WHERE position = 1",
    )
    .unwrap();
    assert_eq!(plan.as_deref(), Some("f_orders:1:true"));
    let manifest = Spi::get_one::<pgrx::JsonB>("SELECT shardcast.manifest_json()").unwrap().unwrap().0;
    assert_eq!(manifest["version"], 2);
    assert_eq!(manifest["tasks"][0]["shard"], "public.f_orders");
    assert_eq!(manifest["tasks"][0]["prefetch"], true);
}

#[pg_test]
fn the_plan_shares_workers_and_bandwidth() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    for t in ["public.f_orders", "public.f_customers", "public.f_audit"] {
        set_size(t, 1_000_000);
    }
    as_if_reloaded("shardcast.prefetch_quantile", "1");
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    let plan = Spi::get_one::<String>(
        "SELECT string_agg(worker || '@' || round(extract(epoch FROM expected_start - now())) || '-'
                           || round(extract(epoch FROM expected_finish - now())) || ':' || bandwidth_share, ' ' ORDER BY position)
         FROM shardcast.allocation_plan(2, 2000000)",
    )
    .unwrap();
    assert_eq!(plan.as_deref(), Some("1@0-1:1000000 2@0-1:1000000 1@1-2:1000000"));
}

#[pg_test]
fn tasks_without_a_requested_node_go_to_the_fast_idle_node() {
    shop_with_history();
    two_nodes();
    Spi::run("SELECT shardcast.report_node_load('slow', 0.5); SELECT shardcast.refresh_forecasts(); SELECT shardcast.enqueue('public.f_orders')")
        .unwrap();
    let node = Spi::get_one::<String>("SELECT node FROM shardcast.prioritized_queue WHERE shard = 'public.f_orders'::regclass")
        .unwrap();
    assert_eq!(node.as_deref(), Some("fast"));
    let fixed = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.f_audit', 'slow')").unwrap().unwrap();
    let node = Spi::get_one_with_args::<String>(
        "SELECT node FROM shardcast.prioritized_queue WHERE task_id = $1",
        &[fixed.into()],
    )
    .unwrap();
    assert_eq!(node.as_deref(), Some("slow"));
}

#[pg_test]
fn claim_heartbeat_complete_and_their_errors() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts(); SELECT shardcast.enqueue_all()").unwrap();
    let first = Spi::get_one::<i64>("SELECT task_id FROM shardcast.prioritized_queue WHERE position = 1").unwrap();
    let claimed = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w1')").unwrap();
    assert_eq!(claimed, first);
    let task = claimed.unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.heartbeat({task})")), "ok");
    assert_eq!(outcome(&format!("SELECT shardcast.heartbeat({task}, 'w1')")), "ok");
    assert_eq!(outcome(&format!("SELECT shardcast.heartbeat({task}, 'w2')")), "55000 with hint");
    assert_eq!(
        outcome(&format!("SELECT shardcast.complete_task({task}, true, NULL, 'w2')")),
        "55000 with hint"
    );
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({task}, true, 'copied', 'w1')")), "ok");
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({task})")), "55000 with hint");
    assert_eq!(outcome(&format!("SELECT shardcast.heartbeat({task})")), "55000 with hint");
    let logged = Spi::get_one_with_args::<String>(
        "SELECT succeeded || ':' || worker || ':' || detail FROM shardcast.completion_log WHERE task_id = $1",
        &[task.into()],
    )
    .unwrap();
    assert_eq!(logged.as_deref(), Some("true:w1:copied"));
    // A failure goes back to the queue with one more attempt.
    let second = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w1')").unwrap().unwrap();
    Spi::run_with_args("SELECT shardcast.complete_task($1, false, 'disk full')", &[second.into()]).unwrap();
    let state = Spi::get_one_with_args::<String>(
        "SELECT state || ':' || attempts FROM shardcast.replication_tasks WHERE task_id = $1",
        &[second.into()],
    )
    .unwrap();
    assert_eq!(state.as_deref(), Some("queued:1"));
}

#[pg_test]
fn a_released_task_goes_back_to_the_queue_without_an_attempt() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts(); SELECT shardcast.enqueue_all()").unwrap();
    let task = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w1')").unwrap().unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.release_task({task}, 'w2')")), "55000 with hint");
    assert_eq!(outcome(&format!("SELECT shardcast.release_task({task}, 'w1')")), "ok");
    let state = Spi::get_one_with_args::<String>(
        "SELECT state || ':' || attempts || ':' || coalesce(claimed_by, '-') FROM shardcast.replication_tasks
         WHERE task_id = $1",
        &[task.into()],
    )
    .unwrap();
    assert_eq!(state.as_deref(), Some("queued:0:-"));
    assert_eq!(outcome(&format!("SELECT shardcast.release_task({task})")), "55000 with hint");
    assert_eq!(outcome("SELECT shardcast.release_task(424242)"), "42704 with hint");
    // It keeps its place: the next claim takes it again.
    let again = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w3')").unwrap();
    assert_eq!(again, Some(task));
}

#[pg_test]
fn a_claim_grants_a_credit_for_the_copys_own_reads() {
    Spi::run(
        "CREATE TABLE public.copied (id int PRIMARY KEY, v text);
         INSERT INTO public.copied SELECT i, repeat('x', 100) FROM generate_series(1, 1000) i;
         ANALYZE public.copied;
         SELECT shardcast.enqueue('public.copied')",
    )
    .unwrap();
    let task = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w')").unwrap().unwrap();
    let credit = Spi::get_one::<String>(
        "SELECT concat_ws('|', c.scans, c.tuples_read, c.blocks = r.relpages, c.valid_until > t.lease_expires_at)
         FROM shardcast.copy_credits c JOIN shardcast.shards s USING (shard_id)
         JOIN pg_class r ON r.oid = s.relid JOIN shardcast.replication_tasks t USING (shard_id)",
    )
    .unwrap();
    assert_eq!(credit.as_deref(), Some("1|1000|t|t"));
    Spi::run_with_args("SELECT shardcast.complete_task($1)", &[task.into()]).unwrap();
    let lasts = Spi::get_one::<bool>(
        "SELECT valid_until >= now() + interval '10 minutes' FROM shardcast.copy_credits",
    )
    .unwrap();
    assert_eq!(lasts, Some(true));
}

#[pg_test]
fn a_dropped_shard_task_is_cancelled_not_copied() {
    Spi::run("CREATE TABLE public.doomed (id int); SELECT shardcast.enqueue('public.doomed')").unwrap();
    Spi::run("DROP TABLE public.doomed; SELECT shardcast.enqueue_all()").unwrap();
    let state = Spi::get_one::<String>(
        "SELECT t.state FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
         WHERE s.table_name = 'doomed'",
    )
    .unwrap();
    assert_eq!(state.as_deref(), Some("cancelled"));
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.claim_task('w')").unwrap(), Some(0));
}

#[pg_test]
fn mutating_replication_functions_are_not_public() {
    let public = Spi::get_one::<bool>(
        "SELECT bool_or(has_function_privilege('public', f, 'EXECUTE')) FROM unnest(ARRAY[
             'shardcast.claim_task(text, text)', 'shardcast.complete_task(bigint, boolean, text, text, boolean)',
             'shardcast.enqueue(regclass, text)', 'shardcast.add_node(text, double precision, integer, text)',
             'shardcast.heartbeat(bigint, text)', 'shardcast.release_task(bigint, text)']::regprocedure[]) f",
    )
    .unwrap();
    assert_eq!(public, Some(false));
    let readable = Spi::get_one::<bool>("SELECT has_table_privilege('public', 'shardcast.prioritized_queue', 'SELECT')").unwrap();
    assert_eq!(readable, Some(true));
    // A node's conninfo may hold a password: like pg_subscription.subconninfo, not for everyone.
    let conninfo = Spi::get_one::<bool>("SELECT has_column_privilege('public', 'shardcast.nodes', 'conninfo', 'SELECT')").unwrap();
    assert_eq!(conninfo, Some(false));
}

#[pg_test]
fn the_readme_grants_let_a_replication_role_work_and_an_inspector_read() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts(); SELECT shardcast.enqueue_all()").unwrap();
    Spi::run(
        "CREATE ROLE replicator_t;
         GRANT USAGE ON SCHEMA shardcast TO replicator_t;
         GRANT EXECUTE ON FUNCTION shardcast.claim_task(text, text), shardcast.heartbeat(bigint, text),
               shardcast.complete_task(bigint, boolean, text, text, boolean), shardcast.release_task(bigint, text)
               TO replicator_t;
         GRANT SELECT (conninfo) ON shardcast.nodes TO replicator_t;
         CREATE ROLE inspector_t;
         GRANT USAGE ON SCHEMA shardcast TO inspector_t;",
    )
    .unwrap();
    Spi::run("SET LOCAL ROLE replicator_t").unwrap();
    let task = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('r')").unwrap().unwrap();
    Spi::run_with_args("SELECT shardcast.release_task($1, 'r')", &[task.into()]).unwrap();
    let task = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('r')").unwrap().unwrap();
    Spi::run_with_args("SELECT shardcast.heartbeat($1); SELECT shardcast.complete_task($1)", &[task.into()]).unwrap();
    let conninfo = Spi::get_one::<i64>("SELECT count(conninfo) FROM shardcast.nodes").unwrap();
    assert!(conninfo.is_some());
    Spi::run("RESET ROLE; SET LOCAL ROLE inspector_t").unwrap();
    let rows = Spi::get_one::<i64>(
        "SELECT (SELECT count(*) FROM shardcast.prioritized_queue) + (SELECT count(*) FROM shardcast.priority_scores)
              + (SELECT count(*) FROM shardcast.replication_manifest)",
    )
    .unwrap();
    assert!(rows.unwrap() > 0);
    assert_eq!(outcome("SELECT * FROM shardcast.claim_task('i')"), "42501 without hint");
    assert_eq!(outcome("SELECT conninfo FROM shardcast.nodes"), "42501 without hint");
    Spi::run("RESET ROLE").unwrap();
}

#[pg_test]
fn a_refresh_forecasts_the_window_from_now_from_the_freshest_buckets() {
    // A week of flat history, 100 reads an hour; then the last 40 minutes at 30 times the rate.
    // Whatever the minute of the hour, the forecast is for [now, now + 1 hour) and its level
    // comes from the last 60 minutes, not from the last complete clock hour.
    Spi::run(
        "CREATE TABLE public.w_surge (id int);
         SELECT shardcast.record_access(array_agg('public.w_surge'::regclass),
                                        array_agg(now() - h * interval '1 hour' - interval '30 minutes'),
                                        array_agg(100.0::float8))
         FROM generate_series(1, 7 * 24) h;
         SELECT shardcast.record_access(array_agg('public.w_surge'::regclass),
                                        array_agg(now() - m * interval '5 minutes'),
                                        array_agg(250.0::float8))
         FROM generate_series(0, 7) m;
         SELECT shardcast.refresh_forecasts();",
    )
    .unwrap();
    let row = Spi::get_one::<String>(
        "SELECT concat_ws('|', window_start = now(), window_end = now() + interval '1 hour',
                          horizon = interval '1 hour', point, lower <= point AND point <= upper,
                          imported_hours >= 7 * 24, change_reason)
         FROM shardcast.forecasts WHERE shard = 'public.w_surge'::regclass",
    )
    .unwrap()
    .unwrap();
    let p: Vec<&str> = row.split('|').collect();
    assert_eq!(&p[..3], ["t", "t", "t"], "{row}");
    let point: f64 = p[3].parse().unwrap();
    // Hourly history says 100; the last 40 minutes say 3,000 an hour. Clock hours would forecast
    // about 100: the surge must lift the forecast several times over.
    assert!(point > 500.0, "the surge of the last 40 minutes sets the level: {row}");
    assert_eq!(&p[4..], ["t", "t", "first forecast"], "{row}");
    // A horizon that is not whole hours is forecast, not rounded: 90 minutes.
    Spi::run("SET LOCAL shardcast.horizon = '90min'; SELECT shardcast.refresh_forecasts()").unwrap();
    let window = Spi::get_one::<String>(
        "SELECT concat_ws('|', window_end - window_start, point)
         FROM shardcast.forecasts WHERE shard = 'public.w_surge'::regclass",
    )
    .unwrap()
    .unwrap();
    let (span, longer) = window.split_once('|').unwrap();
    assert_eq!(span, "01:30:00");
    let longer: f64 = longer.parse().unwrap();
    assert!(longer > point * 1.2 && longer < point * 1.8, "{longer} vs {point}");
}

#[pg_test]
fn hours_nobody_observed_are_not_read_as_zero() {
    // One import of 1,200 reads five days ago (the README's example) and a steady measured-like
    // import of the last day: the old import is too far from the rest to stand for the days
    // between, and the forecast keeps the recent level.
    Spi::run(
        "CREATE TABLE public.w_sparse (id int);
         SELECT shardcast.record_access(array_agg('public.w_sparse'::regclass),
                                        array_agg(now() - m * interval '5 minutes'),
                                        array_agg(500.0::float8))
         FROM generate_series(0, 12 * 24 - 1) m;
         SELECT shardcast.refresh_forecasts();",
    )
    .unwrap();
    let before = Spi::get_one::<f64>(
        "SELECT point FROM shardcast.forecasts WHERE shard = 'public.w_sparse'::regclass",
    )
    .unwrap()
    .unwrap();
    Spi::run(
        "SELECT shardcast.record_access('public.w_sparse', now() - interval '5 days', reads => 1200);
         SELECT shardcast.refresh_forecasts();",
    )
    .unwrap();
    let row = Spi::get_one::<String>(
        "SELECT concat_ws('|', point, history_points, change_reason)
         FROM shardcast.forecasts WHERE shard = 'public.w_sparse'::regclass",
    )
    .unwrap()
    .unwrap();
    let p: Vec<&str> = row.split('|').collect();
    let after: f64 = p[0].parse().unwrap();
    assert!((after - before).abs() <= 0.05 * before, "{before} then {row}");
    assert!(p[1].parse::<i32>().unwrap() <= 25, "the old import is cut off: {row}");
    assert_eq!(p[2], "imported history changed", "{row}");
}

// ---- issue 9: the replication queue under abuse -------------------------------------------

/// Sets a reload (SIGHUP) setting in this backend as a reload of postgresql.conf would, for the
/// rest of the test's transaction (the rollback restores it): a #[pg_test] cannot wait for a real
/// reload, and `SET` refuses such settings.
fn as_if_reloaded(name: &str, value: &str) {
    let name = std::ffi::CString::new(name).unwrap();
    let value = std::ffi::CString::new(value).unwrap();
    unsafe {
        pg_sys::SetConfigOption(name.as_ptr(), value.as_ptr(), pg_sys::GucContext::PGC_SIGHUP, pg_sys::GucSource::PGC_S_FILE)
    };
}

/// An OID that no relation has.
fn no_such_relid() -> u32 {
    Spi::get_one::<i64>("SELECT max(oid::int8) + 1000 FROM pg_catalog.pg_class").unwrap().unwrap() as u32
}

#[pg_test]
fn allocation_plan_is_bounded_cheap_and_readable() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts(); SELECT shardcast.enqueue_all()").unwrap();
    // allocation_plan(2147483647, 1) once took 16.8 GB and ignored cancellation: workers beyond
    // shardcast.plan_workers' range (1..1024) are refused, and so is a bandwidth beyond 1e15.
    // (The smallest refused value first: the code before this bound ran the others for minutes.)
    for sql in [
        "SELECT count(*) FROM shardcast.allocation_plan(1025, 1000)",
        "SELECT count(*) FROM shardcast.allocation_plan(4, 2000000000000000)",
        "SELECT count(*) FROM shardcast.allocation_plan(2147483647, 1)",
    ] {
        assert_eq!(outcome(sql), "22023 with hint", "{sql}");
    }
    // The largest plan costs what its tasks need: one slot each, all starting now.
    let plan = Spi::get_one::<String>(
        "SELECT count(*) || ':' || max(worker) || ':' || bool_and(expected_start = now())
         FROM shardcast.allocation_plan(1024, 1000000)",
    )
    .unwrap();
    let tasks = Spi::get_one::<i64>("SELECT count(*) FROM shardcast.prioritized_queue").unwrap().unwrap();
    assert_eq!(plan, Some(format!("{tasks}:{tasks}:true")));
    // Bounded, it stays readable by everyone, like the queue it plans.
    let public = Spi::get_one::<bool>(
        "SELECT has_function_privilege('public', 'shardcast.allocation_plan(integer, bigint)', 'EXECUTE')",
    )
    .unwrap();
    assert_eq!(public, Some(true));
}

#[pg_test]
fn size_and_count_arguments_have_documented_maximums() {
    Spi::run("CREATE TABLE public.m_table (id int)").unwrap();
    let cases = [
        ("SELECT shardcast.add_node(repeat('n', 64), 1e6)", "22023"),
        ("SELECT shardcast.add_node(repeat('é', 32), 1e6)", "22023"),
        ("SELECT shardcast.add_node('x', 1e6, 1025)", "22023"),
        ("SELECT shardcast.add_node('x', 2e15)", "22023"),
        ("SELECT shardcast.sparkline('public.m_table', '29 days')", "22023"),
        ("SELECT shardcast.sparkline('public.m_table', '30 minutes')", "22023"),
        (
            "SELECT shardcast.record_access(array_agg('public.m_table'::regclass), array_agg(now()), array_agg(1.0::float8))
             FROM generate_series(1, 1000001)",
            "22023",
        ),
    ];
    for (sql, sqlstate) in cases {
        assert_eq!(outcome(sql), format!("{sqlstate} with hint"), "{sql}");
    }
    // The maximums themselves are accepted.
    assert_eq!(outcome("SELECT shardcast.add_node(repeat('n', 63), 1e15, 1024)"), "ok");
    assert_eq!(outcome("SELECT shardcast.sparkline('public.m_table', '28 days')"), "ok");
}

#[pg_test]
fn a_claim_never_hands_out_a_dropped_shard_or_the_table_that_took_its_name() {
    Spi::run(
        "CREATE TABLE public.a1 (id int); CREATE TABLE public.a2 (id int); CREATE TABLE public.a3 (id int);
         SELECT shardcast.enqueue('public.a1'); SELECT shardcast.enqueue('public.a2'); SELECT shardcast.enqueue('public.a3');",
    )
    .unwrap();
    // No replan in between: the tasks of a1 (dropped, its name reused) and a2 (renamed) are
    // first in the stored order.
    Spi::run(
        "DROP TABLE public.a1; CREATE TABLE public.a1 (other text);
         ALTER TABLE public.a2 RENAME TO a2_renamed;
         UPDATE shardcast.replication_tasks t SET dispatch_rank = CASE s.table_name WHEN 'a1' THEN 1 WHEN 'a2' THEN 2 ELSE 3 END
         FROM shardcast.shards s WHERE s.shard_id = t.shard_id AND s.table_name IN ('a1', 'a2', 'a3')",
    )
    .unwrap();
    let claimed = Spi::get_two::<String, String>("SELECT shard::text, qualified_name FROM shardcast.claim_task('w1')").unwrap();
    assert_eq!(claimed, (Some("a3".into()), Some("public.a3".into())));
    let states = Spi::get_one::<String>(
        "SELECT string_agg(s.table_name || ':' || t.state || ':' || coalesce(t.detail, '-'), ', ' ORDER BY s.table_name)
         FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
         WHERE s.table_name IN ('a1', 'a2', 'a3')",
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        states,
        "a1:cancelled:the shard was dropped, a2:cancelled:the shard was renamed or moved: it is a new shard now, a3:claimed:-"
    );
    // Nothing else is left to hand out.
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.claim_task('w1')").unwrap(), Some(0));
}

#[pg_test]
fn priority_scores_survive_a_dropped_shard_and_never_open_relations() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    // Dropped after the last sample: its scores are still stored, its relation is gone.
    Spi::run("DROP TABLE public.f_audit").unwrap();
    assert_eq!(outcome("SELECT * FROM shardcast.priority_scores"), "ok");
    let shown = Spi::get_one::<String>("SELECT string_agg(shard::text, ',' ORDER BY shard::text) FROM shardcast.priority_scores WHERE shard::text LIKE 'f\\_%'")
        .unwrap();
    assert_eq!(shown.as_deref(), Some("f_customers,f_orders"));
    let line = Spi::get_one::<String>("SELECT sparkline FROM shardcast.priority_scores WHERE shard = 'public.f_orders'::regclass")
        .unwrap()
        .unwrap();
    assert!(line.contains('│'), "{line}");
    // The view's definition calls nothing that takes a regclass (which would open the relation).
    let opens = Spi::get_one::<bool>(
        "SELECT pg_get_viewdef('shardcast.priority_scores'::regclass) LIKE '%sparkline(%::regclass%'",
    )
    .unwrap();
    assert_eq!(opens, Some(false));
}

#[pg_test]
fn a_regclass_of_no_relation_is_undefined_table_with_a_hint() {
    Spi::run("CREATE TABLE public.r_real (id int)").unwrap();
    let gone = no_such_relid();
    for sql in [
        format!("SELECT shardcast.enqueue({gone}::oid::regclass)"),
        format!("SELECT shardcast.record_access({gone}::oid::regclass, now(), 1)"),
        format!("SELECT shardcast.record_access(ARRAY[{gone}::oid::regclass], ARRAY[now()], ARRAY[1.0::float8])"),
        format!("SELECT shardcast.set_shard_class({gone}::oid::regclass, 'normal')"),
        format!("SELECT shardcast.sparkline({gone}::oid::regclass)"),
    ] {
        assert_eq!(outcome(&sql), "42P01 with hint", "{sql}");
    }
    // A relation that exists still works through the same functions.
    assert_eq!(outcome("SELECT shardcast.set_shard_class('public.r_real', 'critical')"), "ok");
    assert_eq!(outcome("SELECT shardcast.record_access('public.r_real', now(), 1)"), "ok");
    assert_eq!(outcome("SELECT shardcast.sparkline('public.r_real', '6 hours')"), "ok");
}

#[pg_test]
fn a_completion_is_always_recorded_and_announced_whatever_its_detail_or_node() {
    // A node named before names were bounded (or by hand): longer than NOTIFY could carry.
    Spi::run(
        "INSERT INTO shardcast.nodes (node, capacity_bytes_per_sec) VALUES (repeat('n', 9000), 1e8);
         CREATE TABLE public.n_long (id int);
         SELECT shardcast.enqueue('public.n_long', repeat('n', 9000));",
    )
    .unwrap();
    let task = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w')").unwrap().unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({task}, false, repeat('e', 8000))")), "ok");
    let task = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w')").unwrap().unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({task}, true, repeat(E'\\u00e9\\u0001', 8000))")), "ok");
    // The tables keep the whole detail.
    let kept = Spi::get_one_with_args::<String>(
        "SELECT t.state || ':' || length(t.detail) || ':' || string_agg(length(l.detail)::text, ',' ORDER BY l.finished_at, l.succeeded)
         FROM shardcast.replication_tasks t JOIN shardcast.completion_log l USING (task_id)
         WHERE t.task_id = $1 GROUP BY t.state, t.detail",
        &[task.into()],
    )
    .unwrap();
    assert_eq!(kept.as_deref(), Some("done:16000:8000,16000"));
}

#[pg_test]
fn one_shard_one_node_one_open_task() {
    two_nodes();
    Spi::run("CREATE TABLE public.o_a (id int); CREATE TABLE public.o_b (id int); CREATE TABLE public.o_c (id int)").unwrap();
    let open = |table: &str| {
        Spi::get_one_with_args::<String>(
            "SELECT string_agg(t.task_id || '@' || coalesce(t.node, '-') || '/' || coalesce(t.requested_node, '*') || ':' || t.state, ' ' ORDER BY t.task_id)
             FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
             WHERE s.table_name = $1 AND t.state IN ('queued', 'claimed')",
            &[table.into()],
        )
        .unwrap()
        .unwrap_or_default()
    };
    // Any node, then the node assignment chose: the same task, now bound to that node.
    let any = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.o_a')").unwrap().unwrap();
    let node = Spi::get_one_with_args::<String>("SELECT node FROM shardcast.replication_tasks WHERE task_id = $1", &[any.into()])
        .unwrap()
        .unwrap();
    let given = Spi::get_one_with_args::<i64>("SELECT shardcast.enqueue('public.o_a', $1)", &[node.clone().into()]).unwrap();
    assert_eq!(given, Some(any));
    assert_eq!(open("o_a"), format!("{any}@{node}/{node}:queued"));
    // The other node is another copy; any node is satisfied by what is open.
    let other = if node == "fast" { "slow" } else { "fast" };
    let second = Spi::get_one_with_args::<i64>("SELECT shardcast.enqueue('public.o_a', $1)", &[other.into()]).unwrap().unwrap();
    assert_ne!(second, any);
    let again = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.o_a')").unwrap().unwrap();
    assert!(again == any || again == second);
    assert_eq!(open("o_a"), format!("{any}@{node}/{node}:queued {second}@{other}/{other}:queued"));
    // A node, then any node: the same task.
    let fixed = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.o_b', 'slow')").unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue('public.o_b')").unwrap(), fixed);
    // Claimed for one node: enqueueing for that node is the same task; for the other node, a
    // second task; and when the first fails back into the queue, node assignment does not send
    // it where the shard is already going.
    let c = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.o_c')").unwrap().unwrap();
    Spi::run_with_args(
        "UPDATE shardcast.replication_tasks SET dispatch_rank = 0 WHERE task_id = $1",
        &[c.into()],
    )
    .unwrap();
    let claimed = Spi::get_two::<i64, String>("SELECT task_id, node FROM shardcast.claim_task('w')").unwrap();
    assert_eq!(claimed.0, Some(c));
    let c_node = claimed.1.unwrap();
    let c_other = if c_node == "fast" { "slow" } else { "fast" };
    assert_eq!(Spi::get_one_with_args::<i64>("SELECT shardcast.enqueue('public.o_c', $1)", &[c_node.clone().into()]).unwrap(), Some(c));
    let c2 = Spi::get_one_with_args::<i64>("SELECT shardcast.enqueue('public.o_c', $1)", &[c_other.into()]).unwrap().unwrap();
    assert_ne!(c2, c);
    Spi::run_with_args("SELECT shardcast.complete_task($1, false, 'disk full')", &[c.into()]).unwrap();
    assert_eq!(open("o_c"), format!("{c}@{c_node}/*:queued {c2}@{c_other}/{c_other}:queued"));
}

#[pg_test]
fn a_disabled_nodes_tasks_are_not_handed_out() {
    two_nodes();
    Spi::run(
        "CREATE TABLE public.d_slow (id int); CREATE TABLE public.d_any (id int);
         SELECT shardcast.enqueue('public.d_slow', 'slow');
         UPDATE shardcast.nodes SET enabled = false WHERE node = 'slow';",
    )
    .unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.claim_task('w', 'slow')").unwrap(), Some(0));
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.claim_task('w')").unwrap(), Some(0));
    // Tasks without a requested node go to the enabled node.
    Spi::run("SELECT shardcast.enqueue('public.d_any')").unwrap();
    let claimed = Spi::get_two::<String, String>("SELECT shard::text, node FROM shardcast.claim_task('w')").unwrap();
    assert_eq!(claimed, (Some("d_any".into()), Some("fast".into())));
    // Enabled again, its task is handed out.
    Spi::run("UPDATE shardcast.nodes SET enabled = true WHERE node = 'slow'").unwrap();
    let claimed = Spi::get_one::<String>("SELECT shard::text FROM shardcast.claim_task('w', 'slow')").unwrap();
    assert_eq!(claimed.as_deref(), Some("d_slow"));
}

#[pg_test]
fn heartbeat_and_completion_refuse_an_expired_lease_before_any_claim_expires_it() {
    Spi::run("CREATE TABLE public.l_task (id int); SELECT shardcast.enqueue('public.l_task')").unwrap();
    Spi::run("SET LOCAL shardcast.claim_lease = '1s'").unwrap();
    let task = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w')").unwrap().unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.heartbeat({task}, 'w')")), "ok");
    Spi::run("SELECT pg_sleep(1.2)").unwrap();
    // Nobody has claimed since: the task is still 'claimed', but its lease is over.
    assert_eq!(outcome(&format!("SELECT shardcast.heartbeat({task}, 'w')")), "55000 with hint");
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({task}, true, NULL, 'w')")), "55000 with hint");
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({task})")), "55000 with hint");
    // Its claimer may still hand it back, as the next claim would.
    assert_eq!(outcome(&format!("SELECT shardcast.release_task({task}, 'w')")), "ok");
    let state = Spi::get_one_with_args::<String>("SELECT state FROM shardcast.replication_tasks WHERE task_id = $1", &[task.into()]).unwrap();
    assert_eq!(state.as_deref(), Some("queued"));
}

#[pg_test]
fn the_stored_order_uses_the_servers_settings_and_the_stored_scores_only() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    // The express lane shapes the order every claimer follows: a server setting, like the order.
    assert_eq!(outcome("SET shardcast.prefetch_quantile = 0"), "55P02 without hint");
    // A session's tiers shape the scores its refresh writes, never the queue: a shard not scored
    // yet takes the coldest stored tier, whatever the session says.
    Spi::run("SET LOCAL shardcast.tiers = 20; CREATE TABLE public.u_new (id int); SELECT shardcast.enqueue('public.u_new')").unwrap();
    let tier = Spi::get_one::<String>(
        "SELECT t.tier || ':' || (SELECT max(tier) FROM shardcast.scores) FROM shardcast.replication_tasks t
         JOIN shardcast.shards s USING (shard_id) WHERE s.table_name = 'u_new'",
    )
    .unwrap()
    .unwrap();
    let (stored, coldest) = tier.split_once(':').unwrap();
    assert_eq!(stored, coldest);
    assert_ne!(stored, "20");
}

#[pg_test]
fn a_table_renamed_and_renamed_back_keeps_its_shard_and_history() {
    Spi::run(
        "CREATE TABLE public.r_one (id int);
         SELECT shardcast.record_access('public.r_one', now() - interval '1 hour', 42);",
    )
    .unwrap();
    let first = Spi::get_one::<i32>(
        "SELECT shard_id FROM shardcast.shards WHERE relid = 'public.r_one'::regclass AND retired_at IS NULL",
    )
    .unwrap()
    .unwrap();
    // Each record_access syncs the registry: the rename retires the shard, the rename back
    // brings the same shard back.
    Spi::run(
        "ALTER TABLE public.r_one RENAME TO r_two;
         SELECT shardcast.record_access('public.r_two', now(), 0);
         ALTER TABLE public.r_two RENAME TO r_one;
         SELECT shardcast.record_access('public.r_one', now(), 0);",
    )
    .unwrap();
    let row = Spi::get_one::<String>(
        "SELECT concat_ws('|', s.shard_id,
                          (SELECT sum(tuples_read) FROM shardcast.access_history h WHERE h.shard_id = s.shard_id))
         FROM shardcast.shards s WHERE s.relid = 'public.r_one'::regclass AND s.retired_at IS NULL",
    )
    .unwrap()
    .unwrap();
    assert_eq!(row, format!("{first}|42"));
}

#[pg_test]
fn tables_logical_replication_cannot_carry_are_refused_at_enqueue() {
    Spi::run(
        "CREATE UNLOGGED TABLE public.ul_scratch (id int PRIMARY KEY);
         CREATE TEMPORARY TABLE ul_session (id int PRIMARY KEY);
         CREATE TABLE public.ul_kept (id int PRIMARY KEY);
         CREATE TABLE public.ul_parts (id int, d int, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);
         CREATE UNLOGGED TABLE public.ul_parts_cold PARTITION OF public.ul_parts FOR VALUES FROM (0) TO (10);
         CREATE TABLE public.ul_parts_hot PARTITION OF public.ul_parts FOR VALUES FROM (10) TO (20);
         CREATE PUBLICATION ul_pub FOR TABLE public.ul_parts, public.ul_kept;",
    )
    .unwrap();
    // One named table: an ERROR that says what to do.
    assert_eq!(outcome("SELECT shardcast.enqueue('public.ul_scratch')"), "0A000 with hint");
    assert_eq!(outcome("SELECT shardcast.enqueue('pg_temp.ul_session')"), "0A000 with hint");
    // In bulk: skipped (with a NOTICE), the others enqueued.
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue_publication('ul_pub')").unwrap(), Some(2));
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    let queued = Spi::get_one::<String>(
        "SELECT string_agg(s.table_name::text, ',' ORDER BY s.table_name) FROM shardcast.replication_tasks t
         JOIN shardcast.shards s USING (shard_id) WHERE s.table_name LIKE 'ul\\_%' AND t.state = 'queued'",
    )
    .unwrap();
    assert_eq!(queued.as_deref(), Some("ul_kept,ul_parts_hot"));
    // Made logged, it is a table like any other.
    Spi::run("ALTER TABLE public.ul_scratch SET LOGGED").unwrap();
    assert_eq!(outcome("SELECT shardcast.enqueue('public.ul_scratch')"), "ok");
}

/// Claims every queued task as `worker` and completes it (copied or already in sync).
fn run_queue(worker: &str, copied: bool) -> i64 {
    let mut done = 0;
    while let Some(task) =
        Spi::get_one_with_args::<i64>("SELECT (SELECT task_id FROM shardcast.claim_task($1))", &[worker.into()]).unwrap()
    {
        Spi::run_with_args(
            "SELECT shardcast.complete_task($1, true, NULL, $2, copied => $3)",
            &[task.into(), worker.into(), copied.into()],
        )
        .unwrap();
        done += 1;
    }
    done
}

fn open_tasks_like(pattern: &str) -> i64 {
    Spi::get_one_with_args::<i64>(
        "SELECT count(*) FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
         WHERE s.table_name LIKE $1 AND t.state IN ('queued', 'claimed')",
        &[pattern.into()],
    )
    .unwrap()
    .unwrap()
}

#[pg_test]
fn re_enqueueing_after_a_finished_run_copies_nothing() {
    two_nodes();
    Spi::run("CREATE TABLE public.m_a (id int); CREATE TABLE public.m_b (id int); CREATE TABLE public.m_c (id int)").unwrap();
    Spi::run("CREATE PUBLICATION m_pub FOR TABLE public.m_a, public.m_b, public.m_c").unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue_publication('m_pub')").unwrap(), Some(3));
    assert_eq!(run_queue("run-1", true), 3);
    // Every shard is remembered on the node it went to.
    let remembered = Spi::get_one::<i64>(
        "SELECT count(*) FROM shardcast.node_replicas WHERE shard::text LIKE 'm\\_%'",
    )
    .unwrap();
    assert_eq!(remembered, Some(3));
    // Again: nothing new, for the publication and for every shard; nothing is queued.
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue_publication('m_pub')").unwrap(), Some(0));
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    assert_eq!(open_tasks_like("m\\_%"), 0);
    // One shard: the task that copied it comes back, nothing is queued.
    let copier = Spi::get_one::<i64>(
        "SELECT task_id FROM shardcast.node_replicas WHERE shard = 'public.m_a'::regclass",
    )
    .unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue('public.m_a')").unwrap(), copier);
    assert_eq!(open_tasks_like("m\\_%"), 0);
    // Named, another node is another copy; the node it is on is not.
    let on = Spi::get_one::<String>("SELECT node FROM shardcast.node_replicas WHERE shard = 'public.m_a'::regclass")
        .unwrap()
        .unwrap();
    let other = if on == "fast" { "slow" } else { "fast" };
    assert_eq!(Spi::get_one_with_args::<i64>("SELECT shardcast.enqueue('public.m_a', $1)", &[on.clone().into()]).unwrap(), copier);
    assert_eq!(open_tasks_like("m\\_%"), 0);
    Spi::run_with_args("SELECT shardcast.enqueue('public.m_a', $1)", &[other.into()]).unwrap();
    assert_eq!(open_tasks_like("m\\_%"), 1);
    // Forgotten, it is copied again; forgetting what is not remembered says so.
    assert_eq!(Spi::get_one_with_args::<bool>("SELECT shardcast.forget_replica('public.m_a', $1)", &[other.into()]).unwrap(), Some(false));
    Spi::run("SELECT shardcast.forget_replica('public.m_c', 'fast'); SELECT shardcast.forget_replica('public.m_c', 'slow')").unwrap();
    Spi::run("SELECT shardcast.enqueue('public.m_c')").unwrap();
    assert_eq!(open_tasks_like("m\\_c"), 1);
    // A dropped shard's copies are forgotten with it.
    Spi::run("DROP TABLE public.m_b; SELECT shardcast.enqueue_all()").unwrap();
    let kept = Spi::get_one::<i64>(
        "SELECT count(*) FROM shardcast.replicas r JOIN shardcast.shards s USING (shard_id) WHERE s.table_name = 'm_b'",
    )
    .unwrap();
    assert_eq!(kept, Some(0));
    assert_eq!(outcome("SELECT shardcast.forget_replica(NULL, 'fast')"), "22004 with hint");
    assert_eq!(outcome("SELECT shardcast.forget_replica('public.m_a', NULL)"), "22004 with hint");
    assert_eq!(outcome("SELECT shardcast.forget_replica('public.m_a', 'nowhere')"), "42704 with hint");
}

#[pg_test]
fn the_readme_block_enqueues_a_publication_once() {
    two_nodes();
    Spi::run(
        "CREATE TABLE public.rb_a (id int); CREATE TABLE public.rb_b (id int);
         CREATE PUBLICATION rb_pub FOR TABLE public.rb_a, public.rb_b;",
    )
    .unwrap();
    // The README's block: the publication to one node, then every shard.
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue_publication('rb_pub', 'slow')").unwrap(), Some(2));
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    assert_eq!(open_tasks_like("rb\\_%"), 2);
    // Copied, then the same block again: nothing more, on either node.
    run_queue("w", true);
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue_publication('rb_pub', 'slow')").unwrap(), Some(0));
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    assert_eq!(open_tasks_like("rb\\_%"), 0);
    let copies = Spi::get_one::<String>(
        "SELECT string_agg(shard::text || '@' || node, ',' ORDER BY shard::text) FROM shardcast.node_replicas
         WHERE shard::text LIKE 'rb\\_%'",
    )
    .unwrap();
    assert_eq!(copies.as_deref(), Some("rb_a@slow,rb_b@slow"));
}

#[pg_test]
fn remove_node_refuses_tasks_in_flight_and_removes_an_idle_node() {
    two_nodes();
    Spi::run(
        "CREATE TABLE public.rn_a (id int); CREATE TABLE public.rn_b (id int); CREATE TABLE public.rn_c (id int);
         SELECT shardcast.add_node('idle', 1e6, 1);",
    )
    .unwrap();
    // A node with no tasks: removed.
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.remove_node('idle')").unwrap(), Some(0));
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.nodes WHERE node = 'idle'").unwrap(), Some(0));
    // A node with a task in flight: refused (55006), nothing changed.
    Spi::run(
        "SELECT shardcast.enqueue('public.rn_a', 'slow'); SELECT shardcast.enqueue('public.rn_b', 'slow');
         SELECT shardcast.enqueue('public.rn_c', 'fast');",
    )
    .unwrap();
    let claimed = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w', 'slow')").unwrap().unwrap();
    assert_eq!(outcome("SELECT shardcast.remove_node('slow')"), "55006 with hint");
    assert_eq!(open_tasks_like("rn\\_%"), 3);
    // Done, it is history: the node goes, its queued task is cancelled, its copy forgotten, the
    // completion log keeps its name.
    Spi::run_with_args("SELECT shardcast.complete_task($1)", &[claimed.into()]).unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.replicas WHERE node = 'slow'").unwrap(), Some(1));
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.remove_node('slow')").unwrap(), Some(1));
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.replicas WHERE node = 'slow'").unwrap(), Some(0));
    assert_eq!(
        Spi::get_one_with_args::<String>("SELECT node FROM shardcast.completion_log WHERE task_id = $1", &[claimed.into()]).unwrap().as_deref(),
        Some("slow")
    );
    let states = Spi::get_one::<String>(
        "SELECT string_agg(s.table_name || ':' || t.state, ',' ORDER BY s.table_name) FROM shardcast.replication_tasks t
         JOIN shardcast.shards s USING (shard_id) WHERE s.table_name LIKE 'rn\\_%'",
    )
    .unwrap();
    assert_eq!(states.as_deref(), Some("rn_a:done,rn_b:cancelled,rn_c:queued"));
    // A plain DELETE would have failed on the foreign key; now the name is free again.
    assert_eq!(outcome("SELECT shardcast.add_node('slow', 10e6)"), "ok");
    assert_eq!(outcome("SELECT shardcast.remove_node('nowhere')"), "42704 with hint");
    assert_eq!(outcome("SELECT shardcast.remove_node(NULL)"), "22004 with hint");
}

#[pg_test]
fn alter_node_changes_what_is_given_and_validates_like_add_node() {
    two_nodes();
    Spi::run("SELECT shardcast.alter_node('slow', max_concurrent => 3, enabled => false)").unwrap();
    let row = Spi::get_one::<String>(
        "SELECT concat_ws('|', capacity_bytes_per_sec, max_concurrent, conninfo, enabled) FROM shardcast.nodes WHERE node = 'slow'",
    )
    .unwrap();
    assert_eq!(row.as_deref(), Some("10000000|3|host=127.0.0.1 port=1|f"));
    Spi::run("SELECT shardcast.alter_node('slow', 20e6, conninfo => '', enabled => true)").unwrap();
    let row = Spi::get_one::<String>(
        "SELECT concat_ws('|', capacity_bytes_per_sec, max_concurrent, coalesce(conninfo, '-'), enabled) FROM shardcast.nodes WHERE node = 'slow'",
    )
    .unwrap();
    assert_eq!(row.as_deref(), Some("20000000|3|-|t"));
    // The duplicate-node hint points here.
    Spi::run(
        r#"CREATE FUNCTION pg_temp.hint_of(q text) RETURNS text LANGUAGE plpgsql AS $$
           DECLARE hint text;
           BEGIN EXECUTE q; RETURN NULL;
           EXCEPTION WHEN OTHERS THEN GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT; RETURN hint; END $$"#,
    )
    .unwrap();
    let hint = Spi::get_one::<String>("SELECT pg_temp.hint_of('SELECT shardcast.add_node(''fast'', 1e6)')").unwrap().unwrap();
    assert!(hint.contains("shardcast.alter_node"), "{hint}");
    let cases = [
        ("SELECT shardcast.alter_node('fast', 0)", "22023"),
        ("SELECT shardcast.alter_node('fast', 'NaN')", "22023"),
        ("SELECT shardcast.alter_node('fast', 2e15)", "22023"),
        ("SELECT shardcast.alter_node('fast', max_concurrent => 0)", "22023"),
        ("SELECT shardcast.alter_node('fast', max_concurrent => 1025)", "22023"),
        ("SELECT shardcast.alter_node('nowhere', 1e6)", "42704"),
        ("SELECT shardcast.alter_node(NULL, 1e6)", "22004"),
    ];
    for (sql, sqlstate) in cases {
        assert_eq!(outcome(sql), format!("{sqlstate} with hint"), "{sql}");
    }
    // Disabled, a node's claimed task finishes; it gets no new claims.
    Spi::run(
        "CREATE TABLE public.an_a (id int); CREATE TABLE public.an_b (id int);
         SELECT shardcast.enqueue('public.an_a', 'slow'); SELECT shardcast.enqueue('public.an_b', 'slow');",
    )
    .unwrap();
    let claimed = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w', 'slow')").unwrap().unwrap();
    Spi::run("SELECT shardcast.alter_node('slow', enabled => false)").unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.claim_task('w', 'slow')").unwrap(), Some(0));
    assert_eq!(outcome(&format!("SELECT shardcast.heartbeat({claimed})")), "ok");
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({claimed})")), "ok");
}

#[pg_test]
fn cancel_and_retry_a_task() {
    two_nodes();
    Spi::run("CREATE TABLE public.cr_a (id int); CREATE TABLE public.cr_b (id int)").unwrap();
    let a = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.cr_a', 'fast')").unwrap().unwrap();
    // Queued: cancelled, and out of the queue.
    assert_eq!(outcome(&format!("SELECT shardcast.cancel_task({a})")), "ok");
    let state = |task: i64| {
        Spi::get_one_with_args::<String>(
            "SELECT state || ':' || attempts FROM shardcast.replication_tasks WHERE task_id = $1",
            &[task.into()],
        )
        .unwrap()
        .unwrap()
    };
    assert_eq!(state(a), "cancelled:0");
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.prioritized_queue").unwrap(), Some(0));
    assert_eq!(outcome(&format!("SELECT shardcast.cancel_task({a})")), "55000 with hint");
    // Retried: queued again; a second retry is refused while it is open.
    assert_eq!(outcome(&format!("SELECT shardcast.retry_task({a})")), "ok");
    assert_eq!(state(a), "queued:0");
    assert_eq!(outcome(&format!("SELECT shardcast.retry_task({a})")), "55000 with hint");
    // Claimed: neither cancelled nor retried.
    assert_eq!(Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w')").unwrap(), Some(a));
    assert_eq!(outcome(&format!("SELECT shardcast.cancel_task({a})")), "55000 with hint");
    // Failed for good: retried with its attempts reset.
    Spi::run("SET LOCAL shardcast.max_attempts = 1").unwrap();
    Spi::run_with_args("SELECT shardcast.complete_task($1, false, 'disk full')", &[a.into()]).unwrap();
    assert_eq!(state(a), "failed:1");
    // Another open task for the shard and node: refused.
    let b = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.cr_a', 'fast')").unwrap().unwrap();
    assert_ne!(a, b);
    assert_eq!(outcome(&format!("SELECT shardcast.retry_task({a})")), "55000 with hint");
    Spi::run_with_args("SELECT shardcast.cancel_task($1)", &[b.into()]).unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.retry_task({a})")), "ok");
    assert_eq!(state(a), "queued:0");
    // Done: nothing to cancel or retry.
    Spi::run("RESET shardcast.max_attempts").unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w')").unwrap(), Some(a));
    Spi::run_with_args("SELECT shardcast.complete_task($1)", &[a.into()]).unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.cancel_task({a})")), "55000 with hint");
    assert_eq!(outcome(&format!("SELECT shardcast.retry_task({a})")), "55000 with hint");
    // A task whose shard is gone cannot be retried.
    let c = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.cr_b')").unwrap().unwrap();
    Spi::run_with_args("SELECT shardcast.cancel_task($1)", &[c.into()]).unwrap();
    Spi::run("DROP TABLE public.cr_b").unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.retry_task({c})")), "55000 with hint");
    for sql in ["SELECT shardcast.cancel_task(424242)", "SELECT shardcast.retry_task(424242)"] {
        assert_eq!(outcome(sql), "42704 with hint", "{sql}");
    }
    for sql in ["SELECT shardcast.cancel_task(NULL)", "SELECT shardcast.retry_task(NULL)"] {
        assert_eq!(outcome(sql), "22004 with hint", "{sql}");
    }
}

#[pg_test]
fn lifecycle_functions_are_not_public() {
    let public = Spi::get_one::<bool>(
        "SELECT bool_or(has_function_privilege('public', f, 'EXECUTE')) FROM unnest(ARRAY[
             'shardcast.alter_node(text, double precision, integer, text, boolean)', 'shardcast.remove_node(text)',
             'shardcast.cancel_task(bigint)', 'shardcast.retry_task(bigint)',
             'shardcast.forget_replica(regclass, text)',
             'shardcast.complete_task(bigint, boolean, text, text, boolean)']::regprocedure[]) f",
    )
    .unwrap();
    assert_eq!(public, Some(false));
    let readable = Spi::get_one::<bool>("SELECT has_table_privilege('public', 'shardcast.node_replicas', 'SELECT')").unwrap();
    assert_eq!(readable, Some(true));
}

#[pg_test]
fn the_report_counts_copies_of_its_own_window_and_run_only() {
    two_nodes();
    Spi::run(
        "CREATE TABLE public.rp_a (id int); CREATE TABLE public.rp_b (id int); CREATE TABLE public.rp_c (id int);
         SELECT shardcast.enqueue('public.rp_a', 'fast'); SELECT shardcast.enqueue('public.rp_b', 'fast');",
    )
    .unwrap();
    assert_eq!(run_queue("run-1", true), 2);
    // Run 1 happened an hour ago.
    Spi::run(
        "UPDATE shardcast.replication_tasks SET claimed_at = claimed_at - interval '1 hour',
                finished_at = finished_at - interval '1 hour' WHERE claimed_by = 'run-1'",
    )
    .unwrap();
    // Run 2 copies one table and finds one already in sync (copied => false).
    Spi::run(
        "SELECT shardcast.enqueue('public.rp_c', 'fast'); SELECT shardcast.enqueue('public.rp_a', 'slow');",
    )
    .unwrap();
    let c = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('run-2', 'fast')").unwrap().unwrap();
    Spi::run_with_args("SELECT shardcast.complete_task($1, true, NULL, 'run-2')", &[c.into()]).unwrap();
    let a = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('run-2', 'slow')").unwrap().unwrap();
    Spi::run_with_args("SELECT shardcast.complete_task($1, true, 'in sync', 'run-2', false)", &[a.into()]).unwrap();
    let tasks = |sql: &str| Spi::get_one::<i64>(sql).unwrap();
    assert_eq!(tasks("SELECT tasks FROM shardcast.prioritization_report_for('run-1')"), Some(2));
    assert_eq!(tasks("SELECT tasks FROM shardcast.prioritization_report_for('run-2')"), Some(1));
    assert_eq!(tasks("SELECT count(*) FROM shardcast.prioritization_report_for('run-3')"), Some(0));
    // A window over run 1 only, and one since run 2 started.
    assert_eq!(
        tasks("SELECT tasks FROM shardcast.prioritization_report_since(now() - interval '2 hours', now() - interval '30 minutes')"),
        Some(2)
    );
    assert_eq!(tasks("SELECT tasks FROM shardcast.prioritization_report_since(now() - interval '1 minute')"), Some(1));
    assert_eq!(tasks("SELECT tasks FROM shardcast.prioritization_report_since(now() - interval '1 minute', NULL)"), Some(1));
    assert_eq!(tasks("SELECT tasks FROM shardcast.prioritization_report"), Some(3));
    // The no-op completion is done, logged as such, and remembered as a replica.
    let logged = Spi::get_one_with_args::<String>(
        "SELECT succeeded || ':' || copied FROM shardcast.completion_log WHERE task_id = $1",
        &[a.into()],
    )
    .unwrap();
    assert_eq!(logged.as_deref(), Some("true:false"));
    assert_eq!(
        Spi::get_one::<i64>("SELECT count(*) FROM shardcast.node_replicas WHERE shard = 'public.rp_a'::regclass").unwrap(),
        Some(2)
    );
    assert_eq!(outcome("SELECT * FROM shardcast.prioritization_report_for(NULL)"), "22004 with hint");
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({a}, true, NULL, NULL, NULL)")), "22004 with hint");
}

#[pg_test]
fn citus_functions_refuse_cleanly_without_citus() {
    for sql in [
        "SELECT shardcast.citus_shard_cost(102008)",
        "SELECT shardcast.citus_register_strategy()",
        "SELECT shardcast.citus_register_strategy(0.2)",
        "SELECT shardcast._citus_require()",
    ] {
        assert_eq!(outcome(sql), "0A000 with hint", "{sql}");
    }
    let message = Spi::get_one::<String>(
        r#"DO $$ BEGIN PERFORM shardcast.citus_shard_cost(1); EXCEPTION WHEN feature_not_supported THEN
               RAISE NOTICE '%', SQLERRM; END $$; SELECT 'done'"#,
    )
    .unwrap();
    assert_eq!(message.as_deref(), Some("done"));
    // The views read shardcast's own tables only: empty, not an error, without Citus.
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.citus_shards").unwrap(), Some(0));
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.citus_node_load").unwrap(), Some(0));
    // Without Citus the sampler's Citus stage does nothing (and names no Citus object).
    assert!(!crate::catalog::citus::is_coordinator().unwrap());
}

#[pg_test]
fn citus_rows_share_their_table_s_relid_without_disturbing_local_shards() {
    Spi::run("CREATE TABLE public.cz_orders (id int)").unwrap();
    crate::catalog::shards::sync().unwrap();
    // Two Citus shards of cz_orders, as the coordinator's sampler registers them.
    Spi::run(
        "INSERT INTO shardcast.shards (relid, schema_name, table_name, citus_shard_id)
         VALUES ('public.cz_orders'::regclass, 'public', 'cz_orders_102008', 102008),
                ('public.cz_orders'::regclass, 'public', 'cz_orders_102009', 102009)",
    )
    .unwrap();
    let (registered, retired) = crate::catalog::shards::sync().unwrap();
    assert_eq!((registered, retired), (0, 0));
    let live = |sql: &str| Spi::get_one::<i64>(sql).unwrap().unwrap();
    assert_eq!(live("SELECT count(*) FROM shardcast.shards WHERE relid = 'public.cz_orders'::regclass AND retired_at IS NULL"), 3);
    // The local table is still one shard of its own, and the functions that take it by name
    // find that one.
    Spi::run("SELECT shardcast.record_access('public.cz_orders', now(), 10)").unwrap();
    assert_eq!(history_reads("public.cz_orders"), 10.0);
    assert!(Spi::get_one::<String>("SELECT shardcast.sparkline('public.cz_orders')").unwrap().is_some());
    // The Citus rows get their table's class, and a second live row of one shardid is refused.
    Spi::run("SELECT shardcast.set_shard_class('public.cz_orders', 'critical')").unwrap();
    assert_eq!(
        live("SELECT count(*) FROM shardcast.effective_classes e JOIN shardcast.shards s USING (shard_id)
              WHERE s.citus_shard_id IS NOT NULL AND e.class = 'critical'"),
        2
    );
    assert_eq!(
        outcome("INSERT INTO shardcast.shards (relid, schema_name, table_name, citus_shard_id)
                 VALUES ('public.cz_orders'::regclass, 'public', 'cz_orders_102008', 102008)"),
        "23505 without hint"
    );
    // Dropping the table retires the local shard; the Citus rows are Citus's to retire.
    Spi::run("DROP TABLE public.cz_orders").unwrap();
    let (_, retired) = crate::catalog::shards::sync().unwrap();
    assert_eq!(retired, 1);
    assert_eq!(live("SELECT count(*) FROM shardcast.shards WHERE citus_shard_id IS NOT NULL AND retired_at IS NULL"), 2);
}

#[pg_test]
fn queue_explained_says_why_a_hot_task_waits_behind_cold_ones() {
    two_nodes();
    Spi::run(
        "CREATE TABLE public.qe_cold1 (id int); CREATE TABLE public.qe_cold2 (id int); CREATE TABLE public.qe_hot (id int);
         SELECT shardcast.enqueue('public.qe_cold1', 'fast'); SELECT shardcast.enqueue('public.qe_cold2', 'fast');
         SELECT shardcast.enqueue('public.qe_hot', 'fast');",
    )
    .unwrap();
    // The hot table (a score, weight 0 for the others) came 2 hours after the cold ones: the
    // default 1 h window holds it back behind them.
    Spi::run(
        "INSERT INTO shardcast.scores (shard_id, computed_at, predicted_load, class, weight, base_score, lift, score, priority_weight, tier, rank)
         SELECT shard_id, now(), 100, 'normal', 1, 100, 1, 100, 515, 1, 1 FROM shardcast.shards WHERE table_name = 'qe_hot' AND retired_at IS NULL;
         UPDATE shardcast.replication_tasks t SET enqueued_at = t.enqueued_at + interval '2 hours'
         FROM shardcast.shards s WHERE s.shard_id = t.shard_id AND s.table_name = 'qe_hot'",
    )
    .unwrap();
    let explained = Spi::get_one::<String>(
        "SELECT string_agg(shard::text || ': ' || reason, E'\n' ORDER BY position) FROM shardcast.queue_explained
         WHERE shard::text LIKE 'qe\\_%'",
    )
    .unwrap()
    .unwrap();
    let lines: Vec<&str> = explained.lines().collect();
    assert_eq!(lines.len(), 3, "{explained}");
    assert!(lines[2].starts_with("qe_hot: held back by the overtake window behind task"), "{explained}");
    assert!(lines[2].contains("enqueued 120 min after task"), "{explained}");
    assert!(lines[1].contains("after task"), "{explained}");
    // The same order as the queue's.
    let same = Spi::get_one::<bool>(
        "SELECT array_agg(task_id ORDER BY position) = (SELECT array_agg(task_id ORDER BY position) FROM shardcast.prioritized_queue)
         FROM shardcast.queue_explained",
    )
    .unwrap();
    assert_eq!(same, Some(true));
    // A node at its limit says so.
    Spi::run("SELECT shardcast.alter_node('fast', max_concurrent => 1)").unwrap();
    Spi::run("SELECT * FROM shardcast.claim_task('w', 'fast')").unwrap();
    let limited = Spi::get_one::<bool>(
        "SELECT bool_and(reason LIKE '%node fast at its concurrency limit (1 of 1 copying)') FROM shardcast.queue_explained WHERE node = 'fast'",
    )
    .unwrap();
    assert_eq!(limited, Some(true));
    let public = Spi::get_one::<bool>("SELECT has_table_privilege('public', 'shardcast.queue_explained', 'SELECT')").unwrap();
    assert_eq!(public, Some(true));
}
