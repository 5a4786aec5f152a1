// The queue's order and plan (api/queue.rs, src/queue.rs): the orderings and the overtake
// window, the express lane, the stored dispatch order, `allocation_plan`, `queue_explained`, and
// the manifest.

/// Gives the table's queued task a size and replans (the tables are empty, and a task is
/// enqueued at its table's size).
fn set_size(table: &str, bytes: i64) {
    Spi::run_with_args(
        "UPDATE shardcast.replication_tasks t SET size_bytes = $2 FROM shardcast.shards s
         WHERE s.shard_id = t.shard_id AND s.relid = $1::regclass AND s.retired_at IS NULL AND t.state = 'queued'",
        &[table.into(), bytes.into()],
    )
    .unwrap();
    crate::queue::replan().unwrap();
}

/// The queued tables in the order of the `prioritized_queue` view: the server's settings.
fn queue_view() -> String {
    Spi::get_one::<String>("SELECT string_agg(shard::text, ',' ORDER BY position) FROM shardcast.prioritized_queue")
        .unwrap()
        .unwrap_or_default()
}

/// The queued tables in the order `ordering` gives with an overtaking window of `window_secs`.
/// Both are server settings (a reload, which a test's transaction cannot wait for), so the
/// queue is computed directly.
fn queue_order_with(ordering: &str, window_secs: f64) -> String {
    let order = shardcast_core::schedule::Order::from_name(ordering).unwrap();
    let ids = crate::queue::queue_task_ids(order, window_secs);
    Spi::get_one_with_args::<String>(
        "SELECT string_agg(s.relid::regclass::text, ',' ORDER BY u.n)
         FROM unnest($1::int8[]) WITH ORDINALITY u(id, n)
         JOIN shardcast.replication_tasks t ON t.task_id = u.id JOIN shardcast.shards s USING (shard_id)",
        &[ids.into()],
    )
    .unwrap()
    .unwrap_or_default()
}

/// The queued tables in the order `ordering` gives with the default window.
fn queue_order(ordering: &str) -> String {
    queue_order_with(ordering, 3600.0)
}

/// The stored dispatch order: what claims follow.
fn stored_order() -> String {
    Spi::get_one::<String>(
        "SELECT string_agg(s.relid::regclass::text, ',' ORDER BY t.dispatch_rank)
         FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id) WHERE t.state = 'queued'",
    )
    .unwrap()
    .unwrap_or_default()
}

/// Sets a reload (SIGHUP) setting in this backend as a reload of postgresql.conf would, for the
/// rest of the test's transaction (the rollback restores it): a #[pg_test] cannot wait for a real
/// reload, and `SET` refuses such settings.
fn as_if_reloaded(name: &str, value: &str) {
    let name = std::ffi::CString::new(name).unwrap();
    let value = std::ffi::CString::new(value).unwrap();
    unsafe {
        pg_sys::SetConfigOption(name.as_ptr(), value.as_ptr(), pg_sys::GucContext::PGC_SIGHUP, pg_sys::GucSource::PGC_S_FILE)
    };
}

#[pg_test]
fn wspt_orders_by_score_per_byte_and_the_other_orders_differ() {
    shop_with_history();
    Spi::run("SET LOCAL shardcast.inheritance_factor = 0; SELECT shardcast.refresh_forecasts()").unwrap();
    // orders is hottest but huge; customers is cooler but tiny.
    // No express lane, and everything enqueued at once: the order is the ordering's alone,
    // whatever the tiers.
    as_if_reloaded("shardcast.prefetch_quantile", "1");
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    set_size("public.f_orders", 100_000_000_000);
    set_size("public.f_customers", 10_000);
    set_size("public.f_audit", 10_000_000);
    assert_eq!(queue_order("wspt"), "f_customers,f_audit,f_orders");
    // The view and the stored order follow the server's ordering (wspt), not the session's.
    assert_eq!(queue_view(), "f_customers,f_audit,f_orders");
    assert_eq!(outcome("SET shardcast.ordering = 'fifo'"), "55P02 without hint");
    assert_eq!(outcome("SET shardcast.overtake_window = 0"), "55P02 without hint");
    assert_eq!(queue_order("score"), "f_orders,f_customers,f_audit");
    let fifo = queue_order("fifo");
    let ids = Spi::get_one::<String>(
        "SELECT string_agg(s.table_name::text, ',' ORDER BY t.task_id) FROM shardcast.replication_tasks t
         JOIN shardcast.shards s USING (shard_id) WHERE t.state = 'queued'",
    )
    .unwrap()
    .unwrap();
    assert_eq!(fifo, ids);
}

