// Enqueueing (api/enqueue.rs): `enqueue`, `enqueue_publication`, `enqueue_all`. One shard, one
// node, one open task; what cannot be replicated, what is dropped, and what is already copied.

#[pg_test]
fn enqueue_is_idempotent_and_covers_publications() {
    shop_with_history();
    let first = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.f_orders')").unwrap();
    let again = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.f_orders')").unwrap();
    assert_eq!(first, again);
    Spi::run("CREATE PUBLICATION f_pub FOR TABLE public.f_orders, public.f_audit").unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue_publication('f_pub')").unwrap(), Some(2));
    let open = Spi::get_one::<i64>(
        "SELECT count(*) FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
         WHERE s.table_name LIKE 'f\\_%' AND t.state = 'queued'",
    )
    .unwrap();
    assert_eq!(open, Some(2));
}

/// Marks the task claimed by worker `w` for an hour, as a claim would.
fn claimed_by_hand(task: Option<i64>) {
    Spi::run_with_args(
        "UPDATE shardcast.replication_tasks SET state = 'claimed', claimed_by = 'w', claimed_at = now(),
                lease_expires_at = now() + interval '1 hour' WHERE task_id = $1",
        &[task.into()],
    )
    .unwrap();
}

#[pg_test]
fn a_queued_task_takes_its_table_s_size_when_enqueued_again() {
    Spi::run("CREATE TABLE public.grown (id int, pad text)").unwrap();
    let task = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.grown')").unwrap();
    Spi::run("INSERT INTO public.grown SELECT i, repeat('x', 500) FROM generate_series(1, 5000) i").unwrap();
    let again = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.grown')").unwrap();
    assert_eq!(again, task, "the same task");
    let sizes = Spi::get_two_with_args::<i64, i64>(
        "SELECT t.size_bytes, pg_total_relation_size('public.grown') FROM shardcast.replication_tasks t WHERE t.task_id = $1",
        &[task.into()],
    )
    .unwrap();
    assert!(sizes.0.is_some() && sizes.0 == sizes.1 && sizes.0 > Some(2_000_000), "{sizes:?}");
    // A claimed task keeps the size it was claimed at.
    claimed_by_hand(task);
    Spi::run("INSERT INTO public.grown SELECT i, repeat('x', 500) FROM generate_series(1, 5000) i").unwrap();
    Spi::run("SELECT shardcast.enqueue('public.grown')").unwrap();
    let claimed = Spi::get_one_with_args::<i64>(
        "SELECT size_bytes FROM shardcast.replication_tasks WHERE task_id = $1",
        &[task.into()],
    )
    .unwrap();
    assert_eq!(claimed, sizes.0);
}

#[pg_test]
fn the_worker_s_resize_moves_a_queued_copy_by_a_tenth_or_more_only() {
    use crate::catalog::{shards, tasks};
    Spi::run("CREATE TABLE public.resized (id int, pad text)").unwrap();
    Spi::run("INSERT INTO public.resized SELECT i, repeat('x', 500) FROM generate_series(1, 2000) i").unwrap();
    let task = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.resized')").unwrap();
    let shard = Spi::get_one::<i32>(
        "SELECT shard_id FROM shardcast.shards WHERE relid = 'public.resized'::regclass AND retired_at IS NULL",
    )
    .unwrap()
    .unwrap();
    let size = || {
        Spi::get_one_with_args::<i64>("SELECT size_bytes FROM shardcast.replication_tasks WHERE task_id = $1", &[task.into()])
            .unwrap()
            .unwrap()
    };
    let queued = size();
    let resize = || {
        tasks::lock_queue().unwrap();
        tasks::resize_queued(&shards::sizes_now(&tasks::queued_among(&[shard]).unwrap()).unwrap()).unwrap()
    };
    // A few rows more (well under a tenth): the task keeps its size.
    Spi::run("INSERT INTO public.resized SELECT i, repeat('x', 500) FROM generate_series(1, 20) i").unwrap();
    assert_eq!(resize(), 0);
    assert_eq!(size(), queued);
    // Loaded tenfold: the task takes the table's size.
    Spi::run("INSERT INTO public.resized SELECT i, repeat('x', 500) FROM generate_series(1, 18000) i").unwrap();
    assert_eq!(resize(), 1);
    assert_eq!(
        Some(size()),
        Spi::get_one::<i64>("SELECT pg_total_relation_size('public.resized')").unwrap()
    );
    // A claimed task is not queued: it keeps the size it was claimed at.
    let claimed = size();
    claimed_by_hand(task);
    Spi::run("INSERT INTO public.resized SELECT i, repeat('x', 500) FROM generate_series(1, 40000) i").unwrap();
    assert!(tasks::queued_among(&[shard]).unwrap().is_empty());
    let sizes = shards::sizes_now(&[shard]).unwrap();
    assert_eq!(tasks::resize_queued(&sizes).unwrap(), 0);
    assert_eq!(size(), claimed);
}

