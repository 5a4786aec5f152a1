// The worker's status view and the settings (src/gucs.rs).

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
