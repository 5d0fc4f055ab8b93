//! The `stasis` binary's integration tests: one binary, one module per area.

mod api;
mod apiload;
mod cli;
mod common;
mod control;
mod crash;
mod envd;
mod extras;
mod jupyter;
mod observe;
mod persistence;
mod processes;
mod proxy;
mod pty;
mod run;
mod serve;
mod templates;
mod tenants;
mod volumes;
mod watch;