#[pg_test]
fn a_dropped_shard_task_is_cancelled_not_copied() {
    Spi::run("CREATE TABLE public.doomed (id int); SELECT shardcast.enqueue('public.doomed')").unwrap();
    Spi::run("DROP TABLE public.doomed; SELECT shardcast.enqueue_all()").unwrap();
    let state = Spi::get_one::<String>(
        "SELECT t.state FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
         WHERE s.table_name = 'doomed'",
    )
    .unwrap();
    assert_eq!(state.as_deref(), Some("cancelled"));
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.claim_task('w')").unwrap(), Some(0));
}

#[pg_test]
fn one_shard_one_node_one_open_task() {
    two_nodes();
    Spi::run("CREATE TABLE public.o_a (id int); CREATE TABLE public.o_b (id int); CREATE TABLE public.o_c (id int)").unwrap();
    let open = |table: &str| {
        Spi::get_one_with_args::<String>(
            "SELECT string_agg(t.task_id || '@' || coalesce(t.node, '-') || '/' || coalesce(t.requested_node, '*') || ':' || t.state, ' ' ORDER BY t.task_id)
             FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
             WHERE s.table_name = $1 AND t.state IN ('queued', 'claimed')",
            &[table.into()],
        )
        .unwrap()
        .unwrap_or_default()
    };
    // Any node, then the node assignment chose: the same task, now bound to that node.
    let any = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.o_a')").unwrap().unwrap();
    let node = Spi::get_one_with_args::<String>("SELECT node FROM shardcast.replication_tasks WHERE task_id = $1", &[any.into()])
        .unwrap()
        .unwrap();
    let given = Spi::get_one_with_args::<i64>("SELECT shardcast.enqueue('public.o_a', $1)", &[node.clone().into()]).unwrap();
    assert_eq!(given, Some(any));
    assert_eq!(open("o_a"), format!("{any}@{node}/{node}:queued"));
    // The other node is another copy; any node is satisfied by what is open.
    let other = if node == "fast" { "slow" } else { "fast" };
    let second = Spi::get_one_with_args::<i64>("SELECT shardcast.enqueue('public.o_a', $1)", &[other.into()]).unwrap().unwrap();
    assert_ne!(second, any);
    let again = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.o_a')").unwrap().unwrap();
    assert!(again == any || again == second);
    assert_eq!(open("o_a"), format!("{any}@{node}/{node}:queued {second}@{other}/{other}:queued"));
    // A node, then any node: the same task.
    let fixed = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.o_b', 'slow')").unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue('public.o_b')").unwrap(), fixed);
    // Claimed for one node: enqueueing for that node is the same task; for the other node, a
    // second task; and when the first fails back into the queue, node assignment does not send
    // it where the shard is already going.
    let c = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.o_c')").unwrap().unwrap();
    Spi::run_with_args(
        "UPDATE shardcast.replication_tasks SET dispatch_rank = 0 WHERE task_id = $1",
        &[c.into()],
    )
    .unwrap();
    let claimed = Spi::get_two::<i64, String>("SELECT task_id, node FROM shardcast.claim_task('w')").unwrap();
    assert_eq!(claimed.0, Some(c));
    let c_node = claimed.1.unwrap();
    let c_other = if c_node == "fast" { "slow" } else { "fast" };
    assert_eq!(Spi::get_one_with_args::<i64>("SELECT shardcast.enqueue('public.o_c', $1)", &[c_node.clone().into()]).unwrap(), Some(c));
    let c2 = Spi::get_one_with_args::<i64>("SELECT shardcast.enqueue('public.o_c', $1)", &[c_other.into()]).unwrap().unwrap();
    assert_ne!(c2, c);
    Spi::run_with_args("SELECT shardcast.complete_task($1, false, 'disk full')", &[c.into()]).unwrap();
    assert_eq!(open("o_c"), format!("{c}@{c_node}/*:queued {c2}@{c_other}/{c_other}:queued"));
}

