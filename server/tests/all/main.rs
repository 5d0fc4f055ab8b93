//! The `stasis` binary's integration tests: one binary, one module per area.

mod run;
