// The shard registry (catalog/shards.rs): which relations are shards, and what a drop or a
// rename does to a shard and its history.

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
