// `refresh_forecasts` (api/forecasts.rs, worker/refresh.rs): forecasts from history, scores with
// inheritance and class weights, tiers, and the forecast window.

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

/// Imports `reads` (an SQL expression of the hour `h`) for each of the `hours` hours back from
/// now, stamped at the middle of hour `h` (1 to `hours`).
fn import_hours(table: &str, hours: i32, reads: &str) {
    Spi::run_with_args(
        &format!(
            "SELECT shardcast.record_access(array_agg($1::regclass),
                                            array_agg(now() - h * interval '1 hour' - interval '30 minutes'),
                                            array_agg(({reads})::float8))
             FROM generate_series(1, $2) h"
        ),
        &[table.into(), hours.into()],
    )
    .unwrap();
}

/// `table`'s forecast as "expected|change_reason": the expected load, which scores use.
fn forecast_row(table: &str) -> String {
    Spi::get_one::<String>(&format!(
        "SELECT concat_ws('|', expected, change_reason)
         FROM shardcast.forecasts WHERE shard = '{table}'::regclass"
    ))
    .unwrap()
    .unwrap()
}

/// Imports `reads` (an SQL expression of the step `m`) for each 5-minute step `m` of `steps`
/// back from now (step 0 starts now).
fn import_steps(table: &str, steps: std::ops::Range<i32>, reads: &str) {
    Spi::run_with_args(
        &format!(
            "SELECT shardcast.record_access(array_agg($1::regclass),
                                            array_agg(now() - m * interval '5 minutes'),
                                            array_agg(({reads})::float8))
             FROM generate_series($2, $3) m"
        ),
        &[table.into(), steps.start.into(), (steps.end - 1).into()],
    )
    .unwrap();
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
fn a_refresh_forecasts_the_window_from_now_from_the_freshest_buckets() {
    // A week of flat history, 100 reads an hour; then the last 40 minutes at 30 times the rate.
    // Whatever the minute of the hour, the forecast is for [now, now + 1 hour) and its level
    // comes from the last 60 minutes, not from the last complete clock hour.
    Spi::run("CREATE TABLE public.w_surge (id int)").unwrap();
    import_hours("public.w_surge", 7 * 24, "100.0");
    import_steps("public.w_surge", 0..8, "250.0");
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    let row = Spi::get_one::<String>(
        "SELECT concat_ws('|', window_start = now(), window_end = now() + interval '1 hour',
                          horizon = interval '1 hour', expected, lower <= point AND point <= upper,
                          imported_hours >= 7 * 24, change_reason)
         FROM shardcast.forecasts WHERE shard = 'public.w_surge'::regclass",
    )
    .unwrap()
    .unwrap();
    let p: Vec<&str> = row.split('|').collect();
    assert_eq!(&p[..3], ["t", "t", "t"], "{row}");
    let expected: f64 = p[3].parse().unwrap();
    // Hourly history says 100; the last 40 minutes say 3,000 an hour. Clock hours would forecast
    // about 100: the surge must lift the forecast several times over.
    assert!(expected > 500.0, "the surge of the last 40 minutes sets the level: {row}");
    assert_eq!(&p[4..], ["t", "t", "first forecast"], "{row}");
    // A horizon that is not whole hours is forecast, not rounded: 90 minutes.
    Spi::run("SET LOCAL shardcast.horizon = '90min'; SELECT shardcast.refresh_forecasts()").unwrap();
    let window = Spi::get_one::<String>(
        "SELECT concat_ws('|', window_end - window_start, expected)
         FROM shardcast.forecasts WHERE shard = 'public.w_surge'::regclass",
    )
    .unwrap()
    .unwrap();
    let (span, longer) = window.split_once('|').unwrap();
    assert_eq!(span, "01:30:00");
    let longer: f64 = longer.parse().unwrap();
    assert!(
        longer > expected * 1.2 && longer < expected * 1.8,
        "{longer} vs {expected}"
    );
    // A forecast over another horizon than the last says so.
    let reason = Spi::get_one::<String>(
        "SELECT change_reason FROM shardcast.forecasts WHERE shard = 'public.w_surge'::regclass",
    )
    .unwrap()
    .unwrap();
    assert!(
        reason.starts_with("first forecast over 90 min (the last was over 1 h)"),
        "{reason}"
    );
}