#[pg_test]
fn hot_tasks_enqueued_later_than_the_window_do_not_overtake_a_cold_one() {
    shop_with_history();
    Spi::run("SET LOCAL shardcast.inheritance_factor = 0; SELECT shardcast.refresh_forecasts()").unwrap();
    // Scores as published, pinned so that the test is about the queue alone: orders hottest.
    Spi::run(
        "UPDATE shardcast.scores sc SET score = CASE s.table_name WHEN 'f_orders' THEN 1000 WHEN 'f_customers' THEN 10 ELSE 1 END
         FROM shardcast.shards s WHERE s.shard_id = sc.shard_id AND s.table_name IN ('f_orders', 'f_customers', 'f_audit')",
    )
    .unwrap();
    let pinned = Spi::get_one::<i64>(
        "SELECT count(*) FROM shardcast.scores sc JOIN shardcast.shards s USING (shard_id)
         WHERE s.table_name IN ('f_orders', 'f_customers', 'f_audit') AND s.retired_at IS NULL",
    )
    .unwrap();
    assert_eq!(pinned, Some(3));
    as_if_reloaded("shardcast.prefetch_quantile", "1");
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    set_size("public.f_orders", 100_000_000_000);
    set_size("public.f_customers", 10_000);
    set_size("public.f_audit", 10_000_000);
    // A one-shot queue is WSPT: the huge orders table, least dense, goes last.
    assert_eq!(queue_view(), "f_customers,f_audit,f_orders");
    assert_eq!(stored_order(), "f_customers,f_audit,f_orders");
    // orders has waited: the others came 2 hours (more than the default 1 h window) after it,
    // as hot tasks keep arriving under the driver's --follow. They no longer go first.
    Spi::run(
        "UPDATE shardcast.replication_tasks t SET enqueued_at = t.enqueued_at + interval '2 hours'
         FROM shardcast.shards s WHERE s.shard_id = t.shard_id AND s.table_name IN ('f_customers', 'f_audit')",
    )
    .unwrap();
    assert_eq!(queue_view(), "f_orders,f_customers,f_audit");
    // The next replan stores that order, and a claim follows it.
    crate::queue::replan().unwrap();
    assert_eq!(stored_order(), "f_orders,f_customers,f_audit");
    let claimed = Spi::get_two::<String, i64>("SELECT shard::text, task_id FROM shardcast.claim_task('copier-1')").unwrap();
    assert_eq!(claimed.0.as_deref(), Some("f_orders"));
    Spi::run(&format!("SELECT shardcast.release_task({}, 'copier-1')", claimed.1.unwrap())).unwrap();
    // Within a window of 3 hours, WSPT alone; with none, first come, first served (WSPT among
    // the tasks enqueued together).
    assert_eq!(queue_order_with("wspt", 3.0 * 3600.0), "f_customers,f_audit,f_orders");
    assert_eq!(queue_order_with("wspt", 0.0), "f_orders,f_customers,f_audit");
    // audit came 2 hours later still (4 hours after orders): under a 3-hour window customers
    // (2 hours after orders) may pass orders, audit may not.
    Spi::run(
        "UPDATE shardcast.replication_tasks t SET enqueued_at = t.enqueued_at + interval '2 hours'
         FROM shardcast.shards s WHERE s.shard_id = t.shard_id AND s.table_name = 'f_audit'",
    )
    .unwrap();
    assert_eq!(queue_order_with("wspt", 3.0 * 3600.0), "f_customers,f_orders,f_audit");
}

