use pgrx::prelude::*;

#[pg_test]
fn records_external_access() {
    Spi::run("CREATE TABLE public.t_ext (id int)").unwrap();
    Spi::run("SELECT shardcast.record_access('public.t_ext', now() - interval '1 minute', 10, 2)")
        .unwrap();
    let reads = Spi::get_one::<f64>(
        "SELECT sum(tuples_read) FROM shardcast.access_history WHERE shard = 'public.t_ext'::regclass",
    )
    .unwrap();
    assert_eq!(reads, Some(10.0));
}
