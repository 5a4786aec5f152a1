// Nodes (api/nodes.rs): `add_node`, `report_node_load`, `alter_node`, `remove_node`, and which
// node a task goes to.

#[pg_test]
fn node_errors_have_sqlstates_and_hints() {
    two_nodes();
    let cases = [
        ("SELECT shardcast.add_node('fast', 1e6)", "42710"),
        ("SELECT shardcast.add_node('x', 0)", "22023"),
        ("SELECT shardcast.add_node('x', 'NaN')", "22023"),
        ("SELECT shardcast.add_node('x', 1e6, 1, repeat('h', 9000))", "22023"),
        ("SELECT shardcast.add_node('x', 1e6, 0)", "22023"),
        ("SELECT shardcast.add_node(NULL, 1e6)", "22004"),
        ("SELECT shardcast.report_node_load('nowhere', 0.5)", "42704"),
        ("SELECT shardcast.report_node_load('fast', 1.5)", "22023"),
        ("SELECT shardcast.enqueue('pg_catalog.pg_class')", "42809"),
        ("SELECT shardcast.enqueue_all('nowhere')", "42704"),
        ("SELECT shardcast.enqueue_publication('no_such_publication')", "42704"),
        ("SELECT * FROM shardcast.allocation_plan(0, 1000)", "22023"),
        ("SELECT * FROM shardcast.allocation_plan(2, -5)", "22023"),
        ("SELECT shardcast.heartbeat(424242)", "42704"),
        ("SELECT shardcast.complete_task(424242)", "42704"),
        ("SELECT * FROM shardcast.claim_task(NULL)", "22004"),
    ];
    for (sql, sqlstate) in cases {
        assert_eq!(outcome(sql), format!("{sqlstate} with hint"), "{sql}");
    }
}

#[pg_test]
fn tasks_without_a_requested_node_go_to_the_fast_idle_node() {
    shop_with_history();
    two_nodes();
    Spi::run("SELECT shardcast.report_node_load('slow', 0.5); SELECT shardcast.refresh_forecasts(); SELECT shardcast.enqueue('public.f_orders')")
        .unwrap();
    let node = Spi::get_one::<String>("SELECT node FROM shardcast.prioritized_queue WHERE shard = 'public.f_orders'::regclass")
        .unwrap();
    assert_eq!(node.as_deref(), Some("fast"));
    let fixed = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.f_audit', 'slow')").unwrap().unwrap();
    let node = Spi::get_one_with_args::<String>(
        "SELECT node FROM shardcast.prioritized_queue WHERE task_id = $1",
        &[fixed.into()],
    )
    .unwrap();
    assert_eq!(node.as_deref(), Some("slow"));
}

#[pg_test]
fn a_disabled_nodes_tasks_are_not_handed_out() {
    two_nodes();
    Spi::run(
        "CREATE TABLE public.d_slow (id int); CREATE TABLE public.d_any (id int);
         SELECT shardcast.enqueue('public.d_slow', 'slow');
         UPDATE shardcast.nodes SET enabled = false WHERE node = 'slow';",
    )
    .unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.claim_task('w', 'slow')").unwrap(), Some(0));
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.claim_task('w')").unwrap(), Some(0));
    // Tasks without a requested node go to the enabled node.
    Spi::run("SELECT shardcast.enqueue('public.d_any')").unwrap();
    let claimed = Spi::get_two::<String, String>("SELECT shard::text, node FROM shardcast.claim_task('w')").unwrap();
    assert_eq!(claimed, (Some("d_any".into()), Some("fast".into())));
    // Enabled again, its task is handed out.
    Spi::run("UPDATE shardcast.nodes SET enabled = true WHERE node = 'slow'").unwrap();
    let claimed = Spi::get_one::<String>("SELECT shard::text FROM shardcast.claim_task('w', 'slow')").unwrap();
    assert_eq!(claimed.as_deref(), Some("d_slow"));
}

#[pg_test]
fn tasks_queued_before_the_first_node_go_to_it_when_it_is_added() {
    Spi::run("CREATE TABLE public.early (id int); SELECT shardcast.enqueue('public.early');").unwrap();
    // add_node replans: without it the task kept its stored node, none, and with a node now
    // registered no claim took it until the worker's next refresh.
    Spi::run("SELECT shardcast.add_node('first', 1e6)").unwrap();
    let claimed = Spi::get_two::<String, String>("SELECT shard::text, node FROM shardcast.claim_task('w', 'first')").unwrap();
    assert_eq!(claimed, (Some("early".into()), Some("first".into())));
}