#[pg_test]
fn the_express_lane_goes_first_in_queue_plan_and_manifest() {
    shop_with_history();
    Spi::run("SET LOCAL shardcast.inheritance_factor = 0; SELECT shardcast.refresh_forecasts()").unwrap();
    // With three tasks, the 0.5 quantile of their densities is the middle one's: at equal sizes,
    // only orders' density at its lower bound can exceed it.
    as_if_reloaded("shardcast.prefetch_quantile", "0.5");
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    for t in ["public.f_orders", "public.f_customers", "public.f_audit"] {
        set_size(t, 10_000);
    }
    let lane = || {
        Spi::get_one::<String>(
            "SELECT string_agg(shard::text || ':' || prefetch, ',' ORDER BY position) FROM shardcast.prioritized_queue",
        )
        .unwrap()
        .unwrap_or_default()
    };
    assert_eq!(lane(), "f_orders:true,f_customers:false,f_audit:false");
    let plan = Spi::get_one::<String>(
        "SELECT shard::text || ':' || worker || ':' || (expected_start = now()) FROM shardcast.allocation_plan(2, 1000000) WHERE position = 1",
    )
    .unwrap();
    assert_eq!(plan.as_deref(), Some("f_orders:1:true"));
    let manifest = Spi::get_one::<pgrx::JsonB>("SELECT shardcast.manifest_json()").unwrap().unwrap().0;
    assert_eq!(manifest["version"], 2);
    assert_eq!(manifest["tasks"][0]["shard"], "public.f_orders");
    assert_eq!(manifest["tasks"][0]["prefetch"], true);
    // The window bounds the lane as it bounds the order: enqueued two hours after the others,
    // under a window of 0 (first come, first served), orders waits its turn, last, in the view
    // and in the order stored for claims; under a window of three hours it is in the lane again.
    as_if_reloaded("shardcast.overtake_window", "0");
    Spi::run(
        "UPDATE shardcast.replication_tasks t SET enqueued_at = t.enqueued_at + interval '2 hours'
         FROM shardcast.shards s WHERE s.shard_id = t.shard_id AND s.table_name = 'f_orders'",
    )
    .unwrap();
    crate::queue::replan().unwrap();
    let stored = || {
        Spi::get_one::<String>(
            "SELECT string_agg(s.table_name::text, ',' ORDER BY t.dispatch_rank)
             FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id) WHERE t.state = 'queued'",
        )
        .unwrap()
        .unwrap_or_default()
    };
    assert_eq!(lane(), "f_customers:false,f_audit:false,f_orders:false");
    assert_eq!(stored(), "f_customers,f_audit,f_orders");
    as_if_reloaded("shardcast.overtake_window", "3h");
    crate::queue::replan().unwrap();
    assert_eq!(lane(), "f_orders:true,f_customers:false,f_audit:false");
    assert_eq!(stored(), "f_orders,f_customers,f_audit");
    as_if_reloaded("shardcast.overtake_window", "1h");
    Spi::run(
        "UPDATE shardcast.replication_tasks t SET enqueued_at = t.enqueued_at - interval '2 hours'
         FROM shardcast.shards s WHERE s.shard_id = t.shard_id AND s.table_name = 'f_orders'",
    )
    .unwrap();
    // Hottest but huge, orders is the least dense: the lane compares the order's key, so it
    // no longer goes first, and customers, now the densest by far, does. Under the plain sort
    // the key is the score, and orders is in the lane again.
    set_size("public.f_orders", 100_000_000_000);
    assert_eq!(lane(), "f_customers:true,f_audit:false,f_orders:false");
    as_if_reloaded("shardcast.ordering", "score");
    crate::queue::replan().unwrap();
    assert_eq!(lane(), "f_orders:true,f_customers:false,f_audit:false");
    let reason = Spi::get_one::<String>("SELECT reason FROM shardcast.queue_explained WHERE position = 1").unwrap();
    assert_eq!(
        reason.as_deref(),
        Some("express lane: even at its forecasts' lower bounds, its score is above shardcast.prefetch_quantile of the queue's")
    );
    as_if_reloaded("shardcast.ordering", "wspt");
}

