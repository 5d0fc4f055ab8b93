//! The `stasis` binary's integration tests: one binary, one module per area.

mod api;
mod common;
mod crash;
mod envd;
mod run;
mod serve;
