// Sparklines (api/sparkline.rs), and the `priority_scores` view that shows them.

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
fn sparkline_hours_are_utc_hours_in_a_half_hour_zone() {
    // Two imports 40 minutes apart in one UTC hour, three hours ago. In India's zone (+05:30)
    // the session's hours begin at :30 UTC and would split them into two bars.
    Spi::run(
        "CREATE TABLE public.tz_table (id int);
         SET LOCAL TimeZone = 'Asia/Kolkata';
         SELECT shardcast.record_access('public.tz_table', date_trunc('hour', now(), 'UTC') - interval '3 hours' + m, reads => 100)
         FROM (VALUES (interval '10 minutes'), (interval '50 minutes')) v(m);",
    )
    .unwrap();
    let line = Spi::get_one::<String>("SELECT shardcast.sparkline('public.tz_table', '6 hours')").unwrap().unwrap();
    let bars: Vec<char> = line.chars().take_while(|&c| c != '│').collect();
    assert_eq!(bars.len(), 7, "{line}");
    // Oldest first, the current hour last: the hour that began three hours ago is the fourth.
    assert_eq!(bars.iter().filter(|&&c| c != '▁').count(), 1, "{line}");
    assert_eq!(bars[3], '█', "{line}");
}
