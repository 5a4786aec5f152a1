// What an operator undoes (api/lifecycle.rs): `cancel_task` and `retry_task`. `forget_replica`
// is tested with re-enqueueing (enqueue.rs), `alter_node` and `remove_node` with the nodes.

#[pg_test]
fn cancel_and_retry_a_task() {
    two_nodes();
    Spi::run("CREATE TABLE public.cr_a (id int); CREATE TABLE public.cr_b (id int)").unwrap();
    let a = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.cr_a', 'fast')").unwrap().unwrap();
    // Queued: cancelled, and out of the queue.
    assert_eq!(outcome(&format!("SELECT shardcast.cancel_task({a})")), "ok");
    let state = |task: i64| {
        Spi::get_one_with_args::<String>(
            "SELECT state || ':' || attempts FROM shardcast.replication_tasks WHERE task_id = $1",
            &[task.into()],
        )
        .unwrap()
        .unwrap()
    };
    assert_eq!(state(a), "cancelled:0");
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.prioritized_queue").unwrap(), Some(0));
    assert_eq!(outcome(&format!("SELECT shardcast.cancel_task({a})")), "55000 with hint");
    // Retried: queued again; a second retry is refused while it is open.
    assert_eq!(outcome(&format!("SELECT shardcast.retry_task({a})")), "ok");
    assert_eq!(state(a), "queued:0");
    assert_eq!(outcome(&format!("SELECT shardcast.retry_task({a})")), "55000 with hint");
    // Claimed: neither cancelled nor retried.
    assert_eq!(Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w')").unwrap(), Some(a));
    assert_eq!(outcome(&format!("SELECT shardcast.cancel_task({a})")), "55000 with hint");
    // Failed for good: retried with its attempts reset.
    Spi::run("SET LOCAL shardcast.max_attempts = 1").unwrap();
    Spi::run_with_args("SELECT shardcast.complete_task($1, false, 'disk full')", &[a.into()]).unwrap();
    assert_eq!(state(a), "failed:1");
    // Another open task for the shard and node: refused.
    let b = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.cr_a', 'fast')").unwrap().unwrap();
    assert_ne!(a, b);
    assert_eq!(outcome(&format!("SELECT shardcast.retry_task({a})")), "55000 with hint");
    Spi::run_with_args("SELECT shardcast.cancel_task($1)", &[b.into()]).unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.retry_task({a})")), "ok");
    assert_eq!(state(a), "queued:0");
    // Done: nothing to cancel or retry.
    Spi::run("RESET shardcast.max_attempts").unwrap();
    assert_eq!(Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w')").unwrap(), Some(a));
    Spi::run_with_args("SELECT shardcast.complete_task($1)", &[a.into()]).unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.cancel_task({a})")), "55000 with hint");
    assert_eq!(outcome(&format!("SELECT shardcast.retry_task({a})")), "55000 with hint");
    // A task whose shard is gone cannot be retried.
    let c = Spi::get_one::<i64>("SELECT shardcast.enqueue('public.cr_b')").unwrap().unwrap();
    Spi::run_with_args("SELECT shardcast.cancel_task($1)", &[c.into()]).unwrap();
    Spi::run("DROP TABLE public.cr_b").unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.retry_task({c})")), "55000 with hint");
    for sql in ["SELECT shardcast.cancel_task(424242)", "SELECT shardcast.retry_task(424242)"] {
        assert_eq!(outcome(sql), "42704 with hint", "{sql}");
    }
    for sql in ["SELECT shardcast.cancel_task(NULL)", "SELECT shardcast.retry_task(NULL)"] {
        assert_eq!(outcome(sql), "22004 with hint", "{sql}");
    }
}
