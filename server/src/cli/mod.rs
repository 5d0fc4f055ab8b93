//! The subcommands of the `stasis` tool, one module each.

pub mod blob;
pub mod run;
pub mod sandbox;
pub mod serve;
pub mod template;
