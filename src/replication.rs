//! The replication controller's SQL surface: nodes, tasks, the prioritized queue, the allocation
//! plan, claims with leases, completions with notifications. The ordering, its wait bound and node
//! assignment live in `shardcast_core::schedule`; this module reads and writes the catalog.

// pgrx reads the returned columns from the written-out TableIterator type, so it cannot be aliased.
#![allow(clippy::type_complexity)]

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use shardcast_core::schedule::{self, Node, Order, Task};

use pgrx::pg_sys::panic::ErrorReport;

use crate::error::{self, spi_error, sql_error, SqlResult};
use crate::{gucs, registry};

thread_local! {
    /// Plans of the statements every claim, heartbeat and completion runs, kept for the session:
    /// planning them costs as much as running them. The functions that run them force generic
    /// plans (views.sql), so that they are planned once; PostgreSQL's plan cache revalidates
    /// them after DDL.
    static CLAIM_PLANS: std::cell::RefCell<std::collections::HashMap<&'static str, pgrx::spi::OwnedPreparedStatement>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Runs a mutating statement through its kept plan, preparing it on first use.
fn run_kept<R>(
    sql: &'static str,
    types: &[PgOid],
    args: &[pgrx::datum::DatumWithOid<'_>],
    read: impl FnOnce(pgrx::spi::SpiTupleTable<'_>) -> Result<R, pgrx::spi::Error>,
) -> Result<R, pgrx::spi::Error> {
    Spi::connect_mut(|client| {
        CLAIM_PLANS.with(|plans| {
            let mut plans = plans.borrow_mut();
            if !plans.contains_key(sql) {
                let plan = client.prepare_mut(sql, types)?.keep();
                plans.insert(sql, plan);
            }
            let plan = &plans[sql];
            read(client.update(plan, None, args)?)
        })
    })
}

/// The most worker slots `allocation_plan()` plans over: `shardcast.plan_workers`'s range.
pub const MAX_PLAN_WORKERS: i32 = 1024;
/// The largest bandwidth (bytes per second) a plan or a node may have: `shardcast.plan_bandwidth`'s
/// range, 1 PB/s.
pub const MAX_BANDWIDTH: f64 = 1e15;
/// The longest node name, in bytes: an identifier's (NAMEDATALEN - 1).
pub const MAX_NODE_NAME_BYTES: usize = 63;
/// The most tasks a node may copy at once.
pub const MAX_NODE_CONCURRENCY: i32 = 1024;
/// How much of a completion's detail its notification carries, in characters; the full detail
/// stays in `replication_tasks` and `completion_log`. With node names and shard names bounded,
/// this keeps every payload far below NOTIFY's 8000 bytes, whatever the characters.
pub const NOTIFY_DETAIL_CHARS: i32 = 500;

fn null_argument(name: &str) -> ErrorReport {
    error::null_argument(name, "Pass a value for every required argument.")
}

fn invalid(message: String, hint: &str) -> pgrx::pg_sys::panic::ErrorReport {
    sql_error(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        hint,
    )
}

/// An ERROR unless `node` names a node.
fn check_node(node: &str) -> SqlResult<()> {
    let known = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM shardcast.nodes WHERE node = $1)",
        &[node.into()],
    )
    .map_err(spi_error)?;
    if known == Some(true) {
        Ok(())
    } else {
        Err(sql_error(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("unknown node \"{node}\""),
            "Add it with shardcast.add_node(name, capacity_bytes_per_sec); see shardcast.nodes.",
        ))
    }
}

#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn add_node(
    name: Option<&str>,
    capacity_bytes_per_sec: Option<f64>,
    max_concurrent: default!(Option<i32>, 4),
    conninfo: default!(Option<&str>, "NULL"),
) -> SqlResult<()> {
    let name = name.ok_or_else(|| null_argument("name"))?;
    let capacity = capacity_bytes_per_sec.ok_or_else(|| null_argument("capacity_bytes_per_sec"))?;
    let max_concurrent = max_concurrent.ok_or_else(|| null_argument("max_concurrent"))?;
    if name.trim().is_empty() {
        return Err(invalid(
            "a node needs a name".into(),
            "Name the destination, e.g. 'replica-1'.",
        ));
    }
    if name.len() > MAX_NODE_NAME_BYTES {
        return Err(invalid(
            format!(
                "a node name must be at most {MAX_NODE_NAME_BYTES} bytes, not {}",
                name.len()
            ),
            "Node names are bounded like identifiers; choose a shorter one, e.g. 'replica-1'.",
        ));
    }
    if !(capacity.is_finite() && capacity > 0.0 && capacity <= MAX_BANDWIDTH) {
        return Err(invalid(
            format!(
                "capacity must be a positive number of bytes per second up to 1e15, not {}",
                crate::error::float_text(capacity)
            ),
            "Give the destination's copy throughput, e.g. 100e6 for 100 MB/s.",
        ));
    }
    if !(1..=MAX_NODE_CONCURRENCY).contains(&max_concurrent) {
        return Err(invalid(
            format!(
                "max_concurrent must be between 1 and {MAX_NODE_CONCURRENCY}, not {max_concurrent}"
            ),
            "It is how many tasks may copy to the node at once.",
        ));
    }
    let added = Spi::get_one_with_args::<bool>(
        "WITH added AS (
             INSERT INTO shardcast.nodes (node, capacity_bytes_per_sec, max_concurrent, conninfo)
             VALUES ($1, $2, $3, $4) ON CONFLICT (node) DO NOTHING RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM added)",
        &[
            name.into(),
            capacity.into(),
            max_concurrent.into(),
            conninfo.into(),
        ],
    )
    .map_err(spi_error)?;
    if added != Some(true) {
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            format!("node \"{name}\" already exists"),
            "Change it with UPDATE shardcast.nodes, or choose another name.",
        ));
    }
    Ok(())
}

#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn report_node_load(node: Option<&str>, load: Option<f64>) -> SqlResult<()> {
    let node = node.ok_or_else(|| null_argument("node"))?;
    let load = load.ok_or_else(|| null_argument("load"))?;
    if !(0.0..=1.0).contains(&load) {
        return Err(invalid(
            format!(
                "load must be between 0 and 1, not {}",
                crate::error::float_text(load)
            ),
            "Report the share of the node's capacity in use.",
        ));
    }
    check_node(node)?;
    Spi::run_with_args(
        "UPDATE shardcast.nodes SET current_load = $2, load_reported_at = now() WHERE node = $1",
        &[node.into(), load.into()],
    )
    .map_err(spi_error)
}

