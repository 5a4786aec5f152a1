//! The manifest: the tasks and their plan as a versioned JSON document (see the README for its
//! schema), for a replication driver or an operator.

use pgrx::prelude::*;

use super::nodes::check_node;
use crate::catalog::tasks;
use crate::error::{spi_error, SqlResult};

/// The manifest as a versioned document (see the README for its schema).
#[pg_extern(sql = false)]
fn manifest_json(node: default!(Option<&str>, "NULL")) -> SqlResult<pgrx::JsonB> {
    if let Some(node) = node {
        check_node(node)?;
    }
    tasks::manifest(node).map_err(spi_error)?.ok_or_else(|| {
        crate::error::sql_error(
            pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "the manifest query returned no row",
            "This is a bug in shardcast: please report it with the server log.",
        )
    })
}