#[pg_test]
fn the_worker_s_refresh_never_replaces_forecasts_from_later_history() {
    use crate::catalog::forecasts::published_age_unless;
    use crate::worker::refresh::{Publisher, Refresh};
    // Nothing published: no age, and no error (an empty table still gives a row).
    assert_eq!(published_age_unless(None).unwrap(), None);
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    let now = Spi::get_one::<TimestampWithTimeZone>("SELECT now()").unwrap().unwrap();
    // Another's publication has an age; the caller's own has none.
    assert!(published_age_unless(None).unwrap().is_some());
    assert_eq!(published_age_unless(Some(now)).unwrap(), None);
    let published = || {
        Spi::get_one::<String>(
            "SELECT string_agg(concat_ws(':', shard_id, window_start, point), ',' ORDER BY shard_id)
             FROM shardcast.forecast_state",
        )
        .unwrap()
        .unwrap()
    };
    // The worker's refresh reads the history now ...
    let worker = Refresh::start().unwrap();
    // ... and a session's forecasts from moments later are published before it ends.
    // One moment for all (clock_timestamp() changes from row to row).
    Spi::run("UPDATE shardcast.forecast_state SET window_start = (SELECT clock_timestamp())").unwrap();
    let session = published();
    let report = worker.finish(Publisher::Worker { last: None }).unwrap();
    assert!(report.superseded() && report.scored == 0, "{report:?}");
    assert_eq!(published(), session);
    // The worker's own last publication is no reason to drop its refresh ...
    let own = Spi::get_one::<TimestampWithTimeZone>("SELECT max(window_start) FROM shardcast.forecast_state")
        .unwrap()
        .unwrap();
    let report = Refresh::start().unwrap().finish(Publisher::Worker { last: Some(own) }).unwrap();
    assert!(!report.superseded() && report.scored >= 3, "{report:?}");
    // ... nor are forecasts ahead of the clock (stepped back), whoever made them.
    Spi::run("UPDATE shardcast.forecast_state SET window_start = now() + interval '1 minute'").unwrap();
    let report = Refresh::start().unwrap().finish(Publisher::Worker { last: None }).unwrap();
    assert!(!report.superseded() && report.scored >= 3, "{report:?}");
    // A refresh_forecasts() call publishes whatever was published before it.
    Spi::run("UPDATE shardcast.forecast_state SET window_start = now() + interval '1 minute'").unwrap();
    let report = Refresh::start().unwrap().finish(Publisher::Session).unwrap();
    assert!(!report.superseded() && report.scored >= 3, "{report:?}");
    assert!(Spi::get_one::<bool>("SELECT bool_and(window_start = now()) FROM shardcast.forecast_state")
        .unwrap()
        .unwrap());
}

#[pg_test]
fn a_burst_that_began_minutes_ago_raises_the_forecast() {
    // Two tables with the same week at 100 reads an hour and the same 1,200 reads in the last
    // hour: spread evenly over it for one, mostly in the last 15 minutes for the other. The
    // hourly series cannot tell them apart; the last whole buckets can, and the burst that
    // began is forecast to go on into the next hour.
    Spi::run("CREATE TABLE public.w_even (id int); CREATE TABLE public.w_onset (id int)").unwrap();
    import_hours("public.w_even", 7 * 24, "100.0");
    import_hours("public.w_onset", 7 * 24, "100.0");
    import_steps("public.w_even", 0..12, "100.0");
    import_steps("public.w_onset", 0..12, "CASE WHEN m < 3 THEN 380.0 ELSE 60.0 / 9 END");
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    let (even, onset) = (forecast_row("public.w_even"), forecast_row("public.w_onset"));
    let point = |row: &str| row.split('|').next().unwrap().parse::<f64>().unwrap();
    // The windows end at the last whole bucket (the current one holds a sample stamped now):
    // the burst's last three buckets (7, 380, 380: a burst under way) run at about 3,070 an
    // hour, some 2,250 above its last hour (820); 70% of that beyond the noise margin goes into
    // the next hour.
    // The even table's last buckets run at its hour's rate.
    assert!(
        point(&onset) > point(&even) + 800.0,
        "{onset} against {even}"
    );
    assert!(
        onset.contains("the last 15 minutes ran") && !even.contains("15 minutes"),
        "{onset} against {even}"
    );
}