/// Enqueues the given live shards for `destination` (NULL: node assignment chooses). One shard,
/// one node, one open task: an open task that already takes the shard there is kept, whether
/// its node was given or assigned; a queued task of the shard that node assignment was to place
/// goes to `destination` instead of a second task; without a destination, any open task of the
/// shard will do. Returns the tasks' ids.
fn enqueue_shards(shard_ids: &[i32], destination: Option<&str>) -> SqlResult<Vec<i64>> {
    if let Some(node) = destination {
        check_node(node)?;
    }
    // Enqueues and replans run one at a time (the replan's lock), so that two enqueues of one
    // shard, for a node and for any node, see each other's task instead of adding two.
    lock_queue().map_err(spi_error)?;
    let ids: Vec<i64> = Spi::connect_mut(|client| {
        client
            .update(
                "WITH wanted AS (
                     SELECT s.shard_id,
                            coalesce(s.size_bytes, pg_catalog.pg_total_relation_size(s.relid), 0) AS size_bytes
                     FROM shardcast.shards s
                     WHERE s.shard_id = ANY($1) AND s.retired_at IS NULL
                 ), open AS (
                     -- The task that already does it: for a node, one given that node, else the
                     -- shard's task without a destination if it is still queued (it is placed
                     -- there now) or copies to that node; for any node, any.
                     SELECT DISTINCT ON (t.shard_id) t.shard_id, t.task_id,
                            $2::text IS NOT NULL AND t.destination IS NULL AND t.state = 'queued' AS to_place
                     FROM shardcast.replication_tasks t
                     JOIN wanted w USING (shard_id)
                     WHERE t.state IN ('queued', 'claimed')
                       AND ($2::text IS NULL OR t.destination = $2
                            OR (t.destination IS NULL AND (t.state = 'queued' OR t.node = $2)))
                     ORDER BY t.shard_id, t.destination IS NOT DISTINCT FROM $2 DESC, t.task_id
                 ), placed AS (
                     UPDATE shardcast.replication_tasks t SET destination = $2, node = $2
                     FROM open o WHERE t.task_id = o.task_id AND o.to_place
                 ), added AS (
                     INSERT INTO shardcast.replication_tasks (shard_id, destination, node, size_bytes)
                     SELECT w.shard_id, $2, $2, w.size_bytes FROM wanted w
                     WHERE NOT EXISTS (SELECT 1 FROM open o WHERE o.shard_id = w.shard_id)
                     ORDER BY w.shard_id
                     ON CONFLICT DO NOTHING
                     RETURNING task_id, shard_id)
                 SELECT coalesce(o.task_id, a.task_id)
                 FROM wanted w
                 LEFT JOIN open o USING (shard_id)
                 LEFT JOIN added a USING (shard_id)
                 ORDER BY w.shard_id",
                None,
                &[shard_ids.to_vec().into(), destination.into()],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                row.get::<i64>(1).map(|v| v.unwrap_or_default())
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(spi_error)?;
    replan().map_err(spi_error)?;
    Ok(ids)
}

/// Why logical replication cannot carry a table of this persistence (`pg_class.relpersistence`),
/// with what to do about it; None for a permanent table. PostgreSQL publishes permanent tables
/// only: an unlogged table writes no WAL to decode and a temporary one lives in its session, so
/// a task for either would fail at every attempt and leave an empty table on the replica.
fn persistence_refusal(name: &str, persistence: &str) -> Option<(String, String)> {
    match persistence {
        "u" => Some((
            format!("unlogged table \"{name}\" cannot be replicated"),
            format!(
                "Logical replication carries only permanent tables: make it logged first \
                 (ALTER TABLE {name} SET LOGGED), then enqueue it."
            ),
        )),
        "t" => Some((
            format!("temporary table \"{name}\" cannot be replicated"),
            "Logical replication carries only permanent tables: copy what you need into a \
             permanent table and enqueue that."
                .to_string(),
        )),
        _ => None,
    }
}

/// The error that refuses to enqueue `relid` when logical replication cannot carry it.
fn unreplicable(relid: pg_sys::Oid) -> SqlResult<Option<ErrorReport>> {
    let (name, persistence) = Spi::get_two_with_args::<String, String>(
        "SELECT c.oid::regclass::text, c.relpersistence::text FROM pg_catalog.pg_class c WHERE c.oid = $1",
        &[relid.into()],
    )
    .map_err(spi_error)?;
    let (Some(name), Some(persistence)) = (name, persistence) else {
        return Ok(None); // dropped meanwhile: shard_id_for says so
    };
    Ok(
        persistence_refusal(&name, &persistence).map(|(message, hint)| {
            sql_error(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, message, hint)
        }),
    )
}

/// `shard_ids` without the shards that logical replication cannot carry (unlogged tables), each
/// skipped with a NOTICE, as PostgreSQL's own bulk commands skip what they cannot do.
fn replicable_only(shard_ids: Vec<i32>) -> SqlResult<Vec<i32>> {
    let skipped: Vec<(i32, String, String)> = Spi::connect(|client| {
        client
            .select(
                "SELECT s.shard_id, c.oid::regclass::text, c.relpersistence::text
                 FROM shardcast.shards s JOIN pg_catalog.pg_class c ON c.oid = s.relid
                 WHERE s.shard_id = ANY($1) AND c.relpersistence <> 'p'
                 ORDER BY 2",
                None,
                &[shard_ids.clone().into()],
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
    .map_err(spi_error)?;
    if skipped.is_empty() {
        return Ok(shard_ids);
    }
    for (_, name, persistence) in &skipped {
        if let Some((message, hint)) = persistence_refusal(name, persistence) {
            sql_error(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!("{message}, skipping"),
                hint,
            )
            .report(PgLogLevel::NOTICE);
        }
    }
    Ok(shard_ids
        .into_iter()
        .filter(|id| !skipped.iter().any(|(skip, _, _)| skip == id))
        .collect())
}

/// Enqueues one shard; returns its task id (the existing one if it is already queued). Declared
/// by hand so that the shard is a regclass read as an OID: the relation is never opened, and an
/// OID that names no relation is a clean error. A table that logical replication cannot carry
/// (unlogged, temporary) is refused: `feature_not_supported`, with what to do as the hint.
#[pg_extern(
    name = "enqueue",
    sql = "
CREATE FUNCTION shardcast.enqueue(shard regclass, destination text DEFAULT NULL) RETURNS bigint
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'enqueue_wrapper';
COMMENT ON FUNCTION shardcast.enqueue(regclass, text) IS
    'Enqueues one shard for a node (NULL: node assignment chooses); returns the task id, the open one if there is one.';
"
)]
fn enqueue(shard: Option<pg_sys::Oid>, destination: Option<&str>) -> SqlResult<i64> {
    let shard = registry::existing_relation(shard.ok_or_else(|| null_argument("shard"))?)?;
    if let Some(refusal) = unreplicable(shard)? {
        return Err(refusal);
    }
    let shard_id = registry::shard_id_for(shard)?;
    Ok(enqueue_shards(&[shard_id], destination)?
        .first()
        .copied()
        .unwrap_or_default())
}

/// Enqueues every table of a logical-replication publication; returns the number of tasks.
/// Leaf partitions that logical replication cannot carry (unlogged) are skipped with a NOTICE.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn enqueue_publication(
    publication: Option<&str>,
    destination: default!(Option<&str>, "NULL"),
) -> SqlResult<i64> {
    let publication = publication.ok_or_else(|| null_argument("publication"))?;
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1)",
        &[publication.into()],
    )
    .map_err(spi_error)?;
    if exists != Some(true) {
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("publication \"{publication}\" does not exist"),
            "See pg_publication, or CREATE PUBLICATION first.",
        ));
    }
    registry::sync().map_err(spi_error)?;
    let shard_ids: Vec<i32> = Spi::connect(|client| {
        client
            .select(
                "SELECT s.shard_id
                 FROM pg_catalog.pg_publication_tables p
                 JOIN pg_catalog.pg_namespace n ON n.nspname = p.schemaname
                 JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
                 CROSS JOIN LATERAL (SELECT c.oid AS relid UNION
                                     SELECT relid FROM pg_catalog.pg_partition_tree(c.oid) WHERE isleaf) leaf
                 JOIN shardcast.shards s ON s.relid = leaf.relid AND s.retired_at IS NULL
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
    .map_err(spi_error)?;
    let shard_ids = replicable_only(shard_ids)?;
    Ok(enqueue_shards(&shard_ids, destination)?.len() as i64)
}

/// Enqueues every live shard; returns the number of tasks. Unlogged tables, which logical
/// replication cannot carry, are skipped with a NOTICE each.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn enqueue_all(destination: default!(Option<&str>, "NULL")) -> SqlResult<i64> {
    registry::sync().map_err(spi_error)?;
    let shard_ids: Vec<i32> = Spi::connect(|client| {
        client
            .select(
                "SELECT shard_id FROM shardcast.shards WHERE retired_at IS NULL",
                None,
                &[],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                row.get::<i32>(1).map(|v| v.unwrap_or_default())
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(spi_error)?;
    let shard_ids = replicable_only(shard_ids)?;
    Ok(enqueue_shards(&shard_ids, destination)?.len() as i64)
}

/// One queued task in dispatch order.
struct Queued {
    task: Task,
    relid: pg_sys::Oid,
    priority_weight: i32,
    node: Option<String>,
}

/// A queued task as read, before it is ordered and placed.
struct Read {
    queued: Queued,
    destination: Option<String>,
    /// Nodes that other open tasks of the same shard copy to: node assignment avoids them, so
    /// that a shard is never copied to one node twice.
    taken: Vec<String>,
}

/// What shapes the stored dispatch order: the server's settings, whichever session replans
/// (`shardcast.ordering`, `shardcast.overtake_window`, `shardcast.prefetch_quantile`, all
/// reload settings), and the stored scores and forecasts.
#[derive(Clone, Copy)]
pub(crate) struct QueueSettings {
    pub order: Order,
    pub window_secs: f64,
    pub prefetch_quantile: f64,
}

impl QueueSettings {
    pub fn server() -> QueueSettings {
        QueueSettings {
            order: gucs::ordering(),
            window_secs: gucs::overtake_window().as_secs_f64(),
            prefetch_quantile: gucs::prefetch_quantile(),
        }
    }
}

/// The queued tasks in dispatch order under `settings.order` and an overtaking window of
/// `settings.window_secs` (see `schedule::dispatch_order`): the express lane first, then the
/// order, no task going before one enqueued more than the window earlier; each assigned a node.
/// Tasks of dropped shards, and of shards whose relation is no longer theirs, are left out.
/// Scores and tiers are the stored ones (a shard not scored yet takes the coldest stored tier),
/// never the session's settings.
fn compute_queue(settings: QueueSettings) -> Result<Vec<Queued>, pgrx::spi::Error> {
    let threshold = Spi::get_one::<Vec<f64>>(
        "SELECT coalesce(array_agg(f.point), '{}') FROM shardcast.forecast_state f
         JOIN shardcast.shards s ON s.shard_id = f.shard_id AND s.retired_at IS NULL",
    )?
    .map(|points| schedule::prefetch_threshold(&points, settings.prefetch_quantile))
    .unwrap_or(f64::INFINITY);
    let mut queued: Vec<Read> = Spi::connect(|client| {
        client
            .select(
                "SELECT t.task_id, s.relid, t.size_bytes::float8, coalesce(sc.score, 0),
                        coalesce(sc.priority_weight, 0),
                        coalesce(sc.tier, (SELECT max(tier) FROM shardcast.scores), 1), f.lower,
                        t.destination, extract(epoch FROM t.enqueued_at)::float8,
                        CASE WHEN t.destination IS NULL THEN
                            ARRAY(SELECT o.node FROM shardcast.replication_tasks o
                                  WHERE o.shard_id = t.shard_id AND o.task_id <> t.task_id
                                    AND o.state IN ('queued', 'claimed') AND o.node IS NOT NULL)
                        END
                 FROM shardcast.replication_tasks t
                 JOIN shardcast.shards s ON s.shard_id = t.shard_id AND s.retired_at IS NULL
                 JOIN pg_catalog.pg_class c ON c.oid = s.relid AND c.relname = s.table_name
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schema_name
                 LEFT JOIN shardcast.scores sc ON sc.shard_id = t.shard_id
                 LEFT JOIN shardcast.forecast_state f ON f.shard_id = t.shard_id
                 WHERE t.state = 'queued'",
                None,
                &[],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                let lower = row.get::<f64>(7)?;
                Ok(Read {
                    queued: Queued {
                        task: Task {
                            task_id: row.get::<i64>(1)?.unwrap_or_default(),
                            bytes: row.get::<f64>(3)?.unwrap_or_default(),
                            score: row.get::<f64>(4)?.unwrap_or_default(),
                            tier: row.get::<i32>(6)?.unwrap_or(1).clamp(1, 255) as u8,
                            prefetch: lower.is_some_and(|l| l > threshold && l > 0.0),
                            enqueued_at: row.get::<f64>(9)?.unwrap_or_default(),
                        },
                        relid: row.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid),
                        priority_weight: row.get::<i32>(5)?.unwrap_or_default(),
                        node: None,
                    },
                    destination: row.get::<String>(8)?,
                    taken: row
                        .get::<Vec<Option<String>>>(10)?
                        .unwrap_or_default()
                        .into_iter()
                        .flatten()
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    let tasks: Vec<Task> = queued.iter().map(|r| r.queued.task.clone()).collect();
    let order = schedule::dispatch_order(&tasks, settings.order, settings.window_secs);

    let mut nodes: Vec<Node> = Spi::connect(|client| {
        client
            .select(
                "SELECT n.node, n.capacity_bytes_per_sec, n.current_load,
                        coalesce((SELECT sum(t.size_bytes) FROM shardcast.replication_tasks t
                                  WHERE t.node = n.node AND t.state = 'claimed'), 0)::float8
                 FROM shardcast.nodes n WHERE n.enabled ORDER BY n.node",
                None,
                &[],
            )?
            .map(|row| {
                Ok(Node {
                    name: row.get::<String>(1)?.unwrap_or_default(),
                    capacity: row.get::<f64>(2)?.unwrap_or(1.0),
                    load: row.get::<f64>(3)?.unwrap_or_default(),
                    assigned_bytes: row.get::<f64>(4)?.unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })?;
    let mut result = Vec::with_capacity(order.len());
    let mut slots: Vec<Option<Read>> = queued.drain(..).map(Some).collect();
    for i in order {
        pg_sys::check_for_interrupts!();
        let Some(Read {
            queued: mut q,
            destination,
            taken,
        }) = slots[i].take()
        else {
            continue;
        };
        q.node = match destination {
            Some(fixed) => {
                if let Some(n) = nodes.iter_mut().find(|n| n.name == fixed) {
                    n.assigned_bytes += q.task.bytes.max(schedule::MIN_TASK_BYTES);
                }
                Some(fixed)
            }
            None => {
                schedule::assign_node_except(q.task.bytes, &mut nodes, |n| taken.contains(&n.name))
                    .map(|n| nodes[n].name.clone())
            }
        };
        result.push(q);
    }
    Ok(result)
}

/// The queue under the server's `shardcast.ordering` and `shardcast.overtake_window`: the order
/// claims follow, whichever session computes it.
fn server_queue() -> Result<Vec<Queued>, pgrx::spi::Error> {
    compute_queue(QueueSettings::server())
}

/// Task ids in dispatch order under another ordering and window than the server's: the order
/// settings can only change on a reload, which a #[pg_test]'s transaction cannot wait for.
#[cfg(any(test, feature = "pg_test"))]
pub(crate) fn queue_task_ids(order: Order, window_secs: f64) -> Vec<i64> {
    compute_queue(QueueSettings {
        order,
        window_secs,
        ..QueueSettings::server()
    })
    .unwrap()
    .iter()
    .map(|q| q.task.task_id)
    .collect()
}

/// SQL: why the shard `s` of a task can no longer be copied, or NULL while it can: the relation with
/// its OID must still exist under its name, and the shard must not be retired. A table dropped
/// and created again under its name has another OID, so its predecessor's tasks never copy it.
macro_rules! gone_detail {
    () => {
        "(SELECT CASE WHEN c.oid IS NULL THEN 'the shard was dropped'
                      WHEN c.relname <> s.table_name OR n.nspname <> s.schema_name
                           THEN 'the shard was renamed or moved: it is a new shard now'
                      WHEN s.retired_at IS NOT NULL THEN 'the shard was retired'
                 END
          FROM (SELECT) AS one
          LEFT JOIN pg_catalog.pg_class c ON c.oid = s.relid
          LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace)"
    };
}

/// Serialises enqueues and replans until the end of the transaction.
fn lock_queue() -> Result<(), pgrx::spi::Error> {
    Spi::run("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('shardcast.replan'))")
}

/// Stores the dispatch order (under the server's `shardcast.ordering` and
/// `shardcast.overtake_window`) that claims follow, with each task's node, score, tier and
/// express-lane flag; cancels tasks of dropped shards.
/// Returns the number of queued tasks.
pub fn replan() -> Result<usize, pgrx::spi::Error> {
    lock_queue()?;
    Spi::run(concat!(
        "UPDATE shardcast.replication_tasks t
         SET state = 'cancelled', finished_at = now(), detail = gone.detail
         FROM shardcast.shards s, LATERAL (SELECT ",
        gone_detail!(),
        " AS detail) gone
         WHERE s.shard_id = t.shard_id AND t.state = 'queued' AND gone.detail IS NOT NULL"
    ))?;
    let queue = server_queue()?;
    let ids: Vec<i64> = queue.iter().map(|q| q.task.task_id).collect();
    let ranks: Vec<i32> = (1..=queue.len() as i32).collect();
    let nodes: Vec<Option<String>> = queue.iter().map(|q| q.node.clone()).collect();
    let scores: Vec<f64> = queue.iter().map(|q| q.task.score).collect();
    let weights: Vec<i32> = queue.iter().map(|q| q.priority_weight).collect();
    let tiers: Vec<i32> = queue.iter().map(|q| q.task.tier as i32).collect();
    let prefetch: Vec<bool> = queue.iter().map(|q| q.task.prefetch).collect();
    Spi::run_with_args(
        "UPDATE shardcast.replication_tasks t
         SET dispatch_rank = u.rank, node = u.node, score = u.score, priority_weight = u.weight,
             tier = u.tier, prefetch = u.prefetch
         FROM unnest($1::int8[], $2::int4[], $3::text[], $4::float8[], $5::int4[], $6::int4[], $7::bool[])
              AS u(id, rank, node, score, weight, tier, prefetch)
         WHERE t.task_id = u.id AND t.state = 'queued'",
        &[
            ids.into(),
            ranks.into(),
            nodes.into(),
            scores.into(),
            weights.into(),
            tiers.into(),
            prefetch.into(),
        ],
    )?;
    Ok(queue.len())
}

/// Internal: the live queue under the server's `shardcast.ordering` and
/// `shardcast.overtake_window`, behind the `shardcast.prioritized_queue` view.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn _prioritized_queue() -> Result<
    TableIterator<
        'static,
        (
            name!(position, i64),
            name!(task_id, i64),
            name!(relid, pg_sys::Oid),
            name!(size_bytes, i64),
            name!(score, f64),
            name!(priority_weight, i32),
            name!(density, f64),
            name!(tier, i32),
            name!(prefetch, bool),
            name!(node, Option<String>),
        ),
    >,
    ErrorReport,
> {
    let queue = server_queue().map_err(spi_error)?;
    Ok(TableIterator::new(queue.into_iter().enumerate().map(
        |(i, q)| {
            pg_sys::check_for_interrupts!();
            (
                i as i64 + 1,
                q.task.task_id,
                q.relid,
                q.task.bytes as i64,
                q.task.score,
                q.priority_weight,
                schedule::density(&q.task),
                q.task.tier as i32,
                q.task.prefetch,
                q.node,
            )
        },
    )))
}

/// Internal: the allocation plan, behind `shardcast.allocation_plan()`.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn _allocation_plan(
    workers: Option<i32>,
    bandwidth: Option<i64>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(position, i64),
            name!(task_id, i64),
            name!(relid, pg_sys::Oid),
            name!(tier, i32),
            name!(prefetch, bool),
            name!(worker, i32),
            name!(node, Option<String>),
            name!(bandwidth_share, f64),
            name!(start_offset, f64),
            name!(finish_offset, f64),
        ),
    >,
    ErrorReport,
> {
    let workers = workers.unwrap_or_else(gucs::plan_workers);
    if !(1..=MAX_PLAN_WORKERS).contains(&workers) {
        return Err(invalid(
            format!("workers must be between 1 and {MAX_PLAN_WORKERS}, not {workers}"),
            "Plan over the number of copy workers the replication scripts run (shardcast.plan_workers' range).",
        ));
    }
    let bandwidth = bandwidth
        .map(|b| b as f64)
        .unwrap_or_else(gucs::plan_bandwidth);
    if !(bandwidth > 0.0 && bandwidth <= MAX_BANDWIDTH) {
        return Err(invalid(
            format!(
                "bandwidth must be a positive number of bytes per second up to 1e15, not {}",
                crate::error::float_text(bandwidth)
            ),
            "Give the total copy bandwidth, e.g. 100000000 for 100 MB/s.",
        ));
    }
    let queue = server_queue().map_err(spi_error)?;
    let tasks: Vec<&Task> = queue.iter().map(|q| &q.task).collect();
    // O(tasks × log(tasks)) whatever `workers` is: slots no task reaches are never made.
    let slots = schedule::plan(
        &tasks,
        workers as usize,
        bandwidth,
        gucs::prefetch_workers(),
    );
    Ok(TableIterator::new(
        queue
            .into_iter()
            .zip(slots)
            .enumerate()
            .map(|(i, (q, slot))| {
                pg_sys::check_for_interrupts!();
                (
                    i as i64 + 1,
                    q.task.task_id,
                    q.relid,
                    q.task.tier as i32,
                    q.task.prefetch,
                    slot.worker as i32,
                    q.node,
                    slot.bandwidth,
                    slot.start,
                    slot.finish,
                )
            }),
    ))
}

/// How long after a copy's lease or end its credit stays: a scan's statistics reach the
/// cumulative views when it finishes (within seconds), and the sampler sees them a sample later.
fn copy_credit_margin() -> pgrx::datum::Interval {
    let margin = (gucs::sample_interval() * 3).max(std::time::Duration::from_secs(600));
    pgrx::datum::Interval::from_micros(margin.as_micros() as i64)
}

fn current_time() -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(unsafe { pg_sys::GetCurrentTimestamp() })
        .unwrap_or_else(|_| TimestampWithTimeZone::positive_infinity())
}

/// Returns tasks whose lease expired to the queue (or marks them failed after
/// `shardcast.max_attempts`). Returns how many.
pub fn expire_leases() -> Result<i64, pgrx::spi::Error> {
    run_kept(
        "WITH expired AS (
             UPDATE shardcast.replication_tasks
             SET attempts = attempts + 1,
                 state = CASE WHEN attempts + 1 >= $1 THEN 'failed' ELSE 'queued' END,
                 finished_at = CASE WHEN attempts + 1 >= $1 THEN now() END,
                 detail = 'lease expired (claimed by ' || coalesce(claimed_by, '?') || ')',
                 claimed_by = NULL, lease_expires_at = NULL
             WHERE state = 'claimed' AND lease_expires_at < $2
               -- Usually nothing has expired: the earliest lease, one index probe, says so
               -- before any claimed task is looked at.
               AND (SELECT min(c.lease_expires_at) FROM shardcast.replication_tasks c
                    WHERE c.state = 'claimed') < $2
             RETURNING 1)
         SELECT count(*) FROM expired",
        &[
            PgOid::BuiltIn(PgBuiltInOids::INT4OID),
            PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZOID),
        ],
        // A parameter, not clock_timestamp() (volatile), so that the lease index is searched
        // for the expired entries instead of read whole.
        &[gucs::max_attempts().into(), current_time().into()],
        |table| Ok(table.first().get_one::<i64>()?.unwrap_or_default()),
    )
}

/// The claim statement, for the queued tasks that `$filter` admits. Written out once per filter
/// so that each kept plan is generic (planned once per session) and walks its own index in
/// dispatch order: `replication_tasks_dispatch` for any node, `replication_tasks_node_dispatch`
/// for one. Tasks for a disabled node, or for a node at its `max_concurrent`, are passed over.
/// The task it takes is claimed if its shard is still its own relation, and cancelled otherwise
/// (the last column says which), so that a dropped table is never copied, nor another table
/// that took its name.
macro_rules! claim_statement {
    ($filter:literal) => {
        concat!(
            "WITH next AS (
                     SELECT t.task_id, t.shard_id
                     FROM shardcast.replication_tasks t
                     WHERE t.state = 'queued'
                       AND ", $filter, "
                       AND (t.node IS NULL OR (SELECT count(*) FROM shardcast.replication_tasks c
                                                WHERE c.state = 'claimed' AND c.node = t.node)
                                              < (SELECT max_concurrent FROM shardcast.nodes n
                                                 WHERE n.node = t.node AND n.enabled))
                     ORDER BY t.dispatch_rank, t.task_id
                     LIMIT 1
                     FOR UPDATE SKIP LOCKED),
             checked AS (
                 SELECT next.task_id, ", gone_detail!(), " AS gone
                 FROM next JOIN shardcast.shards s ON s.shard_id = next.shard_id),
             cancelled AS (
                 UPDATE shardcast.replication_tasks t
                 SET state = 'cancelled', finished_at = now(), detail = checked.gone
                 FROM checked
                 WHERE t.task_id = checked.task_id AND checked.gone IS NOT NULL
                 RETURNING t.task_id),
             claimed AS (
                 UPDATE shardcast.replication_tasks t
                 SET state = 'claimed', claimed_by = $1, claimed_at = now(),
                     lease_expires_at = clock_timestamp() + $3::interval,
                     priority_weight_at_claim = coalesce(
                         (SELECT priority_weight FROM shardcast.scores sc WHERE sc.shard_id = t.shard_id),
                         t.priority_weight)
                 FROM checked, shardcast.shards s
                 WHERE t.task_id = checked.task_id AND checked.gone IS NULL AND s.shard_id = t.shard_id
                 RETURNING t.task_id, s.relid, format('%I.%I', s.schema_name, s.table_name) AS qualified_name,
                           t.node, t.size_bytes, t.priority_weight_at_claim, t.prefetch, t.attempts,
                           t.lease_expires_at, t.shard_id),
             credited AS (
                 INSERT INTO shardcast.copy_credits AS cc (task_id, shard_id, scans, tuples_read, blocks, valid_until)
                 SELECT c.task_id, c.shard_id, 1,
                        greatest(r.reltuples, pg_catalog.pg_stat_get_live_tuples(r.oid), 0),
                        greatest(r.relpages, 0), c.lease_expires_at + $4::interval
                 FROM claimed c JOIN pg_catalog.pg_class r ON r.oid = c.relid
                 -- A task claimed again (its lease expired, or it failed) resumes the same
                 -- copy more often than it starts another: one credit per task.
                 ON CONFLICT (task_id) DO UPDATE SET
                     valid_until = greatest(cc.valid_until, excluded.valid_until))
         SELECT task_id, relid, qualified_name, node, size_bytes, priority_weight_at_claim, prefetch, attempts,
                lease_expires_at, false AS cancelled
         FROM claimed
         UNION ALL
         SELECT task_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, true FROM cancelled"
        )
    };
}
const CLAIM_NEXT: &str = claim_statement!("$2::text IS NULL");
const CLAIM_NEXT_FOR_NODE: &str = claim_statement!("t.node = $2");

/// Hands out the next task under the plan, atomically (FOR UPDATE SKIP LOCKED), under a lease;
/// no row when there is nothing to do. Declared by hand so that the shard comes back as a
/// regclass (an OID underneath) without a wrapper around every claim.
#[pg_extern(
    name = "claim_task",
    sql = "
CREATE FUNCTION shardcast.claim_task(worker text, destination text DEFAULT NULL)
RETURNS TABLE (task_id bigint, shard regclass, qualified_name text, node text, size_bytes bigint,
               priority_weight integer, prefetch boolean, attempts integer, lease_expires_at timestamptz)
LANGUAGE c VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'claim_task_wrapper';
COMMENT ON FUNCTION shardcast.claim_task(text, text) IS
    'Claims the next replication task under the plan, under a lease; no row when there is nothing to do.';
"
)]
fn claim_task(
    worker: Option<&str>,
    destination: Option<&str>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(task_id, i64),
            name!(shard, pg_sys::Oid),
            name!(qualified_name, String),
            name!(node, Option<String>),
            name!(size_bytes, i64),
            name!(priority_weight, i32),
            name!(prefetch, bool),
            name!(attempts, i32),
            name!(lease_expires_at, TimestampWithTimeZone),
        ),
    >,
    ErrorReport,
> {
    let worker = worker.ok_or_else(|| null_argument("worker"))?;
    if let Some(node) = destination {
        check_node(node)?;
    }
    expire_leases().map_err(spi_error)?;
    let lease = pgrx::datum::Interval::from_micros(gucs::claim_lease().as_micros() as i64);
    // Only the task table in the locking scan, walked in the dispatch index's order, so that a
    // claim reads a handful of rows however long the queue is. A task whose shard is gone is
    // cancelled where the claim meets it, and the claim goes on to the next: each such task is
    // met once.
    loop {
        pg_sys::check_for_interrupts!();
        let rows = run_kept(
            if destination.is_some() {
                CLAIM_NEXT_FOR_NODE
            } else {
                CLAIM_NEXT
            },
            &[
                PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
                PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
                PgOid::BuiltIn(PgBuiltInOids::INTERVALOID),
                PgOid::BuiltIn(PgBuiltInOids::INTERVALOID),
            ],
            &[
                worker.into(),
                destination.into(),
                lease.into(),
                copy_credit_margin().into(),
            ],
            |table| {
                table
                    .map(|row| {
                        Ok((
                            row.get::<bool>(10)?.unwrap_or_default(),
                            (
                                row.get::<i64>(1)?.unwrap_or_default(),
                                row.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid),
                                row.get::<String>(3)?.unwrap_or_default(),
                                row.get::<String>(4)?,
                                row.get::<i64>(5)?.unwrap_or_default(),
                                row.get::<i32>(6)?.unwrap_or_default(),
                                row.get::<bool>(7)?.unwrap_or_default(),
                                row.get::<i32>(8)?.unwrap_or_default(),
                                row.get::<TimestampWithTimeZone>(9)?
                                    .unwrap_or_else(TimestampWithTimeZone::positive_infinity),
                            ),
                        ))
                    })
                    .collect::<Result<Vec<_>, pgrx::spi::Error>>()
            },
        )
        .map_err(spi_error)?;
        if rows.iter().any(|(cancelled, _)| *cancelled) {
            continue;
        }
        return Ok(TableIterator::new(rows.into_iter().map(|(_, row)| row)));
    }
}

fn unknown_task(task_id: i64) -> pgrx::pg_sys::panic::ErrorReport {
    sql_error(
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("unknown task {task_id}"),
        "See shardcast.replication_tasks for the tasks that exist.",
    )
}

/// Whether `lock_claimed` accepts a task whose lease has run out but that no claim has
/// returned to the queue yet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expired {
    Refuse,
    Accept,
}

/// Locks a claimed task for the rest of the transaction and returns its claimer; refuses a task
/// that is unknown, not claimed, (when `worker` is given) claimed by someone else, or (with
/// `Expired::Refuse`) whose lease ran out, whether or not a claim has noticed it yet.
fn lock_claimed(task_id: i64, worker: Option<&str>, expired: Expired) -> SqlResult<Option<String>> {
    // One row read under the lock: FOR UPDATE returns the version it locked, so the state, the
    // claimer and the lease always belong together, even when a new claim committed while we
    // waited. The lease is compared with the clock now, after the wait.
    let locked = run_kept(
        "SELECT state, claimed_by, lease_expires_at < clock_timestamp(), lease_expires_at::text
         FROM shardcast.replication_tasks WHERE task_id = $1 FOR UPDATE",
        &[PgOid::BuiltIn(PgBuiltInOids::INT8OID)],
        &[task_id.into()],
        |mut table| match table.next() {
            Some(row) => Ok(Some((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?,
                row.get::<bool>(3)?.unwrap_or(false),
                row.get::<String>(4)?.unwrap_or_default(),
            ))),
            None => Ok(None),
        },
    )
    .map_err(spi_error)?;
    let (state, claimed_by, lease_over, lease_end) = locked.ok_or_else(|| unknown_task(task_id))?;
    if state != "claimed" {
        return Err(not_claimed(task_id, &state));
    }
    if lease_over && expired == Expired::Refuse {
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("the lease of task {task_id} has expired"),
            "Heartbeat more often than shardcast.claim_lease; the task goes back to the queue \
             at the next claim, and whoever claims it then copies it.",
        )
        .set_detail(format!("The lease ended at {lease_end}.")));
    }
    if let (Some(worker), Some(owner)) = (worker, claimed_by.as_deref()) {
        if worker != owner {
            return Err(sql_error(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("task {task_id} is claimed by \"{owner}\", not \"{worker}\""),
                "Its lease may have expired and the task been claimed again: leave it to its new claimer.",
            ));
        }
    }
    Ok(claimed_by)
}

fn not_claimed(task_id: i64, state: &str) -> pgrx::pg_sys::panic::ErrorReport {
    sql_error(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!("task {task_id} is {state}, not claimed"),
        "Only a claimed task can be heartbeaten, completed or released; a task whose lease \
         expired is back in the queue.",
    )
}

/// Extends a claimed task's lease; returns the new expiry.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn heartbeat(
    task_id: Option<i64>,
    worker: default!(Option<&str>, "NULL"),
) -> SqlResult<TimestampWithTimeZone> {
    let task_id = task_id.ok_or_else(|| null_argument("task_id"))?;
    lock_claimed(task_id, worker, Expired::Refuse)?;
    let lease = pgrx::datum::Interval::from_micros(gucs::claim_lease().as_micros() as i64);
    run_kept(
        "WITH renewed AS (
             UPDATE shardcast.replication_tasks SET lease_expires_at = clock_timestamp() + $2::interval
             WHERE task_id = $1 RETURNING task_id, lease_expires_at
         ), credit AS (
             UPDATE shardcast.copy_credits cc SET valid_until = greatest(cc.valid_until, r.lease_expires_at + $3)
             FROM renewed r WHERE cc.task_id = r.task_id)
         SELECT lease_expires_at FROM renewed",
        &[
            PgOid::BuiltIn(PgBuiltInOids::INT8OID),
            PgOid::BuiltIn(PgBuiltInOids::INTERVALOID),
            PgOid::BuiltIn(PgBuiltInOids::INTERVALOID),
        ],
        &[task_id.into(), lease.into(), copy_credit_margin().into()],
        |table| table.first().get_one::<TimestampWithTimeZone>(),
    )
    .map_err(spi_error)?
    .ok_or_else(|| unknown_task(task_id))
}

