//! `shardcast.replication_tasks` outside claims: enqueueing, the queue as read for dispatch,
//! the stored dispatch order, cancelling tasks of shards that are gone, and what reports and
//! manifests read back.

use pgrx::prelude::*;
use shardcast_core::report::Copied;
use shardcast_core::schedule::Task;

/// SQL: why the shard `s` of a task can no longer be copied, or NULL while it can: the relation
/// with its OID must still exist under its name, and the shard must not be retired. A table
/// dropped and created again under its name has another OID, so its predecessor's tasks never
/// copy it. A Citus shard's relation is its distributed table (its own table lives on a worker):
/// it is gone when the registry retired it (`to_jsonb`: 0.1.0's catalog has no
/// `citus_shard_id`). Written out in [`CANCEL_GONE`] and in the claim statements
/// ([`super::claims::CLAIM_NEXT`]); a test checks that they all say it this way. A retry
/// ([`retry_check`]) asks it too.
pub const GONE_DETAIL: &str = "
    (SELECT CASE WHEN to_jsonb(s) ->> 'citus_shard_id' IS NOT NULL
                      THEN CASE WHEN s.retired_at IS NOT NULL THEN 'the Citus shard was dropped or split' END
                 WHEN c.oid IS NULL THEN 'the shard was dropped'
                 WHEN c.relname <> s.table_name OR n.nspname <> s.schema_name
                      THEN 'the shard was renamed or moved: it is a new shard now'
                 WHEN s.retired_at IS NOT NULL THEN 'the shard was retired'
            END
     FROM (SELECT) AS one
     LEFT JOIN pg_catalog.pg_class c ON c.oid = s.relid
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace)";

/// Cancels the queued tasks whose shard is gone ([`GONE_DETAIL`] says why, in the detail).
pub const CANCEL_GONE: &str = "
    UPDATE shardcast.replication_tasks t
    SET state = 'cancelled', finished_at = now(), detail = gone.detail
    FROM shardcast.shards s,
         LATERAL (SELECT
                      (SELECT CASE WHEN to_jsonb(s) ->> 'citus_shard_id' IS NOT NULL
                                        THEN CASE WHEN s.retired_at IS NOT NULL THEN 'the Citus shard was dropped or split' END
                                   WHEN c.oid IS NULL THEN 'the shard was dropped'
                                   WHEN c.relname <> s.table_name OR n.nspname <> s.schema_name
                                        THEN 'the shard was renamed or moved: it is a new shard now'
                                   WHEN s.retired_at IS NOT NULL THEN 'the shard was retired'
                              END
                       FROM (SELECT) AS one
                       LEFT JOIN pg_catalog.pg_class c ON c.oid = s.relid
                       LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace) AS detail) gone
    WHERE s.shard_id = t.shard_id AND t.state = 'queued' AND gone.detail IS NOT NULL";

/// Whether the catalog remembers replicas (`shardcast.replicas`, 0.2.0): a library newer than
/// the catalog runs on 0.1.0's catalog between its installation and `ALTER EXTENSION shardcast
/// UPDATE`, and enqueues, replans and completes as 0.1.0 did meanwhile.
pub fn remembers_replicas() -> Result<bool, pgrx::spi::Error> {
    Ok(
        Spi::get_one::<bool>("SELECT pg_catalog.to_regclass('shardcast.replicas') IS NOT NULL")?
            == Some(true),
    )
}

/// `statement` for this catalog: 0.1.0's names the node asked for at enqueue
/// `replication_tasks.destination`, 0.2.0's `requested_node`. Statements that 0.1.0's functions
/// (enqueue, enqueue_all, enqueue_publication) and the worker's replan run through this library
/// before `ALTER EXTENSION shardcast UPDATE` are written with `requested_node` and go through
/// here; `requested_node` appears in them as that column only.
fn for_catalog(statement: &str) -> Result<String, pgrx::spi::Error> {
    let old = Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                        WHERE attrelid = 'shardcast.replication_tasks'::pg_catalog.regclass
                          AND attname = 'destination' AND NOT attisdropped)",
    )? == Some(true);
    Ok(if old {
        statement.replace("requested_node", "destination")
    } else {
        statement.to_string()
    })
}

