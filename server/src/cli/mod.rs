//! The subcommands of the `stasis` tool, one module each.

pub mod run;
pub mod serve;