/// Returns a claimed task to the queue without counting an attempt: for a replication script
/// that stops (Ctrl-C) before it could finish, so that the task need not wait for its lease.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn release_task(task_id: Option<i64>, worker: default!(Option<&str>, "NULL")) -> SqlResult<()> {
    let task_id = task_id.ok_or_else(|| null_argument("task_id"))?;
    // A task whose lease ran out may still be handed back by its claimer while nobody else has
    // claimed it: it goes back to the queue as the next claim would put it there.
    lock_claimed(task_id, worker, Expired::Accept)?;
    Spi::run_with_args(
        "UPDATE shardcast.replication_tasks
         SET state = 'queued', claimed_by = NULL, claimed_at = NULL, lease_expires_at = NULL,
             detail = 'released by ' || coalesce($2, claimed_by, '?')
         WHERE task_id = $1",
        &[task_id.into(), worker.into()],
    )
    .map_err(spi_error)
}

/// Records the outcome of a claimed task, logs it and sends NOTIFY shardcast_completion. A
/// failed task goes back to the queue until `shardcast.max_attempts`.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn complete_task(
    task_id: Option<i64>,
    succeeded: default!(Option<bool>, true),
    detail: default!(Option<&str>, "NULL"),
    worker: default!(Option<&str>, "NULL"),
) -> SqlResult<()> {
    let task_id = task_id.ok_or_else(|| null_argument("task_id"))?;
    let succeeded = succeeded.ok_or_else(|| null_argument("succeeded"))?;
    let claimed_by = lock_claimed(task_id, worker, Expired::Refuse)?;
    run_kept(
        "WITH done AS (
             UPDATE shardcast.replication_tasks t
             SET attempts = CASE WHEN $2 THEN t.attempts ELSE t.attempts + 1 END,
                 state = CASE WHEN $2 THEN 'done'
                              WHEN t.attempts + 1 >= $4 THEN 'failed' ELSE 'queued' END,
                 finished_at = CASE WHEN $2 OR t.attempts + 1 >= $4 THEN now() END,
                 detail = $3,
                 priority_weight_at_completion = coalesce(
                     (SELECT priority_weight FROM shardcast.scores sc WHERE sc.shard_id = t.shard_id),
                     t.priority_weight),
                 lease_expires_at = NULL,
                 claimed_by = CASE WHEN $2 THEN t.claimed_by END
             WHERE t.task_id = $1
             RETURNING t.*
         ), credit AS (
             UPDATE shardcast.copy_credits cc SET valid_until = greatest(cc.valid_until, now() + $6)
             FROM done d WHERE cc.task_id = d.task_id
         ), logged AS (
             INSERT INTO shardcast.completion_log (task_id, shard_id, schema_name, table_name, node, worker,
                     succeeded, attempts, priority_weight, size_bytes, claimed_at, finished_at, duration, detail)
             SELECT d.task_id, d.shard_id, s.schema_name, s.table_name, d.node, $5, $2,
                    d.attempts + CASE WHEN $2 THEN 1 ELSE 0 END,
                    d.priority_weight_at_completion, d.size_bytes, d.claimed_at, now(), now() - d.claimed_at, $3
             FROM done d JOIN shardcast.shards s USING (shard_id)
             RETURNING *
         )
         -- NOTIFY refuses payloads of 8000 bytes or more: the detail is cut to $7 characters
         -- (the full detail is in the tables) and the node name to $8, so that a completion
         -- is always recorded and announced.
         SELECT pg_catalog.pg_notify('shardcast_completion', json_build_object(
                    'task', task_id, 'shard', format('%I.%I', schema_name, table_name),
                    'destination', left(node, $8), 'priority_weight', priority_weight, 'size', size_bytes,
                    'duration', extract(epoch FROM duration), 'succeeded', succeeded,
                    'attempts', attempts,
                    'detail', CASE WHEN length(detail) > $7 THEN left(detail, $7) || '…' ELSE detail END)::text)
         FROM logged",
        &[
            PgOid::BuiltIn(PgBuiltInOids::INT8OID),
            PgOid::BuiltIn(PgBuiltInOids::BOOLOID),
            PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
            PgOid::BuiltIn(PgBuiltInOids::INT4OID),
            PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
            PgOid::BuiltIn(PgBuiltInOids::INTERVALOID),
            PgOid::BuiltIn(PgBuiltInOids::INT4OID),
            PgOid::BuiltIn(PgBuiltInOids::INT4OID),
        ],
        &[
            task_id.into(),
            succeeded.into(),
            detail.into(),
            gucs::max_attempts().into(),
            claimed_by.as_deref().or(worker).into(),
            copy_credit_margin().into(),
            NOTIFY_DETAIL_CHARS.into(),
            (MAX_NODE_NAME_BYTES as i32).into(),
        ],
        |_| Ok(()),
    )
    .map_err(spi_error)?;
    if !succeeded {
        replan().map_err(spi_error)?;
    }
    Ok(())
}