#[pg_test]
fn a_lifted_table_is_as_certain_as_the_table_that_lifts_it() {
    shop_with_history();
    // customers is referenced by orders, and lifted to its score (inheritance_factor 1): its own
    // load is a hundredth of that. Small, it is the densest task by far; at the default 0.99
    // quantile of three tasks it takes the lane only if nearly all of its score is certain.
    Spi::run("SELECT shardcast.refresh_forecasts(); SELECT shardcast.enqueue_all()").unwrap();
    set_size("public.f_orders", 100_000_000_000);
    set_size("public.f_customers", 10_000);
    set_size("public.f_audit", 10_000);
    let lifted = Spi::get_one::<bool>(
        "SELECT lift > 10 * base_score FROM shardcast.scores sc JOIN shardcast.shards s USING (shard_id)
         WHERE s.table_name = 'f_customers'",
    )
    .unwrap();
    assert_eq!(lifted, Some(true));
    let forecast = |table: &str, lower_share: f64| {
        Spi::run_with_args(
            "UPDATE shardcast.forecast_state f SET lower = f.expected * $2 FROM shardcast.shards s
             WHERE s.shard_id = f.shard_id AND s.table_name = $1",
            &[table.into(), lower_share.into()],
        )
        .unwrap();
        crate::queue::replan().unwrap();
        Spi::get_one::<bool>(
            "SELECT prefetch FROM shardcast.prioritized_queue q JOIN shardcast.shards s ON s.relid = q.shard
             WHERE s.table_name = 'f_customers'",
        )
        .unwrap()
    };
    // Certain orders, certain customers: in the lane.
    forecast("f_customers", 1.0);
    assert_eq!(forecast("f_orders", 1.0), Some(true));
    // Orders uncertain: so is what it lifts, however certain customers' own small load is.
    assert_eq!(forecast("f_orders", 0.3), Some(false));
    // Orders certain again, customers' own forecast unknown: the lift alone carries it.
    assert_eq!(forecast("f_orders", 1.0), Some(true));
    assert_eq!(forecast("f_customers", 0.0), Some(true));
}

#[pg_test]
fn the_plan_shares_workers_and_bandwidth() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    as_if_reloaded("shardcast.prefetch_quantile", "1");
    Spi::run("SELECT shardcast.enqueue_all()").unwrap();
    for t in ["public.f_orders", "public.f_customers", "public.f_audit"] {
        set_size(t, 1_000_000);
    }
    let plan = Spi::get_one::<String>(
        "SELECT string_agg(worker || '@' || round(extract(epoch FROM expected_start - now())) || '-'
                           || round(extract(epoch FROM expected_finish - now())) || ':' || bandwidth_share, ' ' ORDER BY position)
         FROM shardcast.allocation_plan(2, 2000000)",
    )
    .unwrap();
    assert_eq!(plan.as_deref(), Some("1@0-1:1000000 2@0-1:1000000 1@1-2:1000000"));
}

#[pg_test]
fn allocation_plan_is_bounded_cheap_and_readable() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts(); SELECT shardcast.enqueue_all()").unwrap();
    // allocation_plan(2147483647, 1) once took 16.8 GB and ignored cancellation: workers beyond
    // shardcast.plan_workers' range (1..1024) are refused, and so is a bandwidth beyond 1e15.
    // (The smallest refused value first: the code before this bound ran the others for minutes.)
    for sql in [
        "SELECT count(*) FROM shardcast.allocation_plan(1025, 1000)",
        "SELECT count(*) FROM shardcast.allocation_plan(4, 2000000000000000)",
        "SELECT count(*) FROM shardcast.allocation_plan(2147483647, 1)",
    ] {
        assert_eq!(outcome(sql), "22023 with hint", "{sql}");
    }
    // The largest plan costs what its tasks need: one slot each, all starting now.
    let plan = Spi::get_one::<String>(
        "SELECT count(*) || ':' || max(worker) || ':' || bool_and(expected_start = now())
         FROM shardcast.allocation_plan(1024, 1000000)",
    )
    .unwrap();
    let tasks = Spi::get_one::<i64>("SELECT count(*) FROM shardcast.prioritized_queue").unwrap().unwrap();
    assert_eq!(plan, Some(format!("{tasks}:{tasks}:true")));
    // Bounded, it stays readable by everyone, like the queue it plans.
    let public = Spi::get_one::<bool>(
        "SELECT has_function_privilege('public', 'shardcast.allocation_plan(integer, bigint)', 'EXECUTE')",
    )
    .unwrap();
    assert_eq!(public, Some(true));
}

