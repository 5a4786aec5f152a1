//! 0.1.0's catalog, which a library newer than it runs on between its installation and `ALTER
//! EXTENSION shardcast UPDATE`: whether the catalog is 0.2.0's, and the statements adapted to
//! 0.1.0's (`replication_tasks.destination` for `requested_node`, no `shardcast.replicas`).
//! Meanwhile the library enqueues, replans, claims and completes as 0.1.0 did.

use pgrx::prelude::*;

/// Whether the catalog remembers replicas (`shardcast.replicas`, 0.2.0): false on 0.1.0's
/// catalog. 0.2.0's task kinds and `copied` column came with it.
pub fn remembers_replicas() -> Result<bool, pgrx::spi::Error> {
    Ok(
        Spi::get_one::<bool>("SELECT pg_catalog.to_regclass('shardcast.replicas') IS NOT NULL")?
            == Some(true),
    )
}

/// The expected load of the `shardcast.forecast_state` row aliased `alias`, as a column: 0.1.0's
/// catalog has no `expected`, and its point was the expected load. (Where a statement reads many
/// rows this beats a `to_jsonb` of each, as `forecasts` does for one: that took 107 ms for
/// 10,000 rows.)
pub fn expected_column(alias: &str) -> Result<String, pgrx::spi::Error> {
    let current = has_column("shardcast.forecast_state", "expected")?;
    Ok(format!(
        "{alias}.{}",
        if current { "expected" } else { "point" }
    ))
}

/// Whether the catalog's `table` has a column `column` (false when there is no such table).
fn has_column(table: &str, column: &str) -> Result<bool, pgrx::spi::Error> {
    Ok(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                        WHERE attrelid = pg_catalog.to_regclass($1) AND attname = $2 AND NOT attisdropped)",
        &[table.into(), column.into()],
    )? == Some(true))
}

/// `statement` for this catalog: 0.1.0's names the node asked for at enqueue
/// `replication_tasks.destination`, 0.2.0's `requested_node`. Statements that 0.1.0's functions
/// (enqueue, enqueue_all, enqueue_publication) and the worker's replan run through this library
/// before `ALTER EXTENSION shardcast UPDATE` are written with `requested_node` and go through
/// here. Only the whole word `requested_node` is renamed ([`destination_for_requested_node`]):
/// in these statements it is that column, never part of a longer name.
pub fn for_catalog(statement: &str) -> Result<String, pgrx::spi::Error> {
    Ok(
        if has_column("shardcast.replication_tasks", "destination")? {
            destination_for_requested_node(statement)
        } else {
            statement.to_string()
        },
    )
}

/// `statement` with each word `requested_node` renamed `destination`: the whole word only, not
/// inside a longer identifier (`requested_node_at`, `x_requested_node`, `requested_nodes`).
pub(super) fn destination_for_requested_node(statement: &str) -> String {
    const OLD: &str = "requested_node";
    const NEW: &str = "destination";
    // What continues an identifier in PostgreSQL (letters, digits, `_`, and `$` after the
    // first character).
    let in_identifier = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let mut renamed = String::with_capacity(statement.len());
    let mut rest = statement;
    while let Some(at) = rest.find(OLD) {
        let (before, after) = (&rest[..at], &rest[at + OLD.len()..]);
        // Before the match: the text before it in `rest`, or else what was copied last.
        let joined_before = before
            .chars()
            .next_back()
            .or_else(|| renamed.chars().next_back())
            .is_some_and(in_identifier);
        let joined_after = after.chars().next().is_some_and(in_identifier);
        renamed.push_str(before);
        renamed.push_str(if joined_before || joined_after {
            OLD
        } else {
            NEW
        });
        rest = after;
    }
    renamed.push_str(rest);
    renamed
}

/// `shardcast.replicas`, or an empty relation of its shape on 0.1.0's catalog.
pub fn replicas_relation() -> Result<&'static str, pgrx::spi::Error> {
    Ok(if remembers_replicas()? {
        "shardcast.replicas"
    } else {
        "(SELECT NULL::integer AS shard_id, NULL::text AS node, NULL::bigint AS task_id,
                 NULL::timestamptz AS copied_at WHERE false)"
    })
}

#[cfg(test)]
mod tests {
    use super::destination_for_requested_node as swap;

    #[test]
    fn the_column_is_renamed_wherever_it_stands_alone() {
        assert_eq!(swap("requested_node"), "destination");
        assert_eq!(swap("t.requested_node IS NULL"), "t.destination IS NULL");
        assert_eq!(
            swap("(shard_id, requested_node, node)"),
            "(shard_id, destination, node)"
        );
        assert_eq!(swap("SET requested_node = $2"), "SET destination = $2");
        assert_eq!(swap("x\n\trequested_node\n"), "x\n\tdestination\n");
        assert_eq!(
            swap("t.requested_node=o.requested_node"),
            "t.destination=o.destination"
        );
        assert_eq!(swap(r#"t."requested_node""#), r#"t."destination""#);
    }

    #[test]
    fn a_longer_identifier_that_contains_the_column_is_kept() {
        for kept in [
            "requested_node_x",
            "requested_node_at",
            "x_requested_node",
            "requested_nodes",
            "requested_node2",
            "requested_node$1",
            "érequested_node",
            "requested_noderequested_node",
            "t.requested_node_at IS NULL",
        ] {
            assert_eq!(swap(kept), kept);
        }
        assert_eq!(
            swap("requested_node, requested_node_at, x_requested_node, requested_node"),
            "destination, requested_node_at, x_requested_node, destination"
        );
    }

    #[test]
    fn statements_without_the_column_are_kept() {
        assert_eq!(swap(""), "");
        assert_eq!(swap("SELECT node FROM t"), "SELECT node FROM t");
        assert_eq!(swap("requested node"), "requested node");
    }
}
