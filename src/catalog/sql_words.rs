//! For tests that compare statements: SQL text with its whitespace normalised.

/// `sql` with every run of whitespace one space, and none at either end.
pub fn words(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}
