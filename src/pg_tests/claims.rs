// Claims and leases (api/claims.rs): `claim_task`, `heartbeat`, `release_task`,
// `complete_task`, and the copy credits a claim grants.

#[pg_test]
fn claim_heartbeat_complete_and_their_errors() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts(); SELECT shardcast.enqueue_all()").unwrap();
    let first = Spi::get_one::<i64>("SELECT task_id FROM shardcast.prioritized_queue WHERE position = 1").unwrap();
    let claimed = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w1')").unwrap();
    assert_eq!(claimed, first);
    let task = claimed.unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.heartbeat({task})")), "ok");
    assert_eq!(outcome(&format!("SELECT shardcast.heartbeat({task}, 'w1')")), "ok");
    assert_eq!(outcome(&format!("SELECT shardcast.heartbeat({task}, 'w2')")), "55000 with hint");
    assert_eq!(
        outcome(&format!("SELECT shardcast.complete_task({task}, true, NULL, 'w2')")),
        "55000 with hint"
    );
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({task}, true, 'copied', 'w1')")), "ok");
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({task})")), "55000 with hint");
    assert_eq!(outcome(&format!("SELECT shardcast.heartbeat({task})")), "55000 with hint");
    let logged = Spi::get_one_with_args::<String>(
        "SELECT succeeded || ':' || worker || ':' || detail FROM shardcast.completion_log WHERE task_id = $1",
        &[task.into()],
    )
    .unwrap();
    assert_eq!(logged.as_deref(), Some("true:w1:copied"));
    // A failure goes back to the queue with one more attempt.
    let second = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w1')").unwrap().unwrap();
    Spi::run_with_args("SELECT shardcast.complete_task($1, false, 'disk full')", &[second.into()]).unwrap();
    let state = Spi::get_one_with_args::<String>(
        "SELECT state || ':' || attempts FROM shardcast.replication_tasks WHERE task_id = $1",
        &[second.into()],
    )
    .unwrap();
    assert_eq!(state.as_deref(), Some("queued:1"));
}

#[pg_test]
fn a_released_task_goes_back_to_the_queue_without_an_attempt() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts(); SELECT shardcast.enqueue_all()").unwrap();
    let task = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w1')").unwrap().unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.release_task({task}, 'w2')")), "55000 with hint");
    assert_eq!(outcome(&format!("SELECT shardcast.release_task({task}, 'w1')")), "ok");
    let state = Spi::get_one_with_args::<String>(
        "SELECT state || ':' || attempts || ':' || coalesce(claimed_by, '-') FROM shardcast.replication_tasks
         WHERE task_id = $1",
        &[task.into()],
    )
    .unwrap();
    assert_eq!(state.as_deref(), Some("queued:0:-"));
    assert_eq!(outcome(&format!("SELECT shardcast.release_task({task})")), "55000 with hint");
    assert_eq!(outcome("SELECT shardcast.release_task(424242)"), "42704 with hint");
    // It keeps its place: the next claim takes it again.
    let again = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w3')").unwrap();
    assert_eq!(again, Some(task));
}

#[pg_test]
fn a_claim_grants_a_credit_for_the_copys_own_reads() {
    Spi::run(
        "CREATE TABLE public.copied (id int PRIMARY KEY, v text);
         INSERT INTO public.copied SELECT i, repeat('x', 100) FROM generate_series(1, 1000) i;
         ANALYZE public.copied;
         SELECT shardcast.enqueue('public.copied')",
    )
    .unwrap();
    let task = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w')").unwrap().unwrap();
    let credit = Spi::get_one::<String>(
        "SELECT concat_ws('|', c.scans, c.tuples_read, c.blocks = r.relpages, c.valid_until > t.lease_expires_at)
         FROM shardcast.copy_credits c JOIN shardcast.shards s USING (shard_id)
         JOIN pg_class r ON r.oid = s.relid JOIN shardcast.replication_tasks t USING (shard_id)",
    )
    .unwrap();
    assert_eq!(credit.as_deref(), Some("1|1000|t|t"));
    Spi::run_with_args("SELECT shardcast.complete_task($1)", &[task.into()]).unwrap();
    let lasts = Spi::get_one::<bool>(
        "SELECT valid_until >= now() + interval '10 minutes' FROM shardcast.copy_credits",
    )
    .unwrap();
    assert_eq!(lasts, Some(true));
}

