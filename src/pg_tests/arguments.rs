// Argument checks that every SQL function shares: a regclass of no relation, and the documented
// maximums of sizes and counts.

/// An OID that no relation has.
fn no_such_relid() -> u32 {
    Spi::get_one::<i64>("SELECT max(oid::int8) + 1000 FROM pg_catalog.pg_class").unwrap().unwrap() as u32
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
