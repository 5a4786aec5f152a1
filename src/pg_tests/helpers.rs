// Helpers that tests in more than one file use: the outcome of a statement, fixtures (a shop
// with history, two nodes), and a copier that runs the queue. A helper that one file alone uses
// stays beside its tests.

/// Runs `sql` and returns "ok", or the SQLSTATE and hint of the error it raised, without
/// aborting the test's transaction.
fn outcome(sql: &str) -> String {
    Spi::run(
        r#"CREATE OR REPLACE FUNCTION pg_temp.outcome(q text) RETURNS text LANGUAGE plpgsql AS $$
           DECLARE hint text;
           BEGIN
               EXECUTE q;
               RETURN 'ok';
           EXCEPTION WHEN OTHERS THEN
               GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
               RETURN SQLSTATE || CASE WHEN hint <> '' THEN ' with hint' ELSE ' without hint' END;
           END $$"#,
    )
    .unwrap();
    Spi::get_one_with_args::<String>("SELECT pg_temp.outcome($1)", &[sql.into()]).unwrap().unwrap()
}

fn history_reads(table: &str) -> f64 {
    Spi::get_one_with_args::<f64>(
        "SELECT coalesce(sum(tuples_read), 0) FROM shardcast.access_history WHERE shard = $1::regclass",
        &[table.into()],
    )
    .unwrap()
    .unwrap()
}

/// Three days of hourly history: `orders` busy with a daily cycle, `customers` (which orders
/// references) quiet, `audit` barely read.
fn shop_with_history() {
    Spi::run(
        "CREATE TABLE public.f_customers (id int PRIMARY KEY);
         CREATE TABLE public.f_orders (id int PRIMARY KEY, customer_id int REFERENCES public.f_customers);
         CREATE TABLE public.f_audit (id int);
         SELECT shardcast.record_access(
             array_agg(t.rel::regclass),
             array_agg(date_trunc('hour', now()) - h * interval '1 hour' + interval '10 minutes'),
             array_agg(t.level * (2 + sin(h * pi() / 12))))
         FROM generate_series(1, 72) h,
              (VALUES ('public.f_orders', 1000.0), ('public.f_customers', 10.0), ('public.f_audit', 1.0)) t(rel, level);",
    )
    .unwrap();
}

fn two_nodes() {
    Spi::run(
        "SELECT shardcast.add_node('fast', 100e6, 4);
         SELECT shardcast.add_node('slow', 10e6, 2, 'host=127.0.0.1 port=1');",
    )
    .unwrap();
}

/// Claims every queued task as `worker` and completes it (copied or already in sync).
fn run_queue(worker: &str, copied: bool) -> i64 {
    let mut done = 0;
    while let Some(task) =
        Spi::get_one_with_args::<i64>("SELECT (SELECT task_id FROM shardcast.claim_task($1))", &[worker.into()]).unwrap()
    {
        Spi::run_with_args(
            "SELECT shardcast.complete_task($1, true, NULL, $2, copied => $3)",
            &[task.into(), worker.into(), copied.into()],
        )
        .unwrap();
        done += 1;
    }
    done
}

fn open_tasks_like(pattern: &str) -> i64 {
    Spi::get_one_with_args::<i64>(
        "SELECT count(*) FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
         WHERE s.table_name LIKE $1 AND t.state IN ('queued', 'claimed')",
        &[pattern.into()],
    )
    .unwrap()
    .unwrap()
}
