//! The `stasis` command-line tool.
fn main() {}