#[pg_test]
fn tables_logical_replication_cannot_carry_are_refused_at_enqueue() {
    Spi::run(
        "CREATE UNLOGGED TABLE public.ul_scratch (id int PRIMARY KEY);
         CREATE TEMPORARY TABLE ul_session (id int PRIMARY KEY);
         CREATE TABLE public.ul_kept (id int PRIMARY KEY);
         CREATE TABLE public.ul_parts (id int, d int, PRIMARY KEY (id, d)) PARTITION BY RANGE (d);
         CREATE UNLOGGED TABLE public.ul_parts_cold PARTITION OF public.ul_parts FOR VALUES FROM (0) TO (10);
         CREATE TABLE public.ul_parts_hot PARTITION OF public.ul_parts FOR VALUES FROM (10) TO (20);
         CREATE PUBLICATION ul_pub FOR TABLE public.ul_parts, public.ul_kept;",
    )
    .unwrap();
    // One named table: an ERROR that says what to do.
    assert_eq!(outcome("SELECT shardcast.enqueue('public.ul_scratch')"), "0A000 with hint");
    assert_eq!(outcome("SELECT shardcast.enqueue('pg_temp.ul_session')"), "0A000 with hint");
    // In bulk: skipped (with a NOTICE), the others enqueued.
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue_publication('ul_pub')").unwrap(), Some(2));
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    let queued = Spi::get_one::<String>(
        "SELECT string_agg(s.table_name::text, ',' ORDER BY s.table_name) FROM shardcast.replication_tasks t
         JOIN shardcast.shards s USING (shard_id) WHERE s.table_name LIKE 'ul\\_%' AND t.state = 'queued'",
    )
    .unwrap();
    assert_eq!(queued.as_deref(), Some("ul_kept,ul_parts_hot"));
    // Made logged, it is a table like any other.
    Spi::run("ALTER TABLE public.ul_scratch SET LOGGED").unwrap();
    assert_eq!(outcome("SELECT shardcast.enqueue('public.ul_scratch')"), "ok");
}

