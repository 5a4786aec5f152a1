// The prioritization report (api/report.rs): `prioritization_report_for`, `_since`, and the view.

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