/// `shardcast.replicas`, or an empty relation of its shape on 0.1.0's catalog.
fn replicas_relation() -> Result<&'static str, pgrx::spi::Error> {
    Ok(if remembers_replicas()? {
        "shardcast.replicas"
    } else {
        "(SELECT NULL::integer AS shard_id, NULL::text AS node, NULL::bigint AS task_id,
                 NULL::timestamptz AS copied_at WHERE false)"
    })
}

/// Runs [`CANCEL_GONE`].
pub fn cancel_gone() -> Result<(), pgrx::spi::Error> {
    Spi::run(CANCEL_GONE)
}

/// Serialises enqueues and replans until the end of the transaction.
pub fn lock_queue() -> Result<(), pgrx::spi::Error> {
    Spi::run("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('shardcast.replan'))")
}

/// What enqueueing did for one shard.
pub struct Enqueued {
    /// The open task that does it, new or kept; or, when the shard is already on the node
    /// (`skipped`), the task that copied it there.
    pub task_id: i64,
    /// Set when nothing was queued because the shard is already copied where it was to go:
    /// `(shard's qualified name, node, copied at)`.
    pub skipped: Option<(String, String, String)>,
}

/// Enqueues the live shards `shard_ids` for `requested_node` (NULL: node assignment chooses),
/// keeping the open task that already does it (see `api::enqueue`), and skipping shards already
/// copied there (`shardcast.replicas`: to `requested_node`, or to any node without one); returns
/// one entry per shard, in shard order. Takes [`lock_queue`] first.
pub fn enqueue(
    shard_ids: &[i32],
    requested_node: Option<&str>,
) -> Result<Vec<Enqueued>, pgrx::spi::Error> {
    // Enqueues and replans run one at a time (the replan's lock), so that two enqueues of one
    // shard, for a node and for any node, see each other's task instead of adding two.
    lock_queue()?;
    let sql = for_catalog(ENQUEUE)?.replace("shardcast.replicas", replicas_relation()?);
    Spi::connect_mut(|client| {
        client
            .update(
                &sql,
                None,
                &[shard_ids.to_vec().into(), requested_node.into()],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                let task_id = row.get::<i64>(1)?.unwrap_or_default();
                let skipped = if row.get::<bool>(2)?.unwrap_or(false) {
                    Some((
                        row.get::<String>(3)?.unwrap_or_default(),
                        row.get::<String>(4)?.unwrap_or_default(),
                        row.get::<String>(5)?.unwrap_or_default(),
                    ))
                } else {
                    None
                };
                Ok(Enqueued { task_id, skipped })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
}

/// The enqueue statement (see [`enqueue`]).
const ENQUEUE: &str = "WITH wanted AS (
                 SELECT s.shard_id, format('%I.%I', s.schema_name, s.table_name) AS name,
                        coalesce(s.size_bytes, pg_catalog.pg_total_relation_size(s.relid), 0) AS size_bytes
                 FROM shardcast.shards s
                 WHERE s.shard_id = ANY($1) AND s.retired_at IS NULL
             ), replicated AS (
                 -- Already copied there: to that node, or (for any node) to any node.
                 SELECT DISTINCT ON (r.shard_id) r.shard_id, r.task_id, r.node, r.copied_at
                 FROM shardcast.replicas r
                 JOIN wanted w USING (shard_id)
                 WHERE $2::text IS NULL OR r.node = $2
                 ORDER BY r.shard_id, r.copied_at DESC, r.node
             ), open AS (
                 -- The task that already does it: for a node, one given that node, else the
                 -- shard's task without a requested node if it is still queued (it is placed
                 -- there now, unless the shard is already there) or copies to that node; for
                 -- any node, any.
                 SELECT DISTINCT ON (t.shard_id) t.shard_id, t.task_id,
                        $2::text IS NOT NULL AND t.requested_node IS NULL AND t.state = 'queued' AS to_place
                 FROM shardcast.replication_tasks t
                 JOIN wanted w USING (shard_id)
                 WHERE t.state IN ('queued', 'claimed')
                   AND ($2::text IS NULL OR t.requested_node = $2
                        OR (t.requested_node IS NULL
                            AND (t.state = 'queued' OR t.node = $2)
                            AND (t.node = $2
                                 OR NOT EXISTS (SELECT 1 FROM replicated r WHERE r.shard_id = t.shard_id))))
                 ORDER BY t.shard_id, t.requested_node IS NOT DISTINCT FROM $2 DESC, t.task_id
             ), placed AS (
                 UPDATE shardcast.replication_tasks t SET requested_node = $2, node = $2
                 FROM open o WHERE t.task_id = o.task_id AND o.to_place
             ), added AS (
                 INSERT INTO shardcast.replication_tasks (shard_id, requested_node, node, size_bytes)
                 SELECT w.shard_id, $2, $2, w.size_bytes FROM wanted w
                 WHERE NOT EXISTS (SELECT 1 FROM open o WHERE o.shard_id = w.shard_id)
                   AND NOT EXISTS (SELECT 1 FROM replicated r WHERE r.shard_id = w.shard_id)
                 ORDER BY w.shard_id
                 ON CONFLICT DO NOTHING
                 RETURNING task_id, shard_id)
             SELECT coalesce(o.task_id, a.task_id, r.task_id),
                    o.task_id IS NULL AND a.task_id IS NULL AND r.task_id IS NOT NULL,
                    w.name, r.node, r.copied_at::text
             FROM wanted w
             LEFT JOIN open o USING (shard_id)
             LEFT JOIN added a USING (shard_id)
             LEFT JOIN replicated r USING (shard_id)
             ORDER BY w.shard_id";

/// The ids of every live table shard (Citus shards move with Citus, not through this queue).
pub fn live_shard_ids() -> Result<Vec<i32>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT s.shard_id FROM shardcast.shards s
                 WHERE s.retired_at IS NULL AND to_jsonb(s) ->> 'citus_shard_id' IS NULL",
                None,
                &[],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                row.get::<i32>(1).map(|v| v.unwrap_or_default())
            })
            .collect::<Result<Vec<_>, _>>()
    })
}

