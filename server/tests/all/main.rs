//! The `stasis` binary's integration tests: one binary, one module per area.

mod api;
mod apiload;
mod cli;
mod common;
mod crash;
mod envd;
mod extras;
mod jupyter;
mod processes;
mod run;
mod serve;
mod templates;
mod tenants;