/// The manifest as a versioned document (see the README for its schema).
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn manifest_json(destination: default!(Option<&str>, "NULL")) -> SqlResult<pgrx::JsonB> {
    if let Some(node) = destination {
        check_node(node)?;
    }
    Spi::get_one_with_args::<pgrx::JsonB>(
        "SELECT jsonb_build_object(
             'version', 1,
             'generated_at', now(),
             'source', jsonb_build_object('system_identifier', (SELECT system_identifier::text FROM pg_catalog.pg_control_system()),
                                          'database', current_database()),
             'destination', $1::text,
             'tasks', coalesce((SELECT jsonb_agg(jsonb_build_object(
                          'task_id', m.task_id, 'shard', m.shard, 'destination', m.destination,
                          'size_bytes', m.size_bytes, 'priority_weight', m.priority_weight,
                          'position', m.position, 'tier', m.tier, 'prefetch', m.prefetch, 'state', m.state)
                          ORDER BY m.position NULLS LAST, m.task_id)
                        FROM shardcast.replication_manifest m
                        WHERE $1::text IS NULL OR m.destination = $1), '[]'::jsonb))",
        &[destination.into()],
    )
    .map_err(spi_error)?
    .ok_or_else(|| invalid("no manifest".into(), ""))
}

/// What prioritization was worth on the tasks done (claimed at or after `since`; all when NULL).
/// The `shardcast.prioritization_report` view shows it for all.
#[pg_extern(stable, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn prioritization_report_since(
    since: Option<TimestampWithTimeZone>,
) -> Result<
    TableIterator<
        'static,
        (
            name!(tasks, i64),
            name!(window_start, Option<TimestampWithTimeZone>),
            name!(window_end, Option<TimestampWithTimeZone>),
            name!(bytes_copied, i64),
            name!(bandwidth, f64),
            name!(awa_realised, f64),
            name!(awa_fifo, f64),
            name!(awa_oracle, f64),
            name!(capture, Option<f64>),
        ),
    >,
    ErrorReport,