#[pg_test]
fn a_quiet_last_hour_is_said_in_the_change_reason() {
    // Two tables with the same week: idle at 100 reads an hour, bursting to 100,000 one hour in
    // five. The last hour was idle for one and a burst for the other.
    Spi::run("CREATE TABLE public.w_quiet (id int); CREATE TABLE public.w_busy (id int)").unwrap();
    for table in ["public.w_quiet", "public.w_busy"] {
        import_hours(table, 7 * 24, "CASE WHEN h % 5 = 0 THEN 100000.0 ELSE 100.0 END");
    }
    import_steps("public.w_quiet", 0..12, "100.0 / 12");
    import_steps("public.w_busy", 0..12, "100000.0 / 12");
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    let (quiet, busy) = (forecast_row("public.w_quiet"), forecast_row("public.w_busy"));
    assert!(
        quiet.contains("the last hour ran well below its usual load: the next hour is expected at 0.")
            && !busy.contains("well below"),
        "{quiet} against {busy}"
    );
}

#[pg_test]
fn a_level_shift_is_forecast_at_the_new_level_and_said() {
    // Two weeks of a daily cycle around 9,000 reads an hour, the last 30 hours around 2,600 (a
    // release moved most queries elsewhere), with 2% noise.
    Spi::run("CREATE TABLE public.w_shifted (id int)").unwrap();
    import_hours(
        "public.w_shifted",
        14 * 24,
        "CASE WHEN h <= 30 THEN 2600.0 ELSE 9000.0 END * (1 + 0.3 * sin(2 * pi() * (h % 24) / 24))
             * (0.98 + 0.04 * ((h * 7919) % 101) / 100.0)",
    );
    Spi::run("SET LOCAL shardcast.horizon = '24h'; SELECT shardcast.refresh_forecasts()").unwrap();
    let row = forecast_row("public.w_shifted");
    let (point, reason) = row.split_once('|').unwrap();
    let point: f64 = point.parse().unwrap();
    // The next day at the new level; without the shift read, the outlier cleaning put the old
    // level back on most of the last day and the forecast was far higher.
    assert!((point - 24.0 * 2600.0).abs() < 0.05 * 24.0 * 2600.0, "{row}");
    assert!(
        reason.contains("; the load shifted ")
            && reason.ends_with(" hours ago to 0.29 times its level of the week before (the older history is scaled to it)"),
        "{row}"
    );
}

#[pg_test]
fn bursts_that_come_every_day_are_forecast_and_said() {
    // Two weeks of 10-14 reads an hour, and every day one hour (a different one each day)
    // of 310, none in the freshest hours: each burst is an outlier to the models, which
    // forecast the quiet hours, but together they are 300 reads a day that a day's forecast
    // must hold.
    Spi::run("CREATE TABLE public.w_sittings (id int)").unwrap();
    import_hours(
        "public.w_sittings",
        14 * 24,
        "CASE WHEN h % 24 = 12 + (h / 24 * 5) % 11 THEN 310.0 ELSE 10.0 + (h * 7919) % 5 END",
    );
    Spi::run("SET LOCAL shardcast.horizon = '24h'; SELECT shardcast.refresh_forecasts()").unwrap();
    let row = forecast_row("public.w_sittings");
    let (point, reason) = row.split_once('|').unwrap();
    let point: f64 = point.parse().unwrap();
    assert!(point > 24.0 * 12.0 + 0.8 * 300.0 && point < 24.0 * 12.0 + 1.5 * 300.0, "{row}");
    assert!(
        reason.starts_with("first forecast; bursts that come every day add ")
            && reason.ends_with(" an hour to this window (outlier cleaning keeps them out of what the models fit)"),
        "{row}"
    );
    // A window of 90 minutes (forecast as two hours, then cut) gets what 90 minutes would: per
    // hour, three quarters of two hours' share.
    let added = |horizon: &str| {
        Spi::run(&format!(
            "SET LOCAL shardcast.horizon = '{horizon}'; SELECT shardcast.refresh_forecasts()"
        ))
        .unwrap();
        let reason = Spi::get_one::<String>(
            "SELECT change_reason FROM shardcast.forecasts WHERE shard = 'public.w_sittings'::regclass",
        )
        .unwrap()
        .unwrap();
        let (_, rest) = reason.split_once("every day add ").expect("a burst load");
        rest.split(' ').next().unwrap().parse::<f64>().unwrap()
    };
    let (two, ninety) = (added("2h"), added("90min"));
    assert!(two > 0.8 * 300.0 / 24.0 * 2.0 / 24.0, "{two}");
    assert!((ninety - 0.75 * two).abs() <= 0.02, "{ninety} against {two}");
    // An hour's window seldom holds one of the day's bursts: a 24th of a day's share.
    Spi::run("SET LOCAL shardcast.horizon = '1h'; SELECT shardcast.refresh_forecasts()").unwrap();
    let hour = Spi::get_one::<f64>(
        "SELECT expected FROM shardcast.forecasts WHERE shard = 'public.w_sittings'::regclass",
    )
    .unwrap()
    .unwrap();
    assert!(hour < 14.0 + 0.5 * 300.0 / 24.0, "{hour} after {row}");
}