#[pg_test]
fn a_claim_never_hands_out_a_dropped_shard_or_the_table_that_took_its_name() {
    Spi::run(
        "CREATE TABLE public.a1 (id int); CREATE TABLE public.a2 (id int); CREATE TABLE public.a3 (id int);
         SELECT shardcast.enqueue('public.a1'); SELECT shardcast.enqueue('public.a2'); SELECT shardcast.enqueue('public.a3');",
    )
    .unwrap();
    // No replan in between: the tasks of a1 (dropped, its name reused) and a2 (renamed) are
    // first in the stored order.
    Spi::run(
        "DROP TABLE public.a1; CREATE TABLE public.a1 (other text);
         ALTER TABLE public.a2 RENAME TO a2_renamed;
         UPDATE shardcast.replication_tasks t SET dispatch_rank = CASE s.table_name WHEN 'a1' THEN 1 WHEN 'a2' THEN 2 ELSE 3 END
         FROM shardcast.shards s WHERE s.shard_id = t.shard_id AND s.table_name IN ('a1', 'a2', 'a3')",
    )
    .unwrap();
    let claimed = Spi::get_two::<String, String>("SELECT shard::text, qualified_name FROM shardcast.claim_task('w1')").unwrap();
    assert_eq!(claimed, (Some("a3".into()), Some("public.a3".into())));
    let states = Spi::get_one::<String>(
        "SELECT string_agg(s.table_name || ':' || t.state || ':' || coalesce(t.detail, '-'), ', ' ORDER BY s.table_name)
         FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
         WHERE s.table_name IN ('a1', 'a2', 'a3')",
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        states,
        "a1:cancelled:the shard was dropped, a2:cancelled:the shard was renamed or moved: it is a new shard now, a3:claimed:-"
    );
    // Nothing else is left to hand out.
    assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM shardcast.claim_task('w1')").unwrap(), Some(0));
}

#[pg_test]
fn a_completion_is_always_recorded_and_announced_whatever_its_detail_or_node() {
    // A node named before names were bounded (or by hand): longer than NOTIFY could carry.
    Spi::run(
        "INSERT INTO shardcast.nodes (node, capacity_bytes_per_sec) VALUES (repeat('n', 9000), 1e8);
         CREATE TABLE public.n_long (id int);
         SELECT shardcast.enqueue('public.n_long', repeat('n', 9000));",
    )
    .unwrap();
    let task = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w')").unwrap().unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({task}, false, repeat('e', 8000))")), "ok");
    let task = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w')").unwrap().unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({task}, true, repeat(E'\\u00e9\\u0001', 8000))")), "ok");
    // The tables keep the whole detail.
    let kept = Spi::get_one_with_args::<String>(
        "SELECT t.state || ':' || length(t.detail) || ':' || string_agg(length(l.detail)::text, ',' ORDER BY l.finished_at, l.succeeded)
         FROM shardcast.replication_tasks t JOIN shardcast.completion_log l USING (task_id)
         WHERE t.task_id = $1 GROUP BY t.state, t.detail",
        &[task.into()],
    )
    .unwrap();
    assert_eq!(kept.as_deref(), Some("done:16000:8000,16000"));
}

#[pg_test]
fn heartbeat_and_completion_refuse_an_expired_lease_before_any_claim_expires_it() {
    Spi::run("CREATE TABLE public.l_task (id int); SELECT shardcast.enqueue('public.l_task')").unwrap();
    Spi::run("SET LOCAL shardcast.claim_lease = '1s'").unwrap();
    let task = Spi::get_one::<i64>("SELECT task_id FROM shardcast.claim_task('w')").unwrap().unwrap();
    assert_eq!(outcome(&format!("SELECT shardcast.heartbeat({task}, 'w')")), "ok");
    Spi::run("SELECT pg_sleep(1.2)").unwrap();
    // Nobody has claimed since: the task is still 'claimed', but its lease is over.
    assert_eq!(outcome(&format!("SELECT shardcast.heartbeat({task}, 'w')")), "55000 with hint");
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({task}, true, NULL, 'w')")), "55000 with hint");
    assert_eq!(outcome(&format!("SELECT shardcast.complete_task({task})")), "55000 with hint");
    // Its claimer may still hand it back, as the next claim would.
    assert_eq!(outcome(&format!("SELECT shardcast.release_task({task}, 'w')")), "ok");
    let state = Spi::get_one_with_args::<String>("SELECT state FROM shardcast.replication_tasks WHERE task_id = $1", &[task.into()]).unwrap();
    assert_eq!(state.as_deref(), Some("queued"));
}