/// Whether a publication of that name exists.
pub fn publication_exists(publication: &str) -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)",
        &[publication.into()],
    )? == Some(true))
}

/// The live shards of a publication's tables, leaf partitions included.
pub fn publication_shard_ids(publication: &str) -> Result<Vec<i32>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
            "SELECT s.shard_id
             FROM pg_catalog.pg_publication_tables p
             JOIN pg_catalog.pg_namespace n ON n.nspname = p.schemaname
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
             CROSS JOIN LATERAL (SELECT c.oid AS relid UNION
                                 SELECT relid FROM pg_catalog.pg_partition_tree(c.oid) WHERE isleaf) leaf
             JOIN shardcast.shards s ON s.relid = leaf.relid AND s.retired_at IS NULL
                                  AND to_jsonb(s) ->> 'citus_shard_id' IS NULL
             WHERE p.pubname = $1",
                None,
                &[publication.into()],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                row.get::<i32>(1).map(|v| v.unwrap_or_default())
            })
            .collect::<Result<Vec<_>, _>>()
    })
}

/// A relation's name and persistence (`pg_class.relpersistence`); NULLs when it is gone.
pub fn persistence(
    relid: pg_sys::Oid,
) -> Result<(Option<String>, Option<String>), pgrx::spi::Error> {
    Spi::get_two_with_args::<String, String>(
        "SELECT c.oid::regclass::text, c.relpersistence::text FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[relid.into()],
    )
}

