//! The #[pg_test]s: the SQL surface and each worker stage, called directly, one file per concept
//! (as in `api/`). A #[pg_test] is one transaction that is rolled back, so sampling of real
//! accesses is tested end to end in pg_test/.
//!
//! `cargo pgrx test` calls each test as the SQL function `tests.<name>()`, and pgrx puts a
//! function into the `tests` schema only when its Rust module is exactly the `#[pg_schema] mod
//! tests` (an inline module). So the files are not modules of their own: they are included into
//! that one module, where they share `helpers.rs` and the prelude without imports. rustfmt does
//! not format included files; each keeps its own layout.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    include!("helpers.rs");
    include!("history.rs");
    include!("shards.rs");
    include!("classes.rs");
    include!("forecasts.rs");
    include!("sparkline.rs");
    include!("nodes.rs");
    include!("enqueue.rs");
    include!("queue.rs");
    include!("claims.rs");
    include!("lifecycle.rs");
    include!("report.rs");
    include!("citus.rs");
    include!("arguments.rs");
    include!("privileges.rs");
    include!("worker.rs");
}