#[pg_test]
fn the_stored_order_uses_the_servers_settings_and_the_stored_scores_only() {
    shop_with_history();
    Spi::run("SELECT shardcast.refresh_forecasts()").unwrap();
    // The express lane shapes the order every claimer follows: a server setting, like the order.
    assert_eq!(outcome("SET shardcast.prefetch_quantile = 0"), "55P02 without hint");
    // A session's tiers shape the scores its refresh writes, never the queue: a shard not scored
    // yet takes the coldest stored tier, whatever the session says.
    Spi::run("SET LOCAL shardcast.tiers = 20; CREATE TABLE public.u_new (id int); SELECT shardcast.enqueue('public.u_new')").unwrap();
    let tier = Spi::get_one::<String>(
        "SELECT t.tier || ':' || (SELECT max(tier) FROM shardcast.scores) FROM shardcast.replication_tasks t
         JOIN shardcast.shards s USING (shard_id) WHERE s.table_name = 'u_new'",
    )
    .unwrap()
    .unwrap();
    let (stored, coldest) = tier.split_once(':').unwrap();
    assert_eq!(stored, coldest);
    assert_ne!(stored, "20");
}

#[pg_test]
fn queue_explained_says_why_a_hot_task_waits_behind_cold_ones() {
    two_nodes();
    Spi::run(
        "CREATE TABLE public.qe_cold1 (id int); CREATE TABLE public.qe_cold2 (id int); CREATE TABLE public.qe_hot (id int);
         SELECT shardcast.enqueue('public.qe_cold1', 'fast'); SELECT shardcast.enqueue('public.qe_cold2', 'fast');
         SELECT shardcast.enqueue('public.qe_hot', 'fast');",
    )
    .unwrap();
    // The hot table (a score, weight 0 for the others) came 2 hours after the cold ones: the
    // default 1 h window holds it back behind them.
    Spi::run(
        "INSERT INTO shardcast.scores (shard_id, computed_at, predicted_load, class, weight, base_score, lift, score, priority_weight, tier, rank)
         SELECT shard_id, now(), 100, 'normal', 1, 100, 1, 100, 515, 1, 1 FROM shardcast.shards WHERE table_name = 'qe_hot' AND retired_at IS NULL;
         UPDATE shardcast.replication_tasks t SET enqueued_at = t.enqueued_at + interval '2 hours'
         FROM shardcast.shards s WHERE s.shard_id = t.shard_id AND s.table_name = 'qe_hot'",
    )
    .unwrap();
    let explained = Spi::get_one::<String>(
        "SELECT string_agg(shard::text || ': ' || reason, E'\n' ORDER BY position) FROM shardcast.queue_explained
         WHERE shard::text LIKE 'qe\\_%'",
    )
    .unwrap()
    .unwrap();
    let lines: Vec<&str> = explained.lines().collect();
    assert_eq!(lines.len(), 3, "{explained}");
    assert!(lines[2].starts_with("qe_hot: held back by the overtake window behind task"), "{explained}");
    assert!(lines[2].contains("enqueued 120 min after task"), "{explained}");
    assert!(lines[1].contains("after task"), "{explained}");
    // The same order as the queue's.
    let same = Spi::get_one::<bool>(
        "SELECT array_agg(task_id ORDER BY position) = (SELECT array_agg(task_id ORDER BY position) FROM shardcast.prioritized_queue)
         FROM shardcast.queue_explained",
    )
    .unwrap();
    assert_eq!(same, Some(true));
    // A node at its limit says so.
    Spi::run("SELECT shardcast.alter_node('fast', max_concurrent => 1)").unwrap();
    Spi::run("SELECT * FROM shardcast.claim_task('w', 'fast')").unwrap();
    let limited = Spi::get_one::<bool>(
        "SELECT bool_and(reason LIKE '%node fast at its concurrency limit (1 of 1 copying)') FROM shardcast.queue_explained WHERE node = 'fast'",
    )
    .unwrap();
    assert_eq!(limited, Some(true));
    let public = Spi::get_one::<bool>("SELECT has_table_privilege('public', 'shardcast.queue_explained', 'SELECT')").unwrap();
    assert_eq!(public, Some(true));
}
