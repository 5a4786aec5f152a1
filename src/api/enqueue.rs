//! Enqueueing: `enqueue` (one shard), `enqueue_publication`, `enqueue_all`. One shard, one
//! node, one open task; tables that logical replication cannot carry are refused or skipped.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::nodes::check_node;
use super::null_argument;
use crate::catalog::{shards, tasks};
use crate::error::{spi_error, sql_error, SqlResult};
use crate::queue;

/// Enqueues the given live shards for `node` (NULL: node assignment chooses). One shard,
/// one node, one open task: an open task that already takes the shard there is kept, whether
/// its node was given or assigned; a queued task of the shard that node assignment was to place
/// goes to `node` instead of a second task; without a node, any open task of the
/// shard will do. A shard already copied there (to `node`, or to any node without one:
/// `shardcast.replicas`) is skipped. Returns what was done per shard.
fn enqueue_shards(shard_ids: &[i32], node: Option<&str>) -> SqlResult<Vec<tasks::Enqueued>> {
    if let Some(node) = node {
        check_node(node)?;
    }
    let done = tasks::enqueue(shard_ids, node).map_err(spi_error)?;
    queue::replan().map_err(spi_error)?;
    Ok(done)
}

/// The hint of a skipped shard: how to copy it again, or elsewhere.
fn skipped_hint(name: &str, node: &str) -> String {
    let (name, node) = (name.replace('\'', "''"), node.replace('\'', "''"));
    format!(
        "To copy it there again, forget the copy first: SELECT shardcast.forget_replica('{name}', \
         '{node}'); to copy it to another node, name that node in shardcast.enqueue. See \
         shardcast.node_replicas."
    )
}

/// Enqueues shards in bulk; returns how many have an open task now (new or kept). Shards
/// already copied where they were to go are skipped with one NOTICE.
fn enqueue_bulk(shard_ids: &[i32], node: Option<&str>) -> SqlResult<i64> {
    let done = enqueue_shards(shard_ids, node)?;
    let skipped: Vec<&(String, String, String)> =
        done.iter().filter_map(|e| e.skipped.as_ref()).collect();
    if let Some((name, copied_to, _)) = skipped.first() {
        let message = match node {
            Some(node) => format!(
                "{} shard(s) already copied to node \"{node}\", skipping",
                skipped.len()
            ),
            None => format!(
                "{} shard(s) already copied to a node, skipping",
                skipped.len()
            ),
        };
        sql_error(
            PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            message,
            skipped_hint(name, copied_to),
        )
        .set_detail(format!(
            "Skipped: {}.",
            listed(
                &skipped
                    .iter()
                    .map(|(name, node, _)| format!("{name} (on {node})"))
                    .collect::<Vec<_>>()
            )
        ))
        .report(PgLogLevel::NOTICE);
    }
    Ok((done.len() - skipped.len()) as i64)
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
    let (name, persistence) = tasks::persistence(relid).map_err(spi_error)?;
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
    let skipped = tasks::not_permanent(&shard_ids).map_err(spi_error)?;
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

/// Enqueues one shard; returns its task id (the existing one if it is already queued; the one
/// that copied it, with a NOTICE, when it is already on the node). Declared
/// by hand so that the shard is a regclass read as an OID: the relation is never waited for (its
/// size is measured only when its lock is free at once), and an
/// OID that names no relation is a clean error. A table that logical replication cannot carry
/// (unlogged, temporary) is refused: `feature_not_supported`, with what to do as the hint.
#[pg_extern(sql = false)]
fn enqueue(shard: Option<pg_sys::Oid>, node: Option<&str>) -> SqlResult<i64> {
    let shard = shards::existing_relation(shard.ok_or_else(|| null_argument("shard"))?)?;
    if let Some(refusal) = unreplicable(shard)? {
        return Err(refusal);
    }
    let shard_id = shards::shard_id_for(shard)?;
    let done = enqueue_shards(&[shard_id], node)?;
    let Some(first) = done.first() else {
        return Ok(0);
    };
    if let Some((name, node, _)) = &first.skipped {
        sql_error(
            PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
            format!(
                "shard {name} is already on node \"{node}\" (copied by task {}), skipping",
                first.task_id
            ),
            skipped_hint(name, node),
        )
        .report(PgLogLevel::NOTICE);
    }
    Ok(first.task_id)
}

/// Enqueues every table of a logical-replication publication; returns the number of open tasks
/// (new or kept); shards already copied are skipped with a NOTICE.
/// Leaf partitions that logical replication cannot carry (unlogged) are skipped with a NOTICE,
/// and so, in one NOTICE, are the publication's tables that are no shard (`FOR ALL TABLES`
/// includes shardcast's own): a script that enqueues a publication learns what it will not
/// order. An empty publication says so.
#[pg_extern(sql = false)]
fn enqueue_publication(
    publication: Option<&str>,
    node: default!(Option<&str>, "NULL"),
) -> SqlResult<i64> {
    let publication = publication.ok_or_else(|| null_argument("publication"))?;
    let exists = tasks::publication_exists(publication).map_err(spi_error)?;
    if !exists {
        return Err(sql_error(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("publication \"{publication}\" does not exist"),
            "See pg_publication, or CREATE PUBLICATION first.",
        ));
    }
    if let Some(node) = node {
        // Before the NOTICEs below: a misspelt node is an error, not an error after notices.
        check_node(node)?;
    }
    shards::sync().map_err(spi_error)?;
    let (shard_ids, untracked) = tasks::publication_shards(publication).map_err(spi_error)?;
    if !untracked.is_empty() {
        sql_error(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            match untracked.len() {
                1 => format!(
                    "1 table of publication \"{publication}\" is not tracked by shardcast, skipping"
                ),
                n => format!(
                    "{n} tables of publication \"{publication}\" are not tracked by shardcast, \
                     skipping"
                ),
            },
            "System schemas, shardcast's own schema and the schemas in \
             shardcast.excluded_schemas hold no shards; Citus shards are moved by \
             shardcast.enqueue_citus_rebalance.",
        )
        .set_detail(format!("Skipped: {}.", listed(&untracked)))
        .report(PgLogLevel::NOTICE);
    }
    if shard_ids.is_empty() {
        sql_error(
            PgSqlErrorCode::ERRCODE_NO_DATA,
            format!("publication \"{publication}\" holds no table to copy"),
            "ALTER PUBLICATION ... ADD TABLE (a partitioned table is copied by its partitions), then \
             enqueue it again.",
        )
        .report(PgLogLevel::NOTICE);
    }
    let shard_ids = replicable_only(shard_ids)?;
    enqueue_bulk(&shard_ids, node)
}

/// Up to 20 names, comma-separated, with "..." after when there are more.
fn listed(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(20)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 20 {
        text.push_str(", ...");
    }
    text
}

/// Enqueues every live shard; returns the number of open tasks (new or kept); shards already
/// copied are skipped with a NOTICE. Unlogged tables, which logical
/// replication cannot carry, are skipped with a NOTICE each.
#[pg_extern(sql = false)]
fn enqueue_all(node: default!(Option<&str>, "NULL")) -> SqlResult<i64> {
    shards::sync().map_err(spi_error)?;
    let shard_ids = tasks::live_shard_ids().map_err(spi_error)?;
    let shard_ids = replicable_only(shard_ids)?;
    enqueue_bulk(&shard_ids, node)
}
