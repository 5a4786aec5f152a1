//! What reports and manifests read back from the tasks: the first copy of each shard in a
//! report's scope, and the manifest document.

use pgrx::prelude::*;
use shardcast_core::report::Copied;

use crate::catalog::compat_0_1::remembers_replicas;

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
