//! The runtime's integration tests: one binary, one module per area.
mod wasi;
