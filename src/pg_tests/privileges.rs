// Who may use what (sql/privileges.sql), and the README's grants for a replication role and an
// inspector.

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