#[pg_test]
fn remove_node_refuses_tasks_in_flight_and_removes_an_idle_node() {
    two_nodes();
    Spi::run(
        "CREATE TABLE public.rn_a (id int); CREATE TABLE public.rn_b (id int); CREATE TABLE public.rn_c (id int);
         SELECT shardcast.add_node('idle', 1e6, 1);",
    )
    .unwrap();
    // A node with no tasks: removed.
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.remove_node('idle')").unwrap(), Some(0));
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.nodes WHERE node = 'idle'").unwrap(), Some(0));
    // A node with a task in flight: refused (55006), nothing changed.
    Spi::run(
        "SELECT shardcast.enqueue('public.rn_a', 'slow'); SELECT shardcast.enqueue('public.rn_b', 'slow');
         SELECT shardcast.enqueue('public.rn_c', 'fast');",
    )
    .unwrap();
    let claimed = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w', 'slow')").unwrap().unwrap();
    assert_eq!(outcome("SELECT shardcast.remove_node('slow')"), "55006 with hint");
    assert_eq!(open_tasks_like("rn\\_%"), 3);
    // Done, it is history: the node goes, its queued task is cancelled, its copy forgotten, the
    // completion log keeps its name.
    Spi::run_with_args("SELECT shardcast.complete_task($1)", &[claimed.into()]).unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.replicas WHERE node = 'slow'").unwrap(), Some(1));
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.remove_node('slow')").unwrap(), Some(1));
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.replicas WHERE node = 'slow'").unwrap(), Some(0));
    assert_eq!(
        Spi::get_one_with_args::<String>("SELECT node FROM shardcast.completion_log WHERE task_id = $1", &[claimed.into()]).unwrap().as_deref(),
        Some("slow")
    );
    let states = Spi::get_one::<String>(
        "SELECT string_agg(s.table_name || ':' || t.state, ',' ORDER BY s.table_name) FROM shardcast.replication_tasks t
         JOIN shardcast.shards s USING (shard_id) WHERE s.table_name LIKE 'rn\\_%'",
    )
    .unwrap();
    assert_eq!(states.as_deref(), Some("rn_a:done,rn_b:cancelled,rn_c:queued"));
    // A plain DELETE would have failed on the foreign key; now the name is free again.
    assert_eq!(outcome("SELECT shardcast.add_node('slow', 10e6)"), "ok");
    assert_eq!(outcome("SELECT shardcast.remove_node('nowhere')"), "42704 with hint");
    assert_eq!(outcome("SELECT shardcast.remove_node(NULL)"), "22004 with hint");
}

#[pg_test]
fn alter_node_changes_what_is_given_and_validates_like_add_node() {
    two_nodes();
    Spi::run("SELECT shardcast.alter_node('slow', max_concurrent => 3, enabled => false)").unwrap();
    let row = Spi::get_one::<String>(
        "SELECT concat_ws('|', capacity_bytes_per_sec, max_concurrent, conninfo, enabled) FROM shardcast.nodes WHERE node = 'slow'",
    )
    .unwrap();
    assert_eq!(row.as_deref(), Some("10000000|3|host=127.0.0.1 port=1|f"));
    Spi::run("SELECT shardcast.alter_node('slow', 20e6, conninfo => '', enabled => true)").unwrap();
    let row = Spi::get_one::<String>(
        "SELECT concat_ws('|', capacity_bytes_per_sec, max_concurrent, coalesce(conninfo, '-'), enabled) FROM shardcast.nodes WHERE node = 'slow'",
    )
    .unwrap();
    assert_eq!(row.as_deref(), Some("20000000|3|-|t"));
    // The duplicate-node hint points here.
    Spi::run(
        r#"CREATE FUNCTION pg_temp.hint_of(q text) RETURNS text LANGUAGE plpgsql AS $$
           DECLARE hint text;
           BEGIN EXECUTE q; RETURN NULL;
           EXCEPTION WHEN OTHERS THEN GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT; RETURN hint; END $$"#,
    )
    .unwrap();
    let hint = Spi::get_one::<String>("SELECT pg_temp.hint_of('SELECT shardcast.add_node(''fast'', 1e6)')").unwrap().unwrap();
    assert!(hint.contains("shardcast.alter_node"), "{hint}");
    let cases = [
        ("SELECT shardcast.alter_node('fast', 0)", "22023"),
        ("SELECT shardcast.alter_node('fast', 'NaN')", "22023"),
        ("SELECT shardcast.alter_node('fast', 2e15)", "22023"),
        ("SELECT shardcast.alter_node('fast', max_concurrent => 0)", "22023"),
        ("SELECT shardcast.alter_node('fast', max_concurrent => 1025)", "22023"),
        ("SELECT shardcast.alter_node('nowhere', 1e6)", "42704"),
        ("SELECT shardcast.alter_node(NULL, 1e6)", "22004"),
    ];
    for (sql, sqlstate) in cases {
        assert_eq!(outcome(sql), format!("{sqlstate} with hint"), "{sql}");
    }
    // Disabled, a node's claimed task finishes; it gets no new claims.
    Spi::run(
        "CREATE TABLE public.an_a (id int); CREATE TABLE public.an_b (id int);
         SELECT shardcast.enqueue('public.an_a', 'slow'); SELECT shardcast.enqueue('public.an_b', 'slow');",
    )
    .unwrap();
    let claimed = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w', 'slow')").unwrap().unwrap();
    Spi::run("SELECT shardcast.alter_node('slow', enabled => false)").unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.claim_task('w', 'slow')").unwrap(), Some(0));
    assert_eq!(outcome(&format!("SELECT shardcast.heartbeat({claimed})")), "ok");
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({claimed})")), "ok");
}