> {
    use shardcast_core::report::{self, Accesses};
    // One row per shard copied (its first successful copy), in catalog (FIFO) order.
    let copied: Vec<(i32, f64, f64, f64)> = Spi::connect(|client| {
        client
            .select(
                "WITH firsts AS (
                     SELECT DISTINCT ON (shard_id) shard_id, task_id, size_bytes, claimed_at, finished_at
                     FROM shardcast.replication_tasks
                     WHERE state = 'done' AND ($1::timestamptz IS NULL OR claimed_at >= $1)
                     ORDER BY shard_id, finished_at)
                 SELECT shard_id, size_bytes::float8,
                        extract(epoch FROM claimed_at)::float8, extract(epoch FROM finished_at)::float8
                 FROM firsts ORDER BY task_id",
                None,
                &[since.into()],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                Ok((
                    row.get::<i32>(1)?.unwrap_or_default(),
                    row.get::<f64>(2)?.unwrap_or_default(),
                    row.get::<f64>(3)?.unwrap_or_default(),
                    row.get::<f64>(4)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi_error)?;
    if copied.is_empty() {
        return Ok(TableIterator::new(Vec::new()));
    }
    let start = copied.iter().map(|c| c.2).fold(f64::INFINITY, f64::min);
    let end = copied.iter().map(|c| c.3).fold(f64::NEG_INFINITY, f64::max);
    let bytes: Vec<f64> = copied.iter().map(|c| c.1).collect();
    let ids: Vec<i32> = copied.iter().map(|c| c.0).collect();
    // The report weighs accesses by the same load the forecasts predict.
    let load = crate::forecaster::load_expression(gucs::load_measure(), "h", "$4");
    let accesses: Vec<Accesses> = Spi::connect(|client| {
        client
            .select(
                &format!(
                    "SELECT array_position($1::int4[], h.shard_id) - 1,
                            extract(epoch FROM h.bucket_start)::float8,
                            extract(epoch FROM h.bucket_start + h.bucket_width)::float8,
                            {load}::float8
                     FROM shardcast.access_history h
                     WHERE h.shard_id = ANY($1)
                       AND h.bucket_start < to_timestamp($3) AND h.bucket_start + h.bucket_width > to_timestamp($2)"
                ),
                None,
                &[ids.clone().into(), start.into(), end.into(), gucs::write_weight().into()],
            )?
            .map(|row| {
                pg_sys::check_for_interrupts!();
                Ok(Accesses {
                    shard: row.get::<i32>(1)?.unwrap_or_default().max(0) as usize,
                    start: row.get::<f64>(2)?.unwrap_or_default(),
                    end: row.get::<f64>(3)?.unwrap_or_default(),
                    load: row.get::<f64>(4)?.unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi_error)?;
    let window = (start, end.max(start));
    let bandwidth = bytes
        .iter()
        .map(|b| b.max(schedule::MIN_TASK_BYTES))
        .sum::<f64>()
        / (end - start).max(1e-3);
    let realised_ready: Vec<f64> = copied.iter().map(|c| c.3).collect();
    let realised = report::awa(&realised_ready, &accesses, window);
    // The other orders replayed on the run's own workers, each copy taking as long as it did.
    let intervals: Vec<(f64, f64)> = copied.iter().map(|c| (c.2, c.3)).collect();
    let durations: Vec<f64> = intervals
        .iter()
        .map(|(from, to)| (to - from).max(0.0))
        .collect();
    let workers = report::max_concurrency(&intervals);
    let replay = |order: &[usize]| {
        report::awa(
            &report::replay_ready(&durations, order, workers, start),
            &accesses,
            window,
        )
    };
    let fifo = replay(&(0..copied.len()).collect::<Vec<_>>());
    let oracle = replay(&report::oracle_order(&durations, &accesses, window));
    let timestamp =
        |secs: f64| TimestampWithTimeZone::try_from(((secs - 946_684_800.0) * 1e6) as i64).ok();
    Ok(TableIterator::new(vec![(
        copied.len() as i64,
        timestamp(start),
        timestamp(end),
        bytes.iter().sum::<f64>() as i64,
        bandwidth,
        realised,
        fifo,
        oracle,
        report::capture(realised, fifo, oracle),
    )]))
}