/// The shards among `shard_ids` that are not permanent tables: `(shard_id, name, persistence)`,
/// by name.
pub fn not_permanent(shard_ids: &[i32]) -> Result<Vec<(i32, String, String)>, pgrx::spi::Error> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT s.shard_id, c.oid::regclass::text, c.relpersistence::text
             FROM shardcast.shards s JOIN pg_catalog.pg_class c ON c.oid = s.relid
             WHERE s.shard_id = ANY($1) AND c.relpersistence <> 'p'
             ORDER BY 2",
                None,
                &[shard_ids.to_vec().into()],
            )?
            .map(|row| {
                Ok((
                    row.get::<i32>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                    row.get::<String>(3)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
}

/// A queued task as read for dispatch, before it is ordered and placed.
pub struct QueuedRow {
    /// The task; `prefetch` is left false (the caller decides it from `lower`).
    pub task: Task,
    pub relid: pg_sys::Oid,
    pub priority_weight: i32,
    /// Its shard's forecast lower bound.
    pub lower: Option<f64>,
    /// The node asked for at enqueue (None: node assignment chooses).
    pub requested_node: Option<String>,
    /// Nodes that other open tasks of the same shard copy to, or that already have it
    /// (`shardcast.replicas`): node assignment avoids them, so that a shard is never copied to
    /// one node twice.
    pub taken: Vec<String>,
}

/// The queued tasks of live shards whose relation is still theirs, with the stored scores and
/// tiers (a shard not scored yet takes the coldest stored tier).
pub fn queued() -> Result<Vec<QueuedRow>, pgrx::spi::Error> {
    let sql = for_catalog(QUEUED)?.replace("shardcast.replicas", replicas_relation()?);
    Spi::connect(|client| {
        client
            .select(&sql, None, &[])?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                Ok(QueuedRow {
                    task: Task {
                        task_id: row.get::<i64>(1)?.unwrap_or_default(),
                        bytes: row.get::<f64>(3)?.unwrap_or_default(),
                        score: row.get::<f64>(4)?.unwrap_or_default(),
                        tier: row.get::<i32>(6)?.unwrap_or(1).clamp(1, 255) as u8,
                        prefetch: false,
                        enqueued_at: row.get::<f64>(9)?.unwrap_or_default(),
                    },
                    relid: row.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid),
                    priority_weight: row.get::<i32>(5)?.unwrap_or_default(),
                    lower: row.get::<f64>(7)?,
                    requested_node: row.get::<String>(8)?,
                    taken: row
                        .get::<Vec<Option<String>>>(10)?
                        .unwrap_or_default()
                        .into_iter()
                        .flatten()
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
}

/// The queued tasks statement (see [`queued`]).
const QUEUED: &str = "SELECT t.task_id, s.relid, t.size_bytes::float8, coalesce(sc.score, 0),
                    coalesce(sc.priority_weight, 0),
                    coalesce(sc.tier, (SELECT max(tier) FROM shardcast.scores), 1), f.lower,
                    t.requested_node, extract(epoch FROM t.enqueued_at)::float8,
                    CASE WHEN t.requested_node IS NULL THEN
                        ARRAY(SELECT o.node FROM shardcast.replication_tasks o
                              WHERE o.shard_id = t.shard_id AND o.task_id <> t.task_id
                                AND o.state IN ('queued', 'claimed') AND o.node IS NOT NULL
                              UNION
                              SELECT r.node FROM shardcast.replicas r WHERE r.shard_id = t.shard_id)
                    END
             FROM shardcast.replication_tasks t
             JOIN shardcast.shards s ON s.shard_id = t.shard_id AND s.retired_at IS NULL
             JOIN pg_catalog.pg_class c ON c.oid = s.relid AND c.relname = s.table_name
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schema_name
             LEFT JOIN shardcast.scores sc ON sc.shard_id = t.shard_id
             LEFT JOIN shardcast.forecast_state f ON f.shard_id = t.shard_id
             WHERE t.state = 'queued'
               -- Table copies only: Citus moves are ranked by enqueue_citus_rebalance (to_jsonb:
               -- 0.1.0's catalog has no kind, and every task there is a copy).
               AND coalesce(to_jsonb(t) ->> 'kind', 'copy') = 'copy'";

/// The dispatch order to store: per queued task, in order, its node, score, priority weight,
/// tier and express-lane flag.
#[derive(Default)]
pub struct DispatchOrder {
    pub ids: Vec<i64>,
    pub nodes: Vec<Option<String>>,
    pub scores: Vec<f64>,
    pub weights: Vec<i32>,
    pub tiers: Vec<i32>,
    pub prefetch: Vec<bool>,
}

/// Stores the dispatch order that claims follow (ranks 1, 2, ... in the order given).
pub fn store_dispatch_order(order: DispatchOrder) -> Result<(), pgrx::spi::Error> {
    let ranks: Vec<i32> = (1..=order.ids.len() as i32).collect();
    Spi::run_with_args(
        "UPDATE shardcast.replication_tasks t
         SET dispatch_rank = u.rank, node = u.node, score = u.score, priority_weight = u.weight,
             tier = u.tier, prefetch = u.prefetch
         FROM unnest($1::int8[], $2::int4[], $3::text[], $4::float8[], $5::int4[], $6::int4[], $7::bool[])
              AS u(id, rank, node, score, weight, tier, prefetch)
         WHERE t.task_id = u.id AND t.state = 'queued'",
        &[
            order.ids.into(),
            ranks.into(),
            order.nodes.into(),
            order.scores.into(),
            order.weights.into(),
            order.tiers.into(),
            order.prefetch.into(),
        ],
    )
}

/// Which completions a prioritization report covers: tasks claimed at or after `since` and
/// finished before `until`, by `worker` (each None: no bound).
#[derive(Clone, Copy, Default)]
pub struct ReportScope<'a> {
    pub since: Option<TimestampWithTimeZone>,
    pub until: Option<TimestampWithTimeZone>,
    pub worker: Option<&'a str>,
}

/// Each shard's first copy among the table copies in `scope` that copied data (done, and not
/// completed with `copied => false`: a table already in sync is no copy), in catalog (FIFO)
/// order: `(shard_id, copy)`. Citus moves are left out: what their order was worth is the
/// hottest node's share of the load (`citus_rebalance_report`), not availability.
pub fn first_copies(scope: ReportScope<'_>) -> Result<Vec<(i32, Copied)>, pgrx::spi::Error> {
    let mut sql = FIRST_COPIES.to_string();
    if !remembers_replicas()? {
        // 0.1.0's catalog: every done task copied.
        sql = sql.replace("AND copied IS DISTINCT FROM false", "");
        // Nor kinds: every task is a table copy.
        sql = sql.replace("AND kind = 'copy'", "");
    }
    Spi::connect(|client| {
        client
            .select(
                &sql,
                None,
                &[scope.since.into(), scope.until.into(), scope.worker.into()],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                Ok((
                    row.get::<i32>(1)?.unwrap_or_default(),
                    Copied {
                        bytes: row.get::<f64>(2)?.unwrap_or_default(),
                        claimed_at: row.get::<f64>(3)?.unwrap_or_default(),
                        finished_at: row.get::<f64>(4)?.unwrap_or_default(),
                    },
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
}

/// The report's copies (see [`first_copies`]).
const FIRST_COPIES: &str = "WITH firsts AS (
                 SELECT DISTINCT ON (shard_id) shard_id, task_id, size_bytes, claimed_at, finished_at
                 FROM shardcast.replication_tasks
                 WHERE state = 'done' AND copied IS DISTINCT FROM false
                   -- Table copies: what a Citus move was worth is citus_rebalance_report's.
                   AND kind = 'copy'
                   AND ($1::timestamptz IS NULL OR claimed_at >= $1)
                   AND ($2::timestamptz IS NULL OR finished_at < $2)
                   AND ($3::text IS NULL OR claimed_by = $3)
                 ORDER BY shard_id, finished_at)
             SELECT shard_id, size_bytes::float8,
                    extract(epoch FROM claimed_at)::float8, extract(epoch FROM finished_at)::float8
             FROM firsts ORDER BY task_id";

/// Cancels a queued task (the caller checked its state under its lock).
pub fn cancel(task_id: i64) -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.replication_tasks
         SET state = 'cancelled', finished_at = now(), dispatch_rank = NULL,
             detail = 'cancelled by ' || session_user
         WHERE task_id = $1 AND state = 'queued'",
        &[task_id.into()],
    )
}

/// What a retry must know of a task: its shard's name, its requested node, why its shard can no
/// longer be copied (None while it can), and another open task that copies the shard there.
pub struct RetryCheck {
    pub shard: String,
    pub requested_node: Option<String>,
    pub gone: Option<String>,
    pub open_task: Option<i64>,
    /// The node the shard is already copied to, for a task with a requested node (or, without
    /// one, any node), as enqueue would skip it.
    pub copied_to: Option<String>,
}

/// Reads what [`RetryCheck`] says of a task; None when there is no such task.
pub fn retry_check(task_id: i64) -> Result<Option<RetryCheck>, pgrx::spi::Error> {
    let sql = format!(
        "SELECT format('%I.%I', s.schema_name, s.table_name), t.requested_node, {GONE_DETAIL},
                (SELECT o.task_id FROM shardcast.replication_tasks o
                 WHERE o.shard_id = t.shard_id AND o.task_id <> t.task_id
                   AND o.state IN ('queued', 'claimed')
                   AND (o.requested_node IS NOT DISTINCT FROM t.requested_node
                        OR (t.requested_node IS NOT NULL AND o.node = t.requested_node))
                 ORDER BY o.task_id LIMIT 1),
                (SELECT r.node FROM shardcast.replicas r
                 WHERE r.shard_id = t.shard_id AND (t.requested_node IS NULL OR r.node = t.requested_node)
                 ORDER BY r.node LIMIT 1)
         FROM shardcast.replication_tasks t JOIN shardcast.shards s USING (shard_id)
         WHERE t.task_id = $1"
    );
    Spi::connect(|client| {
        let mut rows = client.select(&sql, None, &[task_id.into()])?;
        match rows.next() {
            Some(row) => Ok(Some(RetryCheck {
                shard: row.get::<String>(1)?.unwrap_or_default(),
                requested_node: row.get::<String>(2)?,
                gone: row.get::<String>(3)?,
                open_task: row.get::<i64>(4)?,
                copied_to: row.get::<String>(5)?,
            })),
            None => Ok(None),
        }
    })
}

/// Puts a failed or cancelled task back in the queue as if just enqueued: attempts reset, its
/// node its requested node again (none: node assignment chooses).
pub fn requeue(task_id: i64) -> Result<(), pgrx::spi::Error> {
    Spi::run_with_args(
        "UPDATE shardcast.replication_tasks
         SET state = 'queued', attempts = 0, node = requested_node, dispatch_rank = NULL,
             claimed_by = NULL, claimed_at = NULL, lease_expires_at = NULL, finished_at = NULL,
             enqueued_at = now(), copied = NULL, priority_weight_at_claim = NULL,
             priority_weight_at_completion = NULL,
             detail = 'retried by ' || session_user
         WHERE task_id = $1 AND state IN ('failed', 'cancelled')",
        &[task_id.into()],
    )
}

/// Forgets the copy of the live shard of relation `relid` on `node`; whether there was one.
pub fn forget_replica(relid: pg_sys::Oid, node: &str) -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one_with_args::<bool>(
        "WITH forgotten AS (
             DELETE FROM shardcast.replicas r USING shardcast.shards s
             WHERE s.shard_id = r.shard_id AND s.relid = $1 AND s.retired_at IS NULL
               AND s.citus_shard_id IS NULL AND r.node = $2
             RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM forgotten)",
        &[relid.into(), node.into()],
    )? == Some(true))
}

/// The manifest of the tasks (for `node`, or all) as a versioned document. The manifest's
/// column `node` is `destination` on 0.1.0's catalog (`to_jsonb`), which manifest_json reads
/// before `ALTER EXTENSION shardcast UPDATE`.
pub fn manifest(node: Option<&str>) -> Result<Option<pgrx::JsonB>, pgrx::spi::Error> {
    Spi::get_one_with_args::<pgrx::JsonB>(
        "SELECT jsonb_build_object(
             'version', 2,
             'generated_at', now(),
             'source', jsonb_build_object('system_identifier', (SELECT system_identifier::text FROM pg_catalog.pg_control_system()),
                                          'database', current_database()),
             'node', $1::text,
             'tasks', coalesce((SELECT jsonb_agg(jsonb_build_object(
                          'task_id', m.task_id, 'shard', m.shard, 'node', m.manifest_node,
                          'size_bytes', m.size_bytes, 'priority_weight', m.priority_weight,
                          'position', m.position, 'tier', m.tier, 'prefetch', m.prefetch, 'state', m.state,
                          -- to_jsonb: 0.1.0's manifest has none of these columns (nor Citus moves).
                          'kind', coalesce(to_jsonb(m) ->> 'kind', 'copy'), 'source', to_jsonb(m) ->> 'source',
                          'target', to_jsonb(m) ->> 'target')
                          ORDER BY m.position NULLS LAST, m.task_id)
                        FROM (SELECT m.*, coalesce(to_jsonb(m) ->> 'node', to_jsonb(m) ->> 'destination') AS manifest_node
                              FROM shardcast.replication_manifest m) m
                        WHERE $1::text IS NULL OR m.manifest_node = $1), '[]'::jsonb))",
        &[node.into()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::sql_words::words;

    #[test]
    fn a_replan_cancels_what_gone_detail_says() {
        assert!(words(CANCEL_GONE).contains(&words(GONE_DETAIL)));
    }
}