#[pg_test]
fn re_enqueueing_after_a_finished_run_copies_nothing() {
    two_nodes();
    Spi::run("CREATE TABLE public.m_a (id int); CREATE TABLE public.m_b (id int); CREATE TABLE public.m_c (id int)").unwrap();
    Spi::run("CREATE PUBLICATION m_pub FOR TABLE public.m_a, public.m_b, public.m_c").unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue_publication('m_pub')").unwrap(), Some(3));
    assert_eq!(run_queue("run-1", true), 3);
    // Every shard is remembered on the node it went to.
    let remembered = Spi::get_one::<i64>(
        "SELECT count(*) FROM shardcast.node_replicas WHERE shard::text LIKE 'm\\_%'",
    )
    .unwrap();
    assert_eq!(remembered, Some(3));
    // Again: nothing new, for the publication and for every shard; nothing is queued.
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue_publication('m_pub')").unwrap(), Some(0));
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    assert_eq!(open_tasks_like("m\\_%"), 0);
    // One shard: the task that copied it comes back, nothing is queued.
    let copier = Spi::get_one::<i64>(
        "SELECT task_id FROM shardcast.node_replicas WHERE shard = 'public.m_a'::regclass",
    )
    .unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue('public.m_a')").unwrap(), copier);
    assert_eq!(open_tasks_like("m\\_%"), 0);
    // Named, another node is another copy; the node it is on is not.
    let on = Spi::get_one::<String>("SELECT node FROM shardcast.node_replicas WHERE shard = 'public.m_a'::regclass")
        .unwrap()
        .unwrap();
    let other = if on == "fast" { "slow" } else { "fast" };
    assert_eq!(Spi::get_one_with_args::<i64>("SELECT shardcast.enqueue('public.m_a', $1)", &[on.clone().into()]).unwrap(), copier);
    assert_eq!(open_tasks_like("m\\_%"), 0);
    Spi::run_with_args("SELECT shardcast.enqueue('public.m_a', $1)", &[other.into()]).unwrap();
    assert_eq!(open_tasks_like("m\\_%"), 1);
    // Forgotten, it is copied again; forgetting what is not remembered says so.
    assert_eq!(Spi::get_one_with_args::<bool>("SELECT shardcast.forget_replica('public.m_a', $1)", &[other.into()]).unwrap(), Some(false));
    Spi::run("SELECT shardcast.forget_replica('public.m_c', 'fast'); SELECT shardcast.forget_replica('public.m_c', 'slow')").unwrap();
    Spi::run("SELECT shardcast.enqueue('public.m_c')").unwrap();
    assert_eq!(open_tasks_like("m\\_c"), 1);
    // A dropped shard's copies are forgotten with it.
    Spi::run("DROP TABLE public.m_b; SELECT shardcast.enqueue_all()").unwrap();
    let kept = Spi::get_one::<i64>(
        "SELECT count(*) FROM shardcast.replicas r JOIN shardcast.shards s USING (shard_id) WHERE s.table_name = 'm_b'",
    )
    .unwrap();
    assert_eq!(kept, Some(0));
    assert_eq!(outcome("SELECT shardcast.forget_replica(NULL, 'fast')"), "22004 with hint");
    assert_eq!(outcome("SELECT shardcast.forget_replica('public.m_a', NULL)"), "22004 with hint");
    assert_eq!(outcome("SELECT shardcast.forget_replica('public.m_a', 'nowhere')"), "42704 with hint");
}

#[pg_test]
fn the_readme_block_enqueues_a_publication_once() {
    two_nodes();
    Spi::run(
        "CREATE TABLE public.rb_a (id int); CREATE TABLE public.rb_b (id int);
         CREATE PUBLICATION rb_pub FOR TABLE public.rb_a, public.rb_b;",
    )
    .unwrap();
    // The README's block: the publication to one node, then every shard.
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue_publication('rb_pub', 'slow')").unwrap(), Some(2));
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    assert_eq!(open_tasks_like("rb\\_%"), 2);
    // Copied, then the same block again: nothing more, on either node.
    run_queue("w", true);
    assert_eq!(Spi::get_one::<i64>("SELECT shardcast.enqueue_publication('rb_pub', 'slow')").unwrap(), Some(0));
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    assert_eq!(open_tasks_like("rb\\_%"), 0);
    let copies = Spi::get_one::<String>(
        "SELECT string_agg(shard::text || '@' || node, ',' ORDER BY shard::text) FROM shardcast.node_replicas
         WHERE shard::text LIKE 'rb\\_%'",
    )
    .unwrap();
    assert_eq!(copies.as_deref(), Some("rb_a@slow,rb_b@slow"));
}
