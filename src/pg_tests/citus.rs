// shardcast on Citus (sql/citus.sql, api/citus.rs, catalog/citus.rs), without Citus installed.

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
fn citus_moves_are_ranked_by_the_imbalance_they_relieve_per_byte() {
    // Node a holds a hot group (4) and a cold one (1), node b two warm ones (3 each), node c is
    // new. A plan blind to load moves the hot group (1 GB) onto b first (task 11), then b's two
    // groups (2 GB each) to c. The hot group has the most load per byte, but moved first it would
    // make b carry 10 of 14: it goes last, after b's groups made room.
    let ranks = Spi::get_one::<String>(
        "SELECT string_agg(id || ':' || rank, ' ' ORDER BY rank)
         FROM shardcast._citus_move_order('{11,12,13}', '{a:1,b:1,b:1}', '{b:1,c:1,c:1}', '{4,3,3}',
                                          '{1073741824,2147483648,2147483648}', '{a:1,b:1}', '{5,6}')",
    )
    .unwrap();
    assert_eq!(ranks.as_deref(), Some("12:1 13:2 11:3"));
    // No queued move: no row.
    assert_eq!(
        Spi::get_one::<i64>(
            "SELECT count(*) FROM shardcast._citus_move_order(NULL, NULL, NULL, NULL, NULL, '{}', '{}')"
        )
        .unwrap(),
        Some(0)
    );
    assert_eq!(
        outcome("SELECT * FROM shardcast._citus_move_order('{1,2}', '{a:1}', '{b:1}', '{1}', '{1}', '{}', '{}')"),
        "22023 with hint"
    );
}
