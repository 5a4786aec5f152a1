// Shard classes and their weights (`set_shard_class`, api/classes.rs).

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
        ("SELECT shardcast.set_shard_class('public.c_bad', 'vip')", "42704"),
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