#[pg_test]
fn scores_use_the_expected_load_and_the_point_is_nearest_the_outcome() {
    // Three weeks of 3 reads an hour, and in one hour of eight, at random, a sitting of 200:
    // the likeliest next hour holds no sitting, the expected load an eighth of one. The point is
    // the first, scores and the queue use the second.
    Spi::run("CREATE TABLE public.w_sessions (id int)").unwrap();
    import_hours(
        "public.w_sessions",
        21 * 24,
        "3.0 + CASE WHEN abs(hashint4(h)) % 8 = 0 THEN 200.0 ELSE 0.0 END",
    );
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    let row = Spi::get_one::<String>(
        "SELECT concat_ws('|', f.point, f.expected, f.lower <= f.point AND f.point <= f.upper,
                          p.predicted_load = f.expected)
         FROM shardcast.forecasts f JOIN shardcast.priority_scores p USING (shard)
         WHERE shard = 'public.w_sessions'::regclass",
    )
    .unwrap()
    .unwrap();
    let p: Vec<&str> = row.split('|').collect();
    let (point, expected): (f64, f64) = (p[0].parse().unwrap(), p[1].parse().unwrap());
    assert!(point < 0.8 * expected, "{row}");
    assert!(expected > 3.0 + 0.5 * 200.0 / 8.0, "{row}");
    assert_eq!(&p[2..], ["t", "t"], "{row}");
    // Every shard's score is made from its expected load.
    assert_eq!(
        Spi::get_one::<bool>(
            "SELECT bool_and(p.predicted_load = f.expected)
             FROM shardcast.forecasts f JOIN shardcast.priority_scores p USING (shard)"
        )
        .unwrap(),
        Some(true)
    );
}

#[pg_test]
fn hours_nobody_observed_are_not_read_as_zero() {
    // One import of 1,200 reads five days ago (the README's example) and a steady measured-like
    // import of the last day: the old import is too far from the rest to stand for the days
    // between, and the forecast keeps the recent level.
    Spi::run("CREATE TABLE public.w_sparse (id int)").unwrap();
    import_steps("public.w_sparse", 0..12 * 24, "500.0");
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    let before = Spi::get_one::<f64>(
        "SELECT expected FROM shardcast.forecasts WHERE shard = 'public.w_sparse'::regclass",
    )
    .unwrap()
    .unwrap();
    Spi::run(
        "SELECT shardcast.record_access('public.w_sparse', now() - interval '5 days', reads => 1200);
         SELECT shardcast.refresh_forecasts();",
    )
    .unwrap();
    let row = Spi::get_one::<String>(
        "SELECT concat_ws('|', expected, history_points, change_reason)
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

#[pg_test]
fn a_backfill_of_history_selects_the_models_again_at_once() {
    // Two days sampled (imported here), a selection made on them; then a DBA imports the 26
    // days before. The kept selection would wait for the next refit (an hour): the refresh
    // after the backfill selects again (a new backtest, so a new MASE).
    Spi::run("CREATE TABLE public.w_backfill (id int)").unwrap();
    import_steps("public.w_backfill", 0..2 * 288, "100 + 60 * sin(m * pi() / 144) + (m * 7919) % 13");
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    let mase = || {
        Spi::get_one::<String>(
            "SELECT concat_ws('|', backtest_mase, imported_hours, change_reason)
             FROM shardcast.forecasts WHERE shard = 'public.w_backfill'::regclass",
        )
        .unwrap()
        .unwrap()
    };
    let before = mase();
    import_steps("public.w_backfill", 2 * 288..28 * 288, "300 + 200 * sin(m * pi() / 144) + (m * 7919) % 29");
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    let after = mase();
    let (b, a): (Vec<&str>, Vec<&str>) = (before.split('|').collect(), after.split('|').collect());
    assert!(a[1].parse::<i32>().unwrap() >= b[1].parse::<i32>().unwrap() + 24 * 25, "{before} then {after}");
    assert_ne!(a[0], b[0], "selected again: a new backtest ({before} then {after})");
}
